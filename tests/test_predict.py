"""Prediction: full-resolution masks, uncertainty, tags, tiling, TTA; into the project store; the CLI."""
import numpy as np
import pytest
import torch

from conftest import make_disc_image
from segmenter.models import ModelConfig, create_model, save_checkpoint
from segmenter.predict import Predictor, full_resolution, image_uncertainty

CLASSES = ["background", "disc"]


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    cfg = ModelConfig(classes=CLASSES, size=64)
    return Predictor(create_model(cfg), cfg, device="cpu")


def test_full_resolution_matches_a_plain_softmax_of_upsampled_logits():
    import cv2

    rng = np.random.default_rng(0)
    lo = rng.normal(0, 3, (4, 16, 16)).astype(np.float32)
    mask, conf = full_resolution(lo, 37, 53)
    up = np.stack([cv2.resize(c, (53, 37), interpolation=cv2.INTER_LINEAR) for c in lo])
    p = np.exp(up - up.max(0))
    p /= p.sum(0)
    assert mask.shape == (37, 53) and mask.dtype == np.uint8
    assert np.array_equal(mask, p.argmax(0))
    assert np.allclose(conf, p.max(0), atol=1e-5)


def test_uncertainty_orders_sure_and_unsure_maps():
    sure = np.zeros((3, 4, 4))
    sure[1] = 1
    unsure = np.full((3, 4, 4), 1 / 3)
    assert image_uncertainty(sure)[0] < 0.01 < 0.99 < image_uncertainty(unsure)[0]
    assert image_uncertainty(sure)[1] > 0.99 and image_uncertainty(unsure)[1] < 0.01


def test_predictions_at_full_resolution_for_mixed_images(predictor):
    gray = make_disc_image(80, rgb=False)[0]
    rgb = make_disc_image(64, seed=1)[0]
    big = np.zeros((150, 230, 3), np.uint8)
    preds = predictor.predict([gray, rgb, big])
    assert [p.mask.shape for p in preds] == [(80, 80), (64, 64), (150, 230)]
    for p in preds:
        assert p.confidence.dtype == np.float32 and 0.5 <= p.confidence.min() <= p.confidence.max() <= 1
        assert 0 <= p.uncertainty <= 1
    # a class tagged absent is never predicted
    sup = predictor.predict([rgb, rgb], absent=[[1], [0]])
    assert (sup[0].mask == 0).all() and (sup[1].mask == 1).all()


def test_tiling_and_tta(predictor):
    img = make_disc_image(64, seed=2)[0]
    big = np.concatenate([img, img[:, ::-1]], 1)[:, :100]  # 64 x 100
    tiled = Predictor(predictor.model, predictor.cfg, mode="tile")
    assert tiled.predict([big])[0].mask.shape == (64, 100)
    assert tiled.predict([img[:40, :50]])[0].mask.shape == (40, 50)  # smaller than a tile: padded
    tta = Predictor(predictor.model, predictor.cfg, tta=True)
    a = predictor.logits_batch([img])[0]
    b = tta.logits_batch([img])[0]
    flip = predictor.logits_batch([img[:, ::-1].copy()])[0][:, :, ::-1]
    assert np.allclose(b, (a + flip) / 2, atol=1e-4)


def _project(tmp_path, classes=CLASSES, n=4, labels=True):
    from annotations.imageio import encode_image_png
    from annotations.store import Project

    p = Project.create(tmp_path / "proj", classes=classes)
    for k in range(n):
        img, gt, scr = make_disc_image(64, seed=k, rgb=k % 2 == 0)
        info = p.add_image(encode_image_png(img), name=f"d{k}.png")
        if labels:
            if k == 0:
                p.save_mask(info.id, gt, "final", source="test")
            else:
                p.save_scribbles(info.id, scr)
    return p


