"""`python -m segmenter pseudo PROJECT`, the live preview, and `bench pseudo` on a tiny dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segmenter.cli import main
from segmenter.errors import NoLabelsError


@pytest.fixture
def project(tmp_path, disc):
    from annotations.store import Project

    img, gt, scr = disc
    p = Project.create(tmp_path / "proj", classes=["background", "object"])
    path = tmp_path / "disc.png"
    Image.fromarray(img).save(path)
    info = p.add_image(path)
    Image.fromarray(np.clip(img.astype(int) + 1, 0, 255).astype(np.uint8)).save(tmp_path / "other.png")
    other = p.add_image(tmp_path / "other.png")
    p.save_scribbles(info.id, scr)
    return p, info.id, other.id, gt


def test_pseudo_command_writes_masks_with_source_and_confidence(project, capsys):
    from segmenter.metrics import image_iou
    from segmenter.pseudo import DEFAULT_METHOD

    p, iid, other, gt = project
    assert main(["pseudo", str(p.root)]) == 0
    assert "1 pseudo-masks written" in capsys.readouterr().out
    info = p.mask_info(iid, "pseudo")
    assert info is not None and info.source == DEFAULT_METHOD
    assert image_iou(p.mask(iid, "pseudo"), gt, 2) > 0.8
    conf = p.confidence(iid, "pseudo")
    assert conf is not None and conf.shape == gt.shape and conf.max() <= 1.0
    assert p.mask_info(other, "pseudo") is None  # no strokes: skipped, nothing written


def test_pseudo_command_method_and_no_scribbles_error(project, capsys):
    p, iid, other, _ = project
    assert main(["pseudo", str(p.root), "--method", "graphcut", "--images", "disc"]) == 0
    assert p.mask_info(iid, "pseudo").source == "graphcut"
    assert main(["pseudo", str(p.root), "--images", "other"]) == 2
    err = capsys.readouterr().err
    assert "no scribbles" in err and "Traceback" not in err
    assert p.mask_info(other, "pseudo") is None
    assert main(["pseudo", str(p.root), "--method", "nope"]) == 2
    assert "valid methods" in capsys.readouterr().err


def test_preview_returns_result_and_overlay(disc):
    from segmenter.pseudo import preview

    img, gt, scr = disc
    res, ov = preview(img, scr, 2, colors=[(0, 0, 0), (255, 0, 0)], alpha=0.5)
    assert ov.shape == (*gt.shape, 3) and ov.dtype == np.uint8
    inside = (res.mask == 1) & (scr == 255)
    # foreground tinted red, strokes opaque in their colour
    assert ov[inside][:, 0].mean() > img[inside][:, 0].mean()
    assert (ov[scr == 1] == [255, 0, 0]).all()
    with pytest.raises(NoLabelsError):
        preview(img, np.full(gt.shape, 255, np.uint8), 2)


def test_preview_of_a_large_image_at_a_display_size_keeps_thin_strokes(disc):
    """``max_side``: a large image's preview is computed with its long side at most that (the
    display size); its strokes, even a one-pixel line, keep their class there."""
    import cv2

    from segmenter.pseudo import preview

    img, gt, scr = disc
    big = cv2.resize(img, (256, 192), interpolation=cv2.INTER_LINEAR)
    big_gt = cv2.resize(gt, (256, 192), interpolation=cv2.INTER_NEAREST)
    strokes = np.full((192, 256), 255, np.uint8)
    strokes[5, 10:240] = 0  # one pixel thick
    ys, xs = np.nonzero(big_gt == 1)
    strokes[int(ys.mean()), xs.min() + 5:xs.max() - 5] = 1
    res, ov = preview(big, strokes, 2, max_side=64)
    assert res.mask.shape == (48, 64) and ov.shape == (48, 64, 3)
    assert (res.mask[1, 4:58] == 0).all() and (res.mask[round(ys.mean() / 4), :] == 1).any()
    small_gt = cv2.resize(big_gt, (64, 48), interpolation=cv2.INTER_NEAREST)
    assert ((res.mask == 1) == (small_gt == 1)).mean() > 0.9
    full, ov_full = preview(big, strokes, 2)  # no max_side: full size
    assert full.mask.shape == (192, 256) and ov_full.shape == (192, 256, 3)
    assert preview(img, scr, 2, max_side=1024)[0].mask.shape == gt.shape  # smaller than max_side: as is


def test_overlay_blends_like_the_float_formula():
    from segmenter.preview import class_colors, overlay

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (30, 40)).astype(np.uint8)
    mask[:4] = 255
    cols = class_colors(3)
    for alpha in (0.0, 0.3, 0.5, 1.0):
        want = img.astype(np.float64)
        v = mask != 255
        want[v] = (1 - alpha) * want[v] + alpha * cols[mask[v]]
        got = overlay(img, mask, cols, alpha)
        assert np.abs(got.astype(int) - np.rint(want)).max() <= 1
        assert (got[:4] == img[:4]).all()  # 255: left uncoloured
    grey = overlay(img[..., 0], mask, cols, 1.0)
    assert grey.shape == (30, 40, 3) and (grey[4:] == cols[mask[4:]]).all()


def _three_regions():
    img = np.full((64, 64, 3), 40, np.uint8)
    img[10:30, 10:30] = 200
    img[35:60, 35:60] = 120
    pred = np.zeros((64, 64), np.uint8)
    pred[10:30, 10:30] = 1
    pred[35:60, 35:60] = 2
    return img, pred


@pytest.mark.parametrize("conf", [None, 0.95])
def test_a_stroke_across_a_sure_wrong_region_corrects_the_region_not_only_its_pixels(conf):
    """The prediction covers the left half of a red object; a stroke of the object runs through both
    halves. A sure prediction (or a hand-painted mask: no confidence) used to stay the prior there
    and kept the whole right half background but the stroke's own pixels; now the region the
    stroke contradicts gives way around it (no seed, no prior there) and the colour decides."""
    from segmenter.preview import contradicted, correct_prediction

    rng = np.random.default_rng(0)
    img = np.full((150, 200, 3), (60, 120, 60), np.uint8)
    img[40:110, 50:150] = (200, 40, 40)
    img = np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
    scr = np.full((150, 200), 255, np.uint8)
    scr[74:76, 60:140] = 1
    scr[10:12, 20:180] = 0
    pred = np.zeros((150, 200), np.uint8)
    pred[40:110, 50:100] = 1
    doubt = contradicted(pred, scr, 2)
    assert doubt[75, 120] and not doubt[75, 70] and not doubt[140, 10]  # the wrong region near the stroke only
    c = None if conf is None else np.full((150, 200), conf, np.float32)
    fixed = correct_prediction(img, scr, pred, 2, confidence=c).mask
    assert (fixed[45:105, 105:145] == 1).mean() > 0.9  # the right half of the object
    assert (fixed[120:, :] == 0).all() and (fixed[45:105, 55:95] == 1).all()


def test_strokes_correct_a_prediction_without_dropping_undrawn_classes():
    from annotations.errors import LabelMapError
    from segmenter.preview import correct_prediction, correction_seeds, prediction_prior
    from segmenter.pseudo import get_method, preview

    img, pred = _three_regions()
    scr = np.full((64, 64), 255, np.uint8)
    scr[15:18, 12:28] = 1  # one stroke, class 1 only
    # the plain pseudo-labeller with the prediction as prior drops class 2 (nobody drew it) ...
    plain = get_method(None)(img, scr, 3, prior=prediction_prior(pred, None, 3))
    assert (plain.mask == 2).sum() == 0
    # ... the correction keeps every predicted region no stroke contradicts
    fixed = correct_prediction(img, scr, pred, 3)
    assert np.array_equal(fixed.mask, pred)
    seeds = correction_seeds(pred, scr, 3)
    assert (seeds[35:60, 35:60] == 2).all()  # far from every stroke: the whole region, outline included
    assert (seeds[10:30, 10:30] == 255).any()  # near the stroke: the outline is found again
    res, _ = preview(img, scr, 3, prediction=pred)
    assert np.array_equal(res.mask, pred)
    # a stroke of class 1 inside the region predicted as 2: that region lends nothing around the
    # stroke (within 15 % of the long side), which flips there; the rest of the image stands
    scr2 = scr.copy()
    scr2[45:48, 40:55] = 1
    seeds = correction_seeds(pred, scr2, 3)
    assert not (seeds[40:53, 38:57] == 2).any() and (seeds[10:30, 10:30] == 1).any() and (seeds == 0).any()
    fixed = correct_prediction(img, scr2, pred, 3)
    assert (fixed.mask[43:50, 40:55] == 1).all() and (fixed.mask[scr2 != 255] == 1).all()
    assert np.array_equal(fixed.mask[:32], pred[:32])
    # a stroke in the background next to region 2 (another region) leaves region 2 alone
    scr3 = scr.copy()
    scr3[31:33, 40:55] = 1
    fixed = correct_prediction(img, scr3, pred, 3)
    assert (fixed.mask[36:60, 35:60] == 2).all()
    # region cores lent as seeds carry the prediction's confidence, the strokes 1
    conf = np.full((64, 64), 0.9, np.float32)
    fixed = correct_prediction(img, scr, pred, 3, confidence=conf)
    assert fixed.confidence[16, 20] == pytest.approx(1.0) and fixed.confidence[47, 47] == pytest.approx(0.9)
    # an unsure prediction lends no seeds: the strokes decide, with it as the prior ...
    unsure = np.full((64, 64), 0.55, np.float32)
    two = scr.copy()
    two[62, :] = 0
    assert np.array_equal(correction_seeds(pred, two, 3, confidence=unsure), two)
    fixed = correct_prediction(img, two, pred, 3, confidence=unsure)
    assert np.array_equal(fixed.mask, get_method(None)(img, two, 3, prior=prediction_prior(pred, unsure, 3)).mask)
    # ... also beside strokes of one object class (the image border is then background) ...
    assert np.array_equal(correction_seeds(pred, scr, 3, confidence=unsure), scr)
    # ... but background strokes alone would paint the whole image: then it lends anyway
    bg = np.full((64, 64), 255, np.uint8)
    bg[62, :] = 0
    assert np.array_equal(correction_seeds(pred, bg, 3, confidence=unsure), correction_seeds(pred, bg, 3))
    assert (correct_prediction(img, bg, pred, 3, confidence=unsure).mask == 2).sum() > 500
    # a thin region keeps a core; bad sizes are named
    thin = pred.copy()
    thin[2:4, 40:60] = 2
    assert (correction_seeds(thin, scr, 3)[2:4, 40:60] == 2).any()
    with pytest.raises(LabelMapError, match="prediction"):
        correct_prediction(img, scr, pred[:32], 3)


def _tiny_dataset(root, n=3):
    from conftest import make_disc_image

    for d in ("images", "masks", "scribbles/s"):
        (root / d).mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps({"name": "tiny", "classes": ["background", "object"]}))
    for i in range(n):
        img, gt, scr = make_disc_image(64, seed=i)
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(gt).save(root / "masks" / f"im{i}.png")
        Image.fromarray(scr).save(root / "scribbles" / "s" / f"im{i}.png")


def test_bench_pseudo_report_keys(tmp_path, capsys):
    _tiny_dataset(tmp_path / "tiny")
    out = tmp_path / "r.json"
    rc = main(["bench", "pseudo", "--data", str(tmp_path / "tiny"), "--scribbles", "s", "--out", str(out),
               "--methods", "hybrid,graphcut,grabcut,random_walker", "--curve"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["task"] == "pseudo" and r["dataset"] == "tiny" and r["n_images"] == 3 and r["default"]
    for name in ("hybrid", "graphcut", "grabcut", "random_walker"):
        m = r["methods"][name]
        for key in ("miou", "miou_dataset", "p50_s", "p95_s", "n", "noc85", "noc90"):
            assert key in m, (name, key)
        assert 0 <= m["noc85"] <= m["noc90"] <= 20
    assert r["methods"]["hybrid"]["miou"] > 0.8
    # simulated scribbles, and a helpful error for an unknown set
    assert main(["bench", "pseudo", "--data", str(tmp_path / "tiny"), "--scribbles", "simulated:3",
                 "--methods", "graphcut", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["methods"]["graphcut"]["miou"] > 0.7
    assert main(["bench", "pseudo", "--data", str(tmp_path / "tiny"), "--scribbles", "nope"]) == 2
    assert "known: s" in capsys.readouterr().err


def test_commands_name_the_layer_that_holds_the_strokes(tmp_path, disc, capsys):
    """An imported dataset's scribble set lands in a layer of its own name; `pseudo` and `train` on
    the default layer then say where the strokes are instead of 'no scribbles'."""
    from annotations.store import Project

    img, _, scr = disc
    p = Project.create(tmp_path / "proj", classes=["background", "object"])
    Image.fromarray(img).save(tmp_path / "disc.png")
    info = p.add_image(tmp_path / "disc.png")
    p.save_scribbles(info.id, scr, layer="real")
    for cmd in (["pseudo", str(p.root)], ["train", str(p.root), "--epochs", "1", "--size", "64", "--device", "cpu"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert "layer 'real': add --layer real." in err and "Traceback" not in err
    assert p.mask_info(info.id, "pseudo") is None
    assert main(["pseudo", str(p.root), "--layer", "real"]) == 0
    assert p.mask_info(info.id, "pseudo") is not None


def test_the_correction_script_scores_corrected_predictions_against_the_dataset(tmp_path, capsys):
    """scripts/eval_correction.py (the README's correction figures): a prediction missing half the
    disc is corrected by a simulated stroke, and the corrected masks score above the prediction."""
    import importlib.util
    import json
    from pathlib import Path

    from annotations.imageio import encode_image_png
    from annotations.store import Project
    from conftest import make_disc_image

    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "masks").mkdir()
    (ds / "meta.json").write_text(json.dumps({"name": "discs", "classes": ["background", "disc"], "ignore_index": 255}))
    p = Project.create(tmp_path / "p", classes=["background", "disc"])
    for k in range(2):
        img, gt, _ = make_disc_image(64, seed=k)
        (ds / "images" / f"d{k}.png").write_bytes(encode_image_png(img))
        (ds / "masks" / f"d{k}.png").write_bytes(encode_image_png(gt))
        info = p.add_image(encode_image_png(img), name=f"d{k}.png")
        pred = gt.copy()
        pred[:, 32:] = 0  # the right half of the disc missed
        p.save_mask(info.id, pred, "predicted", source="test", confidence=np.full(gt.shape, 0.95, np.float32))
    spec = importlib.util.spec_from_file_location("eval_correction", Path(__file__).parents[1] / "scripts" / "eval_correction.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(p.root), str(ds), "--strokes", "2"]) == 0
    out = capsys.readouterr().out
    scores = dict(part.rsplit(" ", 1) for part in out.split(": ", 1)[1].split("  "))
    assert out.startswith("2 images, 2 stroke(s)")
    assert float(scores["corrected"]) > float(scores["prediction"]) + 0.05
    assert float(scores["corrected (hand-painted)"]) > float(scores["prediction"]) + 0.05
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "scripts" / "eval_correction.py"), str(p.root),
                        str(ds), "--images", "nosuch"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "nosuch" in r.stderr  # bug hunt 44, #9c
