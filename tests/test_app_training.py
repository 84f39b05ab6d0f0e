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


@pytest.mark.slow
def test_train_then_predict_in_the_background(tmp_path):
    """One short epoch on 64 px discs: progress reaches the end, a validation mIoU is reported,
    then every image without a final mask gets a predicted mask with an uncertainty."""
    p = Project.create(tmp_path / "p")
    for i in range(6):
        img, gt, scr = make_disc_image(64, seed=i)
        info = p.add_image(encode_image_png(img), name=f"d{i}.png")
        if i < 3:
            p.save_mask(info.id, gt, "final", source="test")
        elif i < 5:
            p.save_scribbles(info.id, scr)
    job = training.start_training(p, epochs=1, size=64)
    job.thread.join(240)
    snap = job.snapshot()
    assert snap["status"] == "done", snap["message"]
    assert snap["fraction"] == 1.0 and snap["losses"] and snap["val_miou"] is not None
    assert 0.0 <= snap["val_miou"] <= 1.0 and "validation mIoU" in snap["message"]
    assert list(p.models_dir.glob("*.safetensors"))
    job = training.start_predict(p)
    job.thread.join(120)
    snap = job.snapshot()
    assert snap["status"] == "done", snap["message"]
    st = p.statuses()
    assert [st[i] for i in p.image_ids()] == ["final"] * 3 + ["predicted"] * 3
    assert all(p.mask_info(i, "predicted").uncertainty is not None for i in p.image_ids()[3:])
    assert handlers.next_most_uncertain(p, None) in p.image_ids()[3:]
    assert "width:100.0%" in jobs.progress_html(snap)
