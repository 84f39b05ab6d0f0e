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
    """scikit-image ``random_walker`` at the working resolution; ``beta`` as in scikit-image."""

    beta: float = 130.0
    tol: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0 or self.tol <= 0:
            raise ValueError("beta and tol must be positive")


class RandomWalker(PseudoLabeler):
    """scikit-image's random walker (Grady 2006), conjugate gradient with Jacobi preconditioner,
    on the reduced working image; the prior is blended into its probabilities. (Named
    ``random_walker_fast`` so that ``bench pseudo``'s full-resolution ``random_walker`` baseline
    keeps its name.)"""

    name = "random_walker_fast"
    Config = RandomWalkerConfig

    def label(self, prep: Prepared) -> np.ndarray:
        return random_walker_probs(prep.image, prep.scribbles, prep.num_classes,
                                   beta=self.config.beta, tol=self.config.tol)


def random_walker_probs(image: np.ndarray, scribbles: np.ndarray, num_classes: int,
                        beta: float = 130.0, tol: float = 1e-3) -> np.ndarray:
    """``skimage.segmentation.random_walker`` (mode ``cg_j``) as ``(C, H, W)`` float32 probabilities."""
    from skimage.segmentation import random_walker

    classes = F.scribbled_classes(scribbles)
    labels = np.zeros(scribbles.shape, np.int32)
    for i, c in enumerate(classes):
        labels[scribbles == c] = i + 1
    import warnings

    with warnings.catch_warnings():  # "probability range outside [0, 1]": harmless, renormalised below
        warnings.simplefilter("ignore", UserWarning)
        rw = random_walker(image, labels, beta=beta, mode="cg_j", tol=tol, return_full_prob=True,
                           channel_axis=-1 if image.ndim == 3 else None)
    rw = np.clip(rw, 0.0, None)
    probs = np.zeros((num_classes, *scribbles.shape), np.float32)
    probs[classes] = rw
    return probs


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


