"""Review from the command line (bug hunt 22, finding 9): ``remove-image`` and ``accept``."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotations.importer import mask_as_exported
from annotations.store import Project
from segmenter.cli import main


def _project(root: Path, names=("a.png", "b.png", "c.png", "d.png")) -> tuple[Project, dict]:
    p = Project.create(root / "p", ["background", "obj"])
    (root / "src").mkdir()
    rng = np.random.default_rng(1)
    ids = {}
    for n in names:
        img = rng.integers(0, 80, (20, 30, 3), dtype=np.uint8)
        img[:, 15:] += 150  # obj: the bright right half
        Image.fromarray(img).save(root / "src" / n)
        ids[n] = p.add_image(root / "src" / n).id
    return p, ids


def _half(left: int = 0, right: int = 1) -> np.ndarray:
    m = np.full((20, 30), left, np.uint8)
    m[:, 15:] = right
    return m


# ----------------------------------------------------------------------------- remove-image
def test_remove_image_takes_the_image_and_its_labels_and_refuses_ambiguous_names(tmp_path, capsys):
    p, ids = _project(tmp_path, ("a.png", "b.png", "1.png"))
    a = ids["a.png"]
    assert a == 1 and ids["1.png"] == 3
    p.save_mask(a, _half(), "predicted", source="model:unet/resnet18")
    p.save_mask(a, _half(), "final", source="review")
    scr = np.full((20, 30), 255, np.uint8)
    scr[2, 2:8] = 0
    p.save_scribbles(a, scr)
    p.set_tag(a, 1, "present")
    p.add_to_set("train", [a, ids["b.png"]])
    files = sorted(f for f in p.root.rglob("*") if f.is_file() and "project.db" not in f.name)

    # '1' is the image named 1.png and the image with id 1: refused, nothing removed (b.png neither).
    assert main(["remove-image", str(p.root), "b.png", "1"]) == 2
    err = capsys.readouterr().err
    assert "error: '1' is ambiguous: it names 1.png (id 3), a.png (id 1); nothing was removed. Give the full name" in err
    assert len(p.image_ids()) == 3
    assert main(["remove-image", str(p.root), "nosuch.png"]) == 2
    assert "no image named 'nosuch.png' in this project" in capsys.readouterr().err

    assert main(["remove-image", str(p.root), "a.png"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["removed image 1 a.png with 2 mask version(s) (current: final, predicted), strokes in layer(s) "
                   "default, 1 tag(s), its place in image set(s) train",
                   "1 image(s) removed, 2 left; their files stay in the project folder (images/, masks/<id>/, "
                   "scribbles/<id>/)."]
    assert p.image_ids() == [2, 3] and p.image_set("train") == [2]
    assert p.mask_history(a) == [] and p.counts()["masks"]["final"] == 0 and p.all_tags() == {}
    assert p.scribble_layers() == []
    assert files == sorted(f for f in p.root.rglob("*") if f.is_file() and "project.db" not in f.name)
    # By id (no image has that name), several at once; the same image named twice counts once.
    assert main(["remove-image", str(p.root), "2", "b.png"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("1 image(s) removed, 1 left")
    # The picture can be added again (a new id).
    assert p.add_image(tmp_path / "src" / "a.png").id == 4


# ----------------------------------------------------------------------------- accept
def test_accept_stores_predictions_as_final_corrected_by_newer_strokes(tmp_path, capsys):
    p, ids = _project(tmp_path)
    a, b, c, d = (ids[n] for n in ("a.png", "b.png", "c.png", "d.png"))
    conf = np.full((20, 30), 0.6, np.float32)
    wrong = np.zeros((20, 30), np.uint8)  # the model missed obj
    p.save_mask(a, _half(), "predicted", source="model:unet/resnet18", model_version="m1", confidence=conf)
    p.save_mask(b, wrong, "predicted", source="model:unet/resnet18", model_version="m1", confidence=conf)
    p.save_mask(c, wrong, "predicted", source="model:unet/resnet18", model_version="m1", confidence=conf)
    p.save_mask(c, _half(), "final", source="review")
    time.sleep(0.01)
    scr = np.full((20, 30), 255, np.uint8)
    scr[8:12, 20:26] = 1  # drawn on b after the prediction: it contradicts the prediction there
    p.save_scribbles(b, scr)

    assert main(["accept", str(p.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["accepted 2 predicted mask(s) as final: a.png, b.png",
                   "note: 1 of them were older than strokes drawn since and were accepted corrected by those strokes "
                   "(as an export writes them): b.png",
                   "skipped 1 image(s) that have a final mask already (kept; --replace-final replaces it, "
                   "--kind final accepts it again corrected by newer strokes): c.png",
                   "skipped 1 image(s) without a predicted mask"]
    np.testing.assert_array_equal(p.mask(a, "final"), _half())
    fa = p.mask_info(a, "final")
    assert fa.source == "cli:accept(predicted m1)" and fa.model_version == "m1"
    assert p.confidence(a, "final") is not None
    # b: never the stale prediction as stored (it contradicts the stroke): as an export corrects it.
    fb = p.mask(b, "final")
    assert (fb[scr != 255] == 1).all()
    np.testing.assert_array_equal(fb, mask_as_exported(p, p.image_info(b), "predicted")[0])
    assert p.mask_info(b, "final").source == "cli:accept(predicted m1, corrected by newer strokes)"
    np.testing.assert_array_equal(p.mask(c, "final"), _half())  # kept
    assert p.mask_info(d, "final") is None and p.status(a) == p.status(b) == "final"

    # Again: every image with a prediction has a final mask now.
    assert main(["accept", str(p.root)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "accepted 0 predicted mask(s) as final"
    # Chosen images and kinds; a mask equal to the final one is no new version.
    p.save_mask(d, _half(1, 0), "pseudo", source="hybrid")
    assert main(["accept", str(p.root), "--kind", "pseudo", "--images", "d.png", "a.png"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["accepted 1 pseudo mask(s) as final: d.png",
                   "skipped 1 image(s) without a pseudo mask: a.png"]
    assert p.mask_info(d, "final").source == "cli:accept(pseudo hybrid)"
    assert main(["accept", str(p.root), "--kind", "pseudo", "--images", "b.png"]) == 0  # strokes, no pseudo-mask
    assert capsys.readouterr().out.splitlines()[1:] == [
        "skipped 1 image(s) without a pseudo mask: b.png",
        "note: 1 of them have strokes but no stored mask: python -m segmenter pseudo PROJECT stores their "
        "pseudo-masks (then accept them)"]
    assert main(["accept", str(p.root), "--kind", "best", "--replace-final", "--images", "c.png", "a"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["accepted 1 imported, predicted or pseudo mask(s) as final: c.png",
                   "skipped 1 image(s) that have a final mask already (the same mask): a.png"]
    np.testing.assert_array_equal(p.mask(c, "final"), wrong)
    assert len(p.mask_history(c, "final")) == 2 and len(p.mask_history(a, "final")) == 1
    assert main(["accept", str(p.root), "--images", "nosuch.png"]) == 2
    assert "no image named 'nosuch.png'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["accept", str(p.root), "--kind", "finals"])


def test_accept_kind_final_takes_the_final_mask_again_corrected_and_never_the_prediction(tmp_path, capsys):
    """status says of a final mask with strokes drawn after it "review them and accept again"; accept
    had no way to: it skipped the image, and --replace-final put the prediction in place of the
    person's mask. ``--kind final`` accepts the final mask itself as an export writes it (bug hunt
    43, #2); a correction by a tag, not by strokes, is named as such (#3)."""
    p, ids = _project(tmp_path)
    a, b, c = ids["a.png"], ids["b.png"], ids["c.png"]
    wrong = np.zeros((20, 30), np.uint8)
    for i in (a, b):
        p.save_mask(i, wrong, "predicted", source="model", model_version="m1")
        p.save_mask(i, _half(), "final", source="app:mask-editor")
    time.sleep(0.01)
    agree = np.full((20, 30), 255, np.uint8)
    agree[8:12, 20:26] = 1  # on a: inside the final mask's obj
    p.save_scribbles(a, agree)
    against = np.full((20, 30), 255, np.uint8)
    against[8:12, 2:8] = 1  # on b: obj where the final mask says background
    p.save_scribbles(b, against)
    assert main(["status", str(p.root)]) == 0
    assert "accept PROJECT --kind final" in capsys.readouterr().out
    assert main(["accept", str(p.root), "--kind", "final"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "accepted 2 final mask(s) as final: a.png, b.png" and "corrected by those strokes" in out[1]
    np.testing.assert_array_equal(p.mask(a, "final"), _half())  # reviewed: the person's mask, stored again
    fb = p.mask(b, "final")
    assert (fb[against != 255] == 1).all() and (fb[:, 15:] == 1).mean() > 0.9  # the person's mask, corrected
    assert p.finals_older_than_strokes() == []  # status no longer asks
    assert main(["accept", str(p.root), "--kind", "final"]) == 0  # nothing left to do
    assert capsys.readouterr().out.splitlines()[0] == "accepted 0 final mask(s) as final"
    # c: a prediction showing obj, then obj tagged absent (no stroke): accepted without obj, said so
    p.save_mask(c, _half(), "predicted", source="model", model_version="m1")
    time.sleep(0.01)
    p.set_tag(c, 1, "absent")
    assert main(["accept", str(p.root), "--images", "c.png"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("note: 1 of them showed a class the image was tagged absent since") and len(out) == 2
    assert p.mask_info(c, "final").source == "cli:accept(predicted m1, without classes tagged absent)"
    assert not (p.mask(c, "final") == 1).any()
