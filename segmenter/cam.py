"""Image-level tags to pseudo-masks: a tag classifier, class activation maps, refinement.

The stable entry point (used by ``bench train --supervision tags`` and ``python -m segmenter tags``)::

    tags_to_pseudo_masks(images, tags, num_classes, config=None, scribbles=None)
        -> list[tuple[mask (H, W) uint8, confidence (H, W) float32]]

- ``images``: list of ``(H, W)`` or ``(H, W, 3)`` uint8 arrays (sizes may differ).
- ``tags``: ``(N, C)`` int8, ``1`` = class present, ``0`` = absent, ``-1`` = unknown.
- ``num_classes``: ``C``.
- ``config``: a :class:`TagConfig` (``None`` = defaults, CPU-friendly).
- ``scribbles``: optional list (length N) of ``(H, W)`` uint8 label maps (255 = none) or ``None``
  per image; scribbled pixels are hard constraints of the pseudo-mask (confidence 1).
- returns, per image, ``mask`` (class index, 255 = no label: the pixel is too uncertain to keep)
  and ``confidence`` in ``[0, 1]`` (0 where ``mask`` is 255); images whose tags are all unknown
  come back fully 255 with zero confidence.

:func:`run_tags` does the same and returns a :class:`TagsResult` with the raw CAMs, the warnings
(classes nothing can be learned for, ...) and timings. The stages, each a plain function:

1. :func:`train_classifier`: a multi-label classifier on an smp encoder
   (``segmentation_models_pytorch.encoders.get_encoder(name, weights=None)``) with a light
   multi-level head giving per-pixel class scores at stride 4 and an image score by pooling them
   (CAM as a by-product of the architecture). Trained with multi-label BCE on the known tags plus
   a competition term: a pixel-wise softmax restricted to the tagged classes in which every present
   class must win some pixels.
2. :func:`compute_cams`: multi-scale and flipped CAMs, ReLU'd and normalised to ``[0, 1]`` per
   class, classes tagged absent set to zero. :func:`cams_to_mask` turns them into the raw mask
   (argmax among the possible classes; the background class, if any, scores a constant threshold).
3. With ``refine="em"`` (default), :func:`em_probs`: the CAM probabilities of every image start
   and steer an appearance EM over all the tagged images at once (:mod:`segmenter.cam_em`: per-class
   distributions of quantised colour/texture/position words, per-image class proportions).
4. :func:`refine`: the probabilities are sharpened by per-image colour histograms (``"em"``),
   propagated with image affinities (PAMR: pixel-adaptive refinement over a multi-dilation
   neighbourhood), restricted to the tagged classes; scribbles are clamped. Confidence is the
   refined class probability.

Background: a class that is never tagged absent (e.g. ``background`` in acdc or the horse set)
cannot be learned from tags; it is treated as the background (a constant score
``config.bg_threshold`` against the normalised CAMs) and a warning says so. In datasets where
every pixel belongs to a real class (CamVid) no class is background and every pixel goes to one of
the image's tagged classes.
"""
from __future__ import annotations

import math
import time
import warnings as _warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segmenter.errors import NoLabelsError, SegmenterError

PRESENT, ABSENT, UNKNOWN = 1, 0, -1
IGNORE = 255
REFINERS = ("em", "pamr", "none")


