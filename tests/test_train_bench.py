"""``bench train``: the supervision spec, the report contract, and (slow) runs on real data."""
import json

import numpy as np
import pytest

from conftest import dataset_path
from segmenter.benchmarks.train import coarse_mask, parse_supervision
from segmenter.cli import UsageError, main

KEYS = {"task", "supervision", "n_train", "n_test", "test_miou", "test_miou_dataset", "test_dice", "train_seconds",
        "images_per_s", "bare_images_per_s", "epochs", "size", "arch", "encoder", "device"}


def test_parse_supervision():
    assert parse_supervision("full") == [("full", None, 1.0)]
    assert parse_supervision("simulated:3") == [("simulated", "3", 1.0)]
    assert parse_supervision("mixed:full=0.2,scribbles:real=0.5,tags=0.3") == [
        ("full", None, 0.2), ("scribbles", "real", 0.5), ("tags", None, 0.3)]
    for bad, msg in [("boxes", "unknown supervision"), ("scribbles", "set name"), ("simulated:x", "whole number"),
                     ("mixed:full=0.8,tags=0.5", "more than 1"), ("mixed:full", "=FRACTION")]:
        with pytest.raises(UsageError, match=msg):
            parse_supervision(bad)


def test_coarse_masks_stay_close_to_the_truth():
    gt = np.zeros((64, 64), np.uint8)
    gt[16:48, 16:48] = 1
    cm = coarse_mask(gt, 4, seed=0)
    inter = ((cm == 1) & (gt == 1)).sum()
    union = ((cm == 1) | (gt == 1)).sum()
    assert 0.6 < inter / union < 1.0 and set(np.unique(cm)) == {0, 1}


def _bench(tmp_path, *extra):
    out = tmp_path / "r.json"
    rc = main(["bench", "train", *extra, "--epochs", "1", "--size", "64", "--limit-train", "16",
               "--limit-test", "8", "--bare-steps", "2", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_bench_train_acdc_scribbles_and_semi_supervised(tmp_path):
    acdc = str(dataset_path("acdc"))
    r = _bench(tmp_path, "--data", acdc, "--train-split", "fold2+fold3", "--test-split", "fold5",
               "--supervision", "scribbles:real", "--labeled-fraction", "0.5", "--refine-after", "0.3")
    assert KEYS <= set(r) and r["task"] == "train" and r["n_train"] == 16 and r["n_test"] == 8
    assert r["train_config"]["refine_after"] == 0.3 and r["train_config"]["semi"] == "self_training"
    assert r["counts"]["scribbles"] == 8 and r["counts"]["unlabeled"] == 8
    assert 0 <= r["test_miou"] <= 1 and r["images_per_s"] > 0 and r["bare_images_per_s"] > 0
    r2 = _bench(tmp_path, "--data", acdc, "--train-split", "fold2", "--test-split", "fold5",
                "--supervision", "scribbles:real", "--labeled-fraction", "0.5", "--no-unlabeled")
    assert r2["n_train"] == 8 and r2["counts"]["unlabeled"] == 0


@pytest.mark.slow
def test_bench_train_horse_simulated_and_mixed(tmp_path):
    horse = str(dataset_path("weizmann_horse"))
    r = _bench(tmp_path, "--data", horse, "--train-split", "train", "--test-split", "test", "--supervision", "simulated:1")
    assert KEYS <= set(r) and r["counts"]["scribbles"] == 16
    r = _bench(tmp_path, "--data", horse, "--train-split", "train", "--test-split", "test",
               "--supervision", "mixed:full=0.25,coarse:3=0.25,simulated=0.25")
    c = r["counts"]
    assert (c["full"], c["coarse"], c["scribbles"], c["unlabeled"]) == (4, 4, 4, 4)
