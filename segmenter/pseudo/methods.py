"""The registered scribble-to-mask methods (see :mod:`segmenter.pseudo` for the registry)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import functional as F
from .base import BaseConfig, Prepared, PseudoLabeler


def _soft_labels(labels: np.ndarray, soft: np.ndarray, num_classes: int, mix: float) -> np.ndarray:
    """Probabilities from a hard labelling ``(h, w)`` and soft evidence ``(C, h, w)``:
    ``(1 - mix) * onehot + mix * soft`` (the hard result wins the argmax, ``soft`` shapes the
    confidence and the upsampling at borders)."""
    return F.normalize_probs((1.0 - mix) * F.onehot(labels, num_classes) + mix * soft)


# ----------------------------------------------------------------------------- graph cut
@dataclass
class GraphCutConfig(BaseConfig):
    """``components``: Gaussians per class colour model; ``smoothness``: weight of the
    contrast-sensitive Potts term; ``iterations``: GrabCut-style refits of the colour models on
    the current labelling; ``texture``: add gradient/texture features to the colour model."""

    components: int = 5
    smoothness: float = 2.0
    iterations: int = 2
    texture: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.components < 1 or self.iterations < 1 or self.smoothness < 0:
            raise ValueError("components and iterations must be >= 1 and smoothness >= 0")


class GraphCut(PseudoLabeler):
    """Graph cut (PyMaxflow; alpha-expansion for more than two classes) with per-class Gaussian
    mixture colour/texture unaries fitted on the scribbled pixels (refitted on the labelling,
    as GrabCut does) and GrabCut's contrast-sensitive pairwise term on the 8-connected grid."""

    name = "graphcut"
    Config = GraphCutConfig
    uses_prior = True

    def label(self, prep: Prepared) -> np.ndarray:
        cfg = self.config
        feats = _colour_texture(prep.channels) if cfg.texture else prep.channels
        a, b, ln = F.grid_edges(prep.scribbles.shape, diagonal=True)
        wts = F.contrast_weights(prep.channels, a, b, ln)
        fit_on = prep.scribbles
        labels = None
        for _ in range(cfg.iterations):
            u = F.gmm_unaries(feats, fit_on, prep.num_classes, k=cfg.components, seed=cfg.seed)
            u = F.blend_prior(u, prep.prior, cfg.prior_weight)
            u = F.impose_scribbles(u, prep.scribbles)
            labels = F.graph_cut(u, a, b, wts, cfg.smoothness * 25.0, init=labels,
                                 labels_to_try=prep.classes)
            fit_on = np.where(prep.scribbles != F.NONE, prep.scribbles, labels).astype(np.uint8)
        soft = F.softmax(-np.minimum(u, 50.0) / 4.0)
        return _soft_labels(labels, soft, prep.num_classes, 0.3)


def _colour_texture(channels: np.ndarray) -> np.ndarray:
    import cv2

    l0 = np.ascontiguousarray(channels[..., 0])
    g = cv2.GaussianBlur(l0, (0, 0), 1.0)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    tex = cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), 2.0)
    return np.concatenate([channels, tex[..., None]], -1)


# ----------------------------------------------------------------------------- random walker
@dataclass
class RandomWalkerConfig(BaseConfig):
    """Random walker at the working resolution; ``beta`` as in scikit-image."""

    beta: float = 130.0

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError("beta must be positive")


class RandomWalker(PseudoLabeler):
    """Grady's random walker (2006) with scikit-image's edge weights, solved for all classes at once
    by a sparse direct factorisation (:func:`functional.random_walker`) on the reduced working
    image; the prior is blended into its probabilities. (Named ``random_walker_fast`` so that
    ``bench pseudo``'s full-resolution scikit-image ``random_walker`` baseline keeps its name.)"""

    name = "random_walker_fast"
    Config = RandomWalkerConfig

    def label(self, prep: Prepared) -> np.ndarray:
        return F.random_walker(prep.image, prep.scribbles, prep.num_classes, beta=self.config.beta)