def test_train_and_predict_commands_write_predicted_masks(tmp_path, capsys):
    from segmenter.cli import main

    p = _project(tmp_path)
    p.set_tag(p.image_by_name("d3").id, 1, "absent")
    rc = main(["train", str(p.root), "--size", "64", "--epochs", "1", "--batch-size", "4", "--name", "m",
               "--device", "cpu", "--quiet"])
    assert rc == 0 and (p.models_dir / "m.safetensors").is_file() and (p.models_dir / "m.json").is_file()
    rc = main(["predict", str(p.root), "--device", "cpu", "--images", "d1", "d3", "--tta", "--batch-size", "1"])
    assert rc == 0
    out, err = capsys.readouterr()
    assert "2 masks predicted with model m-" in out and "annotate these next" in out
    # not a terminal: the last count only ("predicted 1/2\rpredicted 2/2" ran together in a log; bug hunt 44)
    assert "predicted 2/2" in err and "predicted 1/2" not in err
    info = p.mask_info(p.image_by_name("d1").id, "predicted")
    assert info.model_version.startswith("m-") and 0 <= info.uncertainty <= 1
    assert p.confidence(info.image_id, "predicted").shape == (64, 64)
    assert (p.mask(p.image_by_name("d3").id, "predicted") == 0).all()  # disc tagged absent
    assert p.mask_info(p.image_by_name("d0").id, "predicted") is None  # not selected
    # bad input, refused before any work, one line each
    models = sorted(x.name for x in p.models_dir.iterdir())
    for argv, word in [(["train", str(p.root), "--name", "m"], "exists already"),
                       (["train", str(p.root), "--name", "../escaped"], "plain file name"),
                       (["predict", str(p.root), "--batch-size", "0"], "batch size"),
                       # bug hunt 43, #5: --images silently won over --status; a selection of nothing, --top -1
                       (["predict", str(p.root), "--images", "d0", "--status", "untouched"], "would be ignored"),
                       (["predict", str(p.root), "--status", "untouched"], "no image with status 'untouched'"),
                       (["predict", str(p.root), "--top", "-1"], "must be 0 or more"),
                       # bug hunt 44, #12a: "no image image set 'x' ... (a status is ...)"
                       (["predict", str(p.root), "--image-set", "nosuch"], "no image set named 'nosuch' (known: ")]:
        assert main(argv + ["--device", "cpu"]) == 2, argv
        assert word in capsys.readouterr().err
    assert main(["predict", str(p.root), "--device", "cpu", "--images", "d0", "--top", "0"]) == 0
    assert "most uncertain" not in capsys.readouterr().out  # --top 0: none listed, no empty heading
    assert sorted(x.name for x in p.models_dir.iterdir()) == models
    assert not (p.root / "escaped.safetensors").exists()


