"""Training and prediction from the app (background jobs over segmenter.train / predict)."""
from __future__ import annotations

import numpy as np
import pytest

from annotations.errors import AnnotationError
from annotations.imageio import encode_image_png
from annotations.store import Project
from app import handlers, jobs, training
from conftest import make_disc_image


def test_split_validation():
    assert training.split_validation([1, 2]) == []
    assert training.split_validation([1, 2, 3]) == [3]
    held = training.split_validation(list(range(1, 21)))
    assert len(held) == 4 and set(held) <= set(range(1, 21))


def test_start_training_checks_settings(tmp_path):
    p = Project.create(tmp_path / "p")
    with pytest.raises(AnnotationError):
        training.start_training(p, epochs=0)
    with pytest.raises(AnnotationError):
        training.start_training(p, epochs=1, size=100)


def _disc_project(root, n: int, finals: int, scribbled: int) -> Project:
    """``n`` 64 px discs d0.png ...: the first ``finals`` with a final mask, the next ``scribbled``
    with strokes, the rest unlabelled."""
    p = Project.create(root)
    for i in range(n):
        img, gt, scr = make_disc_image(64, seed=i)
        info = p.add_image(encode_image_png(img), name=f"d{i}.png")
        if i < finals:
            p.save_mask(info.id, gt, "final", source="test")
        elif i < finals + scribbled:
            p.save_scribbles(info.id, scr)
    return p


@pytest.mark.slow
def test_train_then_predict_in_the_background(tmp_path):
    """One short epoch on 64 px discs: progress reaches the end, a validation mIoU is reported,
    then every image without a final mask gets a predicted mask with an uncertainty."""
    p = _disc_project(tmp_path / "p", 6, finals=3, scribbled=2)
    job = training.start_training(p, epochs=1, size=64)
    job.thread.join(240)
    snap = job.snapshot()
    assert snap["status"] == "done", snap["message"]
    assert snap["fraction"] == 1.0 and snap["losses"] and snap["val_miou"] is not None
    assert 0.0 <= snap["val_miou"] <= 1.0 and "validation mIoU" in snap["message"]
    assert snap["message"].endswith("on 1 held-out final mask."), snap["message"]  # one of the three held out
    assert list(p.models_dir.glob("*.safetensors"))
    job = training.start_predict(p)
    job.thread.join(120)
    snap = job.snapshot()
    assert snap["status"] == "done", snap["message"]
    # one epoch: where the model fails the strokes it trained on, the message says their masks are the strokes'
    led = [i for i in p.image_ids()[3:5] if p.mask_info(i, "predicted").source.startswith("hybrid(strokes;")]
    assert (f"On {len(led)} image(s) you drew on" in snap["message"]) == bool(led), snap["message"]
    st = p.statuses()
    assert [st[i] for i in p.image_ids()] == ["final"] * 3 + ["predicted"] * 3
    assert all(p.mask_info(i, "predicted").uncertainty is not None for i in p.image_ids()[3:])
    assert handlers.next_most_uncertain(p, None) in p.image_ids()[3:]
    assert "width:100.0%" in jobs.progress_html(snap)


def _tagged_project(root, n=6):
    """Discs (object present) and plain dark textures (object absent), every image tagged."""
    p = Project.create(root, classes=["background", "object"])
    rng = np.random.default_rng(0)
    for i in range(n):
        if i % 2 == 0:
            img, _, _ = make_disc_image(64, seed=i)
        else:
            img = np.clip(60 + rng.normal(0, 18, (64, 64, 3)), 0, 255).astype(np.uint8)
        info = p.add_image(encode_image_png(img), name=f"t{i}.png")
        p.set_tag(info.id, 1, "present" if i % 2 == 0 else "absent")
    return p


def test_masks_from_tags_need_a_tag_first(tmp_path):
    p = Project.create(tmp_path / "p")
    img, _, _ = make_disc_image(64)
    p.add_image(encode_image_png(img), name="a.png")
    with pytest.raises(AnnotationError, match="No image has a tag"):
        training.start_tags(p)
    with pytest.raises(AnnotationError, match="size"):
        training.start_tags(p, size=100)
    assert p.mask_info(p.image_ids()[0], "pseudo") is None