@dataclass
class TagConfig:
    """Settings of the tags -> pseudo-masks pipeline (validated at construction).

    ``epochs``: classifier epochs; ``None`` = about ``AUTO_STEPS_IMAGES`` image-steps in all
    (``round(66000 / N)`` clamped to 2..30: 20 epochs on 3300 images, 30 on up to 2200), which
    bounds the work for any N.
    ``size``: training/inference side in pixels (images are resized to ``size`` x ``size``);
    ``scales``: inference scales (multiples of ``size``); ``flip``: add horizontally flipped CAMs.
    ``background``: ``"auto"`` (classes never tagged absent act as background), or ``"none"``.
    ``bg_threshold``: background score against CAMs normalised to ``[0, 1]``.
    ``seed_threshold``: normalised CAM score a pixel needs to seed the refinement.
    ``min_confidence``: refined pixels below it become 255 (no label).
    ``refine``: ``"em"`` (the CAM probabilities start and steer an appearance EM over all images,
    :mod:`segmenter.cam_em`, then per-image colour histograms and PAMR), ``"pamr"`` (PAMR on the
    CAM probabilities) or ``"none"``. ``em_iters``, ``em_words``, ``em_cam_weight``: the EM's
    iterations, words per vocabulary and the weight of the CAM prior in it; ``colour_strength``:
    exponent of the per-image colour likelihood (0 = off). ``encoder_weights``: a local
    ``.safetensors`` file of pretrained encoder weights (as the trainer's ``--encoder-weights``);
    ``None`` = random initialisation, no download.
    """

    encoder: str = "resnet18"
    size: int = 128
    epochs: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    depth: int = 3
    competition_weight: float = 1.0
    bce_weight: float = 0.5
    topk_frac: float = 0.05
    scales: tuple[float, ...] = (1.0, 1.25)
    flip: bool = True
    background: str = "auto"
    bg_threshold: float = 0.6
    seed_threshold: float = 0.3
    refine_iters: int = 10
    refine: str = "em"
    em_iters: int = 10
    em_words: int = 48
    em_cam_weight: float = 1.0
    colour_strength: float = 1.0
    min_confidence: float = 0.0
    device: str = "cpu"
    seed: int = 0
    threads: int = 0
    encoder_weights: str | None = None

    def __post_init__(self):
        if self.size < 32 or self.size % 32:
            raise SegmenterError(f"size must be a multiple of 32 and at least 32, got {self.size}.")
        if self.epochs is not None and self.epochs < 1:
            raise SegmenterError(f"epochs must be at least 1 (an untrained classifier gives meaningless masks), "
                                 f"got {self.epochs}.")
        if self.batch_size < 1:
            raise SegmenterError(f"batch_size must be >= 1, got {self.batch_size}.")
        if not self.lr > 0:
            raise SegmenterError(f"lr must be > 0, got {self.lr}.")
        self.scales = tuple(float(s) for s in self.scales)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise SegmenterError(f"scales must be positive numbers, got {self.scales}.")
        if not 2 <= self.depth <= 5:
            raise SegmenterError(f"depth must be 2..5 (encoder stages used), got {self.depth}.")
        if not 0 < self.topk_frac <= 1:
            raise SegmenterError(f"topk_frac must be in (0, 1], got {self.topk_frac}.")
        if self.background not in ("auto", "none"):
            raise SegmenterError(f"background must be 'auto' or 'none', got {self.background!r}.")
        for name in ("bg_threshold", "seed_threshold", "min_confidence"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise SegmenterError(f"{name} must be in [0, 1], got {v}.")
        if self.em_iters < 0 or self.em_words < 2 or self.em_cam_weight < 0 or self.colour_strength < 0:
            raise SegmenterError("em_iters, em_cam_weight and colour_strength must be >= 0 and em_words >= 2, got "
                                 f"{self.em_iters}, {self.em_cam_weight}, {self.colour_strength}, {self.em_words}.")
        if self.refine not in REFINERS:
            raise SegmenterError(f"unknown refinement {self.refine!r}; valid: {', '.join(sorted(REFINERS))}.")
        if self.device not in ("cpu", "cuda", "auto"):
            raise SegmenterError(f"device must be cpu, cuda or auto, got {self.device!r}.")
        if self.encoder_weights:
            from segmenter.models import check_encoder_weights_path

            check_encoder_weights_path(self.encoder_weights)



# ----------------------------------------------------------------------------------------------
# the classifier


class TagNet(nn.Module):
    """smp encoder + light multi-level head: ``(B, 3, H, W)`` float -> ``(B, C, H/4, W/4)`` scores.

    The per-pixel scores are the class activation maps; the image score of class c is their
    spatial mean (global average pooling), so CAM and classifier are one computation.
    """

    def __init__(self, encoder: str, num_classes: int, depth: int = 3, width: int = 64):
        super().__init__()
        from segmentation_models_pytorch.encoders import get_encoder

        try:
            self.encoder = get_encoder(encoder, in_channels=3, depth=depth, weights=None)
        except (KeyError, ValueError) as e:
            raise SegmenterError(f"unknown encoder {encoder!r}: {e}") from None
        chs = self.encoder.out_channels
        self.levels = tuple(range(2, depth + 1))  # strides 4, 8, ... 2**depth
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chs[i], width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            for i in self.levels)
        self.fuse = nn.Sequential(
            nn.Conv2d(width * len(self.levels), width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.Dropout2d(0.1))
        self.cls = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        feats = self.encoder(x)
        base = feats[self.levels[0]].shape[-2:]
        ups = [F.interpolate(p(feats[i]), size=base, mode="bilinear", align_corners=False)
               if feats[i].shape[-2:] != base else p(feats[i])
               for p, i in zip(self.proj, self.levels)]
        return self.cls(self.fuse(torch.cat(ups, 1)))


def build_tagnet(config: TagConfig, num_classes: int) -> TagNet:
    """A :class:`TagNet` for ``config``, its encoder loaded from ``config.encoder_weights`` when given
    (:func:`segmenter.models.load_encoder_weights`: safetensors only, a clear error otherwise)."""
    model = TagNet(config.encoder, num_classes, config.depth)
    if config.encoder_weights:
        from segmenter.models import load_encoder_weights

        load_encoder_weights(model, config.encoder_weights)
    return model


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SegmenterError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu.")
    return torch.device(name)


_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3|4)`` uint8 -> ``(H, W, 3)`` uint8."""
    image = np.asarray(image)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, -1)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, -1)
    if image.ndim == 3 and image.shape[2] >= 3:
        return image[..., :3]
    raise SegmenterError(f"an image must be (H, W) or (H, W, 3), got shape {image.shape}.")


def _prep(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 image -> ``(3, h, w)`` float32 normalised tensor at ``size`` = (h, w)."""
    import cv2

    rgb = _to_rgb(image)
    if rgb.shape[:2] != size:
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA
                         if rgb.shape[0] > size[0] else cv2.INTER_LINEAR)
    x = (rgb.astype(np.float32) / 255.0 - _MEAN) / _STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


AUTO_STEPS_IMAGES = 66000


def epochs_for(config: TagConfig, n_images: int) -> int:
    """The number of epochs ``config`` asks for on ``n_images`` images (resolving ``None``)."""
    if config.epochs is not None:
        return config.epochs
    return int(min(30, max(2, round(AUTO_STEPS_IMAGES / max(1, n_images)))))