def _smoothed(channels: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    import cv2

    return np.dstack([cv2.GaussianBlur(np.ascontiguousarray(channels[..., i]), (0, 0), sigma)
                      for i in range(channels.shape[2])]).reshape(channels.shape)


# ----------------------------------------------------------------------------- hybrid (default candidate)
@dataclass
class HybridConfig(PixelClassifierConfig):
    """Pixel classifier + colour GMMs + geodesic distance + contrast-sensitive graph cut.

    ``clf_weight`` / ``gmm_weight`` / ``geo_weight``: weights of the classifier's ``-log p``, the
    GMM colour/texture costs and the normalised geodesic distance in the unaries; ``components``:
    Gaussians per class; ``iterations``: GrabCut-style refits of the GMMs on the labelling;
    ``edge_scale``: geodesic contrast factor; ``smoothness``: Potts weight of the graph cut
    (0 = no cut); ``soft_mix``: share of the soft unaries in the output probabilities;
    ``rw_weight``: weight of the random walker's ``-log p`` (beta ``rw_beta``).

    Binary rule (``grabcut_init``, two classes with background strokes, or the border rule): as
    GrabCut does, every unscribbled pixel is "probably background" for the first colour fit (with
    ``geo_init``: except pixels whose geodesic distance to a foreground stroke is under
    ``geo_init_ratio`` times their distance to a background stroke, which start as foreground), and
    ``binary_clf_weight`` / ``binary_rw_weight`` replace ``clf_weight`` / ``rw_weight`` (a
    classifier trained on strokes alone has no such prior and floods unseen background)."""

    clf_weight: float = 1.0
    gmm_weight: float = 0.2
    geo_weight: float = 0.2
    components: int = 5
    iterations: int = 3
    edge_scale: float = 10.0
    smoothness: float = 1.0
    soft_mix: float = 0.3
    grabcut_init: bool = True
    rw_weight: float = 1.0
    rw_beta: float = 130.0
    binary_clf_weight: float = 0.0
    binary_rw_weight: float = 0.0
    geo_init: bool = True
    geo_init_ratio: float = 0.25
    max_side: int = 128

    def __post_init__(self):
        super().__post_init__()
        if min(self.clf_weight, self.gmm_weight, self.geo_weight, self.rw_weight, self.rw_beta,
               self.binary_clf_weight, self.binary_rw_weight, self.edge_scale, self.smoothness) < 0:
            raise ValueError("weights, edge_scale and smoothness must be >= 0")
        if not 0 <= self.soft_mix <= 1 or self.iterations < 1 or self.components < 1:
            raise ValueError("soft_mix must be in [0, 1], iterations and components >= 1")


class Hybrid(PixelClassifier):
    """Unaries = ``clf_weight * -log p(classifier) + gmm_weight * GMM cost + geo_weight *
    geodesic distance + rw_weight * -log p(random walker)``, blended with the prior, labelled by a contrast-sensitive graph cut
    (alpha-expansion for many classes); the GMMs are refitted on the labelling ``iterations`` times."""

    name = "hybrid"
    Config = HybridConfig
    uses_prior = True

    def label(self, prep: Prepared) -> np.ndarray:
        cfg = self.config
        binary = cfg.grabcut_init and prep.num_classes == 2 and 0 in prep.classes
        clf_weight = cfg.binary_clf_weight if binary else cfg.clf_weight
        rw_weight = cfg.binary_rw_weight if binary else cfg.rw_weight
        a, b, ln = F.grid_edges(prep.scribbles.shape, diagonal=True)
        base = np.zeros((prep.num_classes, *prep.scribbles.shape), np.float32)
        if clf_weight > 0:
            p = self.classify(prep)  # the prior is folded in here
            base += clf_weight * F.probs_to_unary(p, 1e-3)
        else:
            base = F.blend_prior(base, prep.prior, cfg.prior_weight)
        d = None
        if cfg.geo_weight > 0:
            d = F.geodesic_distances(_smoothed(prep.channels), prep.scribbles, prep.num_classes,
                                     cfg.edge_scale, a, b, ln)
            diag = float(np.hypot(*prep.scribbles.shape))
            dn = np.where(np.isfinite(d), d, F.HARD) / (diag * (1 + cfg.edge_scale) * 0.1)
            dn = dn - dn.min(0, keepdims=True)
            base += cfg.geo_weight * dn.astype(np.float32)
        if rw_weight > 0:
            rw = random_walker_probs(prep.image, prep.scribbles, prep.num_classes, beta=cfg.rw_beta)
            base += rw_weight * F.probs_to_unary(F.normalize_probs(rw + 1e-6), 1e-3)
        wts = F.contrast_weights(prep.channels, a, b, ln) if cfg.smoothness > 0 else None
        feats = _colour_texture(prep.channels) if cfg.gmm_weight > 0 else None
        fit_on, labels = prep.scribbles, None
        if binary:
            # GrabCut's start: every unscribbled pixel is "probably background" for the first fit
            fit_on = np.where(prep.scribbles == F.NONE, 0, prep.scribbles).astype(np.uint8)
            if cfg.geo_init and d is not None:
                # ... except pixels much closer (geodesically) to a foreground than to a background stroke
                dd = np.where(np.isfinite(d), d, np.inf)
                near = dd[1] < cfg.geo_init_ratio * dd[0]
                fit_on = np.where((prep.scribbles == F.NONE) & near, 1, fit_on).astype(np.uint8)
        for _ in range(cfg.iterations if cfg.gmm_weight > 0 else 1):
            u = base
            if cfg.gmm_weight > 0:
                g = F.gmm_unaries(feats, fit_on, prep.num_classes, k=cfg.components, seed=cfg.seed)
                u = base + cfg.gmm_weight * np.minimum(g, 50.0)
            u = F.impose_scribbles(u, prep.scribbles)
            if wts is None:
                return F.softmax(-np.minimum(u, 50.0))
            labels = F.graph_cut(u, a, b, wts, cfg.smoothness, init=labels, labels_to_try=prep.classes)
            fit_on = np.where(prep.scribbles != F.NONE, prep.scribbles, labels).astype(np.uint8)
        soft = F.softmax(-np.minimum(u, 50.0))
        return _soft_labels(labels, soft, prep.num_classes, cfg.soft_mix)