# ----------------------------------------------------------------------------- pixel classifier
@dataclass
class PixelClassifierConfig(BaseConfig):
    """ilastik-style per-image classifier. ``sigmas``: feature scales (working pixels);
    ``n_features``: random Fourier features; ``ridge``: regulariser; ``xy_weight``: weight of
    the pixel position among the features (0 = none); ``temperature``: softmax temperature."""

    sigmas: tuple = (1.0, 2.0, 4.0)
    n_features: int = 256
    ridge: float = 0.1
    xy_weight: float = 0.0
    temperature: float = 0.15

    def __post_init__(self):
        super().__post_init__()
        if not self.sigmas or any(s <= 0 for s in self.sigmas):
            raise ValueError("sigmas must be a non-empty tuple of positive scales")
        if self.n_features < 8 or self.ridge <= 0 or self.temperature <= 0:
            raise ValueError("n_features >= 8, ridge > 0 and temperature > 0 are required")


class PixelClassifier(PseudoLabeler):
    """A classifier trained per image on the scribbled pixels over multi-scale features
    (smoothed intensities, gradient magnitudes, Laplacians, texture energy), as ilastik does;
    the classifier is kernel ridge regression with random Fourier features (no smoothing)."""

    name = "pixel_classifier"
    Config = PixelClassifierConfig
    uses_prior = True

    def label(self, prep: Prepared) -> np.ndarray:
        return self.classify(prep)

    def classify(self, prep: Prepared) -> np.ndarray:
        cfg = self.config
        feats = F.multiscale_features(prep.channels, tuple(cfg.sigmas), cfg.xy_weight)
        p = F.rff_classifier(feats, prep.scribbles, prep.num_classes, n_features=cfg.n_features,
                             ridge=cfg.ridge, temperature=cfg.temperature, seed=cfg.seed)
        if prep.prior is not None and cfg.prior_weight > 0:
            p = F.blend_probs(p, prep.prior, cfg.prior_weight)
        return p


# ----------------------------------------------------------------------------- geodesic
@dataclass
class GeodesicConfig(BaseConfig):
    """Geodesic-distance labelling. ``edge_scale``: how much image contrast lengthens a path;
    ``temperature``: softness (fraction of the image diagonal) of ``softmax(-distance)``."""

    edge_scale: float = 10.0
    temperature: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        if self.edge_scale < 0 or self.temperature <= 0:
            raise ValueError("edge_scale must be >= 0 and temperature > 0")


class Geodesic(PseudoLabeler):
    """Each pixel takes the class of the geodesically nearest stroke (paths that cross image
    edges are long); probabilities are a softmax of the negative distances."""

    name = "geodesic"
    Config = GeodesicConfig
    uses_prior = True

    def label(self, prep: Prepared) -> np.ndarray:
        cfg = self.config
        d = F.geodesic_distances(_smoothed(prep.channels), prep.scribbles, prep.num_classes, cfg.edge_scale)
        diag = float(np.hypot(*prep.scribbles.shape))
        u = np.where(np.isfinite(d), d, F.HARD) / (cfg.temperature * diag * (1 + cfg.edge_scale))
        u = F.blend_prior(u.astype(np.float32), prep.prior, cfg.prior_weight)
        return F.softmax(-u)


def _geodesic(prep: Prepared, edge_scale: float, max_side: int, border: tuple[float, float] | None = None) -> np.ndarray:
    """Geodesic distances ``(C, h, w)`` float32 on the working grid, computed on a grid reduced to
    ``max_side`` (0 = the working grid) and upsampled bilinearly, in working-grid pixels.
    ``border``: ``(offset, keep_ratio)`` adds the image border as a weak background stroke
    (:func:`_add_border_background`)."""
    shape = prep.scribbles.shape
    channels, scr, s = prep.channels, prep.scribbles, 1.0
    if max_side and max(shape) > max_side:
        s = F.working_scale(shape, max_side)
        hw = (max(2, round(shape[0] * s)), max(2, round(shape[1] * s)))
        small = F.resize_scribbles(prep.scribbles, hw)
        if F.scribbled_classes(small).size == prep.classes.size:
            channels = np.dstack([F.resize_image(np.ascontiguousarray(prep.channels[..., i]), hw)
                                  for i in range(prep.channels.shape[2])])
            scr = small
        else:  # a class's strokes vanish on the reduced grid: stay on the working grid
            s = 1.0
    smooth = _smoothed(channels)
    graph = F.geodesic_graph(smooth, edge_scale)
    d = F.geodesic_distances(smooth, scr, prep.num_classes, edge_scale, graph=graph)
    if border is not None:
        d = _add_border_background(d, scr, graph, *border)
    if s == 1.0:
        return d
    finite = np.isfinite(d)
    d = np.where(finite, d, F.HARD).astype(np.float32)
    up = F.resize_probs(d, shape) / s
    return np.where(F.resize_probs(finite.astype(np.float32), shape) > 0.5, up, np.inf).astype(np.float32)


