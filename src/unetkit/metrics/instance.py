"""Instance matching: predicted vs true objects by IoU, with optimal (Hungarian) one-to-one assignment.

The IoU of every (true, predicted) pair comes from one contingency table (a ``bincount`` over label pairs),
never from loops over objects. Definitions:
- a match at threshold ``t``: a pair in the optimal assignment (maximising total IoU) with IoU >= ``t``
  (for ``t`` >= 0.5 the matching is unique, since no object can overlap two others by more than half);
- ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``, ``F1 = 2 TP / (2 TP + FP + FN)``;
- Data Science Bowl 2018 average precision at ``t``: ``TP / (TP + FP + FN)``; ``mean_ap`` averages it over
  ``t = 0.5, 0.55, ..., 0.95``.
Both images empty: every score is 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["DSB_THRESHOLDS", "InstanceScores", "iou_matrix", "match_instances"]

DSB_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        return inverse.reshape(labels.shape) + 1, len(ids)
    return inverse.reshape(labels.shape), len(ids) - 1


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true object (rows) with every predicted object (columns); background excluded."""
    if true.shape != pred.shape:
        raise ValueError(f"true shape {true.shape} differs from predicted shape {pred.shape}")
    t, nt = _relabel(true)
    p, np_ = _relabel(pred)
    table = np.bincount(t.ravel().astype(np.int64) * (np_ + 1) + p.ravel(), minlength=(nt + 1) * (np_ + 1))
    table = table.reshape(nt + 1, np_ + 1)
    area_t, area_p = table.sum(1, keepdims=True), table.sum(0, keepdims=True)
    inter = table[1:, 1:]
    union = area_t[1:] + area_p[:, 1:] - inter
    return inter / np.maximum(union, 1)


@dataclass(frozen=True)
class InstanceScores:
    n_true: int
    n_pred: int
    matched_ious: np.ndarray  # IoU of each assigned pair, best assignment

    def counts(self, threshold: float = 0.5) -> tuple[int, int, int]:
        tp = int((self.matched_ious >= threshold).sum())
        return tp, self.n_pred - tp, self.n_true - tp

    def f1(self, threshold: float = 0.5) -> float:
        tp, fp, fn = self.counts(threshold)
        return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)

    def ap(self, threshold: float = 0.5) -> float:
        tp, fp, fn = self.counts(threshold)
        return 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)

    def mean_ap(self) -> float:
        return float(np.mean([self.ap(t) for t in DSB_THRESHOLDS]))


def match_instances(true: np.ndarray, pred: np.ndarray) -> InstanceScores:
    """Optimal one-to-one matching of predicted to true objects (see the module docstring)."""
    iou = iou_matrix(true, pred)
    if iou.size == 0:
        return InstanceScores(iou.shape[0], iou.shape[1], np.zeros(0))
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return InstanceScores(iou.shape[0], iou.shape[1], iou[rows, cols])
