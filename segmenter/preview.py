"""The live preview the app calls after every stroke: pseudo-mask plus a coloured overlay.

::

    result, overlay = preview(image, scribbles, num_classes)   # PseudoResult, (H, W, 3) uint8
"""
from __future__ import annotations

import numpy as np

#: Colours for class indices when the caller gives none (class 0 first), RGB uint8.
PALETTE = np.array([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
    [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0],
    [255, 215, 180], [0, 0, 128]], np.uint8)


def class_colors(num_classes: int, colors=None) -> np.ndarray:
    """``(C, 3)`` uint8 colours: ``colors`` (a sequence of RGB triples) or the default palette,
    repeated when there are more classes than colours."""
    if colors is None:
        return PALETTE[np.arange(num_classes) % len(PALETTE)]
    arr = np.asarray(colors, np.int64).reshape(-1, 3)
    if arr.shape[0] < num_classes:
        raise ValueError(f"{arr.shape[0]} colours given for {num_classes} classes")
    return np.clip(arr[:num_classes], 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, colors: np.ndarray, alpha: float = 0.5,
            scribbles: np.ndarray | None = None) -> np.ndarray:
    """Blend class colours over the image: ``(H, W, 3)`` uint8. ``mask``: ``(H, W)`` uint8
    (255 = left uncoloured); strokes, if given, are drawn opaque on top."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, 2)
    out = rgb.astype(np.float32)
    valid = mask != 255
    col = colors[np.where(valid, mask, 0).astype(np.int64)].astype(np.float32)
    out[valid] = (1.0 - alpha) * out[valid] + alpha * col[valid]
    if scribbles is not None:
        s = scribbles != 255
        out[s] = colors[scribbles[s].astype(np.int64)]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def preview(image, scribbles, num_classes: int, method: str | None = None, prior=None, colors=None,
            alpha: float = 0.5):
    """``(PseudoResult, overlay (H, W, 3) uint8)`` for ``image`` ((H, W) or (H, W, 3) uint8) and
    ``scribbles`` ((H, W) uint8, 255 = none); ``method`` defaults to
    :data:`segmenter.pseudo.DEFAULT_METHOD`; ``prior``: optional ``(C, H, W)`` float32 (e.g. the
    current prediction); ``colors``: one RGB triple per class. Raises ``NoLabelsError`` when
    nothing is drawn, ``LabelMapError`` for a map of the wrong size or an unknown class."""
    from segmenter.pseudo import get_method

    result = get_method(method)(image, scribbles, num_classes, prior=prior)
    cols = class_colors(num_classes, colors)
    return result, overlay(np.asarray(image), result.mask, cols, alpha, np.asarray(scribbles))