def _check_cancel(cancel) -> None:
    if cancel is not None and cancel.is_set():
        from segmenter.errors import TrainingStopped

        raise TrainingStopped("cancelled: no pseudo-mask was made from the tags.")


def _known_classes(tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class: ever tagged present, ever tagged absent. ``tags`` (N, C) int8."""
    return (tags == PRESENT).any(0), (tags == ABSENT).any(0)


def background_classes(tags: np.ndarray, config: TagConfig) -> np.ndarray:
    """``(C,)`` bool: classes that act as background (never tagged absent, tagged present somewhere)."""
    present, absent = _known_classes(tags)
    if config.background == "none":
        return np.zeros(tags.shape[1], bool)
    return present & ~absent


def tag_warnings(tags: np.ndarray, class_names: list[str] | None = None) -> list[str]:
    """Messages for a person about classes nothing (or little) can be learned for."""
    n, c = tags.shape
    names = class_names or [f"class {i}" for i in range(c)]
    out = []
    present, absent = _known_classes(tags)
    labelled = (tags != UNKNOWN).any(1)
    if not labelled.any():
        return ["no image has a tag: nothing can be learned."]
    if n_unl := int((~labelled).sum()):
        out.append(f"{n_unl} of {n} images have no tag; they get no pseudo-mask.")
    bg = [names[i] for i in range(c) if present[i] and not absent[i]]
    for i in range(c):
        if not present[i] and not absent[i]:
            out.append(f"{names[i]}: never tagged, so nothing tells the classifier where it is; it still "
                       "takes the pixels no tagged class claims (tag it present or absent on a few images).")
        elif not present[i]:
            out.append(f"{names[i]}: never tagged present, so it never appears in a pseudo-mask.")
        elif not absent[i] and len(bg) == 1:
            out.append(f"{names[i]}: never tagged absent, so the classifier cannot tell where it is; "
                       "it is treated as background (whatever no other class claims).")
    if len(bg) > 1:  # one line, not one per class
        out.append(f"{', '.join(bg)}: never tagged absent ({len(bg)} classes), so the classifier cannot tell where "
                   "they are; they are treated as background (whatever no other class claims); tag each of them "
                   "absent on images without it.")
    if (tags[labelled] == PRESENT).all():
        out.append("every tagged image has every class present: tags carry no information about "
                   "where classes are; pseudo-masks are uninformative.")
    return out


@dataclass
class TrainStats:
    epochs: int
    steps: int
    seconds: float
    final_loss: float
    n_images: int


def train_classifier(images: list[np.ndarray], tags: np.ndarray, num_classes: int,
                     config: TagConfig, progress=None, cancel=None) -> tuple[TagNet, TrainStats]:
    """Train :class:`TagNet` on the images with at least one known tag.

    ``images``: list of uint8 images; ``tags``: ``(N, C)`` int8 (1 / 0 / -1).
    ``progress(epoch, epochs, loss)`` is called after each epoch; ``cancel`` (an object with
    ``is_set()``, e.g. ``threading.Event``) stops the training at the next step with
    :class:`~segmenter.errors.TrainingStopped`.
    Returns the model (eval mode) and :class:`TrainStats`.
    """
    t0 = time.perf_counter()
    device = _resolve_device(config.device)
    g = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = build_tagnet(config, num_classes).to(device)
    idx = np.flatnonzero((tags != UNKNOWN).any(1) & ((tags == PRESENT).any(1)))
    size = (config.size, config.size)
    epochs = epochs_for(config, len(idx))
    if len(idx) == 0 or epochs == 0:
        model.eval()
        return model, TrainStats(0, 0, time.perf_counter() - t0, float("nan"), int(len(idx)))
    x_all = torch.stack([_prep(images[i], size) for i in idx])
    t_all = torch.from_numpy(tags[idx].astype(np.int64))
    n = len(idx)
    bs = min(config.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total = steps_per_epoch * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, pct_start=0.15)
    model.train()
    step, loss_v = 0, float("nan")
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(steps_per_epoch):
            _check_cancel(cancel)
            b = perm[s * bs:(s + 1) * bs]
            x = x_all[b]
            flip = torch.rand(len(b), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            # brightness/contrast jitter
            a = 1 + 0.2 * (torch.rand(len(b), 1, 1, 1, generator=g) - 0.5)
            c = 0.2 * (torch.rand(len(b), 1, 1, 1, generator=g) - 0.5)
            x = (x * a + c).to(device)
            t = t_all[b].to(device)
            loss = tag_loss(model(x), t, config)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_v = float(loss.detach())
            if not math.isfinite(loss_v):
                from segmenter.errors import TrainingStopped
                raise TrainingStopped("the tag classifier's loss became NaN; try a lower learning rate.")
        if progress:
            progress(ep + 1, epochs, loss_v)
    model.eval()
    return model, TrainStats(epochs, step, time.perf_counter() - t0, loss_v, n)


def tag_loss(logits: torch.Tensor, tags: torch.Tensor, config: TagConfig) -> torch.Tensor:
    """Multiple-instance loss of the per-pixel class scores, from image tags.

    ``logits``: ``(B, C, h, w)``; ``tags``: ``(B, C)`` int64 in {1, 0, -1}. Three terms:

    - partial labels: a pixel's class is one of those not tagged absent (``-log`` of their summed
      softmax probability) -- every pixel is a negative example of every absent class;
    - presence: every present class wins some pixels (``-log`` of the mean of its ``topk_frac``
      highest probabilities);
    - multi-label BCE of the image scores (top-k pooled logits) against the known tags.
    """
    allowed = (tags != ABSENT)[:, :, None, None]
    pres = tags == PRESENT
    known = (tags != UNKNOWN).float()
    logp = logits.log_softmax(1)
    partial = -torch.logsumexp(logp.masked_fill(~allowed, -1e4), 1).mean()
    p = logp.exp().flatten(2)
    k = max(1, int(round(p.shape[-1] * config.topk_frac)))
    top = p.topk(k, dim=-1).values.mean(-1)  # (B, C)
    presence = -(torch.log(top.clamp(min=1e-6)) * pres).sum() / pres.sum().clamp(min=1)
    img = logits.flatten(2).topk(k, dim=-1).values.mean(-1)
    bce = F.binary_cross_entropy_with_logits(img, pres.float(), weight=known, reduction="sum")
    bce = bce / known.sum().clamp(min=1)
    return partial + config.competition_weight * presence + config.bce_weight * bce


# ----------------------------------------------------------------------------------------------
# class activation maps


@torch.no_grad()
def compute_cams(model: TagNet, image: np.ndarray, tags_row: np.ndarray, config: TagConfig) -> np.ndarray:
    """Multi-scale, flipped CAMs of one image: ``(C, H, W)`` float32 in ``[0, 1]``.

    The per-pixel class scores, softmaxed over the classes not tagged absent, averaged over scales
    and flips, each class divided by its maximum; classes tagged absent are zero.
    """
    return compute_cams_batch(model, [image], tags_row[None], config)[0]


@torch.no_grad()
def compute_cams_batch(model: TagNet, images: list[np.ndarray], tags: np.ndarray, config: TagConfig,
                       batch_size: int = 32) -> list[np.ndarray]:
    """:func:`compute_cams` for many images (batched by size)."""
    device = next(model.parameters()).device
    out: list[np.ndarray | None] = [None] * len(images)
    for start in range(0, len(images), batch_size):
        chunk = list(range(start, min(len(images), start + batch_size)))
        acc: dict[int, torch.Tensor] = {}
        for s in config.scales:
            side = max(32, int(round(config.size * s / 32)) * 32)
            x = torch.stack([_prep(images[i], (side, side)) for i in chunk]).to(device)
            variants = [(x, False)] + ([(x.flip(-1), True)] if config.flip else [])
            allowed = torch.from_numpy(tags[chunk] != ABSENT).to(device)[:, :, None, None]
            for xv, flipped in variants:
                cam = model(xv).masked_fill(~allowed, -1e4).softmax(1)
                if flipped:
                    cam = cam.flip(-1)
                cam = F.interpolate(cam, size=(config.size, config.size), mode="bilinear", align_corners=False)
                for j, i in enumerate(chunk):
                    acc[i] = acc[i] + cam[j] if i in acc else cam[j].clone()
        for i in chunk:
            h, w = np.asarray(images[i]).shape[:2]
            cam = F.interpolate(acc[i][None], size=(h, w), mode="bilinear", align_corners=False)[0]
            cam = cam / cam.flatten(1).max(1).values.clamp(min=1e-5)[:, None, None]
            cam = cam.cpu().numpy().astype(np.float32)
            cam[tags[i] == ABSENT] = 0.0
            out[i] = cam
    return out  # type: ignore[return-value]


def _scores_with_background(cams: np.ndarray, tags_row: np.ndarray, bg: np.ndarray,
                            config: TagConfig) -> np.ndarray:
    """``(C, H, W)`` scores: CAMs of possible classes, constant ``bg_threshold`` for background ones,
    ``-1`` for classes that cannot be in the image."""
    scores = cams.astype(np.float32).copy()
    possible = tags_row != ABSENT
    for c in np.flatnonzero(bg & possible):
        scores[c] = config.bg_threshold
    scores[~possible] = -1.0
    return scores


def cams_to_mask(cams: np.ndarray, tags_row: np.ndarray, bg: np.ndarray, config: TagConfig) -> np.ndarray:
    """Raw CAM mask ``(H, W)`` uint8: argmax over the classes the image may hold, background
    classes scoring ``bg_threshold``. All-unknown tags (or nothing possible) give 255."""
    if (tags_row == UNKNOWN).all() or not (tags_row != ABSENT).any():
        return np.full(cams.shape[1:], IGNORE, np.uint8)
    return _scores_with_background(cams, tags_row, bg, config).argmax(0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# refinement

PAMR_DILATIONS = (1, 2, 4, 8, 12, 24)
_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def affinity_matrix(image: np.ndarray, dilations=PAMR_DILATIONS):
    """Pixel-adaptive affinities (PAMR, Araslanov & Roth 2020) as a sparse row-stochastic
    ``(H*W, H*W)`` float32 CSR matrix: every pixel is linked to its 8 neighbours at each dilation
    (clamped at the border), weighted by colour similarity relative to the local colour spread."""
    import scipy.sparse as sp

    x = _to_rgb(image).astype(np.float32) / 255.0
    h, w = x.shape[:2]
    ys, xs = np.mgrid[:h, :w]
    idx, nb = [], []
    for d in dilations:
        for dy, dx in _OFFSETS:
            ny = np.clip(ys + dy * d, 0, h - 1)
            nx = np.clip(xs + dx * d, 0, w - 1)
            idx.append(ny * w + nx)
            nb.append(x[ny, nx])
    nb = np.stack(nb)  # (N, H, W, 3)
    std = nb.std(0, keepdims=True)
    aff = -(np.abs(nb - x[None]) / (1e-8 + 0.1 * std)).mean(-1)  # (N, H, W)
    aff -= aff.max(0, keepdims=True)
    np.exp(aff, out=aff)
    aff /= aff.sum(0, keepdims=True)
    n = len(idx)
    cols = np.stack(idx).reshape(n, -1).T.ravel()
    data = aff.reshape(n, -1).T.ravel().astype(np.float32)
    return sp.csr_matrix((data, cols, np.arange(0, h * w * n + 1, n)), shape=(h * w, h * w))


def pamr(image: np.ndarray, probs: np.ndarray, iters: int = 10, dilations=PAMR_DILATIONS,
         clamp: np.ndarray | None = None) -> np.ndarray:
    """Propagate class probabilities ``(C, H, W)`` float32 along image affinities for ``iters``
    steps; pixels where ``clamp`` ``(H, W)`` uint8 is a class index keep that class (hard)."""
    c, h, w = probs.shape
    live = np.flatnonzero(probs.reshape(c, -1).max(1) > 0)  # propagate only the possible classes
    a = affinity_matrix(image, dilations)
    p = np.ascontiguousarray(probs.reshape(c, -1)[live].T, dtype=np.float32)  # (HW, c')
    sel = None
    if clamp is not None and (clamp != IGNORE).any():
        cl = clamp.ravel()
        pos = {int(k): j for j, k in enumerate(live)}
        sel = np.flatnonzero(np.isin(cl, live))
        onehot = np.zeros((len(sel), len(live)), np.float32)
        onehot[np.arange(len(sel)), [pos[int(k)] for k in cl[sel]]] = 1.0
    for _ in range(iters):
        if sel is not None:
            p[sel] = onehot
        p = a @ p
    if sel is not None:
        p[sel] = onehot
    out = np.zeros((c, h * w), np.float32)
    out[live] = p.T
    return out.reshape(c, h, w)


def scores_to_probs(scores: np.ndarray, temperature: float = 0.1) -> np.ndarray:
    """``(C, H, W)`` scores (``-1`` = impossible class) -> softmax probabilities over possible classes."""
    s = torch.from_numpy(scores)
    s = s.masked_fill(s < 0, -1e4) / temperature
    return s.softmax(0).numpy()


def cam_probs(cams: np.ndarray, tags_row: np.ndarray, bg: np.ndarray, config: TagConfig) -> np.ndarray:
    """CAMs ``(C, H, W)`` -> ``(C, H, W)`` float32 probabilities over the classes the image may hold
    (background classes scoring ``bg_threshold``)."""
    return scores_to_probs(_scores_with_background(cams, tags_row, bg, config))


#: Images with more pixels than this side squared are refined (colour, affinities) on a copy of
#: this long side and the probabilities brought back up: the affinities cost about 3 KB a pixel
#: (a 12-megapixel photo was killed at 22 GB), and the small grid is what the CAMs resolve anyway.
REFINE_MAX_SIDE = 512


def _refine_probs(image: np.ndarray, probs: np.ndarray, config: TagConfig, scribbles) -> np.ndarray:
    if config.refine == "em" and config.colour_strength > 0:
        from segmenter.cam_em import local_colour_refine

        probs = local_colour_refine(image, probs, config.colour_strength)
    return pamr(image, probs, config.refine_iters, clamp=scribbles)


def _refined_small(image: np.ndarray, probs: np.ndarray, config: TagConfig, scribbles) -> np.ndarray:
    """:func:`_refine_probs` at a long side of :data:`REFINE_MAX_SIDE`, upsampled bilinearly;
    scribbled pixels keep their class at full size."""
    from segmenter.pseudo import functional as F

    h, w = probs.shape[1:]
    s = REFINE_MAX_SIDE / max(h, w)
    hw = (max(2, round(h * s)), max(2, round(w * s)))
    small_scr = None if scribbles is None else F.resize_scribbles(scribbles, hw)
    small = _refine_probs(F.resize_image(image, hw), F.resize_probs(probs, hw), config, small_scr)
    out = F.resize_probs(small, (h, w))
    out = out / np.maximum(out.sum(0, keepdims=True), 1e-8)
    return out if scribbles is None else _clamp_scribbles(out, scribbles)


def _clamp_scribbles(probs: np.ndarray, scribbles: np.ndarray) -> np.ndarray:
    """``probs`` ``(C, H, W)`` with every scribbled pixel one-hot on its class (in place)."""
    w = probs.shape[2]
    sel = scribbles != IGNORE
    probs[:, sel] = 0.0
    probs[np.minimum(scribbles[sel], probs.shape[0] - 1), np.flatnonzero(sel.ravel()) // w,
          np.flatnonzero(sel.ravel()) % w] = 1.0
    return probs


def refine(image: np.ndarray, cams: np.ndarray, tags_row: np.ndarray, bg: np.ndarray, config: TagConfig,
           scribbles: np.ndarray | None = None, probs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CAMs ``(C, H, W)`` -> pseudo-mask ``(H, W)`` uint8 and confidence ``(H, W)`` float32.

    Scores (with background) become probabilities (or ``probs`` ``(C, H, W)`` float32 is used as
    given, e.g. the appearance EM's), are sharpened by per-image colour histograms (``refine="em"``),
    propagated along image affinities and restricted to the classes the image may hold; scribbles
    (255 = none) are hard constraints.
    """
    h, w = cams.shape[1:]
    if (tags_row == UNKNOWN).all() and (scribbles is None or (scribbles == IGNORE).all()):
        return np.full((h, w), IGNORE, np.uint8), np.zeros((h, w), np.float32)
    if probs is None:
        probs = cam_probs(cams, tags_row, bg, config)
    if config.refine in ("pamr", "em"):
        big = h * w > REFINE_MAX_SIDE ** 2
        probs = (_refined_small if big else _refine_probs)(image, probs, config, scribbles)
    elif scribbles is not None:
        probs = _clamp_scribbles(probs, scribbles)
    mask = probs.argmax(0).astype(np.uint8)
    conf = np.clip(probs.max(0), 0.0, 1.0).astype(np.float32)
    if config.min_confidence > 0:
        low = conf < config.min_confidence
        mask[low] = IGNORE
        conf[low] = 0.0
    return mask, conf


