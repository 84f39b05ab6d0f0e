"""Pure array functions behind the scribble-to-mask methods (no state, no I/O).

Conventions: ``image`` is ``(H, W)`` or ``(H, W, 3)`` uint8; ``scribbles`` is ``(H, W)`` uint8,
class index, 255 = none; probabilities are ``(C, H, W)`` float32 summing to 1 over C; unaries
(costs) are ``(C, H, W)`` float32, lower is better.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from annotations.errors import LabelMapError
from segmenter.errors import NoLabelsError

NONE = 255
#: Cost that makes a label impossible (hard constraints).
HARD = 1e4


# ----------------------------------------------------------------------------- input checks
def check_inputs(image: np.ndarray, scribbles: np.ndarray, num_classes: int) -> None:
    """Raise :class:`LabelMapError` / :class:`NoLabelsError` for input a person must fix."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or image.dtype != np.uint8:
        raise LabelMapError(f"the image must be (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}.")
    if not 2 <= num_classes <= 255:
        raise LabelMapError(f"the number of classes must be between 2 and 255, got {num_classes}.")
    if scribbles is None:  # what Project.scribbles() returns for an image nobody drew on
        raise NoLabelsError("no scribble map (None): the image has no strokes yet; draw at least one stroke "
                            "before making a pseudo-mask.")
    scribbles = np.asarray(scribbles)
    if scribbles.ndim != 2 or scribbles.dtype != np.uint8:
        raise LabelMapError(f"the scribble map must be (H, W) uint8, got {scribbles.shape} {scribbles.dtype}.")
    if scribbles.shape != image.shape[:2]:
        raise LabelMapError(
            f"the scribble map is {scribbles.shape[1]}x{scribbles.shape[0]} but the image is "
            f"{image.shape[1]}x{image.shape[0]}; scribbles must have the image's size.")
    used = scribbled_classes(scribbles)
    bad = [int(v) for v in used if v >= num_classes]
    if bad:
        raise LabelMapError(
            f"the scribbles use class index {', '.join(map(str, bad))} but the project has only "
            f"{num_classes} classes (0..{num_classes - 1}).")
    if not used.size:
        raise NoLabelsError("the image has no scribbles: draw at least one stroke before making a pseudo-mask.")


def check_prior(prior: np.ndarray | None, num_classes: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Validate a prior ``(C, H, W)`` float probabilities; returns it normalised float32 (or None)."""
    if prior is None:
        return None
    prior = np.asarray(prior, np.float32)
    if prior.shape != (num_classes, *shape):
        raise LabelMapError(f"the prior must be (C, H, W) = {(num_classes, *shape)}, got {prior.shape}.")
    prior = np.clip(np.nan_to_num(prior, nan=0.0), 0.0, None)
    s = prior.sum(0, keepdims=True)
    return np.where(s > 0, prior / np.maximum(s, 1e-12), 1.0 / num_classes).astype(np.float32)


def scribbled_classes(scribbles: np.ndarray) -> np.ndarray:
    """Sorted class indices present in ``scribbles`` (255 excluded), int64."""
    scribbles = np.asarray(scribbles)
    return np.unique(scribbles[scribbles != NONE]).astype(np.int64)  # strokes are few: faster than all pixels


def border_band(shape: tuple[int, int], width: int) -> np.ndarray:
    """``(H, W)`` bool: the band of ``width`` pixels along the image border."""
    h, w = shape
    width = max(1, min(width, h // 2, w // 2))
    band = np.zeros((h, w), bool)
    band[:width] = band[-width:] = True
    band[:, :width] = band[:, -width:] = True
    return band


def border_proximity(shape: tuple[int, int], band: float) -> np.ndarray:
    """``(H, W)`` float32 in (0, 1]: ``exp(-d / (band * max(H, W)))`` with ``d`` the distance in
    pixels to the nearest image edge (1 on the border, fading inwards)."""
    h, w = shape
    y = np.minimum(np.arange(h), np.arange(h)[::-1])[:, None]
    x = np.minimum(np.arange(w), np.arange(w)[::-1])[None, :]
    d = np.minimum(y, x).astype(np.float32)
    return np.exp(-d / max(band * max(h, w), 1e-6)).astype(np.float32)


def add_border_background(scribbles: np.ndarray, width: int = 2, background: int = 0) -> np.ndarray:
    """Foreground-only rule: mark the unscribbled image border as class ``background`` (0).

    Returns a new ``(H, W)`` uint8 map; pixels already scribbled keep their class. Used when the
    scribbles hold exactly one class and it is not 0 (e.g. a binary image with foreground strokes
    only), as the GrabCut baseline treats the border.
    """
    out = scribbles.copy()
    band = border_band(scribbles.shape, width) & (out == NONE)
    out[band] = background
    return out


def drop_replicated_channels(image: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` image whose three channels are equal (a grey image stored as RGB) as
    ``(H, W)``; any other image unchanged. Grey features are a third of the work."""
    if image.ndim == 3 and np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]):
        return np.ascontiguousarray(image[..., 0])
    return image