def test_masks_from_tags_in_the_background(tmp_path):
    """The app's 'Masks from tags' job: every tagged image gets a pseudo-mask from the tag
    pipeline, its strokes kept; the status list shows them as pseudo."""
    p = _tagged_project(tmp_path / "p")
    first = p.image_ids()[0]
    scr = np.full((64, 64), 255, np.uint8)
    scr[:2, :2] = 0  # a background stroke in the disc image's corner
    p.save_scribbles(first, scr)
    job = training.start_tags(p, size=64)
    job.thread.join(240)
    snap = job.snapshot()
    assert snap["status"] == "done", snap["message"]
    assert snap["fraction"] == 1.0 and snap["epochs"] >= 2 and snap["losses"]
    assert "saved 6 pseudo-masks" in snap["message"]
    for i in p.image_ids():
        info = p.mask_info(i, "pseudo")
        assert info is not None and info.source.startswith("tags:cam")
    assert (p.mask(first, "pseudo")[:2, :2] == 0).all()
    assert not (p.mask(p.image_ids()[1], "pseudo") == 1).any()  # tagged absent: never the object
    assert set(p.statuses().values()) == {"pseudo"}


def test_cancelled_masks_from_tags_save_nothing(tmp_path):
    p = _tagged_project(tmp_path / "p")
    job = training.start_tags(p, size=64)
    jobs.cancel_job(str(p.root))
    job.thread.join(240)
    snap = job.snapshot()
    assert snap["status"] == "cancelled" and "no pseudo-mask" in snap["message"]
    assert all(p.mask_info(i, "pseudo") is None for i in p.image_ids())


def test_the_epochs_box_and_predict_without_a_model_are_refused_with_a_reason(tmp_path):
    assert training.epochs_from_page(3) == 3 and training.epochs_from_page("7") == 7
    for bad, word in [(None, "enter a number"), ("", "enter a number"), (0, "1 to 1000"), (-3, "1 to 1000"),
                      (2.5, "whole number"), ("x", "whole number")]:
        with pytest.raises(AnnotationError, match=word):
            training.epochs_from_page(bad)
    # the number as typed, not in exponent notation ("not 1e+06")
    for bad, shown in [(1000000, "not 1000000."), (1e6, "not 1000000."), (0.0001, "not 0.0001."), (2.5, "not 2.5.")]:
        with pytest.raises(AnnotationError) as e:
            training.epochs_from_page(bad)
        assert str(e.value).endswith(shown), str(e.value)
    p = Project.create(tmp_path / "p")
    with pytest.raises(AnnotationError, match="No trained model yet"):
        training.start_predict(p)


def test_the_loss_caption_reads_first_to_last():
    html_ = jobs.progress_html({"kind": "training", "status": "done", "fraction": 1.0,
                                "losses": [(0, 1.0), (1, 2.0), (2, 0.5)]})
    assert "loss 1.000 → 0.500" in html_


def test_masks_from_tags_that_show_one_class_are_refused_with_the_reason(tmp_path, monkeypatch):
    """The app's job saved pseudo-masks of one class everywhere (nothing learned from a few tagged
    images); now the job fails with the reason and what helps, and saves nothing."""
    from segmenter import cam

    p = Project.create(tmp_path / "p", classes=["background", "object"])
    for i in range(4):
        img, _, _ = make_disc_image(64, seed=i)
        info = p.add_image(encode_image_png(img), name=f"t{i}.png")
        p.set_tag(info.id, 0, "present")
        p.set_tag(info.id, 1, "present")
    real = cam.run_tags

    def one_class(images, tags, num_classes, config=None, **kw):
        res = real(images, tags, num_classes, cam.TagConfig(size=64, epochs=1), **kw)
        res.masks = [np.ones(m.shape, np.uint8) for m in res.masks]
        return res

    monkeypatch.setattr(cam, "run_tags", one_class)
    job = training.start_tags(p, size=64)
    job.thread.join(240)
    snap = job.snapshot()
    assert snap["status"] == "failed", snap
    assert snap["message"].startswith("the tag classifier could not tell the classes apart on 4 of the 4 images")
    assert "Traceback" not in snap["message"] and "\n" not in snap["message"]
    assert all(p.mask_info(i, "pseudo") is None for i in p.image_ids())


def _fake_checkpoint(p: Project, name: str, classes: list[str], saved: str) -> None:
    """A checkpoint's files as training leaves them (only the JSON is read to name it)."""
    import json

    from segmenter.models import FORMAT

    p.models_dir.mkdir(parents=True, exist_ok=True)
    (p.models_dir / f"{name}.json").write_text(json.dumps({"format": FORMAT, "saved": saved,
                                                           "config": {"classes": classes}}))
    (p.models_dir / f"{name}.safetensors").write_bytes(b"")


def test_the_train_panel_names_the_model_predict_will_use(tmp_path):
    """After a restart the panel said "Not trained yet in this session" although Predict would use
    the project's newest model: it names that model and when it was trained."""
    p = Project.create(tmp_path / "p", classes=["background", "horse"])
    assert "No trained model yet" in training.panel_html(p)
    _fake_checkpoint(p, "app-unet-resnet18-20261202-071108", ["background", "horse"], "2026-12-02T07:11:23")
    html_ = training.panel_html(p)
    assert "Not trained yet" not in html_
    assert "Predict will use model app-unet-resnet18-20261202-071108, trained 2026-12-02 07:11." in html_
    p.add_class("rider")
    assert "train again before predicting" in training.model_line(p)