# ----------------------------------------------------------------------------------------------
# the pipeline


@dataclass
class TagsResult:
    """What :func:`run_tags` made. Lists are per input image.

    ``masks``: ``(H, W)`` uint8 pseudo-masks (255 = no label); ``confidences``: ``(H, W)`` float32;
    ``cam_masks``: the raw CAM masks before refinement ``(H, W)`` uint8; ``warnings``: messages for
    a person; ``method``: provenance string for the store.
    """

    masks: list[np.ndarray]
    confidences: list[np.ndarray]
    cam_masks: list[np.ndarray]
    warnings: list[str]
    train: TrainStats
    infer_seconds: float
    method: str
    background: list[int] = field(default_factory=list)


def _check_inputs(images, tags, num_classes, scribbles) -> np.ndarray:
    tags = np.asarray(tags)
    if tags.ndim != 2 or tags.shape != (len(images), num_classes):
        raise SegmenterError(f"tags must be (N, C) = ({len(images)}, {num_classes}), got shape {tags.shape}.")
    if not np.isin(tags, (PRESENT, ABSENT, UNKNOWN)).all():
        raise SegmenterError("tags must hold only 1 (present), 0 (absent) or -1 (unknown).")
    if scribbles is not None and len(scribbles) != len(images):
        raise SegmenterError(f"scribbles must be a list of {len(images)} maps (or None each), got {len(scribbles)}.")
    tags = tags.astype(np.int8).copy()
    if scribbles is not None:  # a scribbled class is present, whatever the tags say
        for i, s in enumerate(scribbles):
            if s is None:
                continue
            s = np.asarray(s)
            if s.shape != np.asarray(images[i]).shape[:2]:
                raise SegmenterError(f"image {i}: scribbles are {s.shape}, the image {np.asarray(images[i]).shape[:2]}.")
            cls = np.unique(s[s != IGNORE])
            tags[i, cls[cls < num_classes]] = PRESENT
    return tags


