"""Losses for mixed weak supervision, and the CRF refinement step that shares their kernel.

Shapes: ``logits`` ``(B, C, H, W)`` float; ``target`` ``(B, H, W)`` int64 class index, 255 =
unlabeled; ``weight`` ``(B, H, W)`` float in [0, 1]; ``image`` ``(B, ch, H, W)`` float in [0, 1].
Every loss returns a scalar tensor and is 0 (with a gradient path) when nothing is labelled.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = 255


def weighted_ce(logits, target, weight=None, ignore: int = IGNORE):
    """Cross-entropy on labelled pixels, each scaled by ``weight``, averaged over labelled pixels.

    With ``weight=None`` this is partial cross-entropy (the scribble loss). A low-confidence
    pseudo-label thus contributes little instead of being renormalised away.
    """
    valid = target != ignore
    n = valid.sum()
    if n == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits.float(), target.masked_fill(~valid, 0), reduction="none")
    w = valid.float() if weight is None else weight * valid
    return (ce * w).sum() / n


def weighted_dice(probs, target, weight=None, ignore: int = IGNORE, eps: float = 1.0):
    """1 - soft Dice over the batch, on labelled pixels (each scaled by ``weight``), averaged over
    the classes present in ``target``. Balances small classes that cross-entropy neglects early on."""
    valid = target != ignore
    if not valid.any():
        return probs.sum() * 0.0
    C = probs.shape[1]
    w = valid.float() if weight is None else weight * valid
    onehot = F.one_hot(target.masked_fill(~valid, 0), C).permute(0, 3, 1, 2).float()
    p = probs.float() * w[:, None]
    inter = (p * onehot).sum(dim=(0, 2, 3))
    denom = p.sum(dim=(0, 2, 3)) + (onehot * w[:, None]).sum(dim=(0, 2, 3))
    present = (onehot * valid[:, None]).sum(dim=(0, 2, 3)) > 0
    dice = (2 * inter + eps) / (denom + eps)
    return 1.0 - dice[present].mean()


def _offsets(radius: int, dilation: int):
    k = 2 * radius + 1
    yy, xx = torch.meshgrid(torch.arange(k) - radius, torch.arange(k) - radius, indexing="ij")
    return (yy.flatten() * dilation).float(), (xx.flatten() * dilation).float(), k


def local_affinity(image, radius: int = 3, sigma_rgb: float = 0.1, sigma_xy: float = 3.0, dilation: int = 1):
    """Gaussian affinities to the ``(2r+1)^2`` neighbours of each pixel.

    ``image``: ``(B, ch, h, w)`` in [0, 1]. Returns ``(B, K, h*w)`` float (K = (2r+1)^2), zero for
    the centre and for neighbours outside the image: exp(-|I_i - I_j|^2 / 2 s_rgb^2 - |p_i - p_j|^2 / 2 s_xy^2).
    """
    B, ch, h, w = image.shape
    dy, dx, k = _offsets(radius, dilation)
    pad = radius * dilation
    f = image / sigma_rgb
    fu = F.unfold(f, k, dilation=dilation, padding=pad).view(B, ch, k * k, h * w)
    d2 = ((fu - f.view(B, ch, 1, h * w)) ** 2).sum(1)
    kxy = torch.exp(-(dy ** 2 + dx ** 2) / (2 * sigma_xy ** 2)).to(image.device)
    inside = F.unfold(torch.ones(1, 1, h, w, device=image.device), k, dilation=dilation, padding=pad).view(1, k * k, h * w)
    aff = torch.exp(-0.5 * d2) * kxy.view(1, -1, 1) * inside
    aff[:, (k * k) // 2] = 0.0
    return aff


def _pair_slices(h: int, w: int, dy: int, dx: int):
    """Slices ``(a, b)`` so that pixel ``a`` and pixel ``b = a + (dy, dx)`` are both inside."""
    ya, yb = slice(0, h - dy), slice(dy, h)
    xa, xb = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    return (..., ya, xa), (..., yb, xb)


def gated_crf_loss(probs, image, radius: int = 3, sigma_rgb: float = 0.1, sigma_xy: float = 3.0,
                   downscale: int = 2, image_weight=None):
    """Dense (gated) CRF loss on local windows (Obukhov et al. 2019; Tang et al. 2018):
    per pixel, the sum over its neighbours j within ``radius`` of affinity(i, j) x (1 - p_i . p_j),
    averaged over pixels; affinity as in :func:`local_affinity`.

    ``probs``: ``(B, C, H, W)`` softmax output; ``image``: ``(B, ch, H, W)`` in [0, 1];
    ``image_weight``: ``(B,)`` (0 switches the loss off for an image, e.g. fully labelled ones).
    Computed at ``1/downscale`` resolution, one neighbour offset at a time over half of the
    (symmetric) window: no unfolded copies, so it stays cheap next to the model.
    """
    if downscale > 1:
        probs = F.avg_pool2d(probs, downscale)
        image = F.avg_pool2d(image, downscale)
    B, C, h, w = probs.shape
    p = probs.float()
    f = image.float() / sigma_rgb
    per_img = p.new_zeros(B)
    for dy in range(0, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx <= 0:
                continue
            a, b = _pair_slices(h, w, dy, dx)
            with torch.no_grad():
                aff = torch.exp(-0.5 * ((f[a] - f[b]) ** 2).sum(1) - (dy * dy + dx * dx) / (2 * sigma_xy ** 2))
            dis = 1.0 - (p[a] * p[b]).sum(1)
            per_img = per_img + 2.0 * (aff * dis).sum(dim=(1, 2))
    per_img = per_img / (h * w)
    if image_weight is None:
        return per_img.mean()
    wsum = image_weight.sum()
    if wsum <= 0:
        return per_img.sum() * 0.0
    return (per_img * image_weight).sum() / wsum


def tag_loss(tag_logits, tags):
    """Multi-label BCE of the classification head. ``tag_logits``: ``(B, C)``; ``tags``: ``(B, C)``
    int (1 present, 0 absent, -1 unknown, which is skipped)."""
    known = tags >= 0
    if not known.any():
        return tag_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(tag_logits.float()[known], tags[known].float())


def absent_loss(probs, tags):
    """Mean probability mass given to classes tagged absent (``tags == 0``); ``probs`` ``(B,C,H,W)``."""
    absent = (tags == 0).float()  # (B, C)
    if absent.sum() == 0:
        return probs.sum() * 0.0
    mass = probs.float().mean(dim=(2, 3))  # (B, C)
    return (mass * absent).sum() / absent.sum()


def suppress_absent(logits, tags):
    """Set logits of classes tagged absent (``tags == 0``, ``(B, C)``) to a very low value,
    unless that would leave an image with no class."""
    absent = tags == 0
    keep_some = (~absent).any(dim=1, keepdim=True)
    absent = absent & keep_some
    return logits.masked_fill(absent[:, :, None, None], -1e4)


def confident_pseudo_ce(student_logits, teacher_probs, threshold: float = 0.9):
    """Mean-teacher / FixMatch term: cross-entropy of the student towards the teacher's argmax on
    pixels where the teacher's confidence >= ``threshold``, averaged over all pixels."""
    conf, label = teacher_probs.max(1)
    mask = (conf >= threshold).float()
    ce = F.cross_entropy(student_logits.float(), label, reduction="none")
    return (ce * mask).mean()


