"""Real data (slow): the default method on the GrabCut set and simulated strokes on ACDC."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import dataset_path

pytestmark = pytest.mark.slow


def test_default_beats_floor_on_grabcut_set2():
    from annotations.folder import FolderDataset
    from segmenter.metrics import MeanIoU
    from segmenter.pseudo import DEFAULT_METHOD, get_method

    ds = FolderDataset.open(dataset_path("grabcut"))
    m = get_method(DEFAULT_METHOD)
    meter = MeanIoU(ds.num_classes)
    for iid in ds.ids[:12]:
        res = m(ds.image(iid), ds.scribbles("set2", iid), ds.num_classes)
        meter.add(res.mask, ds.mask(iid))
    assert meter.miou > 0.85


def test_bench_pseudo_on_acdc_real_multiclass(tmp_path):
    from segmenter.benchmarks.pseudo import evaluate

    r = evaluate(dataset_path("acdc"), "real", limit=4, methods=["hybrid", "random_walker"], log=None)
    assert r["n_images"] == 4 and "grabcut" not in r["methods"]
    assert r["methods"]["hybrid"]["miou"] > 0.6
    assert np.isfinite(r["methods"]["random_walker"]["p50_s"])
