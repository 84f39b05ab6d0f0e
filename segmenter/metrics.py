"""Segmentation metrics, exactly as ../shared/BENCHMARK.md defines them.

Per image: for every class c present in the ground truth (255 ignored), IoU_c over non-ignored
pixels; the image score is the mean of those. ``miou`` is the mean of image scores;
``miou_dataset`` is the per-class IoU from one confusion matrix over the whole set, averaged over
classes that occur (in ground truth or prediction).
"""
from __future__ import annotations

import numpy as np

IGNORE = 255


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore: int = IGNORE) -> np.ndarray:
    """``(C, C+1) int64`` confusion matrix: rows = ground truth, columns = prediction (last = out of range)."""
    pred = np.asarray(pred).ravel()
    gt = np.asarray(gt).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in size: {pred.shape} vs {gt.shape}")
    keep = (gt != ignore) & (gt < num_classes)
    p = pred[keep].astype(np.int64)
    g = gt[keep].astype(np.int64)
    p = np.where(p < num_classes, p, num_classes)  # out-of-range prediction: counted wrong
    cm = np.bincount(g * (num_classes + 1) + p, minlength=num_classes * (num_classes + 1))
    # (C, C+1): the last column counts predictions outside the class range (always wrong).
    return cm.reshape(num_classes, num_classes + 1)


def image_iou(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore: int = IGNORE) -> float:
    """Mean IoU over the classes present in ``gt`` (NaN when gt has no valid pixel)."""
    cm = confusion(pred, gt, num_classes, ignore)
    return _mean_iou_from_cm(cm, present_only=True)


def image_dice(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore: int = IGNORE) -> float:
    """Mean Dice over the classes present in ``gt``."""
    return _dice_from_cm(confusion(pred, gt, num_classes, ignore))


def _dice_from_cm(cm: np.ndarray) -> float:
    """Mean Dice over the classes present in the ground truth of a (C, C+1) confusion matrix."""
    c = cm.shape[0]
    tp = np.diag(cm[:, :c]).astype(np.float64)
    gt_n = cm.sum(1).astype(np.float64)
    pr_n = cm[:, :c].sum(0).astype(np.float64)
    present = gt_n > 0
    if not present.any():
        return float("nan")
    return float(np.mean(2 * tp[present] / (gt_n[present] + pr_n[present])))


def _mean_iou_from_cm(cm: np.ndarray, present_only: bool) -> float:
    c = cm.shape[0]
    tp = np.diag(cm[:, :c]).astype(np.float64)
    gt_n = cm.sum(1).astype(np.float64)
    pr_n = cm[:, :c].sum(0).astype(np.float64)
    union = gt_n + pr_n - tp
    sel = gt_n > 0 if present_only else union > 0
    if not sel.any():
        return float("nan")
    return float(np.mean(tp[sel] / union[sel]))


class MeanIoU:
    """Accumulates per-image scores and one dataset confusion matrix."""

    def __init__(self, num_classes: int, ignore: int = IGNORE):
        self.num_classes = num_classes
        self.ignore = ignore
        self.cm = np.zeros((num_classes, num_classes + 1), np.int64)
        self.scores: list[float] = []
        self.dices: list[float] = []

    def add(self, pred: np.ndarray, gt: np.ndarray) -> float:
        cm = confusion(pred, gt, self.num_classes, self.ignore)
        self.cm += cm
        s = _mean_iou_from_cm(cm, present_only=True)
        if not np.isnan(s):
            self.scores.append(s)
            self.dices.append(_dice_from_cm(cm))
        return s

    @property
    def miou(self) -> float:
        return float(np.mean(self.scores)) if self.scores else float("nan")

    @property
    def miou_dataset(self) -> float:
        return _mean_iou_from_cm(self.cm, present_only=False)

    @property
    def dice(self) -> float:
        return float(np.mean(self.dices)) if self.dices else float("nan")

    def per_class_iou(self) -> list[float]:
        c = self.num_classes
        tp = np.diag(self.cm[:, :c]).astype(np.float64)
        union = self.cm.sum(1) + self.cm[:, :c].sum(0) - tp
        return [float(t / u) if u > 0 else float("nan") for t, u in zip(tp, union)]
