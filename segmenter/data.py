"""Training data: samples with mixed supervision, cached at the model's input size, and augmentation.

Everything is resized once, when the :class:`TrainSet` is built, to ``(size, size)``; the training
loop then only indexes uint8 arrays and runs a cheap albumentations pipeline, so the model never
waits for data.

Per image the set holds:

* ``images``   ``(N, S, S, ch) uint8``
* ``dense``    ``(N, S, S) uint8`` class index of a dense label (full, coarse or pseudo mask), 255 = none
* ``weight``   ``(N, S, S) uint8`` per-pixel weight of ``dense`` x 255 (1.0 for full masks, the
  confidence for pseudo-masks, ``coarse_band_weight`` on the boundary band of coarse masks)
* ``scribbles`` ``(N, S, S) uint8`` class index, 255 = not scribbled (hard labels)
* ``tags``     ``(N, C) int8``: 1 present, 0 absent, -1 unknown
* ``kind``     ``(N,) uint8``: bit flags of :data:`FULL`, :data:`PSEUDO`, :data:`COARSE`,
  :data:`SCRIBBLES`, :data:`TAGS`; 0 = unlabeled
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .errors import NoLabelsError, SegmenterError

IGNORE = 255
FULL, PSEUDO, COARSE, SCRIBBLES, TAGS = 1, 2, 4, 8, 16
DENSE_KINDS = {"full": FULL, "final": FULL, "imported": FULL, "pseudo": PSEUDO, "coarse": COARSE}


@dataclass
class Sample:
    """One training image and whatever labels it has (all optional).

    ``image``: ``(H, W)`` or ``(H, W, 3)`` uint8. ``mask``: ``(H, W)`` uint8 class index, 255 =
    ignore, of kind ``mask_kind`` (``full``/``final``/``imported``, ``pseudo`` or ``coarse``).
    ``confidence``: ``(H, W)`` float32 in [0, 1] for a pseudo-mask. ``scribbles``: ``(H, W)``
    uint8, 255 = none. ``tags``: ``{class_idx: "present" | "absent"}``.
    """

    image: np.ndarray
    name: str = ""
    mask: np.ndarray | None = None
    mask_kind: str | None = None
    confidence: np.ndarray | None = None
    scribbles: np.ndarray | None = None
    tags: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.mask is not None:
            if self.mask_kind is None:
                self.mask_kind = "full"
            if self.mask_kind not in DENSE_KINDS:
                raise SegmenterError(
                    f"{self.name}: unknown mask kind '{self.mask_kind}'; use one of {', '.join(DENSE_KINDS)}."
                )


# ----------------------------------------------------------------------------- pure functions

def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """``(H, W)`` / ``(H, W, 1|3|4)`` uint8 -> ``(H, W, channels)`` uint8 (gray replicated, RGB averaged)."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise SegmenterError(f"images must be uint8, got {img.dtype}.")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise SegmenterError(f"an image must be (H, W) or (H, W, 3), got shape {img.shape}.")
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if img.shape[2] == channels:
        return np.ascontiguousarray(img)
    if channels == 3:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)[:, :, None]


def resize_image(image: np.ndarray, size: int, channels: int = 3) -> np.ndarray:
    """Any image -> ``(size, size, channels)`` uint8 (area filter when shrinking, linear when growing)."""
    img = to_channels(image, channels)
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    out = cv2.resize(img, (size, size), interpolation=interp)
    return out.reshape(size, size, channels)


