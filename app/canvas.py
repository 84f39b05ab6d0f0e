"""Canvas and overlay helpers: how label maps and images travel between the store and the browser.

Label maps (``(H, W) uint8``, class index, 255 = none) travel as run-length codes: a flat list
``[value0, count0, value1, count1, ...]`` over the row-major pixels. It is exact (no colour
management or lossy encoding can touch a class index) and small for scribbles and masks.
Images and overlays travel as ``data:`` URLs (PNG, or JPEG for large photos).

The annotation canvas itself is a ``gr.HTML`` component whose JavaScript (``static/canvas.js``)
keeps the strokes in the page, draws them into an index map of its own and saves them through
the handlers; its template, CSS and script are read here.
"""
from __future__ import annotations

import base64
import io
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from annotations.errors import LabelMapError

IGNORE = 255
STATIC = Path(__file__).resolve().parent / "static"
#: Above this many pixels an RGB image is sent as JPEG (quality 92) instead of PNG.
JPEG_ABOVE_PIXELS = 300_000


def rle_encode(label: np.ndarray) -> list[int]:
    """``(H, W) uint8`` -> ``[v0, n0, v1, n1, ...]`` (row-major runs)."""
    flat = np.ascontiguousarray(label, dtype=np.uint8).ravel()
    if flat.size == 0:
        return []
    starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1])
    counts = np.diff(np.concatenate([starts, [flat.size]]))
    out = np.empty(2 * starts.size, np.int64)
    out[0::2] = flat[starts]
    out[1::2] = counts
    return out.tolist()


def rle_decode(rle: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rle_encode`; validates the code against ``shape`` ((H, W)).

    Raises :class:`LabelMapError` with a readable message on a malformed code.
    """
    h, w = int(shape[0]), int(shape[1])
    try:
        arr = np.asarray(rle, dtype=np.int64)
    except (TypeError, ValueError):
        raise LabelMapError("the drawing sent by the page is not a list of numbers.") from None
    if arr.ndim != 1 or arr.size % 2:
        raise LabelMapError("the drawing sent by the page is malformed (odd run-length code).")
    vals, counts = arr[0::2], arr[1::2]
    if vals.size and (vals.min() < 0 or vals.max() > 255 or counts.min() < 1):
        raise LabelMapError("the drawing sent by the page has an invalid class index or run length.")
    if int(counts.sum()) != h * w:
        raise LabelMapError(f"the drawing sent by the page has {int(counts.sum())} pixels, the image {h * w}.")
    return np.repeat(vals.astype(np.uint8), counts).reshape(h, w)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3|4)`` uint8 -> ``(H, W, 3)`` uint8."""
    img = np.asarray(image)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    return img[..., :3]


def _data_url(arr: np.ndarray, fmt: str) -> str:
    buf = io.BytesIO()
    pil = Image.fromarray(arr)
    if fmt == "JPEG":
        pil.save(buf, format="JPEG", quality=92)
        mime = "image/jpeg"
    else:
        pil.save(buf, format="PNG", compress_level=1)
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_data_url(image: np.ndarray) -> str:
    """An image ((H, W) or (H, W, 3) uint8) as a data URL: PNG, or JPEG when large."""
    rgb = to_rgb(image)
    fmt = "JPEG" if rgb.shape[0] * rgb.shape[1] > JPEG_ABOVE_PIXELS else "PNG"
    return _data_url(np.ascontiguousarray(rgb), fmt)


def color_table(colors: Sequence[Sequence[int]]) -> np.ndarray:
    """``(256, 4) uint8`` RGBA lookup: class k -> its colour (opaque), 255 and unknown -> transparent;
    a colour ``None`` leaves its class transparent (an unpainted background)."""
    lut = np.zeros((256, 4), np.uint8)
    for k, c in enumerate(colors[:255]):
        if c is None:
            continue
        lut[k, :3] = c[:3]
        lut[k, 3] = 255
    return lut


def overlay_rgba(mask: np.ndarray, colors: Sequence[Sequence[int]], confidence: np.ndarray | None = None,
                 edges: bool = True) -> np.ndarray:
    """A mask as an RGBA overlay ``(H, W, 4) uint8``: class colours, transparent where 255.

    ``confidence`` ((H, W) float in [0, 1]) fades unsure pixels; ``edges`` draws class borders
    in white so the outline stays visible at any opacity.
    """
    m = np.asarray(mask, dtype=np.uint8)
    rgba = color_table(colors)[m]
    if confidence is not None:
        a = np.clip(0.35 + 0.65 * np.asarray(confidence, np.float32), 0, 1)
        rgba[..., 3] = (rgba[..., 3] * a).astype(np.uint8)
    if edges and m.size:
        e = np.zeros(m.shape, bool)
        e[:-1, :] |= m[:-1, :] != m[1:, :]
        e[:, :-1] |= m[:, :-1] != m[:, 1:]
        rgba[e] = (255, 255, 255, 255)
    return rgba


def overlay_data_url(mask: np.ndarray, colors: Sequence[Sequence[int]], confidence: np.ndarray | None = None) -> str:
    """:func:`overlay_rgba` as a PNG data URL."""
    return _data_url(overlay_rgba(mask, colors, confidence), "PNG")


def decode_data_url(url: str) -> np.ndarray:
    """A ``data:image/...;base64,...`` URL -> array (for tests)."""
    head, _, b64 = url.partition(",")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """Text of ``app/static/<name>`` (the canvas template, CSS and script)."""
    return (STATIC / name).read_text(encoding="utf-8")
