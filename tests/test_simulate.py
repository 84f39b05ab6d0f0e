"""Simulated scribbles and corrections: strokes lie inside their class, seeded, options work."""
from __future__ import annotations

import numpy as np
import pytest

from segmenter.simulate import SimulationConfig, add_correction, largest_error_region, simulate_scribbles


def _three_class():
    gt = np.zeros((80, 100), np.uint8)
    gt[10:40, 10:50] = 1
    yy, xx = np.mgrid[:80, :100]
    gt[((yy - 55) ** 2 + (xx - 70) ** 2) < 15 ** 2] = 2
    gt[75:, :] = 255  # ignored band
    return gt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_strokes_lie_inside_their_class(seed):
    gt = _three_class()
    scr = simulate_scribbles(gt, 3, SimulationConfig(seed=seed, thickness=3))
    m = scr != 255
    assert m.any()
    assert (scr[m] == gt[m]).all()  # never on another class nor on ignored pixels
    assert set(np.unique(scr[m])) == {0, 1, 2}


def test_strokes_stay_off_the_region_border():
    gt = _three_class()
    scr = simulate_scribbles(gt, 3, SimulationConfig(seed=0, thickness=1, erosion=0.3))
    import cv2

    for c in (1, 2):
        dt = cv2.distanceTransform((gt == c).astype(np.uint8), cv2.DIST_L2, 5)
        assert dt[scr == c].min() >= 2.0


def test_seeded_and_options():
    gt = _three_class()
    a = simulate_scribbles(gt, 3, SimulationConfig(seed=5))
    b = simulate_scribbles(gt, 3, SimulationConfig(seed=5))
    assert np.array_equal(a, b)
    fg = simulate_scribbles(gt, 3, SimulationConfig(seed=5, foreground_only=True))
    assert not (fg == 0).any() and (fg == 1).any()
    thick = simulate_scribbles(gt, 3, SimulationConfig(seed=5, thickness=5))
    thin = simulate_scribbles(gt, 3, SimulationConfig(seed=5, thickness=1))
    assert (thick != 255).sum() > (thin != 255).sum()


def test_strokes_per_class_reach_several_regions():
    gt = np.zeros((60, 120), np.uint8)
    gt[10:50, 10:40] = 1
    gt[10:50, 80:110] = 1
    one = simulate_scribbles(gt, 2, SimulationConfig(seed=0, strokes_per_class=1))
    two = simulate_scribbles(gt, 2, SimulationConfig(seed=0, strokes_per_class=2))
    assert ((one == 1)[:, :60].any()) != ((one == 1)[:, 60:].any())
    assert (two == 1)[:, :60].any() and (two == 1)[:, 60:].any()


def test_config_is_validated():
    with pytest.raises(ValueError):
        SimulationConfig(thickness=0)
    with pytest.raises(ValueError):
        SimulationConfig(strokes_per_class=0)


def test_correction_goes_into_the_largest_error_region():
    gt = _three_class()
    mask = gt.copy()
    mask[mask == 255] = 0
    mask[12:38, 12:30] = 0  # a big miss of class 1
    mask[50:53, 65:68] = 0  # a small miss of class 2
    region, c = largest_error_region(mask, gt, 3)
    assert c == 1 and region[20, 20] and not region[51, 66]
    scr = np.full(gt.shape, 255, np.uint8)
    new = add_correction(scr, mask, gt, 3, seed=0)
    added = new != 255
    assert added.any() and (new[added] == 1).all() and region[added].all()
    assert (scr == 255).all()  # input unchanged
    # nothing wrong: no stroke
    perfect = np.where(gt == 255, 0, gt).astype(np.uint8)
    assert np.array_equal(add_correction(scr, perfect, gt, 3), scr)