def method_name(config: TagConfig) -> str:
    """Provenance of the pseudo-masks, e.g. ``tags:cam-resnet18+em+pamr``."""
    steps = "em+colour+pamr" if config.refine == "em" else config.refine
    pretrained = "(pretrained)" if config.encoder_weights else ""
    return f"tags:cam-{config.encoder}{pretrained}+{steps}"


def em_probs(images: list[np.ndarray], tags: np.ndarray, cam_priors: list[np.ndarray | None],
             config: TagConfig) -> list[np.ndarray]:
    """The appearance EM of :mod:`segmenter.cam_em` started and steered by the CAM probabilities
    ``cam_priors`` (N ``(C, h, w)`` float32, any resolution); returns N ``(C, H, W)`` float32 at
    each image's size (zero for classes tagged absent)."""
    import cv2

    from segmenter.cam_em import EMConfig, appearance_em

    cfg = EMConfig(iters=config.em_iters, words=config.em_words, cam_weight=config.em_cam_weight, seed=config.seed)
    out = []
    for im, q in zip(images, appearance_em(images, tags, cam_priors, cfg)):
        h, w = np.asarray(im).shape[:2]
        if q.shape[1:] != (h, w):
            q = cv2.resize(np.ascontiguousarray(q.transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_LINEAR)
            q = q.reshape(h, w, -1).transpose(2, 0, 1)
        out.append(np.ascontiguousarray(q, dtype=np.float32))
    return out


def _shrink(probs: np.ndarray, side: int | None = None) -> np.ndarray:
    """``(C, H, W)`` float32 -> area-resized to a long side of at most ``side`` (the EM's grid)."""
    import cv2

    from segmenter.cam_em import EMConfig, working_shape

    h, w = working_shape(probs.shape[1:], side or EMConfig.work_side)
    if (h, w) == probs.shape[1:]:
        return probs
    return np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA) for p in probs])


