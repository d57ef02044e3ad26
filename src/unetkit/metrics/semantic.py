"""Semantic overlap metrics on label arrays (nothing but arrays in, numbers out).

Empty vs empty: when neither prediction nor truth contains a class, Dice and IoU for that class are 1.0
(perfect agreement on absence). When only one of them is empty, both are 0.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SemanticScores", "confusion_counts", "confusion_matrix", "dice", "dice_iou", "iou"]


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


def confusion_matrix(
    truth: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int | None = None
) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class (one ``bincount``); pixels whose
    true class is ``ignore`` (or outside ``0..K-1``) are left out."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {truth.shape}")
    t = truth.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    if ignore is not None:
        keep &= t != ignore
    return np.bincount(t[keep] * num_classes + p[keep], minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


@dataclass(frozen=True)
class SemanticScores:
    """Per-class scores from a confusion matrix (rows true, columns predicted), and their means.

    For class c: TP = M[c, c], FP = column sum - TP, FN = row sum - TP. IoU = TP / (TP + FP + FN),
    Dice = 2 TP / (2 TP + FP + FN), precision = TP / (TP + FP), recall = TP / (TP + FN); pixel accuracy =
    trace / total. A ratio whose denominator is 0 is 1.0 when the class is absent from both prediction and
    truth (agreement on absence) and 0.0 otherwise. Means are over the foreground classes 1..K-1 (class 0 is
    background), or over all classes when K = 1.
    """

    matrix: np.ndarray
    names: tuple[str, ...] = ()

    def _parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        return tp, m.sum(0) - tp, m.sum(1) - tp

    @staticmethod
    def _safe(num: np.ndarray, den: np.ndarray, absent: np.ndarray) -> np.ndarray:
        out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        return np.where(den > 0, out, np.where(absent, 1.0, 0.0))

    def per_class(self) -> dict[str, np.ndarray]:
        tp, fp, fn = self._parts()
        absent = tp + fp + fn == 0
        return {
            "iou": self._safe(tp, tp + fp + fn, absent),
            "dice": self._safe(2 * tp, 2 * tp + fp + fn, absent),
            "precision": self._safe(tp, tp + fp, absent),
            "recall": self._safe(tp, tp + fn, absent),
        }

    @property
    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else 1.0

    def means(self) -> dict[str, float]:
        fg = slice(1, None) if len(self.matrix) > 1 else slice(None)
        return {k: float(v[fg].mean()) for k, v in self.per_class().items()}

    def to_dict(self) -> dict[str, object]:
        names = self.names or tuple(f"class_{i}" for i in range(len(self.matrix)))
        per = self.per_class()
        return {
            "pixel_accuracy": self.pixel_accuracy,
            "mean": self.means(),
            "per_class": {n: {k: float(v[i]) for k, v in per.items()} for i, n in enumerate(names)},
            "confusion_matrix": self.matrix.tolist(),
        }
