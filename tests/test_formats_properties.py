"""Property-based tests (hypothesis): random label maps survive every format bit for bit.

Label maps are drawn with empty maps, maps touching the border, holes (rings), single pixels,
255 regions and many classes. The pure functions get many examples; the whole-project round trip
through every registered format gets a few (each example builds projects on disk).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotations.formats import list_formats
from annotations.formats._functional import decode_rle, encode_rles, mask_to_polygons, polygons_to_mask
from annotations.formats.yolo import label_lines, paint_yolo
from annotations.store import Project
from test_formats import assert_masks_equal, export_import


@st.composite
def label_maps(draw, max_side: int = 24, max_classes: int = 40):
    """(H, W) uint8 label maps with classes 0..n-1 and 255."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    n = draw(st.integers(2, max_classes))
    base = draw(st.sampled_from(["empty", "fill", "noise"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if base == "empty":
        m = np.zeros((h, w), np.uint8)
    elif base == "fill":
        m = np.full((h, w), draw(st.integers(0, n - 1)), np.uint8)
    else:
        vals = np.array(list(range(min(n, 6))) + [255], np.uint8)
        m = rng.choice(vals, (h, w))
    for _ in range(draw(st.integers(0, 6))):
        shape = draw(st.sampled_from(["rect", "ring", "pixel", "border"]))
        v = draw(st.sampled_from([255, *range(n)]))
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        y1, x1 = int(rng.integers(y0, h)) + 1, int(rng.integers(x0, w)) + 1
        if shape == "rect":
            m[y0:y1, x0:x1] = v
        elif shape == "ring":
            m[y0:y1, x0:x1] = v
            if y1 - y0 > 2 and x1 - x0 > 2:
                m[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = draw(st.integers(0, n - 1))
        elif shape == "pixel":
            m[y0, x0] = v
        else:
            m[:, 0] = v
            m[-1, :] = v
    return m, n


@settings(max_examples=200, deadline=None)
@given(label_maps())
def test_polygons_rasterise_back_exactly(lm):
    m, n = lm
    h, w = m.shape
    for v in np.unique(m):
        polys = mask_to_polygons(m == v)
        np.testing.assert_array_equal(polygons_to_mask(polys, h, w), m == v)
        for p in polys:  # integer pixel corners inside the image
            xy = np.asarray(p).reshape(-1, 2)
            assert xy.min() >= 0 and (xy[:, 0] <= w).all() and (xy[:, 1] <= h).all()


@settings(max_examples=150, deadline=None)
@given(label_maps())
def test_rle_encodes_every_class_exactly(lm):
    m, n = lm
    h, w = m.shape
    vals = list(range(n)) + [255]
    for v, rle in zip(vals, encode_rles(m, vals)):
        assert rle["size"] == [h, w] and isinstance(rle["counts"], str)
        np.testing.assert_array_equal(decode_rle(rle, h, w), m == v)


@settings(max_examples=60, deadline=None)
@given(label_maps(max_side=48), st.booleans())
def test_yolo_lines_paint_back_exactly(lm, with_background):
    m, n = lm
    bg = 0 if with_background else None
    lines, ignore = label_lines(m, bg)
    with tempfile.TemporaryDirectory() as td:
        lp, ip = Path(td) / "l.txt", Path(td) / "i.txt"
        lp.write_text("".join(f"{ln}\n" for ln in lines))
        ip.write_text("".join(f"{ln}\n" for ln in ignore))
        fill = 0 if with_background else 255
        back = paint_yolo(lp, ip, m.shape, 1 if with_background else 0, fill, n, "l.txt")
    # Without a background class every pixel is under a class or an ignore polygon.
    np.testing.assert_array_equal(back, m)


def _image_bytes(h: int, w: int, seed: int) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(label_maps(max_side=20, max_classes=30), min_size=1, max_size=3))
def test_every_format_round_trips_random_masks(maps):
    n = max(k for _, k in maps)
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        src = Project.create(td / "src", ["background"] + [f"c{i}" for i in range(1, n)])
        want = {}
        for k, (m, _) in enumerate(maps):
            info = src.add_image(_image_bytes(*m.shape, seed=k), name=f"img{k}.png")
            src.save_mask(info.id, m, "final", source="prop")
            want[info.stem] = m
        for fmt in list_formats():
            if fmt == "weak":
                continue  # carries no masks; its scribble round trip is in test_formats.py
            dst = export_import(src, fmt, td)
            assert dst.class_names == src.class_names, fmt
            assert_masks_equal(dst, want, fmt)