def test_train_names_the_layer_its_strokes_are_in(tmp_path, capsys):
    """Strokes in another layer than --layer: training runs on the other labels and says where the
    strokes are (an import puts a dataset's scribble set in a layer of its own name)."""
    from segmenter.cli import main

    p = _project(tmp_path, labels=False)
    img, gt, scr = make_disc_image(64, seed=0)
    ids = p.image_ids()
    p.save_mask(ids[0], gt, "final", source="test")
    p.save_scribbles(ids[1], scr, layer="sim")
    assert main(["train", str(p.root), "--size", "64", "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    assert "layer 'default' is empty" in capsys.readouterr().err
    assert main(["train", str(p.root), "--layer", "sim", "--size", "64", "--epochs", "1", "--rounds", "1",
                 "--device", "cpu", "--quiet"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_train_resume_of_a_checkpoint_that_has_its_epochs_exits_2(tmp_path, capsys):
    """--epochs is the total: resuming a checkpoint that already has that many trains nothing, and
    says so (it printed 'model None (1 epochs, ...)' and exited 0)."""
    from segmenter.cli import main

    p = _project(tmp_path)
    cfg = ModelConfig(classes=CLASSES, size=64)
    save_checkpoint(p.models_dir / "m", create_model(cfg), cfg, state={"epoch": 1})
    before = (p.models_dir / "m.safetensors").read_bytes()
    for epochs, have in (("1", "1 of 1 epochs"), ("0", "1 epochs, more than --epochs 0")):
        assert main(["train", str(p.root), "--epochs", epochs, "--resume", "latest", "--device", "cpu",
                     "--quiet"]) == 2
        out, err = capsys.readouterr()
        assert not out and len(err.splitlines()) == 1, err
        assert f"checkpoint 'm' already has {have}: nothing to train" in err and "raise it above 1" in err
    assert (p.models_dir / "m.safetensors").read_bytes() == before


def test_predict_names_the_layer_its_strokes_are_in(tmp_path, capsys):
    """Strokes only in other layers (a dataset import's set1/set2): predict stores uncorrected
    predictions, and says so as train does, naming the layers and --layer."""
    from segmenter.cli import main

    p = _project(tmp_path, labels=False)
    ids = p.image_ids()
    for k, layer in ((1, "set1"), (2, "set2")):
        p.save_scribbles(ids[k], make_disc_image(64, seed=k, rgb=k % 2 == 0)[2], layer=layer)
    cfg = ModelConfig(classes=CLASSES, size=64)
    torch.manual_seed(0)
    save_checkpoint(p.models_dir / "raw", create_model(cfg), cfg)
    assert main(["predict", str(p.root), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    note = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(note) == 1, err
    assert "not corrected by any strokes" in note[0] and "layer 'set1', 'set2': add --layer set1" in note[0]
    assert p.mask_info(ids[1], "predicted").source == "model:unet/resnet18"
    assert main(["predict", str(p.root), "--device", "cpu", "--layer", "set1"]) == 0
    assert "note:" not in capsys.readouterr().err
    # the untrained model fails the strokes drawn before it was saved: they alone make the mask
    assert p.mask_info(ids[1], "predicted").source.startswith("hybrid(strokes; ")
    assert main(["predict", str(p.root), "--device", "cpu", "--ignore-scribbles"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_predictions_of_scribbled_images_keep_the_strokes(tmp_path, capsys):
    """An untrained model predicts anything; on an image with strokes the stored prediction is
    corrected by them (every stroke pixel keeps its class: an export never contradicts what a
    person drew), unless --ignore-scribbles asks for the model's own output. Where the model
    contradicts the strokes it was trained on (drawn before it was saved), the strokes alone make
    the mask; strokes drawn after it are corrections of its mask."""
    from segmenter.cli import main
    from segmenter.pseudo import get_method

    p = _project(tmp_path)
    torch.manual_seed(0)
    cfg = ModelConfig(classes=CLASSES, size=64)
    model = create_model(cfg)
    save_checkpoint(p.models_dir / "raw", model, cfg)
    d1, d0 = p.image_by_name("d1").id, p.image_by_name("d0").id  # d1 scribbled, d0 a final mask only
    raw = Predictor(model, cfg, device="cpu").predict([p.load_image(d1)])[0].mask
    scr = p.scribbles(d1)
    drawn = scr != 255
    assert (raw[drawn] != scr[drawn]).mean() > 0.05  # the untrained model fails the strokes it "trained" on
    assert main(["predict", str(p.root), "--device", "cpu", "--model", "raw"]) == 0
    assert "3 image(s) where the model contradicts more than 5% of the strokes it was trained on" in capsys.readouterr().out
    assert np.array_equal(p.mask(d1, "predicted"), get_method(None)(p.load_image(d1), scr, 2).mask)
    assert p.mask_info(d1, "predicted").source.startswith("hybrid(strokes; model:unet/resnet18 contradicts ")
    # its uncertainty is the strokes' mask's, not the untrained model's (near 1, first in review)
    probs = get_method(None)(p.load_image(d1), scr, 2).probs
    assert p.mask_info(d1, "predicted").uncertainty == pytest.approx(image_uncertainty(probs)[0], abs=1e-6)
    assert p.mask_info(d1, "predicted").uncertainty < p.mask_info(d0, "predicted").uncertainty
    assert p.mask_info(d0, "predicted").source == "model:unet/resnet18"
    # the same strokes drawn on an image after the model was saved: a correction of its mask
    d0_scr = p.scribbles(d1)
    p.save_scribbles(d0, d0_scr)
    assert main(["predict", str(p.root), "--device", "cpu", "--model", "raw", "--images", "d0"]) == 0
    assert "contradicts" not in capsys.readouterr().out
    assert np.array_equal(p.mask(d0, "predicted")[drawn], scr[drawn])
    assert p.mask_info(d0, "predicted").source == "model:unet/resnet18+hybrid(strokes)"
    capsys.readouterr()
    assert main(["predict", str(p.root), "--device", "cpu", "--model", "raw", "--ignore-scribbles"]) == 0
    raw = Predictor(model, cfg, device="cpu").predict([p.load_image(d1)])[0].mask
    assert np.array_equal(p.mask(d1, "predicted"), raw)
    assert p.mask_info(d1, "predicted").source == "model:unet/resnet18"
    # strokes in another layer are not this layer's
    assert main(["predict", str(p.root), "--device", "cpu", "--model", "raw", "--layer", "other"]) == 0
    assert p.mask_info(d1, "predicted").source == "model:unet/resnet18"


def test_commands_refuse_bad_projects_with_one_line(tmp_path, capsys):
    from annotations.store import Project
    from segmenter.cli import main

    p = _project(tmp_path, labels=False)
    assert main(["train", str(p.root), "--size", "64", "--device", "cpu"]) == 2
    assert "no image has any label" in capsys.readouterr().err
    assert main(["predict", str(p.root), "--device", "cpu"]) == 2
    assert "no trained model" in capsys.readouterr().err
    one = Project.create(tmp_path / "one", classes=["background"])
    assert main(["train", str(one.root), "--size", "64", "--device", "cpu"]) == 2
    assert "at least two classes" in capsys.readouterr().err
    # a model trained for other classes is refused
    cfg = ModelConfig(classes=["background", "cat"], size=64)
    save_checkpoint(p.models_dir / "cats", create_model(cfg), cfg)
    assert main(["predict", str(p.root), "--device", "cpu", "--model", "cats"]) == 2
    assert "trained for classes" in capsys.readouterr().err
    good = ModelConfig(classes=CLASSES, size=64)
    save_checkpoint(p.models_dir / "broken", create_model(good), good)
    (p.models_dir / "broken.safetensors").write_bytes(b"garbage")
    assert main(["predict", str(p.root), "--device", "cpu", "--model", "broken"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_classes_rename_keeps_the_projects_models_usable(tmp_path, capsys):
    from segmenter.cli import main
    from segmenter.models import ModelConfig, create_model, read_config, save_checkpoint

    p = _project(tmp_path, labels=False)
    cfg = ModelConfig(classes=p.class_names, size=32)
    save_checkpoint(p.models_dir / "m", create_model(cfg), cfg)
    p.close()
    assert main(["classes", str(tmp_path / "proj"), "rename", "1", "horse"]) == 0
    assert read_config(tmp_path / "proj" / "models" / "m.json")["config"]["classes"][1] == "horse"
    assert main(["predict", str(tmp_path / "proj"), "--device", "cpu", "--model", "m"]) == 0


def test_a_model_is_distrusted_only_on_strokes_it_trained_on_that_make_a_whole_mask():
    from segmenter.predict import DISTRUST_ERROR, distrusted_on

    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    strokes = np.full((20, 20), 255, np.uint8)
    strokes[8:12, 8] = 1  # inside the predicted square: agrees
    strokes[0, :] = 0
    assert distrusted_on(mask, strokes, strokes, 2) is None  # agrees with every stroke
    wrong = strokes.copy()
    wrong[10, 0:4] = 1  # 4 of 28 stroke pixels the mask calls background
    assert distrusted_on(mask, wrong, wrong, 2) == pytest.approx(4 / 28) and 4 / 28 > DISTRUST_ERROR
    assert distrusted_on(mask, None, wrong, 2) is None  # drawn after the model: a correction
    later = strokes.copy()  # the model trained on the agreeing strokes; the wrong ones came later
    assert distrusted_on(mask, later, wrong, 2) is None
    # strokes of one class only do not make a whole mask: the model's other class stays
    only_bg = np.full((20, 20), 255, np.uint8)
    only_bg[10, 5:9] = 0
    assert distrusted_on(mask, only_bg, only_bg, 2) is None
    # strokes the person has since erased do not count
    erased = np.full((20, 20), 255, np.uint8)
    assert distrusted_on(mask, wrong, erased, 2) is None


def test_missed_tagged_names_the_tagged_classes_the_model_drops_and_the_tags_mask_shows():
    from segmenter.predict import missed_tagged

    tags_mask = np.zeros((20, 20), np.uint8)
    tags_mask[5:10, 5:10] = 1  # 25 of 400 px: shows
    tags_mask[0, 0] = 2  # 1 px: below the 1 % a class needs to show
    model = np.zeros((20, 20), np.uint8)
    tags = {0: "present", 1: "present", 2: "present"}
    assert missed_tagged(model, tags, tags_mask, 3) == [1]
    assert missed_tagged(tags_mask, tags, tags_mask, 3) == []  # the model shows it
    assert missed_tagged(model, {0: "present"}, tags_mask, 3) == []  # 1 is not tagged present
    # the tags' mask shows a class tagged absent since: stale, never preferred
    assert missed_tagged(model, {0: "present", 1: "present", 2: "absent"}, np.where(tags_mask == 0, 2, tags_mask), 3) == []
    # an unlabelled (255) pixel counts for no class
    assert missed_tagged(model, tags, np.where(tags_mask == 1, 255, tags_mask).astype(np.uint8), 3) == []


def test_predict_keeps_the_tags_mask_where_the_model_drops_a_tagged_class(tmp_path, capsys):
    """A tags-only project: a model that sees only background (as one trained on tag pseudo-masks
    drops the small classes) does not replace the tag pseudo-mask of an image tagged with the
    disc; an image whose tags' mask has no disc, one with strokes and --ignore-scribbles keep
    the model's own output."""
    from segmenter.cli import main

    p = _project(tmp_path, labels=False)
    ids = p.image_ids()
    cfg = ModelConfig(classes=CLASSES, size=64)
    torch.manual_seed(0)
    model = create_model(cfg)
    head = model.segmentation_head[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0, -5.0]))  # background everywhere
    save_checkpoint(p.models_dir / "bg", model, cfg)
    gts = [make_disc_image(64, seed=k, rgb=k % 2 == 0)[1] for k in range(4)]
    conf = np.full((64, 64), 0.8, np.float32)
    for k in (0, 1, 2):
        p.set_tag(ids[k], 0, "present")
        p.set_tag(ids[k], 1, "present" if k < 2 else "absent")
        tags_mask = gts[k] if k < 2 else np.zeros_like(gts[k])
        p.save_mask(ids[k], tags_mask, "pseudo", source="tags:cam-resnet18+em+colour+pamr", confidence=conf)
    p.save_scribbles(ids[1], make_disc_image(64, seed=1, rgb=False)[2])  # d1 has strokes: the strokes rule
    assert main(["predict", str(p.root), "--device", "cpu", "--model", "bg"]) == 0
    out = capsys.readouterr().out
    assert "1 image(s) where the model misses a class tagged present that the tags' pseudo-mask shows" in out
    assert "d0.png" in out.split("tags' pseudo-mask shows")[1].splitlines()[0]
    assert np.array_equal(p.mask(ids[0], "predicted"), gts[0])
    assert p.mask_info(ids[0], "predicted").source == "tags:cam-resnet18+em+colour+pamr(model:unet/resnet18 misses disc)"
    assert np.allclose(p.confidence(ids[0], "predicted"), 0.8, atol=0.01)
    assert not p.mask(ids[2], "predicted").any()  # disc tagged absent: nothing missed
    assert not p.mask(ids[3], "predicted").any()  # no tags' mask
    assert not p.mask_info(ids[1], "predicted").source.startswith("tags:")
    assert main(["predict", str(p.root), "--device", "cpu", "--model", "bg", "--ignore-scribbles"]) == 0
    assert "tags' pseudo-mask" not in capsys.readouterr().out
    assert not p.mask(ids[0], "predicted").any()
    assert p.mask_info(ids[0], "predicted").source == "model:unet/resnet18"


def test_train_resume_with_a_new_name_keeps_the_checkpoint_and_refuses_other_model_options(tmp_path, capsys):
    """``train --resume m1 --name m2`` overwrote m1 (the name and --size were ignored): it now
    continues into m2 and leaves m1 as it was; --size (or --arch, ...) other than the checkpoint's is
    refused in one line instead of being dropped (bug hunt 43, #1)."""
    from segmenter.cli import main

    p = _project(tmp_path)
    args = ["--device", "cpu", "--quiet", "--rounds", "1"]
    assert main(["train", str(p.root), "--name", "m1", "--size", "64", "--epochs", "1", *args]) == 0
    before = (p.models_dir / "m1.safetensors").read_bytes()
    assert main(["train", str(p.root), "--resume", "m1", "--size", "96", "--epochs", "2", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--size 96: the checkpoint 'm1' has size 64" in err
    assert main(["train", str(p.root), "--resume", "m1", "--name", "m2", "--epochs", "2", *args]) == 0
    assert (p.models_dir / "m1.safetensors").read_bytes() == before
    assert (p.models_dir / "m2.safetensors").is_file()
    from segmenter.models import read_config

    assert int(read_config(p.models_dir / "m2.safetensors")["state"]["epoch"]) == 2
    # a name that a model has already is refused as without --resume
    assert main(["train", str(p.root), "--resume", "m1", "--name", "m2", "--epochs", "3", *args]) == 2
    assert "a model named 'm2' exists already" in capsys.readouterr().err


def test_a_resumed_run_keeps_the_training_settings_of_its_checkpoint(tmp_path, capsys):
    """A resumed run took the default --rounds (and --lr, ...) instead of the checkpoint's, and its
    last line counted the checkpoint's epochs as if trained now (hunt 43, left): it now goes on with
    the checkpoint's settings unless given, says so, and says how many epochs this run trained."""
    from segmenter.cli import main
    from segmenter.models import read_config

    p = _project(tmp_path)
    args = ["--device", "cpu", "--quiet", "--size", "64"]
    assert main(["train", str(p.root), "--name", "m1", "--epochs", "1", "--rounds", "1", "--lr", "5e-4",
                 *args]) == 0
    capsys.readouterr()
    assert main(["train", str(p.root), "--resume", "m1", "--epochs", "2", "--quiet", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "note: continuing with the checkpoint's --lr 0.0005, --rounds 1" in err
    assert "(2 epochs, 1 in this run," in out
    cfg = read_config(p.models_dir / "m1.safetensors")["state"]["train_config"]
    assert cfg["rounds"] == 1 and cfg["lr"] == 5e-4
    # an option given wins over the checkpoint's
    assert main(["train", str(p.root), "--resume", "m1", "--epochs", "3", "--lr", "1e-4", "--quiet",
                 "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "--rounds 1" in err and "--lr" not in err
    assert read_config(p.models_dir / "m1.safetensors")["state"]["train_config"]["lr"] == 1e-4


def test_train_says_when_the_epochs_leave_no_room_for_every_round(tmp_path, capsys):
    """``--epochs 2 --rounds 4`` ran one refinement, ``--epochs 1 --rounds 3`` none, and nothing said
    so (bug hunt 43, #4): the run now notes how many the epochs left room for."""
    from segmenter.cli import main
    from segmenter.commands.train import rounds_note

    assert rounds_note(4, 2, [1], 3).startswith("note: 4 rounds (--rounds) ask for 3 refinements of the "
                                                "pseudo-masks, but 2 epoch(s) left room for 1 (after epoch 1)")
    assert "left room for none;" in rounds_note(3, 1, [], 3)
    assert rounds_note(3, 10, [5, 8], 3) == "" and rounds_note(3, 1, [], 0) == "" and rounds_note(1, 1, [], 3) == ""
    p = _project(tmp_path)  # one final mask, three images with strokes
    assert main(["train", str(p.root), "--size", "64", "--epochs", "1", "--rounds", "3", "--device", "cpu",
                 "--quiet"]) == 0
    assert "note: 3 rounds (--rounds) ask for 2 refinements of the pseudo-masks, but 1 epoch(s) left room for " \
        "none" in capsys.readouterr().err


def test_the_default_model_is_the_newest_made_for_the_projects_classes(tmp_path):
    """Predict without --model took the newest checkpoint even when it was made for other classes
    (a class added while it trained) and failed, though an older model fitted (bug hunt 45)."""
    import json
    import os

    from annotations.store import Project
    from segmenter.errors import SegmenterError
    from segmenter.predict import resolve_model

    p = Project.create(tmp_path / "p", ["background", "horse"])
    with pytest.raises(SegmenterError, match="no trained model"):
        resolve_model(p, None)
    p.models_dir.mkdir(exist_ok=True)
    for k, (name, classes) in enumerate([("old", ["background", "horse"]), ("new", ["background", "Horse"])]):
        (p.models_dir / f"{name}.safetensors").write_bytes(b"")
        (p.models_dir / f"{name}.json").write_text(json.dumps({"config": {"classes": classes}}))
        os.utime(p.models_dir / f"{name}.json", (1000 + k, 1000 + k))
    assert resolve_model(p, None).name == "old.safetensors"
    assert resolve_model(p, "new").name == "new.safetensors"  # asked for by name: that one
    (p.models_dir / "old.json").unlink()  # none fits: the newest (its load names the mismatch)
    assert resolve_model(p, None).name == "new.safetensors"
