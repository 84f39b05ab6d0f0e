"""Shared fixtures: tiny synthetic images (64 px) and the location of ../shared/datasets."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("WEAKSEG_DATASETS", REPO.parent / "shared" / "datasets")).resolve()


def dataset_path(name: str) -> Path:
    """Path of a dataset under ../shared/datasets; skips the test when it is absent."""
    p = DATASETS / name
    if not (p / "meta.json").is_file():
        pytest.skip(f"dataset {name} not found under {DATASETS}")
    return p


def make_disc_image(size: int = 64, seed: int = 0, rgb: bool = True):
    """A noisy two-class image: a bright disc on a dark textured background.

    Returns ``image`` ((H, W, 3) or (H, W) uint8), ``gt`` ((H, W) uint8 in {0, 1}) and
    ``scribbles`` ((H, W) uint8, 255 = none) with one short stroke per class.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2 + rng.uniform(-3, 3, 2)
    r = size * 0.28
    gt = (((yy - c[0]) ** 2 + (xx - c[1]) ** 2) < r * r).astype(np.uint8)
    base = np.where(gt == 1, 190.0, 60.0) + rng.normal(0, 18, (size, size))
    if rgb:
        img = np.stack([base, base * 0.8 + 20 * gt, base * 0.6 + 40 * (1 - gt)], -1)
    else:
        img = base
    img = np.clip(img, 0, 255).astype(np.uint8)
    scr = np.full((size, size), 255, np.uint8)
    cy, cx = int(c[0]), int(c[1])
    scr[cy - 1 : cy + 2, cx - 6 : cx + 6] = 1
    scr[3:5, 4 : size - 4] = 0
    return img, gt, scr


@pytest.fixture
def disc():
    return make_disc_image()


@pytest.fixture
def multiclass_image():
    """A 64 px three-class image (background, square, disc) with strokes in each class."""
    size = 64
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size]
    gt = np.zeros((size, size), np.uint8)
    gt[8:28, 8:28] = 1
    gt[((yy - 44) ** 2 + (xx - 44) ** 2) < 12**2] = 2
    colors = np.array([[40, 40, 40], [200, 60, 60], [60, 60, 200]], float)
    img = colors[gt] + rng.normal(0, 15, (size, size, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    scr = np.full((size, size), 255, np.uint8)
    scr[2:4, 30:60] = 0
    scr[17:19, 12:24] = 1
    scr[43:45, 38:50] = 2
    return img, gt, scr