# ----------------------------------------------------------------------------- resizing
def working_scale(shape: tuple[int, int], max_side: int) -> float:
    """Scale factor (<= 1) that brings the long side to at most ``max_side``."""
    return min(1.0, max_side / max(shape))


def resize_image(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Area-resample an image to ``size_hw``; same dtype and channel layout."""
    if image.shape[:2] == tuple(size_hw):
        return image
    return cv2.resize(image, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)


def resize_scribbles(scribbles: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Downscale a scribble map keeping thin strokes: each class is area-resampled and kept where
    it covers a noticeable part of the target pixel; ties go to the larger coverage.
    ``(H, W)`` uint8 -> ``size_hw`` uint8 (255 = none)."""
    if scribbles.shape == tuple(size_hw):
        return scribbles
    h, w = size_hw
    out = np.full((h, w), NONE, np.uint8)
    best = np.zeros((h, w), np.float32)
    ridge = np.ones((3, 3), np.uint8)
    for c in scribbled_classes(scribbles):
        cov = cv2.resize((scribbles == c).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        # a class must cover > 20 % of the target pixel, or lie on the ridge of a stroke thinner
        # than that (its coverage highest across the stroke): a 6 px stroke on a 4000 px photo
        # covers 19 % of a 128 px grid's pixel and vanished, so its region was never found
        keep = (cov > 0.2) | ((cov > 0) & (cov >= cv2.dilate(cov, ridge)))
        take = keep & (cov > best)
        out[take] = c
        best[take] = cov[take]
    return out


def resize_probs(probs: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(C, h, w)`` float32 maps to ``(C, H, W)``."""
    if probs.shape[1:] == tuple(size_hw):
        return probs
    h, w = size_hw
    return np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in probs]).astype(np.float32)


# ----------------------------------------------------------------------------- features
def to_float_channels(image: np.ndarray) -> np.ndarray:
    """``(H, W, K)`` float32 colour channels in roughly [0, 1]: CIE Lab for RGB, intensity for grey."""
    if image.ndim == 2:
        return (image.astype(np.float32) / 255.0)[..., None]
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32) / 255.0
    return lab


def standardize(x: np.ndarray) -> np.ndarray:
    """Zero-mean unit-variance per last-axis feature; ``(..., F)`` float32."""
    mu = x.reshape(-1, x.shape[-1]).mean(0)
    sd = x.reshape(-1, x.shape[-1]).std(0)
    return ((x - mu) / np.where(sd > 1e-6, sd, 1.0)).astype(np.float32)


def multiscale_features(channels: np.ndarray, sigmas: tuple[float, ...] = (1.0, 2.0, 4.0),
                        xy_weight: float = 0.0) -> np.ndarray:
    """ilastik-style per-pixel features, ``(H, W, K)`` float32 -> ``(H, W, F)`` float32.

    Per channel: the raw value, Gaussian smoothings at each sigma, gradient magnitude and
    Laplacian of Gaussian at each sigma; for the first channel (L or intensity) also the
    structure-tensor texture energy. Optional normalised (y, x) position scaled by ``xy_weight``.
    """
    h, w, k = channels.shape
    feats = []
    for ci in range(k):
        ch = np.ascontiguousarray(channels[..., ci])
        feats.append(ch)
        for s in sigmas:
            g = cv2.GaussianBlur(ch, (0, 0), s)
            feats.append(g)
            gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
            gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
            feats.append(np.sqrt(gx * gx + gy * gy))
            feats.append(cv2.Laplacian(g, cv2.CV_32F, ksize=3))
            if ci == 0:
                # local texture energy: smoothed squared gradient at twice the scale
                feats.append(cv2.GaussianBlur(gx * gx + gy * gy, (0, 0), 2 * s))
    f = standardize(np.stack(feats, -1))
    if xy_weight > 0:
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        pos = np.stack([yy / max(h, w), xx / max(h, w)], -1) * (xy_weight * math.sqrt(12.0))
        f = np.concatenate([f, pos.astype(np.float32)], -1)
    return f


# ----------------------------------------------------------------------------- probability helpers
def softmax(scores: np.ndarray, axis: int = 0) -> np.ndarray:
    """Numerically stable softmax, float32."""
    s = scores - scores.max(axis, keepdims=True)
    e = np.exp(s)
    return (e / e.sum(axis, keepdims=True)).astype(np.float32)


def probs_to_unary(probs: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """``-log(p)`` costs, ``(C, H, W)`` float32."""
    return (-np.log(np.clip(probs, eps, 1.0))).astype(np.float32)


def blend_prior(unary: np.ndarray, prior: np.ndarray | None, weight: float) -> np.ndarray:
    """Add ``weight * -log(prior)`` to the unaries (a prior from a model's prediction)."""
    if prior is None or weight <= 0:
        return unary
    return (unary + weight * probs_to_unary(prior, 1e-3)).astype(np.float32)


def blend_probs(probs: np.ndarray, prior: np.ndarray | None, weight: float) -> np.ndarray:
    """``probs * prior**weight`` renormalised, computed in log space; ``(C, H, W)`` float32.
    Classes with zero probability stay at zero."""
    if prior is None or weight <= 0:
        return probs
    logp = np.log(np.clip(probs, 1e-30, 1.0)) + weight * np.log(np.clip(prior, 1e-3, 1.0))
    logp = np.where(probs > 0, logp, -np.inf)
    return softmax(logp)


def impose_scribbles(unary: np.ndarray, scribbles: np.ndarray) -> np.ndarray:
    """Hard constraints on ``(C, H, W)`` costs: a scribbled pixel can only take its class."""
    u = unary.copy()
    m = scribbles != NONE
    if m.any():
        lab = scribbles[m].astype(np.int64)
        sub = u[:, m]
        sub[:] = HARD
        sub[lab, np.arange(lab.size)] = 0.0
        u[:, m] = sub
    return u


def onehot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(H, W)`` int labels -> ``(C, H, W)`` float32 one-hot."""
    return (np.arange(num_classes)[:, None, None] == labels[None]).astype(np.float32)


def restrict_to_classes(probs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Zero the probability of classes that were not scribbled and renormalise."""
    keep = np.zeros(probs.shape[0], bool)
    keep[classes] = True
    p = probs * keep[:, None, None]
    s = p.sum(0, keepdims=True)
    return np.where(s > 0, p / np.maximum(s, 1e-12), probs).astype(np.float32)


# ----------------------------------------------------------------------------- colour models (GMM)
def fit_gmm(x: np.ndarray, k: int = 5, iters: int = 8, seed: int = 0, reg: float = 1e-3, init=None,
            q: np.ndarray | None = None):
    """Fit a full-covariance Gaussian mixture to ``x`` ``(N, D)`` by EM (k-means++ start, or
    ``init``, a previous fit of the same ``D``, as a warm start; ``q``: ``quadratic_features(x)``
    when already computed).

    Returns ``(weights (k,), means (k, D), precisions_chol (k, D, D), log_norm (k,))``, float64.
    """
    x = np.asarray(x, np.float64)
    n, d = x.shape
    base_reg = reg + 1e-2 * x.var(0).mean()
    if init is not None and init[1].shape[1] == d and n >= init[1].shape[0] * 2 * d:
        k = init[1].shape[0]
        q = quadratic_features(x) if q is None else q
        resp = _responsibilities(q, init)
    else:
        k = max(1, min(k, n // max(2 * d, 2)))
        rng = np.random.default_rng(seed)
        # k-means++ seeding then a few Lloyd steps
        centers = np.empty((k, d))
        centers[0] = x[rng.integers(n)]
        d2 = ((x - centers[0]) ** 2).sum(1)
        for j in range(1, k):
            p = d2 / d2.sum() if d2.sum() > 0 else None
            centers[j] = x[rng.choice(n, p=p)]
            d2 = np.minimum(d2, ((x - centers[j]) ** 2).sum(1))
        for _ in range(4):
            a = _sq_dists(x, centers).argmin(1)
            cnt = np.bincount(a, minlength=k)
            sums = np.zeros((k, d))
            np.add.at(sums, a, x)
            centers = np.where(cnt[:, None] > 0, sums / np.maximum(cnt, 1)[:, None], centers)
        resp = np.eye(k)[a]
    gmm = None
    for it in range(max(1, iters)):
        if it:
            q = quadratic_features(x) if q is None else q
            resp = _responsibilities(q, gmm)
        nk = resp.sum(0) + 1e-9
        wts = nk / n
        means = (resp.T @ x) / nk[:, None]
        diff = x[None] - means[:, None]                                  # (k, n, d)
        cov = (diff * resp.T[..., None]).transpose(0, 2, 1) @ diff / nk[:, None, None] + base_reg * np.eye(d)
        prec_chol = np.linalg.inv(np.linalg.cholesky(cov)).transpose(0, 2, 1)
        log_det = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(1)
        log_norm = np.log(wts + 1e-12) + log_det - 0.5 * d * np.log(2 * np.pi)
        gmm = (wts, means, prec_chol, log_norm)
    return gmm


def _sq_dists(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return (x * x).sum(1)[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None]


def quadratic_features(x: np.ndarray) -> np.ndarray:
    """``(N, D)`` -> ``(1 + D + D (D + 1) / 2, N)`` float32 (one row per feature): ``1``, ``x_i``,
    ``x_i x_j`` (i <= j), so that every Gaussian's log-density is one matrix product (see
    :func:`_gmm_component_logp`; float32 halves its cost, and the densities are only compared)."""
    xt = np.asarray(x, np.float32).T
    d = xt.shape[0]
    rows = [np.ones((1, xt.shape[1]), np.float32), xt] + [xt[i:] * xt[i] for i in range(d)]
    return np.concatenate(rows, 0)


def _responsibilities(q: np.ndarray, gmm) -> np.ndarray:
    """``(N, k)`` posterior of each component."""
    lp = _gmm_component_logp(q, gmm)
    lp -= lp.max(0, keepdims=True)
    r = np.exp(lp)
    return (r / r.sum(0, keepdims=True)).T


@functools.lru_cache(maxsize=8)
def _triu(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iu, ju = np.triu_indices(d)
    return iu, ju, np.where(iu == ju, 1.0, 2.0)


def _gmm_component_logp(q: np.ndarray, gmm) -> np.ndarray:
    """``(k, N)`` log of each weighted component's density, from ``q = quadratic_features(x)``:
    ``log_norm - x'Ax / 2 + (A mu)'x - mu'A mu / 2`` with ``A`` the precision matrix."""
    _, means, prec_chol, log_norm = gmm
    d = means.shape[1]
    prec = prec_chol @ prec_chol.transpose(0, 2, 1)                     # (k, d, d)
    lin = (prec @ means[..., None])[..., 0]                             # (k, d)
    const = log_norm - 0.5 * (lin * means).sum(1)
    iu, ju, twice = _triu(d)                                            # the order of quadratic_features
    quad = -0.5 * prec[:, iu, ju] * twice                               # (k, d (d + 1) / 2)
    return np.concatenate([const[:, None], lin, quad], 1).astype(q.dtype) @ q


def gmm_loglik(x: np.ndarray, gmm, q: np.ndarray | None = None) -> np.ndarray:
    """Log-likelihood of each row of ``x`` ``(N, D)`` under a fitted GMM; ``(N,)`` float64
    (``q``: ``quadratic_features(x)`` when already computed)."""
    lp = _gmm_component_logp(quadratic_features(x) if q is None else q, gmm)
    m = lp.max(0)
    return m + np.log(np.exp(lp - m).sum(0))


def sample_scribbled(scribbles: np.ndarray, cls: int, max_n: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of up to ``max_n`` pixels scribbled with ``cls`` (random subset)."""
    idx = np.flatnonzero(scribbles.ravel() == cls)
    if idx.size > max_n:
        idx = rng.choice(idx, max_n, replace=False)
    return idx


def gmm_unaries(feats: np.ndarray, scribbles: np.ndarray, num_classes: int, k: int = 5,
                max_samples: int = 1000, seed: int = 0, iters: int = 8, state: dict | None = None,
                q: np.ndarray | None = None) -> np.ndarray:
    """Per-class GMM costs ``(C, H, W)`` float32 (``-log p(feature | class)``, shifted per pixel so
    the best class costs 0), each class's mixture fitted by ``iters`` EM steps on (up to
    ``max_samples`` of) its pixels in ``scribbles``. Classes without scribbles get :data:`HARD`.

    ``state``: a dict kept between calls (GrabCut-style refits): each class's mixture starts from
    its previous fit there and is stored back. ``q``: ``quadratic_features`` of the flattened
    ``feats`` when already computed (it does not change between refits).
    """
    h, w, d = feats.shape
    flat = feats.reshape(-1, d)
    q = quadratic_features(flat) if q is None else q
    rng = np.random.default_rng(seed)
    ll = np.full((num_classes, h * w), -HARD, np.float64)
    for c in scribbled_classes(scribbles):
        idx = sample_scribbled(scribbles, int(c), max_samples, rng)
        if idx.size < 2:
            # a single pixel: an isotropic Gaussian around it
            mu = flat[idx].mean(0)
            ll[c] = -0.5 * ((flat - mu) ** 2).sum(1) / 0.05
            continue
        init = state.get(int(c)) if state is not None else None
        gmm = fit_gmm(flat[idx], k=k, iters=iters, seed=seed, init=init, q=q[:, idx])
        if state is not None:
            state[int(c)] = gmm
        ll[c] = gmm_loglik(flat, gmm, q)
    ll -= ll.max(0, keepdims=True)
    return np.minimum(-ll, HARD).reshape(num_classes, h, w).astype(np.float32)


# ----------------------------------------------------------------------------- pixel classifier
def rff_classifier(feats: np.ndarray, scribbles: np.ndarray, num_classes: int, n_features: int = 256,
                   gamma: float | None = None, ridge: float = 1e-1, max_samples: int = 3000,
                   temperature: float = 0.15, seed: int = 0) -> np.ndarray:
    """Per-image pixel classifier: kernel ridge regression on one-hot targets, approximated with
    random Fourier features of an RBF kernel, class-balanced. ``(H, W, F)`` float32 features ->
    ``(C, H, W)`` float32 probabilities (classes without scribbles get 0)."""
    h, w, d = feats.shape
    flat = feats.reshape(-1, d)
    rng = np.random.default_rng(seed)
    classes = scribbled_classes(scribbles)
    per_class = max(50, max_samples // max(1, classes.size))
    idx_list, y_list, wt_list = [], [], []
    for c in classes:
        idx = sample_scribbled(scribbles, int(c), per_class, rng)
        idx_list.append(idx)
        y_list.append(np.full(idx.size, c))
        wt_list.append(np.full(idx.size, 1.0 / idx.size))
    idx = np.concatenate(idx_list)
    y = np.concatenate(y_list)
    sw = np.concatenate(wt_list)
    sw = sw / sw.mean()
    gamma = gamma if gamma is not None else 1.0 / d
    omega = rng.normal(0.0, math.sqrt(2 * gamma), (d, n_features)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, n_features).astype(np.float32)
    scale = np.float32(math.sqrt(2.0 / n_features))

    def phi(z):
        return np.cos(z @ omega + phase) * scale

    zt = phi(flat[idx])
    zt = np.concatenate([zt, np.ones((zt.shape[0], 1), np.float32)], 1)
    yt = np.zeros((idx.size, num_classes), np.float32)
    yt[np.arange(idx.size), y] = 1.0
    a = (zt * sw[:, None]).T @ zt + ridge * np.eye(zt.shape[1], dtype=np.float32)
    b = (zt * sw[:, None]).T @ yt
    coef = np.linalg.solve(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)
    scores = phi(flat) @ coef[:-1] + coef[-1]
    mask = np.full(num_classes, -np.inf, np.float32)
    mask[classes] = 0.0
    probs = softmax((scores / temperature + mask).T, axis=0)
    return probs.reshape(num_classes, h, w)


# ----------------------------------------------------------------------------- grid graphs
def grid_edges(shape: tuple[int, int], diagonal: bool = False):
    """Index pairs ``(a, b)`` of the 4- (or 8-) connected grid and their lengths; int64 / float32."""
    h, w = shape
    idx = np.arange(h * w).reshape(h, w)
    pairs = [(idx[:, :-1], idx[:, 1:], 1.0), (idx[:-1, :], idx[1:, :], 1.0)]
    if diagonal:
        pairs += [(idx[:-1, :-1], idx[1:, 1:], math.sqrt(2)), (idx[:-1, 1:], idx[1:, :-1], math.sqrt(2))]
    a = np.concatenate([p[0].ravel() for p in pairs])
    b = np.concatenate([p[1].ravel() for p in pairs])
    ln = np.concatenate([np.full(p[0].size, p[2], np.float32) for p in pairs])
    return a, b, ln


def contrast_weights(channels: np.ndarray, a: np.ndarray, b: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """GrabCut's contrast-sensitive edge weights ``exp(-beta |I_a - I_b|^2) / length``, float32,
    with ``beta = 1 / (2 <|I_a - I_b|^2>)``."""
    flat = channels.reshape(-1, channels.shape[-1])
    d2 = ((flat[a] - flat[b]) ** 2).sum(1)
    beta = 1.0 / (2.0 * max(float(d2.mean()), 1e-8))
    return (np.exp(-beta * d2) / lengths).astype(np.float32)


def graph_cut(unary: np.ndarray, a: np.ndarray, b: np.ndarray, weights: np.ndarray,
              smoothness: float, init: np.ndarray | None = None, sweeps: int = 2,
              labels_to_try: np.ndarray | None = None) -> np.ndarray:
    """Minimise ``sum unary[l_p, p] + smoothness * sum_{pq} w_pq [l_p != l_q]`` with PyMaxflow.

    Two labels: one exact min-cut. More: alpha-expansion (Boykov, Veksler & Zabih 2001) over
    ``labels_to_try`` for ``sweeps`` sweeps. ``unary``: ``(C, H, W)`` float32; returns ``(H, W)``
    int64 labels.
    """
    import maxflow

    c, h, w = unary.shape
    flat_u = unary.reshape(c, -1).astype(np.float64)
    wpair = smoothness * weights.astype(np.float64)
    labels_to_try = np.arange(c) if labels_to_try is None else np.asarray(labels_to_try)
    lab = flat_u.argmin(0) if init is None else init.ravel().astype(np.int64).copy()
    if labels_to_try.size == 1:
        return np.full((h, w), labels_to_try[0], np.int64)
    if labels_to_try.size == 2:
        l0, l1 = labels_to_try
        g = maxflow.Graph[float](h * w, a.size)
        g.add_nodes(h * w)
        g.add_edges(a, b, wpair, wpair)
        d = flat_u[l1] - flat_u[l0]
        # sink segment = l1: pay the source capacity; source segment = l0: pay the sink capacity
        g.add_grid_tedges(np.arange(h * w), np.maximum(d, 0), np.maximum(-d, 0))
        g.maxflow()
        seg = g.get_grid_segments(np.arange(h * w))
        return np.where(seg, l1, l0).reshape(h, w)
    nodes = np.arange(h * w)
    for _ in range(sweeps):
        changed = False
        for alpha in labels_to_try:
            la, lb = lab[a], lab[b]
            A = wpair * (la != lb)
            B = wpair * (la != alpha)
            C = wpair * (lb != alpha)
            cost_keep = flat_u[lab, nodes].copy()
            cost_alpha = flat_u[alpha].copy()
            # E = A + (C - A) x_a - C x_b + (B + C - A) (1 - x_a) x_b ; x = 1 means "take alpha"
            cost_alpha += np.bincount(a, C - A, h * w) - np.bincount(b, C, h * w)
            cap = B + C - A
            g = maxflow.Graph[float](h * w, a.size)
            g.add_nodes(h * w)
            g.add_edges(a, b, np.maximum(cap, 0), np.zeros_like(cap))
            dd = cost_alpha - cost_keep
            g.add_grid_tedges(nodes, np.maximum(dd, 0), np.maximum(-dd, 0))
            g.maxflow()
            take = g.get_grid_segments(nodes) & (lab != alpha)
            if take.any():
                lab[take] = alpha
                changed = True
        if not changed:
            break
    return lab.reshape(h, w)


# ----------------------------------------------------------------------------- geodesic distances
def geodesic_graph(channels: np.ndarray, edge_scale: float = 10.0, a=None, b=None, lengths=None):
    """The 8-connected grid graph (scipy CSR) of :func:`geodesic_distances`: edge length =
    ``length * (1 + edge_scale * |I_a - I_b| / mean|I_a - I_b|)``. ``channels``: ``(H, W, K)`` float32."""
    from scipy.sparse import coo_matrix

    h, w = channels.shape[:2]
    if a is None:
        a, b, lengths = grid_edges((h, w), diagonal=True)
    flat = channels.reshape(-1, channels.shape[-1])
    diff = np.sqrt(((flat[a] - flat[b]) ** 2).sum(1))
    diff = diff / max(float(diff.mean()), 1e-6)
    cost = lengths * (1.0 + edge_scale * diff) + 1e-6
    return coo_matrix((cost, (a, b)), shape=(h * w, h * w)).tocsr()


def geodesic_to(graph, seeds: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 geodesic distance on ``graph`` to the pixels where ``seeds`` (bool
    ``(H, W)``) is set (``inf`` everywhere when none is)."""
    from scipy.sparse.csgraph import dijkstra

    idx = np.flatnonzero(seeds.ravel())
    if idx.size == 0:
        return np.full(seeds.shape, np.inf, np.float32)
    return dijkstra(graph, directed=False, indices=idx, min_only=True).astype(np.float32).reshape(seeds.shape)


def geodesic_distances(channels: np.ndarray, scribbles: np.ndarray, num_classes: int,
                       edge_scale: float = 10.0, a=None, b=None, lengths=None, graph=None) -> np.ndarray:
    """Geodesic distance of every pixel to each class's strokes, ``(C, H, W)`` float32.

    Edge length = ``length * (1 + edge_scale * |I_a - I_b| / mean|I_a - I_b|)`` on the 8-connected
    grid (a flat image gives the Euclidean distance in pixels, image edges lengthen paths that
    cross them). ``channels``: ``(H, W, K)`` float32. Classes without strokes get ``inf``.
    ``graph``: the :func:`geodesic_graph` of ``channels``, when the caller already has it.
    """
    if graph is None:
        graph = geodesic_graph(channels, edge_scale, a, b, lengths)
    out = np.full((num_classes, *scribbles.shape), np.inf, np.float32)
    for c in scribbled_classes(scribbles):
        out[c] = geodesic_to(graph, scribbles == c)
    return out


# ----------------------------------------------------------------------------- random walker
def random_walker(image: np.ndarray, scribbles: np.ndarray, num_classes: int, beta: float = 130.0,
                  max_side: int = 0) -> np.ndarray:
    """Grady's random walker, ``(C, H, W)`` float32 probabilities (0 for classes without strokes).

    The edge weights are scikit-image's (4-connected, ``exp(-beta / (10 std) |I_a - I_b|^2)``,
    divided by ``sqrt(K)`` for ``K > 1`` channels), but the Dirichlet problem is solved once for all
    classes with a sparse direct factorisation (SuperLU, minimum-degree ordering of the symmetric
    Laplacian) instead of one preconditioned conjugate gradient per class. ``max_side`` > 0 solves
    on a grid reduced to that long side and upsamples the probabilities bilinearly (the strokes are
    re-imposed at full size). ``image``: ``(H, W)`` or ``(H, W, 3)`` uint8 (RGB, as scikit-image
    sees it).
    """
    from scipy import sparse
    from scipy.sparse.linalg import splu

    full = scribbles.shape
    if max_side and max(full) > max_side:
        s = working_scale(full, max_side)
        hw = (max(2, round(full[0] * s)), max(2, round(full[1] * s)))
        small = resize_image(image, hw)
        scr = resize_scribbles(scribbles, hw)
        if (scr != NONE).any() and scribbled_classes(scr).size == scribbled_classes(scribbles).size:
            p = resize_probs(random_walker(small, scr, num_classes, beta), full)
            return enforce_scribbles(normalize_probs(p), scribbles)
    h, w = full
    classes = scribbled_classes(scribbles)
    probs = np.zeros((num_classes, h * w), np.float32)
    sflat = scribbles.ravel()
    seeded = sflat != NONE
    probs[sflat[seeded].astype(np.int64), np.flatnonzero(seeded)] = 1.0
    if classes.size < 2 or seeded.all():
        if classes.size == 1:
            probs[classes[0]] = 1.0
        return probs.reshape(num_classes, h, w)
    a, b, _ = grid_edges(full)
    channels = image.reshape(h, w, -1).astype(np.float64) / 255.0
    k = channels.shape[-1]
    flat = channels.reshape(-1, k)
    g2 = ((flat[a] - flat[b]) ** 2).sum(1)
    scale = beta / (10.0 * max(float(channels.std()), 1e-8)) / (math.sqrt(k) if k > 1 else 1.0)
    wt = np.exp(-scale * g2) + 1e-10
    n = h * w
    # unknowns: unscribbled pixels; seeds enter the right-hand side
    free = np.flatnonzero(~seeded)
    pos = np.full(n, -1, np.int64)
    pos[free] = np.arange(free.size)
    deg = np.bincount(a, wt, n) + np.bincount(b, wt, n)
    fa, fb = pos[a], pos[b]
    both = (fa >= 0) & (fb >= 0)
    rows = np.concatenate([fa[both], fb[both], np.arange(free.size)])
    cols = np.concatenate([fb[both], fa[both], np.arange(free.size)])
    vals = np.concatenate([-wt[both], -wt[both], deg[free]])
    lap = sparse.csc_matrix((vals, (rows, cols)), shape=(free.size, free.size))
    # right-hand side: sum of the weights to seeds of each class
    rhs = np.zeros((free.size, classes.size))
    cidx = np.full(256, -1, np.int64)
    cidx[classes] = np.arange(classes.size)
    for u, v in ((fa, b), (fb, a)):
        m = (u >= 0) & seeded[v]
        np.add.at(rhs, (u[m], cidx[sflat[v[m]]]), wt[m])
    lu = splu(lap, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    x = np.clip(lu.solve(rhs), 0.0, None)
    x /= np.maximum(x.sum(1, keepdims=True), 1e-12)
    probs[np.ix_(classes, free)] = x.T
    return probs.reshape(num_classes, h, w)


# ----------------------------------------------------------------------------- edge-aware upsampling
def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter. ``guide``: ``(H, W)`` or ``(H, W, 3)`` float32 in [0, 1];
    ``src``: ``(C, H, W)`` float32; returns ``(C, H, W)`` float32. Colour guides use the full
    3x3 covariance (edges of any colour are kept)."""
    r = max(1, int(radius))
    if guide.ndim == 2 or guide.shape[2] == 1:
        g = guide.reshape(guide.shape[:2])
        mg = _box(g, r)
        vg = _box(g * g, r) - mg * mg
        out = []
        for p in src:
            mp = _box(p, r)
            cov = _box(g * p, r) - mg * mp
            ak = cov / (vg + eps)
            bk = mp - ak * mg
            out.append(_box(ak, r) * g + _box(bk, r))
        return np.stack(out).astype(np.float32)
    g = guide
    mg = _box(g, r)  # (H, W, 3)
    # covariance of the guide: 6 unique entries
    ii = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    cov = {}
    for i, j in ii:
        cov[i, j] = _box(g[..., i] * g[..., j], r) - mg[..., i] * mg[..., j]
        if i == j:
            cov[i, j] = cov[i, j] + eps
    # inverse of the symmetric 3x3 matrix per pixel (adjugate / determinant)
    a11, a12, a13, a22, a23, a33 = (cov[k] for k in ii)
    i11 = a22 * a33 - a23 * a23
    i12 = a13 * a23 - a12 * a33
    i13 = a12 * a23 - a13 * a22
    i22 = a11 * a33 - a13 * a13
    i23 = a13 * a12 - a11 * a23
    i33 = a11 * a22 - a12 * a12
    det = a11 * i11 + a12 * i12 + a13 * i13
    inv = [[i11, i12, i13], [i12, i22, i23], [i13, i23, i33]]
    out = []
    for p in src:
        mp = _box(p, r)
        cgp = [_box(g[..., i] * p, r) - mg[..., i] * mp for i in range(3)]
        ak = [(inv[i][0] * cgp[0] + inv[i][1] * cgp[1] + inv[i][2] * cgp[2]) / det for i in range(3)]
        bk = mp - ak[0] * mg[..., 0] - ak[1] * mg[..., 1] - ak[2] * mg[..., 2]
        q = _box(bk, r)
        for i in range(3):
            q = q + _box(ak[i], r) * g[..., i]
        out.append(q)
    return np.stack(out).astype(np.float32)


def normalize_probs(p: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and renormalise over axis 0; float32."""
    p = np.clip(p, 0.0, None)
    s = p.sum(0, keepdims=True)
    return (p / np.maximum(s, 1e-8)).astype(np.float32)


def edge_aware_upsample(probs: np.ndarray, guide: np.ndarray, radius: int, eps: float = 1e-3) -> np.ndarray:
    """Bilinear upsampling of ``(C, h, w)`` probabilities to the guide's ``(H, W)``, then a guided
    filter on the full-resolution image so class borders snap to image edges; ``(C, H, W)`` float32."""
    up = resize_probs(probs, guide.shape[:2])
    return normalize_probs(guided_filter(guide, up, radius, eps))


def hard_mask(probs: np.ndarray, scribbles: np.ndarray) -> np.ndarray:
    """Argmax of ``(C, H, W)`` probabilities as ``(H, W)`` uint8, scribbled pixels keep their class."""
    mask = probs.argmax(0).astype(np.uint8)
    m = scribbles != NONE
    mask[m] = scribbles[m]
    return mask


def remove_specks(mask: np.ndarray, probs: np.ndarray, scribbles: np.ndarray, min_area: float) -> np.ndarray:
    """``mask`` with every region smaller than ``min_area`` pixels that holds no stroke pixel given
    to the next most likely class there (``probs`` ``(C, H, W)``). Upsampling a working-grid result
    along image edges leaves islands of a few pixels where the guide is noisy (a 12-megapixel photo:
    85-206 of 1-4 px around one object), far smaller than one working pixel, so not the labeller's."""
    if min_area < 2:
        return mask
    out = mask
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    for c in present if len(present) > 1 else ():
        _, lab, stats, _ = cv2.connectedComponentsWithStats((mask == c).astype(np.uint8), connectivity=8)
        for k in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < min_area) + 1:
            x, y, w, h = stats[k, :4]
            win = (slice(y, y + h), slice(x, x + w))
            speck = lab[win] == k
            if (scribbles[win][speck] != NONE).any():  # a region with a stroke stays
                continue
            p = probs[(slice(None),) + win][:, speck].copy()
            p[c] = -1.0
            if out is mask:
                out = mask.copy()
            out[win][speck] = p.argmax(0).astype(np.uint8)
    return out


def swap_to_mask(probs: np.ndarray, mask: np.ndarray, new_mask: np.ndarray) -> np.ndarray:
    """``probs`` ``(C, H, W)`` where ``new_mask`` relabelled pixels of ``mask`` (their argmax):
    there the two classes' probabilities trade places, so the argmax is ``new_mask`` and each
    pixel's probabilities still sum to what they did (:func:`remove_specks`)."""
    ys, xs = np.nonzero(new_mask != mask)
    if not len(ys):
        return probs
    out = probs.copy()
    old, new = mask[ys, xs].astype(np.int64), new_mask[ys, xs].astype(np.int64)
    out[old, ys, xs], out[new, ys, xs] = probs[new, ys, xs], probs[old, ys, xs]
    return out


def enforce_scribbles(probs: np.ndarray, scribbles: np.ndarray) -> np.ndarray:
    """Probabilities with scribbled pixels set to one-hot of their class; ``(C, H, W)`` float32."""
    m = scribbles != NONE
    if not m.any():
        return probs
    p = probs.copy()
    p[:, m] = 0.0
    p[scribbles[m].astype(np.int64), np.flatnonzero(m.ravel()) // probs.shape[2],
      np.flatnonzero(m.ravel()) % probs.shape[2]] = 1.0
    return p
