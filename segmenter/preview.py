"""The live preview the app calls after every stroke: pseudo-mask plus a coloured overlay.

::

    result, overlay = preview(image, scribbles, num_classes)   # PseudoResult, (H, W, 3) uint8
    result, overlay = preview(image, scribbles, num_classes, prediction=mask)   # strokes correct a prediction

On an image that already has a predicted mask, strokes are corrections of it
(:func:`correct_prediction`): the predicted regions that no stroke contradicts keep their class,
also for classes nobody drew, and the pseudo-labeller re-segments the rest around the strokes.
"""
from __future__ import annotations

import cv2
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
    (255 = left uncoloured); strokes, if given, are drawn opaque on top. Integer blending through
    OpenCV (a 12-megapixel photo: about 0.1 s; float arithmetic took 1.9 s)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    image = np.ascontiguousarray(image, np.uint8)
    rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    cols = np.asarray(colors, np.uint8)[:255]
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(cols)] = cols
    col = lut[mask]
    out = cv2.addWeighted(rgb, 1.0 - alpha, col, alpha, 0.0)
    keep = mask == 255
    if keep.any():
        out[keep] = rgb[keep]
    if scribbles is not None:
        s = scribbles != 255
        out[s] = lut[scribbles[s]]
    return out


def _downscaled(max_side, image, scribbles, prior, prediction, prediction_confidence):
    """The preview's inputs with the long side at most ``max_side`` (``None`` or a smaller image:
    unchanged); strokes are resized so thin ones keep their ridge (:func:`segmenter.pseudo.functional.resize_scribbles`)."""
    from segmenter.pseudo import functional as F

    H, W = scribbles.shape
    if not max_side or max(H, W) <= max_side:
        return image, scribbles, prior, prediction, prediction_confidence
    s = max_side / max(H, W)
    hw = (max(2, round(H * s)), max(2, round(W * s)))
    small = F.resize_scribbles(scribbles, hw)
    if prior is not None:
        prior = F.resize_probs(np.asarray(prior, np.float32), hw)
    if prediction is not None:
        prediction = cv2.resize(np.asarray(prediction, np.uint8), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
    if prediction_confidence is not None:
        prediction_confidence = cv2.resize(np.asarray(prediction_confidence, np.float32), (hw[1], hw[0]),
                                           interpolation=cv2.INTER_AREA)
    return F.resize_image(np.asarray(image), hw), small, prior, prediction, prediction_confidence


def prediction_prior(mask: np.ndarray, confidence: np.ndarray | None, num_classes: int) -> np.ndarray:
    """A predicted mask as a prior ``(C, H, W)`` float32 for the pseudo-labeller: the predicted
    class gets the confidence (0.9 where none is given), the other classes share the rest;
    pixels without a prediction (255) are uniform."""
    c = num_classes
    conf = np.full(mask.shape, 0.9, np.float32) if confidence is None else np.asarray(confidence, np.float32)
    conf = np.clip(conf, 1.0 / c, 0.99).astype(np.float32)
    other = (1.0 - conf) / max(c - 1, 1)
    prior = np.where(np.arange(c, dtype=np.uint8)[:, None, None] == mask[None], conf[None], other[None])
    prior[:, mask == 255] = 1.0 / c
    return prior.astype(np.float32, copy=False)


def correction_seeds(prediction: np.ndarray, scribbles: np.ndarray, num_classes: int,
                     margin: float = 0.03, reach: float = 0.15, confidence: np.ndarray | None = None,
                     min_confidence: float = 0.8, doubt: np.ndarray | None = None) -> np.ndarray:
    """Strokes for re-segmenting ``prediction`` ((H, W) uint8) around a person's ``scribbles``.

    The prediction lends its pixels as strokes of their predicted class where nobody drew: farther
    than ``reach`` x the long side from every stroke. Nearer, it lends only the cores of its
    regions (pixels at least ``margin`` x the long side, 2 px at least and half the region's
    thickness at most, inside them), so their outlines are found again; and a region that a
    stroke of another class lies in lends nothing within ``reach`` of that stroke: the person
    says the prediction is wrong there.
    With the prediction's ``confidence``, only pixels at least ``min_confidence`` sure are lent,
    unless that would leave background strokes alone (which would paint the whole image
    background; strokes of one other class alone take the image border as background, see
    :mod:`segmenter.pseudo.base`). The person's strokes lie on top. ``(H, W)`` uint8, 255 = none.
    ``doubt``: :func:`contradicted` of these inputs when the caller has it already.
    """
    import cv2

    h, w = prediction.shape
    r = max(2.0, margin * max(h, w))
    near = reach * max(h, w)
    seeds = np.full((h, w), 255, np.uint8)
    drawn = scribbles != 255

    def distance_to(strokes):
        if not strokes.any():
            return np.full((h, w), np.inf, np.float32)
        return cv2.distanceTransform((~strokes).astype(np.uint8), cv2.DIST_L2, 3)

    far = distance_to(drawn) > near
    if doubt is None:
        doubt = contradicted(prediction, scribbles, num_classes, reach)
    for c in range(num_classes):
        region = (prediction == c).astype(np.uint8)
        if not region.any():
            continue
        n, lab = cv2.connectedComponents(region, connectivity=8)
        dt = cv2.distanceTransform(region, cv2.DIST_L2, 3)
        deepest = np.zeros(n, np.float32)  # each region's thickness (ndimage.maximum sorted the image: 30x slower)
        np.maximum.at(deepest, lab.ravel(), dt.ravel())
        core = (region > 0) & ((dt >= np.minimum(r, 0.5 * deepest)[lab]) | far)
        seeds[core & ~doubt] = c
    if confidence is not None:
        sure = np.where(np.asarray(confidence) >= min_confidence, seeds, 255)
        sure[drawn] = scribbles[drawn]
        left = np.unique(sure[sure != 255])
        if not (left.size == 1 and left[0] == 0):
            seeds = sure
    seeds[drawn] = scribbles[drawn]
    return seeds


def contradicted(prediction: np.ndarray, scribbles: np.ndarray, num_classes: int, reach: float = 0.15) -> np.ndarray:
    """``(H, W)`` bool: the pixels of predicted regions that a stroke of another class lies in,
    within ``reach`` x the long side of such a stroke: there the person says the prediction is
    wrong, so it lends no seed (:func:`correction_seeds`) and is no prior (:func:`correct_prediction`)."""
    import cv2

    h, w = prediction.shape
    near = reach * max(h, w)
    drawn = scribbles != 255
    out = np.zeros((h, w), bool)
    for c in np.unique(prediction[drawn]):  # only a region a stroke lies in can be contradicted
        if c >= num_classes:
            continue
        other = drawn & (scribbles != c)
        region = (prediction == c).astype(np.uint8)
        _, lab = cv2.connectedComponents(region, connectivity=8)
        touched = np.unique(lab[other & (region > 0)])  # region labels only (never 0)
        if touched.size:
            dist = cv2.distanceTransform((~other).astype(np.uint8), cv2.DIST_L2, 3)
            out |= np.isin(lab, touched) & (dist <= near)
    return out


def without_absent(scribbles: np.ndarray, absent) -> np.ndarray:
    """``scribbles`` with the strokes of the classes ``absent`` (tagged absent on the image) left
    out: the tag wins over a stray stroke when a prediction is corrected (``predict`` and the
    export of a prediction older than the strokes)."""
    return np.where(np.isin(scribbles, list(absent)), 255, scribbles).astype(np.uint8)


def correct_prediction(image, scribbles, prediction, num_classes: int, confidence=None,
                       method: str | None = None, background: int = 0):
    """The ``prediction`` ((H, W) uint8 mask, optional ``confidence``) corrected by ``scribbles``:
    a :class:`~segmenter.pseudo.PseudoResult` of the pseudo-labeller ``method`` run on the
    :func:`correction_seeds` with the prediction as its prior, except where a stroke contradicts it
    (:func:`contradicted`: no prior there). The strokes keep their class; predicted regions no
    stroke contradicts keep theirs where the prediction is sure (confidence: the prediction's
    there); regions a stroke contradicts and outlines near the strokes are re-segmented."""
    from segmenter.pseudo import PseudoResult, get_method
    from segmenter.pseudo import functional as F

    from annotations.errors import LabelMapError

    F.check_inputs(image, scribbles, num_classes)
    if prediction is None:  # what Project.mask(i, "predicted") returns before any prediction
        raise LabelMapError("no prediction (None) to correct: predict the image first "
                            "(python -m segmenter predict PROJECT), or make a pseudo-mask from the strokes alone.")
    image = np.asarray(image)
    scribbles = np.asarray(scribbles)
    prediction = np.asarray(prediction)
    if prediction.shape != scribbles.shape:
        raise LabelMapError(f"the prediction is {prediction.shape[1]}x{prediction.shape[0]} but the scribbles "
                            f"are {scribbles.shape[1]}x{scribbles.shape[0]}.")
    prediction = np.where(prediction < num_classes, prediction, 255).astype(np.uint8)
    # where a stroke says the prediction is wrong it lends no seed and is no prior either: a sure (or
    # hand-painted) region a stroke of another class crosses would otherwise keep all but the stroke's pixels
    doubt = contradicted(prediction, scribbles, num_classes)
    seeds = correction_seeds(prediction, scribbles, num_classes, confidence=confidence, doubt=doubt)
    doubted = np.where(doubt, 255, prediction).astype(np.uint8)
    r = get_method(method)(image, seeds, num_classes,
                           prior=prediction_prior(doubted, confidence, num_classes), background=background)
    conf = r.confidence
    if confidence is not None:  # seed cores are the model's word, not the person's
        lent = (seeds != 255) & (scribbles == 255)
        conf = np.where(lent, np.asarray(confidence, np.float32), conf).astype(np.float32)
    return PseudoResult(probs=r.probs, mask=r.mask, confidence=conf)


def preview(image, scribbles, num_classes: int, method: str | None = None, prior=None, colors=None,
            alpha: float = 0.5, prediction=None, prediction_confidence=None, max_side: int | None = None,
            background: int = 0):
    """``(PseudoResult, overlay (H, W, 3) uint8)`` for ``image`` ((H, W) or (H, W, 3) uint8) and
    ``scribbles`` ((H, W) uint8, 255 = none); ``method`` defaults to
    :data:`segmenter.pseudo.DEFAULT_METHOD`; ``prior``: optional ``(C, H, W)`` float32;
    ``prediction`` (+ ``prediction_confidence``): the image's predicted mask, which the strokes
    then correct (:func:`correct_prediction`); ``colors``: one RGB triple per class.
    ``max_side``: for display, compute at most this long side (an image larger than that gets a
    result and overlay at the reduced size: the pseudo-labeller works on a small grid anyway, and
    only its edge-aware upsampling and the overlay grow with the image; a 12-megapixel photo took
    3.4 s at full size). ``background``: the background class (see
    :class:`segmenter.pseudo.PseudoLabeler`; :attr:`annotations.store.Project.background_index`).
    Raises ``NoLabelsError`` when nothing is drawn, ``LabelMapError`` for a map of the wrong size
    or an unknown class."""
    from segmenter.pseudo import get_method
    from segmenter.pseudo.functional import check_inputs

    check_inputs(image, scribbles, num_classes)
    image, scribbles, prior, prediction, prediction_confidence = _downscaled(
        max_side, image, np.asarray(scribbles), prior, prediction, prediction_confidence)
    if prediction is not None:
        result = correct_prediction(image, scribbles, prediction, num_classes, prediction_confidence, method,
                                    background=background)
    else:
        result = get_method(method)(image, scribbles, num_classes, prior=prior, background=background)
    cols = class_colors(num_classes, colors)
    return result, overlay(np.asarray(image), result.mask, cols, alpha, np.asarray(scribbles))
