"""An image file deleted from PROJECT/images behind the tool's back: ``status`` names it, the commands
that read images skip it (naming it as the project knows it, with the remedy) and go on with the others."""
import os

import numpy as np
import pytest

from annotations.errors import ImageError
from annotations.imageio import encode_image_png
from annotations.store import Project
from conftest import make_disc_image
from segmenter.cli import main


def _project(tmp_path, n: int = 4, strokes: bool = True) -> Project:
    """``n`` 64 px disc images d0.png ... with strokes; the file of d1.png is deleted."""
    p = Project.create(tmp_path / "p", classes=["background", "disc"])
    for k in range(n):
        img, _, scr = make_disc_image(64, seed=k)
        info = p.add_image(encode_image_png(img), name=f"d{k}.png")
        if strokes:
            p.save_scribbles(info.id, scr)
    gone(p, "d1.png")
    return p


def gone(p: Project, name: str) -> int:
    info = p.image_by_name(name)
    os.remove(p.root / info.file)
    return info.id


def _says_remedy(text: str, p: Project, name: str = "d1.png") -> None:
    """``text`` names the image as the project knows it and says how to mend it."""
    assert name in text and f"python -m segmenter remove-image {p.root} {name}" in text
    assert "back" in text


def test_load_image_names_the_image_and_the_remedy(tmp_path):
    p = _project(tmp_path, strokes=False)
    info = p.image_by_name("d1.png")
    with pytest.raises(ImageError) as e:
        p.load_image(info.id)
    msg = str(e.value)
    assert msg.startswith("d1.png: its file ") and "missing" in msg and info.file in msg
    _says_remedy(msg, p)
    # a damaged file: named the same way
    d2 = p.image_by_name("d2.png")
    (p.root / d2.file).write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"^d2\.png: .*remove-image"):
        p.load_image(d2.id)
    assert [im.name for im in p.missing_files()] == ["d1.png"]
    assert p.missing_files([d2.id]) == []