def run_tags(images: list[np.ndarray], tags: np.ndarray, num_classes: int, config: TagConfig | None = None,
             scribbles: list[np.ndarray | None] | None = None, class_names: list[str] | None = None,
             progress=None, cancel=None) -> TagsResult:
    """Train the tag classifier on ``images`` and make their pseudo-masks (see the module docstring).

    ``progress`` and ``cancel`` as in :func:`train_classifier` (``cancel`` is also checked between
    chunks of images while the masks are made). Raises :class:`NoLabelsError` when no image has a
    tag (nor a scribble), :class:`~segmenter.errors.TrainingStopped` when cancelled.
    """
    config = config or TagConfig()
    tags = _check_inputs(images, tags, num_classes, scribbles)
    if not (tags != UNKNOWN).any():
        raise NoLabelsError("no image has a tag: tag some images (class present / absent) first.")
    msgs = tag_warnings(tags, class_names)
    if config.threads:
        torch.set_num_threads(config.threads)
    model, stats = train_classifier(images, tags, num_classes, config, progress=progress, cancel=cancel)
    bg = background_classes(tags, config)
    t0 = time.perf_counter()
    masks, confs, cam_masks = [], [], []
    chunk = 64
    use_em = config.refine == "em"
    priors: list[np.ndarray | None] = []
    for start in range(0, len(images), chunk):
        _check_cancel(cancel)
        sl = slice(start, start + chunk)
        cams = compute_cams_batch(model, images[sl], tags[sl], config)
        for j, cam in enumerate(cams):
            i = start + j
            cam_masks.append(cams_to_mask(cam, tags[i], bg, config))
            if use_em:  # the EM needs every image's CAMs first; keep them small
                priors.append(_shrink(cam_probs(cam, tags[i], bg, config)))
                continue
            scr = None if scribbles is None else scribbles[i]
            m, c = refine(images[i], cam, tags[i], bg, config, scribbles=scr)
            masks.append(m)
            confs.append(c)
    if use_em:
        _check_cancel(cancel)
        for i, p in enumerate(em_probs(images, tags, priors, config)):
            scr = None if scribbles is None else scribbles[i]
            m, c = refine(images[i], p, tags[i], bg, config, scribbles=scr, probs=p)
            masks.append(m)
            confs.append(c)
    return TagsResult(masks, confs, cam_masks, msgs, stats, time.perf_counter() - t0, method_name(config),
                      [int(c) for c in np.flatnonzero(bg)])


