"""Slow: every format round-trips real datasets (grabcut, and 40-image subsets of acdc and camvid).

The datasets are imported with ``annotations.importer.import_path`` (folder layout, masks as kind
``imported``), exported in each registered format, imported into a fresh project and compared
mask by mask, bit for bit; COCO output is also decoded with pycocotools' own loader.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from annotations.formats import export_project, list_formats
from annotations.importer import import_path
from annotations.store import Project
from conftest import dataset_path
from test_formats import assert_masks_equal, export_import

SUBSETS = {"grabcut": None, "acdc": 40, "camvid": 40}


def subset(name: str, n: int | None, dest: Path) -> Path:
    """The dataset itself, or a folder-layout copy (symlinks) of its first ``n`` masked images."""
    root = dataset_path(name)
    if n is None:
        return root
    dest.mkdir()
    shutil.copyfile(root / "meta.json", dest / "meta.json")
    (dest / "images").mkdir()
    (dest / "masks").mkdir()
    stems = sorted(p.stem for p in (root / "masks").glob("*.png"))
    step = max(1, len(stems) // n)
    for stem in stems[::step][:n]:
        img = next((root / "images").glob(stem + ".*"))
        os.symlink(img, dest / "images" / img.name)
        os.symlink(root / "masks" / f"{stem}.png", dest / "masks" / f"{stem}.png")
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(SUBSETS))
def test_every_format_round_trips_a_real_dataset(dataset, tmp_path):
    data = subset(dataset, SUBSETS[dataset], tmp_path / "data")
    src = Project.create(tmp_path / "src")
    summary = import_path(src, data)
    assert summary.masks > 0
    want = {i.stem: src.mask(i.id, "imported") for i in src.images()}
    for fmt in list_formats():
        if fmt == "weak":
            continue  # no masks to compare (its scribble round trip is in test_formats)
        dst = export_import(src, fmt, tmp_path)
        assert dst.class_names == src.class_names, fmt
        assert_masks_equal(dst, want, f"{dataset} / {fmt}")
        shutil.rmtree(tmp_path / f"out-{fmt}")


@pytest.mark.slow
def test_coco_of_a_real_dataset_decodes_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    data = subset("camvid", 20, tmp_path / "data")
    src = Project.create(tmp_path / "src")
    import_path(src, data)
    for seg in ("rle", "polygon"):
        out = tmp_path / f"coco-{seg}"
        export_project(src, "coco", out, segmentation=seg)
        coco = COCO(str(out / "annotations.json"))
        d = json.loads((out / "annotations.json").read_text())
        assert len(d["categories"]) == len(src.class_names)  # camvid's class 0 is "Sky": kept
        for img in coco.loadImgs(coco.getImgIds()):
            want = src.mask(src.image_by_name(img["file_name"]).id, "imported")
            m = np.full(want.shape, 255, np.uint8)
            for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
                m[coco.annToMask(a).astype(bool)] = a["category_id"]
            np.testing.assert_array_equal(m, want)
