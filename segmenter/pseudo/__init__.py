"""Scribbles to pseudo-masks: a registry of methods.

::

    from segmenter.pseudo import get_method, DEFAULT_METHOD
    result = get_method(DEFAULT_METHOD)(image, scribbles, num_classes)   # PseudoResult
    result.probs       # (C, H, W) float32
    result.mask        # (H, W) uint8
    result.confidence  # (H, W) float32

``image``: ``(H, W)`` or ``(H, W, 3)`` uint8; ``scribbles``: ``(H, W)`` uint8 class index, 255 = none;
optional ``prior``: ``(C, H, W)`` float32 probabilities (e.g. a model's prediction) blended into
the unaries. The rules every method follows (hard constraints, foreground-only strokes, one class
only, bad input) are in :mod:`segmenter.pseudo.base`. ``DEFAULT_METHOD`` was chosen by
``python -m segmenter bench pseudo`` across datasets (see the README).
"""
from __future__ import annotations

from annotations.errors import AnnotationError

from .base import BaseConfig, PseudoLabeler, PseudoResult
from .methods import Geodesic, GraphCut, Hybrid, PixelClassifier, RandomWalker

_REGISTRY: dict[str, type[PseudoLabeler]] = {}

#: The method the app, the store command and the trainer use unless told otherwise.
DEFAULT_METHOD = "hybrid"


class UnknownMethodError(AnnotationError):
    """A pseudo-labelling method name that is not registered."""


def register_method(cls: type[PseudoLabeler]) -> type[PseudoLabeler]:
    """Add a :class:`PseudoLabeler` subclass to the registry under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, PseudoLabeler)):
        raise TypeError("only PseudoLabeler subclasses can be registered")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a method named '{cls.name}' is already registered")
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (GraphCut, RandomWalker, PixelClassifier, Geodesic, Hybrid):
    register_method(_cls)


def list_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_REGISTRY)


def get_method(name: str | None = None, **config) -> PseudoLabeler:
    """An instance of the method ``name`` (``None`` = :data:`DEFAULT_METHOD`), configured by
    keyword overrides of its ``Config``. Unknown names raise :class:`UnknownMethodError` listing
    the valid ones."""
    name = DEFAULT_METHOD if name is None else name
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown pseudo-labelling method '{name}'; valid methods: {', '.join(list_methods())}."
        ) from None
    try:
        return cls(**config)
    except (TypeError, ValueError) as e:
        raise UnknownMethodError(f"bad settings for method '{name}': {e}") from None


def make_pseudo_mask(image, scribbles, num_classes: int, method: str | None = None, prior=None) -> PseudoResult:
    """Shortcut: ``get_method(method)(image, scribbles, num_classes, prior)``."""
    return get_method(method)(image, scribbles, num_classes, prior=prior)


def preview(image, scribbles, num_classes: int, method: str | None = None, prior=None, colors=None,
            alpha: float = 0.5, prediction=None, prediction_confidence=None, max_side: int | None = None,
            background: int = 0):
    """Live preview for the app: ``(PseudoResult, overlay)``; see :func:`segmenter.preview.preview`
    (``prediction``: the image's predicted mask, which the strokes then correct; ``max_side``:
    compute a large image at most this long side, for display)."""
    from segmenter.preview import preview as _preview

    return _preview(image, scribbles, num_classes, method=method, prior=prior, colors=colors, alpha=alpha,
                    prediction=prediction, prediction_confidence=prediction_confidence, max_side=max_side,
                    background=background)


__all__ = ["DEFAULT_METHOD", "BaseConfig", "PseudoLabeler", "PseudoResult", "UnknownMethodError",
           "get_method", "list_methods", "make_pseudo_mask", "preview", "register_method"]