def test_status_names_the_images_whose_file_is_missing(tmp_path, capsys):
    p = _project(tmp_path, strokes=False)
    assert main(["status", str(p.root)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "missing" in ln]
    assert len(lines) == 1 and "1 image" in lines[0]
    _says_remedy(lines[0], p)
    assert p.counts()["missing_files"] == 1


def test_pseudo_skips_the_missing_image_and_does_the_others(tmp_path, capsys):
    p = _project(tmp_path)
    assert main(["pseudo", str(p.root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 pseudo-masks written")
    _says_remedy(out, p)
    assert "skipped 1 image" in out
    assert [p.mask_info(i.id, "pseudo") is not None for i in p.images()] == [True, False, True, True]
    # only the missing image asked for: nothing done, an error naming it
    assert main(["pseudo", str(p.root), "--images", "d1.png"]) == 2
    err = capsys.readouterr().err
    assert "no pseudo-mask was written" in err
    _says_remedy(err, p)


def test_predict_skips_the_missing_image_and_does_the_others(tmp_path, capsys):
    import torch

    from segmenter.models import ModelConfig, create_model, save_checkpoint

    p = _project(tmp_path, n=3, strokes=False)
    torch.manual_seed(0)
    cfg = ModelConfig(classes=p.class_names, size=64)
    save_checkpoint(p.models_dir / "raw", create_model(cfg), cfg)
    assert main(["predict", str(p.root), "--device", "cpu", "--batch-size", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 masks predicted")
    _says_remedy(out, p)
    assert [p.mask_info(i.id, "predicted") is not None for i in p.images()] == [True, False, True]
    assert main(["predict", str(p.root), "--device", "cpu", "--images", "d1.png"]) == 2
    _says_remedy(capsys.readouterr().err, p)


def test_train_leaves_the_missing_image_out(tmp_path, capsys):
    p = _project(tmp_path, n=3)
    args = ["--size", "64", "--epochs", "1", "--device", "cpu", "--quiet", "--rounds", "1"]
    assert main(["train", str(p.root), "--name", "m", *args]) == 0
    err = capsys.readouterr().err
    notes = [ln for ln in err.splitlines() if "d1.png" in ln]
    assert len(notes) == 1 and notes[0].startswith("note: left out of training 1 image")
    _says_remedy(notes[0], p)
    assert (p.models_dir / "m.safetensors").is_file()
    # every labelled image's file gone: a clear error, no model
    gone(p, "d0.png")
    gone(p, "d2.png")
    assert main(["train", str(p.root), "--name", "m2", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: there are no training images") and "3 images whose file" in err
    assert not (p.models_dir / "m2.safetensors").exists()


def test_tags_leaves_the_missing_image_out(tmp_path, capsys):
    p = _project(tmp_path, strokes=False)
    for i, im in enumerate(p.images()):
        p.set_tag(im.id, 1, "present" if i % 2 == 0 else "absent")
    assert main(["tags", str(p.root), "--epochs", "1", "--size", "64", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    notes = [ln for ln in out.splitlines() if "d1.png" in ln]
    assert len(notes) == 1 and "left out 1 image" in notes[0]
    _says_remedy(notes[0], p)
    assert "saved 3 pseudo-masks" in out
    assert [p.mask_info(i.id, "pseudo") is not None for i in p.images()] == [True, False, True, True]
    for name in ("d0.png", "d2.png", "d3.png"):
        gone(p, name)
    assert main(["tags", str(p.root), "--epochs", "1", "--size", "64", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no tagged image can be read" in err and "4 images whose file" in err


def test_accept_skips_an_image_whose_file_is_missing(tmp_path, capsys):
    """A mask older than strokes that contradict it is corrected on its image when accepted: with the
    image's file gone that cannot be done, so the image is skipped and named; the others are accepted.
    An image whose file is gone is skipped even when its mask needs no correction: nobody can review
    it (it was accepted unseen, unnamed; bug hunt 44, #8)."""
    p = _project(tmp_path, n=3, strokes=False)
    for im in p.images():
        p.save_mask(im.id, np.zeros((64, 64), np.uint8), "pseudo", source="test")
    scr = make_disc_image(64)[2]  # strokes of the disc, drawn after the all-background masks
    for name in ("d1.png", "d2.png"):
        p.save_scribbles(p.image_by_name(name).id, scr)
    assert main(["accept", str(p.root), "--kind", "pseudo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("accepted 2 pseudo mask(s) as final: d0.png, d2.png")
    notes = [ln for ln in out.splitlines() if "d1.png" in ln]
    assert len(notes) == 1 and notes[0].startswith("skipped 1 image")
    _says_remedy(notes[0], p)
    assert p.mask_info(p.image_by_name("d1.png").id, "final") is None
    d0 = p.image_by_name("d0.png")
    p.save_mask(d0.id, np.zeros((64, 64), np.uint8), "predicted", source="model")
    (p.root / d0.file).unlink()
    assert main(["accept", str(p.root), "--images", "d0.png"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("accepted 0 predicted mask(s) as final") and "skipped 1 image whose file is gone" in out
    assert "d0.png" in out and p.mask_info(d0.id, "final").source != "cli:accept(predicted model)"


def test_export_refuses_naming_the_image_and_both_remedies(tmp_path, capsys):
    from segmenter.cli import main

    p = _project(tmp_path)  # d1.png's file is gone
    info = p.image_by_name("d1.png")
    assert main(["export", str(p.root), "--format", "folder", "--out", str(tmp_path / "out.zip")]) == 2
    err = capsys.readouterr().err
    assert f"missing from its folder: d1.png ({info.file}). Nothing was exported." in err
    _says_remedy(err, p)
    assert err.rstrip().endswith("d1.png; then export again.") and not (tmp_path / "out.zip").exists()


def test_an_export_that_writes_no_image_goes_on_without_the_missing_files(tmp_path, capsys):
    """``--format masks`` writes masks only: a stored mask of an image whose file is gone is
    exported as it is; a mask that would have to be made from the strokes (it needs the image) is
    left out, with a note that says why. COCO with ``images=none`` does the same."""
    from segmenter.cli import main

    p = _project(tmp_path)  # strokes everywhere, d1.png's file is gone
    d3 = p.image_by_name("d3.png")
    gone(p, "d3.png")
    p.save_mask(d3.id, make_disc_image(64, seed=3)[1], "final", source="test")
    p.save_scribbles(p.image_by_name("d0.png").id, np.full((64, 64), 255, np.uint8))  # d0: no stroke left
    assert main(["export", str(p.root), "--format", "masks", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert sorted(f.name for f in (tmp_path / "m").glob("*.png")) == ["d2.png", "d3.png"]
    note = [ln for ln in out.splitlines() if "d1.png" in ln or "missing" in ln]
    assert len(note) == 1 and note[0].startswith("note: 1 image(s) left without a mask") and "missing" in note[0]
    assert main(["export", str(p.root), "--format", "coco", "--option", "images=none",
                 "--out", str(tmp_path / "c")]) == 0
    assert "note: 1 image(s) left without a mask" in capsys.readouterr().out
    # an export that copies the images still refuses, naming the first missing file
    assert main(["export", str(p.root), "--format", "png", "--out", str(tmp_path / "x")]) == 2
    assert "Nothing was exported" in capsys.readouterr().err and not (tmp_path / "x").exists()


def later(p: Project, info) -> None:
    """Give the image's file the time of a change a minute after the image was added (a test runs
    within the 2 s to which a file keeping the time the tool gave it is trusted unread)."""
    from datetime import datetime

    t = datetime.fromisoformat(info.added).timestamp() + 60
    os.utime(p.root / info.file, (t, t))


def damage(p: Project, name: str) -> int:
    """Truncate the image's file to 60 bytes, as a failed copy or sync leaves it (a minute later)."""
    info = p.image_by_name(name)
    path = p.root / info.file
    path.write_bytes(path.read_bytes()[:60])
    later(p, info)
    return info.id


def test_a_damaged_file_is_named_by_status_left_out_of_training_and_refused_by_export(tmp_path, capsys):
    """A truncated image file: ``status`` names it, ``train`` trains on the others and says so, an
    export that copies the images refuses before writing anything; a file re-saved with other bytes
    but the same picture size is still used."""
    p = _project(tmp_path, n=3)  # d1.png's file is gone
    damage(p, "d2.png")
    assert p.file_usable(p.image_by_name("d0.png")) and not p.file_usable(p.image_by_name("d2.png"))
    assert [im.name for im in p.missing_files()] == ["d1.png"]  # without verify: one stat each
    assert [im.name for im in p.missing_files(verify=True)] == ["d1.png", "d2.png"]
    assert main(["status", str(p.root)]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if "d2.png" in ln]
    assert len(line) == 1 and line[0].startswith("missing or damaged files: 2 image") and "d1.png" in line[0]
    assert f"python -m segmenter remove-image {p.root} d1.png d2.png" in line[0]
    args = ["--size", "64", "--epochs", "1", "--device", "cpu", "--quiet", "--rounds", "1"]
    assert main(["train", str(p.root), "--name", "m", *args]) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "d2.png" in ln]
    assert len(notes) == 1 and notes[0].startswith("note: left out of training 2 image")
    assert (p.models_dir / "m.safetensors").is_file()
    gone(p, "d0.png")  # now only damaged and missing files: the message says both
    d0 = tmp_path / "d0.png"
    assert main(["export", str(p.root), "--format", "folder", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "are missing from its folder or damaged: d0.png" in err and "d2.png" in err
    assert not (tmp_path / "out").exists() and not d0.exists()


def test_a_file_resaved_with_other_bytes_but_the_same_picture_size_is_still_usable(tmp_path):
    from datetime import datetime

    from annotations.imageio import decode_image

    p = _project(tmp_path, n=2, strokes=False)
    info = p.image_by_name("d0.png")
    path = p.root / info.file
    img = decode_image(path.read_bytes(), "d0.png")
    import cv2

    added = datetime.fromisoformat(info.added).timestamp()
    assert abs(path.stat().st_mtime - added) < 1e-3  # the tool gives the file its image's time
    good = path.read_bytes()
    path.write_bytes(cv2.imencode(".png", img[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 0])[1].tobytes())
    later(p, info)
    assert p.file_usable(info)  # other bytes (no compression), same 64 x 64 picture
    path.write_bytes(cv2.imencode(".png", np.zeros((32, 64, 3), np.uint8))[1].tobytes())
    later(p, info)
    assert not p.file_usable(info)  # another size: the annotations no longer fit
    # the original bytes back with a new time (a copy that did not keep file times): read once,
    # then given its time back, so the next check does not read it
    path.write_bytes(good)
    later(p, info)
    assert p.file_usable(info) and abs(path.stat().st_mtime - added) < 1e-3


def test_an_image_removed_while_predict_runs_is_skipped_and_named(tmp_path):
    """remove-image (the command line, another tab) while predict ran aborted the run at that image
    with "no image with id N" and no summary; the app's validation after training failed the same
    way (bug hunt 47, #8, #9). The image is now skipped and counted; the others are predicted."""
    import torch

    from app.training import validation_miou
    from segmenter.models import ModelConfig, create_model, save_checkpoint
    from segmenter.predict import predict_project

    p = _project(tmp_path, n=4, strokes=False)
    torch.manual_seed(0)
    cfg = ModelConfig(classes=p.class_names, size=64)
    ckpt = save_checkpoint(p.models_dir / "raw", create_model(cfg), cfg)
    ids = p.image_ids()
    gone = ids[2]

    def cb(done, total):
        if done == 1:  # after the first batch, another program removes the third image
            p.delete_image(gone)

    s = predict_project(p, image_ids=ids, device="cpu", batch_size=1, callback=cb)
    missing = p.image_by_name("d1.png").id  # its file is gone (as in the other tests here)
    assert sorted(i for i, _, _ in s.predicted) == sorted(i for i in ids if i not in (gone, missing))
    assert s.removed == [gone] and s.unreadable == ["d1.png"]
    assert any(f"1 image(s) were removed from the project while this ran (ids {gone})" in ln for ln in s.lines())
    mask = np.zeros((p.image_info(ids[0]).height, p.image_info(ids[0]).width), np.uint8)
    p.save_mask(ids[0], mask, "final", source="test")
    assert validation_miou(p, str(ckpt), [ids[0], gone]) is not None  # the removed one is not scored
    assert validation_miou(p, str(ckpt), [gone]) is None
