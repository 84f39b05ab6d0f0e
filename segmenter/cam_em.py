"""Appearance EM over all tagged images: a second opinion on where each tagged class is.

The CNN class activation maps of :mod:`segmenter.cam` are trained from scratch and blurry. This
module learns, over **every** tagged image at once, one appearance model per class on cheap
per-pixel features, with the tags as the only supervision (a multiple-instance topic model in the
manner of Verbeek & Triggs, "Region classification with Markov field aspect models", CVPR 2007):

- every pixel belongs to one of its image's classes not tagged absent;
- a pixel's features are quantised into a few independent "words" (colour at several scales,
  gradient/texture energy, vertical position), and each class has a distribution over each
  vocabulary;
- each image has its own class proportions ``theta``.

EM alternates: the class posterior of each pixel (``theta * prod_v p(word_v | class) * prior``,
restricted to the image's possible classes) and the refitted distributions. The CAM probabilities
start the EM and stay in it as a prior (``cam_weight``), so the EM corrects the CAMs where colour
and texture disagree with them instead of starting from nothing.

Entry point::

    appearance_em(images, tags, priors=None, config=None) -> list[(C, h, w) float32]

``images``: N uint8 ``(H, W)``/``(H, W, 3)``; ``tags``: ``(N, C)`` int8 (1 present, 0 absent,
-1 unknown); ``priors``: N ``(C, H, W)`` float32 class probabilities or ``None``; returns per image
the posterior class probabilities on the working grid ``(h, w)`` (long side ``config.work_side``),
zero for classes tagged absent (all zero for an image whose tags are all unknown).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmenter.errors import SegmenterError

ABSENT, UNKNOWN = 0, -1
SIGMAS = (1.0, 2.0, 4.0, 8.0)
_BASE = 8  # colour channels per scale (Lab, rg chromaticity, hue as a vector scaled by saturation, saturation)
_TEX = 5   # gradient/texture channels per scale


@dataclass
class EMConfig:
    """Settings of :func:`appearance_em` (validated at construction).

    ``work_side``: long side of the grid the EM runs on (images are area-resized);
    ``words``: k-means words per feature vocabulary; ``position_bins``: vertical position bins
    (0 = no position vocabulary); ``iters``: EM iterations; ``cam_weight``: exponent of the prior
    (CAM probabilities) in the posterior (0 = the prior only starts the EM);
    ``theta_smoothing``: Dirichlet pseudo-count of the per-image class proportions;
    ``sample``: pixels sampled to fit the k-means vocabularies.
    """

    work_side: int = 80
    words: int = 48
    position_bins: int = 6
    iters: int = 15
    cam_weight: float = 1.0
    theta_smoothing: float = 0.5
    sample: int = 20000
    seed: int = 0

    def __post_init__(self):
        if self.work_side < 8:
            raise SegmenterError(f"work_side must be at least 8, got {self.work_side}.")
        if self.words < 2:
            raise SegmenterError(f"words must be at least 2, got {self.words}.")
        if self.position_bins < 0 or self.iters < 0 or self.sample < 100:
            raise SegmenterError("position_bins and iters must be >= 0 and sample >= 100, got "
                                 f"{self.position_bins}, {self.iters}, {self.sample}.")
        if self.cam_weight < 0 or self.theta_smoothing <= 0:
            raise SegmenterError(f"cam_weight must be >= 0 and theta_smoothing > 0, got "
                                 f"{self.cam_weight}, {self.theta_smoothing}.")


def pixel_features(image: np.ndarray, sigmas: tuple[float, ...] = SIGMAS) -> np.ndarray:
    """Per-pixel colour and texture features, comparable across images (no per-image scaling).

    ``image``: ``(H, W)`` or ``(H, W, 3)`` uint8 -> ``(H, W, F)`` float32 with
    ``F = 8 + len(sigmas) * 13 + 2``: the 8 colour channels (Lab, rg chromaticity, saturation-scaled
    hue vector, saturation), then per sigma the Gaussian-smoothed colour channels and 5 texture
    channels of the lightness (gradient magnitude, smoothed |dx|, smoothed |dy|, local standard
    deviation, Laplacian), then the normalised (y, x) position.
    """
    import cv2

    image = np.asarray(image)
    rgb = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32) / 255.0
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    f = rgb.astype(np.float32) / 255.0
    chroma = f[..., :2] / (f.sum(-1, keepdims=True) + 1e-3)
    hue = hsv[..., 0] * (np.pi / 90.0)
    sat = hsv[..., 1] / 255.0
    base = np.concatenate([lab, chroma, (np.cos(hue) * sat)[..., None], (np.sin(hue) * sat)[..., None],
                           sat[..., None]], -1)
    feats = [base]
    light = np.ascontiguousarray(lab[..., 0])
    for s in sigmas:
        feats.append(cv2.GaussianBlur(base, (0, 0), s).reshape(h, w, _BASE))
        g = cv2.GaussianBlur(light, (0, 0), s / 2)
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
        m = cv2.GaussianBlur(light, (0, 0), s)
        m2 = cv2.GaussianBlur(light * light, (0, 0), s)
        feats.append(np.stack([np.sqrt(gx * gx + gy * gy), cv2.GaussianBlur(np.abs(gx), (0, 0), s),
                               cv2.GaussianBlur(np.abs(gy), (0, 0), s), np.sqrt(np.maximum(m2 - m * m, 0)),
                               cv2.Laplacian(g, cv2.CV_32F, ksize=3)], -1))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    feats.append(np.stack([yy / h, xx / w], -1))
    return np.concatenate(feats, -1).astype(np.float32)


def feature_groups(sigmas: tuple[float, ...] = SIGMAS) -> dict[str, list[int]]:
    """Columns of :func:`pixel_features` forming each vocabulary: colour at the finest, a middle
    and the coarsest scale, and texture at fine and coarse scales."""
    def colour(i):
        o = _BASE + i * (_BASE + _TEX)
        return list(range(o, o + _BASE))

    def texture(i):
        o = _BASE + i * (_BASE + _TEX) + _BASE
        return list(range(o, o + _TEX))

    n = len(sigmas)
    half = n // 2
    return {"colour": list(range(_BASE)), "colour_mid": colour(half), "colour_coarse": colour(n - 1),
            "texture_fine": sum((texture(i) for i in range(half)), []),
            "texture_coarse": sum((texture(i) for i in range(half, n)), [])}


def working_shape(shape: tuple[int, int], side: int) -> tuple[int, int]:
    """``(h, w)`` with the long side ``min(side, max(shape))``, aspect kept."""
    h, w = shape
    s = min(1.0, side / max(h, w))
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def _kmeans_words(x: np.ndarray, k: int, sample: int, rng: np.random.Generator) -> np.ndarray:
    """``(P, D)`` float32 -> ``(P,)`` int32 word of each row (k-means on a sample, standardised)."""
    import cv2

    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = ((x - mu) / sd).astype(np.float32)
    sub = z[rng.choice(len(z), min(sample, len(z)), replace=False)]
    k = int(min(k, len(np.unique(sub.round(4), axis=0))))
    if k < 2:
        return np.zeros(len(z), np.int32)
    cv2.setRNGSeed(int(rng.integers(1 << 30)))
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1e-3)
    _, _, cent = cv2.kmeans(sub, k, None, crit, 1, cv2.KMEANS_PP_CENTERS)
    out = np.empty(len(z), np.int32)
    c2 = (cent * cent).sum(1)
    for s in range(0, len(z), 65536):
        blk = z[s:s + 65536]
        out[s:s + len(blk)] = (c2[None] - 2 * blk @ cent.T).argmin(1)
    return out


def appearance_em(images: list[np.ndarray], tags: np.ndarray, priors: list[np.ndarray | None] | None = None,
                  config: EMConfig | None = None) -> list[np.ndarray]:
    """Tags (+ optional prior probabilities) -> per-image class posteriors (module docstring).

    Returns N ``(C, h, w)`` float32 arrays summing to 1 over the possible classes of each pixel
    (all zero for an image whose tags are all unknown); ``(h, w)`` = :func:`working_shape`.
    """
    import cv2

    cfg = config or EMConfig()
    tags = np.asarray(tags)
    n, c = tags.shape
    rng = np.random.default_rng(cfg.seed)
    shapes = [working_shape(np.asarray(im).shape[:2], cfg.work_side) for im in images]
    active = [i for i in range(n) if not (tags[i] == UNKNOWN).all() and (tags[i] != ABSENT).any()]
    out = [np.zeros((c, *shapes[i]), np.float32) for i in range(n)]
    if not active:
        return out
    feats = []
    for i in active:
        f = pixel_features(images[i])
        h, w = shapes[i]
        if f.shape[:2] != (h, w):
            # OpenCV's area resize takes at most 4 channels at a non-integer scale
            f = np.dstack([cv2.resize(np.ascontiguousarray(f[..., k:k + 4]), (w, h), interpolation=cv2.INTER_AREA)
                           .reshape(h, w, -1) for k in range(0, f.shape[-1], 4)])
        feats.append(f.reshape(h * w, -1))
    sizes = np.array([len(f) for f in feats])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    x = np.concatenate(feats)
    del feats
    vocab = [(_kmeans_words(x[:, cols], cfg.words, cfg.sample, rng), cfg.words)
             for cols in feature_groups().values()]
    if cfg.position_bins:
        vocab.append(((x[:, -2] * cfg.position_bins).astype(np.int32).clip(0, cfg.position_bins - 1),
                      cfg.position_bins))
    del x
    img_of = np.repeat(np.arange(len(active)), sizes)
    allowed = (tags[active] != ABSENT)
    log_prior = np.zeros((len(img_of), c), np.float32)
    q = np.broadcast_to(allowed[img_of], (len(img_of), c)).astype(np.float32)
    if priors is not None:
        for j, i in enumerate(active):
            if priors[i] is None:
                continue
            h, w = shapes[i]
            p = np.stack([cv2.resize(np.ascontiguousarray(pc, dtype=np.float32), (w, h), interpolation=cv2.INTER_AREA)
                          for pc in priors[i]]).reshape(c, -1).T
            p = np.clip(p, 1e-4, None) * allowed[j]
            q[starts[j]:starts[j + 1]] = p
            log_prior[starts[j]:starts[j + 1]] = cfg.cam_weight * np.log(np.clip(p, 1e-4, None))
    q /= q.sum(1, keepdims=True)
    neg = np.where(allowed, 0.0, -np.inf).astype(np.float32)
    for _ in range(cfg.iters):
        lp = log_prior.copy()
        for words, k in vocab:
            cnt = np.stack([np.bincount(words, weights=q[:, j], minlength=k) for j in range(c)], 1)
            lp += np.log((cnt + 1.0) / (cnt.sum(0, keepdims=True) + k)).astype(np.float32)[words]
        theta = np.stack([np.bincount(img_of, weights=q[:, j], minlength=len(active)) for j in range(c)], 1)
        theta = (theta + cfg.theta_smoothing) / (theta.sum(1, keepdims=True) + cfg.theta_smoothing * c)
        lp += (np.log(theta) + neg)[img_of].astype(np.float32)
        lp -= lp.max(1, keepdims=True)
        q = np.exp(lp)
        q /= q.sum(1, keepdims=True)
    for j, i in enumerate(active):
        out[i] = np.ascontiguousarray(q[starts[j]:starts[j + 1]].T.reshape(c, *shapes[i]), dtype=np.float32)
    return out


def local_colour_refine(image: np.ndarray, probs: np.ndarray, strength: float = 1.0, iters: int = 2,
                        step: int = 32) -> np.ndarray:
    """Sharpen class probabilities with per-image colour histograms (GrabCut-like, no cut).

    ``image``: ``(H, W)``/``(H, W, 3)`` uint8; ``probs``: ``(C, H, W)`` float32 (zero rows = classes
    that cannot be in the image). Each possible class gets a Lab histogram (bins of ``step`` levels)
    weighted by its current probability; the output ``probs * likelihood ** strength``, normalised
    over classes, ``(C, H, W)`` float32, is refitted ``iters`` times.
    """
    import cv2

    image = np.asarray(image)
    rgb = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else np.ascontiguousarray(image[..., :3])
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.int64) // step
    nb = 256 // step
    idx = ((lab[..., 0] * nb + lab[..., 1]) * nb + lab[..., 2]).ravel()
    c = probs.shape[0]
    prior = probs.reshape(c, -1).astype(np.float64)
    live = np.flatnonzero(prior.max(1) > 0)
    post = prior.copy()
    for _ in range(iters):
        lik = np.zeros_like(prior)
        for k in live:
            hist = np.bincount(idx, weights=post[k], minlength=nb ** 3) + 0.5
            lik[k] = (hist / hist.sum())[idx]
        post = prior * lik ** strength
        post /= post.sum(0, keepdims=True) + 1e-12
    return post.reshape(probs.shape).astype(np.float32)
