"""The abstract scribble labeler: a template method ``prepare -> label -> postprocess``.

A subclass implements :meth:`PseudoLabeler.label` only (working-resolution arrays in,
``(C, h, w)`` probabilities out); input checks, the reduced working resolution, the
foreground-only background rule, the edge-aware upsampling, the prior for methods that have no
unaries, hard constraints and the confidence map are shared here.

Rules every method follows (tested over the whole registry):

* scribbles are hard constraints: a scribbled pixel keeps its class in ``mask`` and its
  ``probs`` are one-hot;
* classes with no stroke get probability 0 (nothing supports them);
* **foreground only**: when the strokes hold exactly one class and it is not class 0, the unscribbled
  image border is taken as background (class 0), as the GrabCut baseline does;
* **one class only otherwise** (e.g. background strokes only): every pixel gets that class; the
  confidence of unscribbled pixels is 0, since nothing contradicts or supports it;
* no stroke at all: :class:`~segmenter.errors.NoLabelsError`; a scribble map of the wrong size or
  with a class index >= ``num_classes``: :class:`~annotations.errors.LabelMapError`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import cv2
import numpy as np

from . import functional as F


@dataclass
class PseudoResult:
    """What a method returns.

    ``probs``: ``(C, H, W)`` float32, sums to 1 over C; ``mask``: ``(H, W)`` uint8 class index;
    ``confidence``: ``(H, W)`` float32 in [0, 1] (the winning class's probability; 1 on strokes).
    """

    probs: np.ndarray
    mask: np.ndarray
    confidence: np.ndarray


@dataclass
class BaseConfig:
    """Settings shared by every method.

    ``max_side``: long side of the working resolution (0 = full resolution); ``upsample_radius``
    and ``upsample_eps``: guided-filter radius (in full-resolution pixels per working pixel) and
    regulariser of the edge-aware upsampling; ``prior_weight``: weight of ``-log(prior)`` in the
    unaries; ``border_width``: width in working pixels of the foreground-only background band;
    ``upsample_grey``: guide the upsampling by the grey image instead of the colour image (faster).
    """

    max_side: int = 160
    upsample_radius: float = 1.0
    upsample_eps: float = 1e-3
    prior_weight: float = 1.0
    border_width: int = 2
    upsample_grey: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.max_side < 0 or (0 < self.max_side < 16):
            raise ValueError(f"max_side must be 0 (full resolution) or at least 16, got {self.max_side}")
        if self.upsample_radius <= 0 or self.upsample_eps <= 0:
            raise ValueError("upsample_radius and upsample_eps must be positive")
        if self.prior_weight < 0:
            raise ValueError(f"prior_weight must be >= 0, got {self.prior_weight}")
        if self.border_width < 1:
            raise ValueError(f"border_width must be >= 1, got {self.border_width}")


@dataclass
class Prepared:
    """Working-resolution inputs handed to :meth:`PseudoLabeler.label`.

    ``image``: ``(h, w[, 3])`` uint8; ``channels``: ``(h, w, K)`` float32 (Lab or intensity);
    ``scribbles``: ``(h, w)`` uint8 with the background rule applied; ``prior``: ``(C, h, w)``
    float32 or None; ``classes``: the scribbled class indices (after the background rule);
    ``border_background``: True when the foreground-only rule supplied the background strokes.
    """

    image: np.ndarray
    channels: np.ndarray
    scribbles: np.ndarray
    num_classes: int
    classes: np.ndarray
    prior: np.ndarray | None
    full_shape: tuple[int, int]
    scale: float
    border_background: bool = False


class PseudoLabeler(ABC):
    """Scribbles -> pseudo-mask. Subclasses set ``name`` and ``Config`` and implement :meth:`label`."""

    name: str = "abstract"
    Config = BaseConfig
    #: True when :meth:`label` folds the prior into its own unaries; otherwise the base blends it
    #: into the output probabilities (``p * prior**w``, renormalised).
    uses_prior: bool = False

    def __init__(self, config: BaseConfig | None = None, **overrides):
        if config is None:
            config = self.Config(**overrides)
        elif overrides:
            raise TypeError("give either a config object or keyword overrides, not both")
        if not isinstance(config, self.Config):
            raise TypeError(f"{self.name} expects a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    # -- the template ---------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, scribbles: np.ndarray, num_classes: int,
                 prior: np.ndarray | None = None, background: int = 0) -> PseudoResult:
        """Pseudo-mask of ``image`` ((H, W) or (H, W, 3) uint8) from ``scribbles`` ((H, W) uint8,
        255 = none) for ``num_classes`` classes, optionally blending ``prior`` ((C, H, W) float32).
        ``background``: the background class (the image border in the foreground-only rule, the
        "probably background" start of a binary image); 0 unless a dataset lists it elsewhere."""
        F.check_inputs(image, scribbles, num_classes)
        if background != 0:
            if not 0 < int(background) < num_classes:
                raise ValueError(f"background must be a class index below {num_classes}, got {background}")
            return self._with_background(image, scribbles, num_classes, prior, int(background))
        image = np.ascontiguousarray(image)
        scribbles = np.ascontiguousarray(scribbles)
        image = F.drop_replicated_channels(image)
        prior = F.check_prior(prior, num_classes, image.shape[:2])
        prep = self.prepare(image, scribbles, num_classes, prior)
        if prep.classes.size == 1:
            return self._single_class(prep, scribbles)
        probs = self.label(prep)
        return self.postprocess(prep, probs, image, scribbles, prior)

    def _with_background(self, image, scribbles, num_classes: int, prior, b: int) -> PseudoResult:
        """The result for background class ``b``: classes 0 and ``b`` swap places on the way in and
        back on the way out, so every rule written for a background 0 holds for ``b``."""
        lut = np.arange(256, dtype=np.uint8)
        lut[0], lut[b] = b, 0
        order = np.arange(num_classes)
        order[0], order[b] = b, 0
        swapped_prior = None if prior is None else np.asarray(prior)[order]
        r = self(image, lut[np.asarray(scribbles)], num_classes, prior=swapped_prior)
        return PseudoResult(probs=np.ascontiguousarray(r.probs[order]), mask=lut[r.mask], confidence=r.confidence)

    def prepare(self, image: np.ndarray, scribbles: np.ndarray, num_classes: int,
                prior: np.ndarray | None) -> Prepared:
        cfg = self.config
        max_side = self.working_max_side(num_classes)
        s = F.working_scale(image.shape[:2], max_side) if max_side else 1.0
        hw = (max(2, round(image.shape[0] * s)), max(2, round(image.shape[1] * s)))
        small = F.resize_image(image, hw)
        scr = F.resize_scribbles(scribbles, hw)
        if not (scr != F.NONE).any():  # strokes too thin to survive: keep their pixels anyway
            scr = _nearest_scribbles(scribbles, hw)
        classes = F.scribbled_classes(scr)
        border_background = bool(classes.size == 1 and classes[0] != 0)
        if border_background:
            scr = F.add_border_background(scr, cfg.border_width)
            classes = F.scribbled_classes(scr)
        pr = F.normalize_probs(F.resize_probs(prior, hw)) if prior is not None else None
        return Prepared(image=small, channels=F.to_float_channels(small), scribbles=scr,
                        num_classes=num_classes, classes=classes, prior=pr,
                        full_shape=image.shape[:2], scale=s, border_background=border_background)

    def working_max_side(self, num_classes: int) -> int:
        """Long side of the working resolution for ``num_classes`` classes (0 = full resolution)."""
        return self.config.max_side

    @abstractmethod
    def label(self, prep: Prepared) -> np.ndarray:
        """Working-resolution class probabilities ``(C, h, w)`` float32 (0 for unscribbled classes)."""

    def postprocess(self, prep: Prepared, probs: np.ndarray, image: np.ndarray, scribbles: np.ndarray,
                    prior: np.ndarray | None) -> PseudoResult:
        """Full-resolution result from the working-resolution ``probs``: upsampled along image
        edges, the prior blended (methods that do not fold it in), scribbles imposed, specks of the
        upsampling removed. Only the classes that can win (scribbled) are carried through it: a
        dataset declaring 25 classes paid for 25 full-size maps where 17 were drawn."""
        probs = F.normalize_probs(F.restrict_to_classes(probs, prep.classes))
        C = probs.shape[0]
        keep = np.union1d(prep.classes, F.scribbled_classes(scribbles)).astype(np.int64)
        keep = keep[keep < C]
        blend = prior is not None and not self.uses_prior and self.config.prior_weight > 0
        if blend or len(keep) == C:
            return self._finish(prep, probs, image, scribbles, prior if blend else None)
        lut = np.full(256, F.NONE, np.uint8)
        lut[keep] = np.arange(len(keep), dtype=np.uint8)
        sub = replace(prep, classes=lut[prep.classes].astype(np.int64), num_classes=len(keep))
        r = self._finish(sub, probs[keep], image, lut[scribbles], None)
        out = np.zeros((C, *r.probs.shape[1:]), np.float32)
        out[keep] = r.probs
        return PseudoResult(probs=out, mask=keep.astype(np.uint8)[r.mask], confidence=r.confidence)

    def _finish(self, prep: Prepared, probs: np.ndarray, image: np.ndarray, scribbles: np.ndarray,
                prior: np.ndarray | None) -> PseudoResult:
        cfg = self.config
        if probs.shape[1:] != tuple(prep.full_shape):
            r = max(1, round(cfg.upsample_radius / max(prep.scale, 1e-6)))
            grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if cfg.upsample_grey else None
            guide = F.to_float_channels(image if grey is None else grey)
            probs = F.edge_aware_upsample(probs, guide if guide.shape[2] == 3 else guide[..., 0], r,
                                          cfg.upsample_eps)
            probs = F.restrict_to_classes(probs, prep.classes)
        if prior is not None:  # a method that does not fold the prior into its own unaries
            probs = F.blend_probs(probs, prior, cfg.prior_weight)
        probs = F.enforce_scribbles(probs, scribbles)
        mask = F.hard_mask(probs, scribbles)
        if prep.scale < 1:  # specks of the upsampling, under half a working pixel
            cleaned = F.remove_specks(mask, probs, scribbles, 0.5 / prep.scale ** 2)
            if cleaned is not mask:
                probs = F.swap_to_mask(probs, mask, cleaned)
                mask = cleaned
        conf = probs.max(0).astype(np.float32)
        return PseudoResult(probs=probs.astype(np.float32), mask=mask, confidence=conf)

    def _single_class(self, prep: Prepared, scribbles: np.ndarray) -> PseudoResult:
        c = int(prep.classes[0])
        h, w = prep.full_shape
        probs = np.zeros((prep.num_classes, h, w), np.float32)
        probs[c] = 1.0
        conf = (scribbles != F.NONE).astype(np.float32)
        return PseudoResult(probs=probs, mask=np.full((h, w), c, np.uint8), confidence=conf)


def _nearest_scribbles(scribbles: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour fallback: every stroke pixel lands on its working pixel."""
    out = np.full(hw, F.NONE, np.uint8)
    ys, xs = np.nonzero(scribbles != F.NONE)
    yy = np.minimum((ys * hw[0]) // scribbles.shape[0], hw[0] - 1)
    xx = np.minimum((xs * hw[1]) // scribbles.shape[1], hw[1] - 1)
    out[yy, xx] = scribbles[ys, xs]
    return out
