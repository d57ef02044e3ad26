"""Semantic overlap metrics on label arrays (nothing but arrays in, numbers out).

Empty vs empty: when neither prediction nor truth contains a class, Dice and IoU for that class are 1.0
(perfect agreement on absence). When only one of them is empty, both are 0.0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["confusion_counts", "dice", "dice_iou", "iou"]


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """``(tp, fp, fn)`` of two boolean (or 0/non-zero) arrays of equal shape."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {truth.shape}")
    p, t = pred.astype(bool), truth.astype(bool)
    tp = int(np.count_nonzero(p & t))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient (F1) of foreground = non-zero: 2|P∩T| / (|P| + |T|)."""
    tp, fp, fn = confusion_counts(pred, truth)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union (Jaccard) of foreground = non-zero: |P∩T| / |P∪T|."""
    tp, fp, fn = confusion_counts(pred, truth)
    return 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Both of the above from one pass over the arrays."""
    tp, fp, fn = confusion_counts(pred, truth)
    if tp + fp + fn == 0:
        return 1.0, 1.0
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)