def resize_labels(label: np.ndarray, size: int, sparse: bool = False) -> np.ndarray:
    """Resize a ``(H, W) uint8`` label map to ``(size, size)`` without inventing classes.

    Each output pixel takes the value covering most of its footprint (area vote). With
    ``sparse=True`` (scribbles) 255 never wins over a class: any stroke pixel in the footprint
    keeps the output pixel labelled, so thin strokes survive shrinking.
    """
    lab = np.asarray(label)
    if lab.shape == (size, size):
        return lab.copy()
    values = np.unique(lab)
    if sparse:
        values = values[values != IGNORE]
        if len(values) == 0:
            return np.full((size, size), IGNORE, np.uint8)
    best = np.full((size, size), -1.0, np.float32)
    out = np.full((size, size), IGNORE, np.uint8)
    for v in values:
        cov = cv2.resize((lab == v).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        better = cov > best
        if sparse:
            better &= cov > 0
        out[better] = v
        best = np.maximum(best, cov)
    return out


def resize_float(a: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(np.asarray(a, np.float32), (size, size), interpolation=cv2.INTER_AREA)


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """``(H, W) bool``: pixels within ``width`` pixels of a boundary between two labels."""
    if width <= 0:
        return np.zeros(mask.shape, bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return cv2.dilate(mask, k) != cv2.erode(mask, k)


def check_label(label: np.ndarray, image_shape, num_classes: int, what: str, name: str) -> np.ndarray:
    lab = np.asarray(label)
    if lab.ndim != 2 or lab.dtype != np.uint8:
        raise SegmenterError(f"{name}: the {what} must be a (H, W) uint8 map, got {lab.shape} {lab.dtype}.")
    if lab.shape != tuple(image_shape[:2]):
        raise SegmenterError(f"{name}: the {what} is {lab.shape[1]}x{lab.shape[0]} but the image is "
                             f"{image_shape[1]}x{image_shape[0]}.")
    bad = lab[(lab != IGNORE) & (lab >= num_classes)]
    if bad.size:
        raise SegmenterError(f"{name}: the {what} uses class {int(bad.max())}, but there are only "
                             f"{num_classes} classes.")
    return lab


# ----------------------------------------------------------------------------- the cached set

@dataclass
class TrainSet:
    """Cached training arrays at the model's input size (see the module docstring for shapes)."""

    images: np.ndarray
    dense: np.ndarray
    weight: np.ndarray
    scribbles: np.ndarray
    tags: np.ndarray
    kind: np.ndarray
    names: list[str]
    num_classes: int

    def __len__(self) -> int:
        return len(self.names)

    @property
    def size(self) -> int:
        return self.images.shape[1]

    @property
    def channels(self) -> int:
        return self.images.shape[3]

    def counts(self) -> dict:
        k = self.kind
        return {"images": len(self), "full": int(((k & FULL) > 0).sum()), "pseudo": int(((k & PSEUDO) > 0).sum()),
                "coarse": int(((k & COARSE) > 0).sum()), "scribbles": int(((k & SCRIBBLES) > 0).sum()),
                "tags": int(((k & TAGS) > 0).sum()), "unlabeled": int((k == 0).sum())}

    @classmethod
    def build(cls, samples, num_classes: int, size: int, channels: int = 3,
              coarse_band: int = 3, coarse_band_weight: float = 0.0, require_labels: bool = True) -> "TrainSet":
        """Resize and validate ``samples`` (a sequence of :class:`Sample`, read one at a time). ``coarse_band``: half-width (pixels, at the model's
        size) of the boundary band of coarse masks, whose weight is ``coarse_band_weight``.
        Raises :class:`NoLabelsError` when no sample has any label and ``require_labels``."""
        n = len(samples)
        if num_classes < 2:
            raise SegmenterError(
                f"segmentation needs at least two classes (e.g. background and an object); the project has "
                f"{num_classes}. Add a class first."
            )
        if n == 0:
            raise NoLabelsError("there are no training images.")
        S, C = int(size), int(num_classes)
        images = np.zeros((n, S, S, channels), np.uint8)
        dense = np.full((n, S, S), IGNORE, np.uint8)
        weight = np.zeros((n, S, S), np.uint8)
        scr = np.full((n, S, S), IGNORE, np.uint8)
        tags = np.full((n, C), -1, np.int8)
        kind = np.zeros(n, np.uint8)
        names = []
        for i in range(n):
            s = samples[i]
            name = s.name or f"image {i}"
            names.append(name)
            img = np.asarray(s.image)
            images[i] = resize_image(img, S, channels)
            if s.mask is not None:
                m = check_label(s.mask, img.shape, C, "mask", name)
                md = resize_labels(m, S)
                if s.mask_kind == "pseudo":
                    if s.confidence is None:
                        w = np.ones((S, S), np.float32)
                    else:
                        conf = np.asarray(s.confidence, np.float32)
                        if conf.shape != m.shape:
                            raise SegmenterError(f"{name}: the confidence map does not match the mask size.")
                        w = np.clip(np.nan_to_num(resize_float(conf, S)), 0, 1)
                elif s.mask_kind == "coarse":
                    w = np.where(boundary_band(md, coarse_band), coarse_band_weight, 1.0)
                else:
                    w = np.ones((S, S), np.float32)
                dense[i] = md
                weight[i] = np.where(md == IGNORE, 0, np.round(w * 255)).astype(np.uint8)
                kind[i] |= DENSE_KINDS[s.mask_kind]
                if DENSE_KINDS[s.mask_kind] == FULL:
                    present = np.zeros(C, bool)
                    present[np.unique(m[m != IGNORE])] = True
                    # A full mask with no ignore pixel says exactly which classes are present.
                    tags[i] = np.where(present, 1, 0 if not (m == IGNORE).any() else -1)
            if s.scribbles is not None:
                sm = check_label(s.scribbles, img.shape, C, "scribble map", name)
                if (sm != IGNORE).any():
                    scr[i] = resize_labels(sm, S, sparse=True)
                    kind[i] |= SCRIBBLES
                    tags[i, np.unique(sm[sm != IGNORE])] = 1
            for c, state in (s.tags or {}).items():
                c = int(c)
                if not 0 <= c < C:
                    raise SegmenterError(f"{name}: a tag names class {c}, but there are only {C} classes.")
                if state in ("present", "absent"):
                    tags[i, c] = 1 if state == "present" else 0
                    kind[i] |= TAGS
        if require_labels and not kind.any():
            raise NoLabelsError(
                "no image has any label (scribbles, tags or masks); annotate a few images first."
            )
        return cls(images, dense, weight, scr, tags, kind, names, C)


# ----------------------------------------------------------------------------- augmentation

class Augmenter:
    """Geometric augmentation (albumentations) applied to image, dense label, weight and scribbles
    together; label maps use nearest interpolation and 255 fill, so the label set never changes.

    ``__call__(image (S,S,ch) uint8, labels (S,S,3) uint8 [dense, weight, scribbles], rng)``
    returns both arrays augmented.
    """

    def __init__(self, strength: str = "light", seed: int = 0):
        import albumentations as A

        if strength not in ("none", "light", "medium"):
            raise SegmenterError(f"unknown augmentation '{strength}'; use none, light or medium.")
        self.strength = strength
        ops = []
        if strength != "none":
            big = strength == "medium"
            ops = [
                A.HorizontalFlip(p=0.5),
                A.Affine(scale=(0.8, 1.25) if big else (0.9, 1.1),
                         translate_percent=(-0.1, 0.1) if big else (-0.06, 0.06),
                         rotate=(-20, 20) if big else (-12, 12), interpolation=cv2.INTER_LINEAR,
                         mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT,
                         fill=0, fill_mask=IGNORE, p=0.7),
            ]
        self.pipeline = A.Compose(ops, seed=seed) if ops else None

    def __call__(self, image: np.ndarray, labels: np.ndarray):
        if self.pipeline is None:
            return image, labels
        out = self.pipeline(image=image, mask=labels)
        return out["image"], out["mask"]


def photometric(x, strong: bool, generator=None):
    """Per-image brightness/contrast (and for ``strong``: gamma, noise, one cut-out box) on a
    ``(B, ch, S, S)`` float tensor in [0, 1]; returns a new tensor in [0, 1]."""
    import torch

    B = x.shape[0]
    dev = x.device

    def U(lo, hi, *shape):
        return torch.rand(shape or (B, 1, 1, 1), generator=generator, device="cpu").to(dev) * (hi - lo) + lo

    if strong:
        x = x.clamp(1e-4, 1) ** torch.exp(U(-0.4, 0.4))
        c, b = U(0.6, 1.4), U(-0.25, 0.25)
    else:
        c, b = U(0.9, 1.1), U(-0.08, 0.08)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean + b
    if strong:
        x = x + torch.randn(x.shape, generator=generator).to(dev) * U(0.0, 0.06)
        S = x.shape[-1]
        r = torch.rand((B, 4), generator=generator)
        for i in range(B):
            h, w = int(S * (0.15 + 0.3 * r[i, 0])), int(S * (0.15 + 0.3 * r[i, 1]))
            y0, x0 = int((S - h) * r[i, 2]), int((S - w) * r[i, 3])
            x[i, :, y0:y0 + h, x0:x0 + w] = mean[i]
    return x.clamp(0, 1)


def normalize(x, mean, std):
    """``(B, ch, S, S)`` float tensor in [0, 1] -> normalised with per-channel ``mean``/``std``."""
    import torch

    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def images_to_tensor(images: np.ndarray, device="cpu"):
    """``(B, S, S, ch) uint8`` -> ``(B, ch, S, S) float32`` tensor in [0, 1] on ``device``."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


# ----------------------------------------------------------------------------- from a project

class ProjectSamples:
    """The training samples of a project store, loaded lazily (one image at a time).

    Per image: the ``final`` mask, else the ``imported`` one (as ``imported_as``: ``full`` or
    ``coarse``), else the current ``pseudo`` mask with its confidence (if ``use_pseudo``); the
    scribbles of ``layer``; the tags. Images with none of these are unlabeled and kept only with
    ``include_unlabeled``. ``predicted`` masks are model output and never trained on. Images whose
    file is gone from the project folder or damaged (:meth:`Project.missing_files` with
    ``verify``) are left out: ``missing`` lists them (``ImageInfo``).
    """

    def __init__(self, project, image_ids=None, layer: str = "default", imported_as: str = "full",
                 use_pseudo: bool = True, include_unlabeled: bool = True):
        if imported_as not in ("full", "coarse"):
            raise SegmenterError(f"imported masks are used as full or coarse, not '{imported_as}'.")
        self.project = project
        self.layer = layer
        self.imported_as = imported_as
        self.use_pseudo = use_pseudo
        ids = list(image_ids) if image_ids is not None else [im.id for im in project.images()]
        tags = project.all_tags() if hasattr(project, "all_tags") else {i: project.tags(i) for i in ids}
        self.tags = tags
        self.missing = project.missing_files(ids, verify=True) if hasattr(project, "missing_files") else []
        gone = {im.id for im in self.missing}
        self.ids = []
        for i in ids:
            if i in gone:
                continue
            labeled = (project.scribble_version(i, layer) > 0 or bool(tags.get(i)) or
                       any(project.mask_info(i, k) is not None for k in self._mask_kinds()))
            if labeled or include_unlabeled:
                self.ids.append(i)

    def _mask_kinds(self):
        return ("final", "imported") + (("pseudo",) if self.use_pseudo else ())

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> Sample:
        p, i = self.project, self.ids[k]
        info = p.image_info(i)
        s = Sample(p.load_image(i), name=info.name, scribbles=p.scribbles(i, self.layer), tags=self.tags.get(i, {}))
        for kind in self._mask_kinds():
            m = p.mask(i, kind)
            if m is not None:
                s.mask = m
                s.mask_kind = {"final": "full", "imported": self.imported_as, "pseudo": "pseudo"}[kind]
                if kind == "pseudo":
                    s.confidence = p.confidence(i, kind)
                break
        return s
