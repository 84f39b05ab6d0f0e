"""Pure array-in / array-out helpers of the formats: RLE and exact pixel-edge polygons.

Label maps are ``(H, W) uint8``: class index, 255 = ignore. Binary masks are ``(H, W)`` bool or
uint8 (non-zero = inside).

Polygons here follow the COCO convention of continuous coordinates: pixel ``(row r, col c)`` is
the unit square ``[c, c+1] x [r, r+1]``. :func:`mask_to_polygons` traces the pixel *edges*
(vertices at integer pixel corners), so rasterising its output with pycocotools
(:func:`polygons_to_mask`) gives back the mask bit for bit. Holes are kept: each 4-connected
component is one polygon whose hole rings are joined to the outer ring by a "keyhole" bridge
walked there and back; the bridge encloses no area under either the even-odd or the non-zero
fill rule, so the polygon is exact in pycocotools and renders correctly in other tools.
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

IGNORE = 255

try:  # OpenCV's transpose and histogram are ~10x faster than numpy's on uint8; numpy is the fallback.
    import cv2 as _cv2
except ImportError:  # pragma: no cover
    _cv2 = None


def transpose_u8(a: np.ndarray) -> np.ndarray:
    """C-contiguous transpose of a (H, W) uint8 array."""
    if _cv2 is not None and a.dtype == np.uint8 and a.ndim == 2:
        return _cv2.transpose(np.ascontiguousarray(a))
    return np.ascontiguousarray(a.T)


# ----------------------------------------------------------------------------- RLE
def encode_rles(label: np.ndarray, values) -> list[dict]:
    """COCO compressed RLEs (``{"size": [H, W], "counts": str}``) of ``label == v`` for each v.

    ``label``: (H, W) uint8. All binary masks are encoded in one pycocotools call on a
    Fortran-ordered (H, W, K) stack.
    """
    return encode_rles_with_stats(label, values)[0]


def encode_rles_with_stats(label: np.ndarray, values) -> tuple[list[dict], list[int], list[list[float]]]:
    """:func:`encode_rles` plus each mask's pixel count and ``[x, y, w, h]`` box."""
    values = list(values)
    if not values:
        return [], [], []
    h, w = label.shape
    # (K, W, H) C-ordered, transposed, is the (H, W, K) Fortran-ordered stack pycocotools wants.
    stack = np.empty((len(values), w, h), np.uint8)
    lt = transpose_u8(label)  # one transposed copy; the comparisons then run contiguous
    for k, v in enumerate(values):
        np.equal(lt, v, out=stack[k].view(bool))
    rles = mask_utils.encode(stack.transpose(2, 1, 0))
    areas = [int(a) for a in mask_utils.area(rles)]
    boxes = [[float(x) for x in b] for b in mask_utils.toBbox(rles)]
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles, areas, boxes