def _add_border_background(d: np.ndarray, scribbles: np.ndarray, graph, offset: float,
                           keep_ratio: float) -> np.ndarray:
    """``d`` (geodesic distances to the strokes; class 0 = background) with the image border as a
    weak background stroke: ``d[0] = min(d[0], distance to the border + offset x diagonal)``.
    Border pixels that are geodesically much nearer a foreground stroke than a background one
    (``d_fg < keep_ratio x d_bg``: an object running out of the frame) are not part of that stroke.
    Regions that reach the rest of the border without crossing an image edge, and lie far from
    every stroke, become background-like."""
    seeds = F.border_band(scribbles.shape, 1) & (scribbles == F.NONE)
    fg = np.min(np.delete(d, 0, axis=0), 0)
    seeds &= ~(fg < keep_ratio * d[0])
    out = d.copy()
    out[0] = np.minimum(d[0], F.geodesic_to(graph, seeds) + offset * float(np.hypot(*scribbles.shape)))
    return out


def _smoothed(channels: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    import cv2

    return np.dstack([cv2.GaussianBlur(np.ascontiguousarray(channels[..., i]), (0, 0), sigma)
                      for i in range(channels.shape[2])]).reshape(channels.shape)


# ----------------------------------------------------------------------------- hybrid (default candidate)
@dataclass
class HybridConfig(PixelClassifierConfig):
    """Pixel classifier + random walker + colour GMMs + geodesic distance + contrast-sensitive graph cut.

    Two regimes with their own weights of the unary terms (0 = term off, not computed):

    * **multi-class** (``clf_weight``, ``rw_weight``, ``gmm_weight``, ``geo_weight``): more than
      two classes, or two classes neither of which is 0. The classifier's ``-log p`` sharpens
      borders, the random walker's ``-log p`` keeps each class near its strokes.
    * **binary** (``binary_*`` settings; ``grabcut_init`` on, two classes, one of them 0):
      GrabCut-style colour GMMs refitted ``iterations`` times on the labelling. As GrabCut does,
      every unscribbled pixel is "probably background" for the first colour fit, except pixels
      whose geodesic distance to a foreground stroke is under ``binary_geo_init_ratio`` times their
      distance to a background stroke, which start as foreground (0 = GrabCut's start).
      A classifier trained on strokes alone has no such prior and floods unseen background.
      GrabCut's other assumption, "the object lies inside the frame", enters softly: the
      foreground pays ``binary_border_weight * exp(-d / (binary_border_band * long side))`` at
      distance ``d`` from the image edge (background regions that touch the border stop leaking
      into the object; an object touching the border still wins where its colour model is clear).
      Not applied when the strokes are foreground-only (the border is then hard background).
      The border is also a *weak background stroke* for the geodesic distances (initial fit and
      geodesic cost): ``d_bg = min(d_bg, distance to the border + binary_border_offset x diagonal)``
      (``None`` = off), so that a look-alike region reaching the border, far from every stroke,
      is not taken into the object; border pixels geodesically nearer a foreground stroke than
      ``binary_border_keep_ratio`` times a background one (an object running out of the frame)
      are left out of that stroke.

    ``components``: Gaussians per class; ``edge_scale``: geodesic contrast factor;
    ``smoothness`` (``binary_smoothness``): Potts weight of the graph cut (0 = no cut);
    ``texture``: a gradient-texture feature beside colour in the GMMs; ``soft_mix``: share of the
    soft unaries in the output probabilities; ``rw_beta``: random-walker beta; ``rw_max_side``: long
    side of the grid the random walker is solved on (0 = the working grid); ``sweeps``:
    alpha-expansion sweeps (more than two classes); ``binary_max_side``: working resolution of the
    binary regime (0 = ``max_side``; a binary cut is one cheap min-cut); ``geo_max_side``: long side
    of the grid the geodesic distances are computed on (0 = the working grid; upsampled bilinearly);
    ``refit_iters``: EM steps of each GMM refit after the first fit (8 steps), warm-started from the
    previous fit; ``upsample_grey``: grey guide for the edge-aware upsampling (a third of the work).
    """

    clf_weight: float = 1.0
    rw_weight: float = 1.0
    gmm_weight: float = 0.0
    geo_weight: float = 0.0
    binary_clf_weight: float = 0.0
    binary_rw_weight: float = 0.0
    binary_gmm_weight: float = 0.2
    binary_geo_weight: float = 0.1
    binary_smoothness: float = 2.5
    binary_geo_init_ratio: float = 0.25
    binary_border_weight: float = 1.0
    binary_border_band: float = 0.05
    binary_border_offset: float | None = 1.0
    binary_border_keep_ratio: float = 0.35
    geo_max_side: int = 64
    refit_iters: int = 3
    upsample_grey: bool = True
    components: int = 3
    iterations: int = 3
    edge_scale: float = 10.0
    smoothness: float = 2.0
    soft_mix: float = 0.3
    grabcut_init: bool = True
    rw_beta: float = 130.0
    rw_max_side: int = 64
    sweeps: int = 1
    max_side: int = 128
    binary_max_side: int = 0
    texture: bool = True

    def __post_init__(self):
        super().__post_init__()
        if min(self.clf_weight, self.gmm_weight, self.geo_weight, self.rw_weight, self.rw_beta,
               self.binary_clf_weight, self.binary_rw_weight, self.binary_gmm_weight,
               self.binary_geo_weight, self.binary_smoothness, self.binary_geo_init_ratio,
               self.edge_scale, self.smoothness) < 0:
            raise ValueError("weights, edge_scale and smoothness must be >= 0")
        if not 0 <= self.soft_mix <= 1 or min(self.iterations, self.components, self.sweeps) < 1:
            raise ValueError("soft_mix must be in [0, 1], iterations, components and sweeps >= 1")
        if self.rw_max_side < 0 or (0 < self.rw_max_side < 16):
            raise ValueError(f"rw_max_side must be 0 or at least 16, got {self.rw_max_side}")
        if self.binary_max_side < 0 or (0 < self.binary_max_side < 16):
            raise ValueError(f"binary_max_side must be 0 or at least 16, got {self.binary_max_side}")
        if self.geo_max_side < 0 or (0 < self.geo_max_side < 16):
            raise ValueError(f"geo_max_side must be 0 or at least 16, got {self.geo_max_side}")
        if self.binary_border_weight < 0 or self.binary_border_band <= 0 or self.refit_iters < 1:
            raise ValueError("binary_border_weight must be >= 0, binary_border_band > 0 and refit_iters >= 1")
        if (self.binary_border_offset is not None and self.binary_border_offset < 0) or self.binary_border_keep_ratio < 0:
            raise ValueError("binary_border_offset must be >= 0 (or None) and binary_border_keep_ratio >= 0")


class Hybrid(PixelClassifier):
    """Unaries = ``clf_weight * -log p(classifier) + rw_weight * -log p(random walker) +
    gmm_weight * GMM cost + geo_weight * geodesic distance`` (the ``binary_*`` weights in the
    binary regime, see :class:`HybridConfig`), blended with the prior, labelled by a
    contrast-sensitive graph cut (alpha-expansion for many classes); the GMMs are refitted on the
    labelling ``iterations`` times."""

    name = "hybrid"
    Config = HybridConfig
    uses_prior = True

    def _is_binary(self, classes: np.ndarray, num_classes: int) -> bool:
        return self.config.grabcut_init and num_classes == 2 and 0 in classes

    def working_max_side(self, num_classes: int) -> int:
        cfg = self.config
        if cfg.binary_max_side and cfg.grabcut_init and num_classes == 2:
            return cfg.binary_max_side
        return cfg.max_side

    def label(self, prep: Prepared) -> np.ndarray:
        cfg = self.config
        binary = self._is_binary(prep.classes, prep.num_classes)
        geo_init = 0.0
        if binary:
            w_clf, w_rw, w_gmm = cfg.binary_clf_weight, cfg.binary_rw_weight, cfg.binary_gmm_weight
            w_geo, smoothness, geo_init = cfg.binary_geo_weight, cfg.binary_smoothness, cfg.binary_geo_init_ratio
        else:
            w_clf, w_rw, w_gmm, w_geo = cfg.clf_weight, cfg.rw_weight, cfg.gmm_weight, cfg.geo_weight
            smoothness = cfg.smoothness
        shape = prep.scribbles.shape
        base = np.zeros((prep.num_classes, *shape), np.float32)
        if w_clf > 0:
            p = self.classify(prep)  # the prior is folded in here
            base += w_clf * F.probs_to_unary(p, 1e-3)
        else:
            base = F.blend_prior(base, prep.prior, cfg.prior_weight)
        d = None
        if w_geo > 0 or geo_init > 0:
            border = None
            if binary and cfg.binary_border_offset is not None and not prep.border_background:
                border = (cfg.binary_border_offset, cfg.binary_border_keep_ratio)
            d = _geodesic(prep, cfg.edge_scale, cfg.geo_max_side, border)
        border_cost = None
        if binary and cfg.binary_border_weight > 0 and not prep.border_background:
            border_cost = cfg.binary_border_weight * F.border_proximity(shape, cfg.binary_border_band)
            fg = int(prep.classes[prep.classes != 0][0])
            base[fg] += border_cost
        if w_geo > 0:
            diag = float(np.hypot(*shape))
            dn = np.where(np.isfinite(d), d, F.HARD) / (diag * (1 + cfg.edge_scale) * 0.1)
            dn = dn - dn.min(0, keepdims=True)
            base += w_geo * dn.astype(np.float32)
        if w_rw > 0:
            rw = F.random_walker(prep.image, prep.scribbles, prep.num_classes, cfg.rw_beta, cfg.rw_max_side)
            base += w_rw * F.probs_to_unary(F.normalize_probs(rw + 1e-6), 1e-3)
        wts = None
        if smoothness > 0:
            a, b, ln = F.grid_edges(shape, diagonal=True)
            wts = F.contrast_weights(prep.channels, a, b, ln)
        feats = None
        if w_gmm > 0:
            feats = _colour_texture(prep.channels) if cfg.texture else prep.channels
        fit_on, labels = prep.scribbles, None
        if binary:
            # GrabCut's start: every unscribbled pixel is "probably background" for the first fit
            fit_on = np.where(prep.scribbles == F.NONE, 0, prep.scribbles).astype(np.uint8)
            if geo_init > 0:
                # ... except pixels much closer (geodesically) to a foreground than to a background stroke
                dd = np.where(np.isfinite(d), d, np.inf)
                near = dd[1] < geo_init * dd[0]
                fit_on = np.where((prep.scribbles == F.NONE) & near, 1, fit_on).astype(np.uint8)
        state, q = {}, None
        if w_gmm > 0:
            q = F.quadratic_features(feats.reshape(-1, feats.shape[-1]))
        for it in range(cfg.iterations if w_gmm > 0 else 1):
            u = base
            if w_gmm > 0:
                g = F.gmm_unaries(feats, fit_on, prep.num_classes, k=cfg.components, seed=cfg.seed,
                                  iters=8 if it == 0 else cfg.refit_iters, state=state, q=q)
                u = base + w_gmm * np.minimum(g, 50.0)
            u = F.impose_scribbles(u, prep.scribbles)
            if wts is None:
                return F.softmax(-np.minimum(u, 50.0))
            labels = F.graph_cut(u, a, b, wts, smoothness, init=labels, labels_to_try=prep.classes,
                                 sweeps=cfg.sweeps)
            fit_on = np.where(prep.scribbles != F.NONE, prep.scribbles, labels).astype(np.uint8)
        soft = F.softmax(-np.minimum(u, 50.0))
        return _soft_labels(labels, soft, prep.num_classes, cfg.soft_mix)