def tags_to_pseudo_masks(images: list[np.ndarray], tags: np.ndarray, num_classes: int,
                         config: TagConfig | None = None,
                         scribbles: list[np.ndarray | None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Image-level tags -> pseudo-masks with confidence; the stable entry point (module docstring).

    ``images``: N uint8 ``(H, W)``/``(H, W, 3)``; ``tags``: ``(N, C)`` int8 (1 present, 0 absent,
    -1 unknown); returns N ``(mask (H, W) uint8, confidence (H, W) float32)``. Warnings about
    classes nothing can be learned for are issued with :func:`warnings.warn`.
    """
    res = run_tags(images, tags, num_classes, config, scribbles=scribbles)
    for w in res.warnings:
        _warnings.warn(w, stacklevel=2)
    return list(zip(res.masks, res.confidences))


# ----------------------------------------------------------------------------------------------
# the project store


def project_tags(project, image_ids: list[int]) -> np.ndarray:
    """``(N, C)`` int8 tags of ``image_ids`` in ``project`` (1 present, 0 absent, -1 unknown)."""
    all_tags = project.all_tags()
    t = np.full((len(image_ids), project.num_classes), UNKNOWN, np.int8)
    for r, iid in enumerate(image_ids):
        for c, state in all_tags.get(iid, {}).items():
            if 0 <= c < project.num_classes:
                t[r, c] = PRESENT if state == "present" else ABSENT
    return t


#: A class "shows" in a pseudo-mask when it holds at least this share of the labelled pixels.
SHOWN_SHARE = 0.01


def shown_classes(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes,)`` bool: the classes that show in ``mask``, each holding at least
    :data:`SHOWN_SHARE` of its labelled (not 255) pixels; none when it has no labelled pixel."""
    lab = mask[mask != IGNORE]
    if not lab.size:
        return np.zeros(num_classes, bool)
    return np.bincount(lab, minlength=256)[:num_classes] >= SHOWN_SHARE * lab.size


def collapsed_masks(masks: list[np.ndarray], tags: np.ndarray) -> tuple[int, int]:
    """``(collapsed, eligible)``: of the images tagged with two or more present classes (``tags``
    ``(N, C)`` as :func:`run_tags` takes them), how many got a mask that shows at most one
    of them (at most a quarter of them when eight or more are present): the classifier could not
    tell the classes apart there. A class shows when it holds :data:`SHOWN_SHARE` of the labelled
    pixels; a mask without labelled pixels shows none."""
    which, eligible = collapsed_which(masks, tags)
    return len(which), eligible


def collapsed_which(masks: list[np.ndarray], tags: np.ndarray) -> tuple[list[int], int]:
    """``(indices, eligible)``: :func:`collapsed_masks` with the positions of the collapsed masks
    (a run that is not refused names them)."""
    which, eligible = [], 0
    for k, (m, row) in enumerate(zip(masks, tags)):
        present = np.flatnonzero(row == PRESENT)
        if len(present) < 2:
            continue
        eligible += 1
        shown = int(shown_classes(m, len(row))[present].sum())  # a mask without labelled pixels shows none
        if shown <= max(1, len(present) // 4):
            which.append(k)
    return which, eligible


def check_masks_informative(masks: list[np.ndarray], tags: np.ndarray, notes: list[str] | None = None) -> list[int]:
    """Raise :class:`DegenerateMasksError` when more than half of the images tagged with two or
    more present classes got a collapsed mask (:func:`collapsed_masks`): such pseudo-masks (e.g.
    one class on every pixel) would be saved as annotations and teach the next training nothing
    but that class. ``notes`` (:func:`tag_warnings`: often the cause, e.g. a class never tagged
    absent) end the message, so the refusal is read beside them. :func:`tags_project` calls it
    before saving; :func:`run_tags` (the benchmarks) does not. Returns the positions of the
    collapsed masks (:func:`collapsed_which`) when it does not raise."""
    from segmenter.errors import DegenerateMasksError

    which, eligible = collapsed_which(masks, tags)
    collapsed = len(which)
    if eligible and collapsed * 2 > eligible:
        raise DegenerateMasksError(
            f"the tag classifier could not tell the classes apart on {collapsed} of the {eligible} images tagged "
            "with two or more present classes (their masks show almost only one class), so no pseudo-mask was "
            "saved. Tag many more images (hundreds), or draw strokes of each class on a few images, then run it "
            "again." + "".join(f" Note: {w}" for w in notes or ()))
    return which


@dataclass
class ProjectTagsSummary:
    """What :func:`tags_project` did: the tagged images (``image_ids``), whether their pseudo-masks
    were saved, and the :class:`TagsResult` fields a person wants to read."""

    image_ids: list[int]
    saved: bool
    method: str
    warnings: list[str]
    train: TrainStats
    infer_seconds: float
    #: names of the images tagged with several present classes whose mask shows about one of them
    collapsed: list[str] = field(default_factory=list)
    #: names of the tagged images left out because their file is missing or unreadable (a warning says so)
    unreadable: list[str] = field(default_factory=list)

    def message(self) -> str:
        verb = "saved" if self.saved else "would save"
        n = len(self.image_ids)
        msg = (f"{verb} {n} pseudo-mask{'' if n == 1 else 's'} (source {self.method}); "
               f"training {self.train.seconds:.1f} s, masks {self.infer_seconds:.1f} s")
        if self.collapsed:
            k = len(self.collapsed)
            msg += (f". {k} of them, tagged with several present classes, show about one class: "
                    + ", ".join(self.collapsed[:10]) + (" …" if k > 10 else "")
                    + " (review them, or draw a stroke of each class there and run it again)")
        return msg


def tags_project(project, config: TagConfig | None = None, image_ids=None, *, layer: str = "default",
                 save: bool = True, progress=None, cancel=None, on_stage=None) -> ProjectTagsSummary:
    """Tags of a project -> pseudo-masks in its store (``python -m segmenter tags`` and the app).

    Every image of ``image_ids`` (default: all) with at least one tag is used; the strokes of
    scribble ``layer`` are hard constraints (and make their classes present). With ``save`` each
    such image gets a mask of kind ``pseudo`` whose source is the method and whose confidence is
    the refined probability; nothing is saved when the run fails or is cancelled. ``progress`` and
    ``cancel`` as in :func:`run_tags`; ``on_stage(message)``, if given, hears what starts (for a
    log or a page).
    Tagged images whose file is missing or unreadable are left out (``unreadable``, and a warning
    naming them with the remedy); when that leaves none, :class:`~annotations.errors.ImageError`.
    Raises :class:`NoLabelsError` when no image has a tag, and
    :class:`~segmenter.errors.DegenerateMasksError` (nothing saved) when the masks carry no
    information (:func:`check_masks_informative`); its message ends with the tag warnings, the
    likely cause.
    """
    config = config or TagConfig()
    ids = list(image_ids) if image_ids is not None else project.image_ids()
    tags = project_tags(project, ids)
    keep = [r for r in range(len(ids)) if (tags[r] != UNKNOWN).any()]
    if not keep:
        raise NoLabelsError("no image has a tag; tag images (class present / absent) first.")
    from annotations.errors import ImageError

    images, unreadable = [], []
    for r in list(keep):
        try:
            images.append(project.load_image(ids[r]))
        except ImageError:  # its file is missing or damaged: trained without it, the summary names it
            unreadable.append(project.image_info(ids[r]))
            keep.remove(r)
    gone = project.files_note(unreadable, "left out") if unreadable else ""
    if not keep:
        raise ImageError(f"no tagged image can be read; {gone}")
    ids = [ids[r] for r in keep]
    tags = tags[keep]
    scribbles = [project.scribbles(i, layer=layer) for i in ids]
    if on_stage:
        on_stage(f"{len(ids)} tagged image{'' if len(ids) == 1 else 's'}, {project.num_classes} classes; training the tag classifier "
                       f"({config.encoder}, {epochs_for(config, len(ids))} epochs, {config.size} px)")
    res = run_tags(images, tags, project.num_classes, config, scribbles=scribbles,
                   class_names=project.class_names, progress=progress, cancel=cancel)
    # the tags themselves (a stroke alone makes no class tagged); the tag warnings go with the refusal
    collapsed = check_masks_informative(res.masks, tags, res.warnings)
    if save:
        for iid, m, c in zip(ids, res.masks, res.confidences):
            project.save_mask(iid, m, "pseudo", source=res.method, confidence=c)
    return ProjectTagsSummary(ids, save, res.method, res.warnings + ([gone] if gone else []), res.train,
                              res.infer_seconds, [project.image_info(ids[k]).name for k in collapsed],
                              [im.name for im in unreadable])