def decode_rle(segmentation, height: int, width: int) -> np.ndarray:
    """Decode a COCO segmentation (compressed or uncompressed RLE, or polygon list) to (H, W) bool."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    seg = dict(segmentation)
    if isinstance(seg.get("counts"), list):
        seg = mask_utils.frPyObjects(seg, height, width)
    elif isinstance(seg.get("counts"), str):
        seg = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    return mask_utils.decode(seg).astype(bool)


# ----------------------------------------------------------------------------- polygons
def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (flat ``[x1, y1, x2, y2, ...]`` lists) to (H, W) bool (union)."""
    polys = [list(map(float, p)) for p in polygons if len(p) >= 6]
    if not polys:
        return np.zeros((height, width), bool)
    # pycocotools takes a length-4 list for a box; polygons of 2 points are dropped above.
    rles = mask_utils.frPyObjects(polys, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _edges(binary: np.ndarray):
    """Directed boundary edges of a binary mask, each with the inside pixel it borders.

    Returns ``(src, dst, pix)``: vertex ids ``y * (W + 1) + x`` and flat pixel index. Edges run
    clockwise around the inside (image coordinates, y down).
    """
    h, w = binary.shape
    p = np.zeros((h + 2, w + 2), np.int8)
    p[1:-1, 1:-1] = binary.astype(bool)
    W1 = w + 1
    srcs, dsts, pixs = [], [], []
    dh = (p[1:, 1:-1] - p[:-1, 1:-1])  # (H+1, W): edge at y=r over column c
    r, c = np.nonzero(dh == 1)  # top edge of pixel (r, c): (c, r) -> (c+1, r)
    srcs.append(r * W1 + c); dsts.append(r * W1 + c + 1); pixs.append(r * w + c)
    r, c = np.nonzero(dh == -1)  # bottom edge of pixel (r-1, c): (c+1, r) -> (c, r)
    srcs.append(r * W1 + c + 1); dsts.append(r * W1 + c); pixs.append((r - 1) * w + c)
    dv = (p[1:-1, 1:] - p[1:-1, :-1])  # (H, W+1): edge at x=c over row r
    r, c = np.nonzero(dv == 1)  # left edge of pixel (r, c): (c, r+1) -> (c, r)
    srcs.append((r + 1) * W1 + c); dsts.append(r * W1 + c); pixs.append(r * w + c)
    r, c = np.nonzero(dv == -1)  # right edge of pixel (r, c-1): (c, r) -> (c, r+1)
    srcs.append(r * W1 + c); dsts.append((r + 1) * W1 + c); pixs.append(r * w + c - 1)
    return np.concatenate(srcs), np.concatenate(dsts), np.concatenate(pixs)


def _trace_loops(src: np.ndarray, dst: np.ndarray, pix: np.ndarray) -> list[list[int]]:
    """Chain directed edges into closed loops of vertex ids.

    Where two loops touch at a corner (diagonal pixels), the walk stays with the edge of the
    same inside pixel, so every loop bounds one 4-connected component.
    """
    order = np.argsort(src, kind="stable")
    s_sorted = src[order]
    out: dict[int, list[int]] = {}
    # Most vertices have one outgoing edge; a pinch corner has two.
    uniq, starts, counts = np.unique(s_sorted, return_index=True, return_counts=True)
    single = counts == 1
    nxt_single = dict(zip(uniq[single].tolist(), order[starts[single]].tolist()))
    for v, st, n in zip(uniq[~single].tolist(), starts[~single].tolist(), counts[~single].tolist()):
        out[v] = order[st:st + n].tolist()
    used = np.zeros(len(src), bool)
    dst_l, src_l, pix_l = dst.tolist(), src.tolist(), pix.tolist()
    loops = []
    for e0 in range(len(src)):
        if used[e0]:
            continue
        loop = []
        e = e0
        while not used[e]:
            used[e] = True
            loop.append(src_l[e])
            v = dst_l[e]
            if v in nxt_single:
                e = nxt_single[v]
            else:
                cands = [k for k in out.get(v, []) if not used[k]]
                if not cands:
                    break
                same = [k for k in cands if pix_l[k] == pix_l[e]]
                e = same[0] if same else cands[0]
        loops.append(loop)
    return loops


def _simplify(loop: list[int], W1: int) -> np.ndarray:
    """(N, 2) int corners (x, y) of a loop of vertex ids, collinear points removed."""
    v = np.asarray(loop, np.int64)
    xy = np.stack([v % W1, v // W1], 1)
    d_in = xy - np.roll(xy, 1, 0)
    d_out = np.roll(xy, -1, 0) - xy
    keep = (d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0]) != 0
    if not keep.any():
        return xy[:1]
    return xy[keep]


def mask_to_polygons(binary: np.ndarray) -> list[list[int]]:
    """Exact polygons of a binary mask: one flat ``[x1, y1, ...]`` list per 4-connected component.

    ``binary``: (H, W) bool/uint8. Coordinates are integer pixel corners (see the module
    docstring); holes are joined to their component's outer ring by a bridge walked both ways.
    ``polygons_to_mask(mask_to_polygons(m), H, W) == m`` for every mask.
    """
    b = np.asarray(binary).astype(bool)
    if not b.any():
        return []
    from scipy import ndimage  # slow to import; only the polygon paths need it

    h, w = b.shape
    W1 = w + 1
    labels, n = ndimage.label(b)  # 4-connectivity
    src, dst, pix = _edges(b)
    comp = labels.ravel()[pix]
    order = np.argsort(comp, kind="stable")
    bounds = np.searchsorted(comp[order], np.arange(1, n + 2))
    polys = []
    for k in range(n):
        idx = order[bounds[k]:bounds[k + 1]]
        loops = [_simplify(lp, W1) for lp in _trace_loops(src[idx], dst[idx], pix[idx])]
        # The outer ring holds the component's top-left corner: the smallest vertex id.
        loops.sort(key=lambda xy: int((xy[:, 1] * W1 + xy[:, 0]).min()))
        outer = loops[0]
        pts = [outer, outer[:1]]
        for hole in loops[1:]:
            pts += [hole, hole[:1], outer[:1]]
        flat = np.concatenate(pts).ravel().tolist()  # ints: exact pixel corners
        polys.append(flat)
    return polys


def label_to_class_polygons(label: np.ndarray, values) -> dict[int, list[list[float]]]:
    """``{v: mask_to_polygons(label == v)}`` for each value ``v`` present in ``label``."""
    return {int(v): mask_to_polygons(label == v) for v in values}


def present_values(label: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a (H, W) uint8 label map (a histogram: faster than np.unique)."""
    if _cv2 is not None and label.dtype == np.uint8 and label.ndim == 2 and label.size:
        hist = _cv2.calcHist([np.ascontiguousarray(label)], [0], None, [256], [0, 256]).ravel()
        return np.nonzero(hist)[0]
    return np.nonzero(np.bincount(np.asarray(label, np.uint8).ravel(), minlength=256))[0]