@torch.no_grad()
def crf_refine(probs, image, scribbles=None, iterations: int = 5, weight: float = 1.0, radius: int = 3,
               sigma_rgb: float = 0.1, sigma_xy: float = 3.0):
    """Mean-field refinement of ``probs`` ``(B, C, H, W)`` with a Potts model on the same local
    affinities as :func:`gated_crf_loss`; ``scribbles`` ``(B, H, W)`` (255 = none) are hard
    constraints. Returns refined ``(B, C, H, W)`` probabilities. Messages are passed one
    neighbour offset at a time (affinities computed once), without unfolded copies."""
    B, C, h, w = probs.shape
    f = image.float() / sigma_rgb
    pairs = []
    norm = torch.zeros(B, 1, h, w, device=probs.device)
    for dy in range(0, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx <= 0:
                continue
            a, b = _pair_slices(h, w, dy, dx)
            aff = torch.exp(-0.5 * ((f[a] - f[b]) ** 2).sum(1, keepdim=True) - (dy * dy + dx * dx) / (2 * sigma_xy ** 2))
            norm[a] += aff
            norm[b] += aff
            pairs.append((a, b, aff))
    norm = norm.clamp_min(1e-6)
    unary = torch.log(probs.float().clamp_min(1e-6))
    hard = None
    if scribbles is not None:
        lab = scribbles.long()
        hard = lab != IGNORE
        onehot = F.one_hot(lab.clamp_max(C - 1), C).permute(0, 3, 1, 2).float()
    q = probs.float()
    for _ in range(iterations):
        if hard is not None:
            q = torch.where(hard[:, None], onehot, q)
        msg = torch.zeros_like(q)
        for a, b, aff in pairs:
            msg[a] += aff * q[b]
            msg[b] += aff * q[a]
        q = torch.softmax(unary + weight * math.log(10.0) * msg / norm, dim=1)
    if hard is not None:
        q = torch.where(hard[:, None], onehot, q)
    return q