def test_a_failed_jobs_message_goes_once_the_project_changed(tmp_path, monkeypatch):
    """A failed job's message stayed in the Train panel after its cause was gone (the classes were
    put right): it stays while the classes and images are as they were when it failed, and gives
    way to the model line once they change; a new job replaces it too."""
    p = Project.create(tmp_path / "p", classes=["background", "horse"])
    p.add_image(encode_image_png(make_disc_image(32)[0]), name="a.png")
    _fake_checkpoint(p, "m1", ["background", "horse"], "2026-12-02T07:11:23")

    def failing(project):
        def run(job):
            raise AnnotationError("m1 was trained for classes ['background', 'horse'], but the project has "
                                  "['background', 'pony']; train a new model for these classes.")
        return run

    monkeypatch.setattr(training, "predict_target", failing)
    job = training.start_predict(p)
    job.thread.join(30)
    assert job.snapshot()["status"] == "failed"
    assert "train a new model" in training.panel_html(p) and "data-status='failed'" in training.panel_html(p)
    p.recolor_class(1, "#00ff00")  # nothing the failure was about
    assert "train a new model" in training.panel_html(p)
    p.rename_class(1, "pony")
    html_ = training.panel_html(p)
    assert "train a new model" not in html_ and "Predict will use model m1" in html_


def test_predict_in_the_app_says_where_the_tags_mask_stays(tmp_path):
    """A model that drops the tagged object (as one trained on tag masks drops small classes):
    Predict keeps the tags' mask of the image tagged with it, and the message says so."""
    import torch

    from segmenter.models import ModelConfig, create_model, save_checkpoint

    p = _tagged_project(tmp_path / "p", n=2)
    cfg = ModelConfig(classes=p.class_names, size=64)
    model = create_model(cfg)
    with torch.no_grad():
        model.segmentation_head[0].weight.zero_()
        model.segmentation_head[0].bias.copy_(torch.tensor([5.0, -5.0]))
    save_checkpoint(p.models_dir / "bg", model, cfg)
    disc, plain = p.image_ids()
    gt = make_disc_image(64, seed=0)[1]
    p.save_mask(disc, gt, "pseudo", source="tags:cam-resnet18+em+colour+pamr")
    p.save_mask(plain, np.zeros_like(gt), "pseudo", source="tags:cam-resnet18+em+colour+pamr")
    job = training.start_predict(p)
    job.thread.join(120)
    snap = job.snapshot()
    assert snap["status"] == "done", snap["message"]
    assert "On 1 image(s) the model misses a class you tagged present" in snap["message"], snap["message"]
    assert np.array_equal(p.mask(disc, "predicted"), gt)
    assert not p.mask(plain, "predicted").any()


def test_predict_in_the_app_names_images_whose_file_is_gone(tmp_path):
    import torch

    from segmenter.models import ModelConfig, create_model, save_checkpoint

    p = _tagged_project(tmp_path / "p", n=3)
    cfg = ModelConfig(classes=p.class_names, size=64)
    torch.manual_seed(0)
    save_checkpoint(p.models_dir / "m", create_model(cfg), cfg)
    gone = p.image_info(p.image_ids()[1])
    (p.root / gone.file).unlink()
    job = training.start_predict(p)
    job.thread.join(120)
    snap = job.snapshot()
    assert snap["status"] == "done", snap["message"]
    assert f"Skipped 1 image(s) whose file is missing or unreadable ({gone.name})" in snap["message"]
    assert p.mask_info(gone.id, "predicted") is None
    assert all(p.mask_info(i, "predicted") is not None for i in p.image_ids() if i != gone.id)


def test_training_in_the_app_leaves_out_images_whose_file_is_gone(tmp_path):
    """A final-mask image whose file was deleted outside the tool: the job trains and validates
    without it (validation read its file and failed the job at the end) and says so."""
    p = _disc_project(tmp_path / "p", 5, finals=3, scribbled=2)
    gone = p.image_info(p.image_ids()[0])
    (p.root / gone.file).unlink()
    job = training.start_training(p, epochs=1, size=64)
    job.thread.join(240)
    snap = job.snapshot()
    assert snap["status"] == "done", snap["message"]
    assert "validation mIoU" in snap["message"]
    assert snap["message"].endswith("Left out 1 image(s) whose file is missing or damaged (d0.png): put the files back, or "
                                    "remove those images."), snap["message"]
