"""Instance metrics: predicted vs true objects, from one sparse contingency table.

The overlap of every (true, predicted) pair that overlaps at all comes from one ``np.unique`` over the
pixel-wise label pairs (a sparse contingency table), never from loops over objects; the work grows with the
number of pixels and of *overlapping* pairs, not with n_true x n_pred. Definitions (IoU = |T∩P| / |T∪P|):

- **match at threshold t**: an optimal one-to-one assignment among pairs with IoU > t (strictly, as the Data
  Science Bowl and panoptic-quality definitions are published) that maximises the number of matches, ties
  broken by total IoU (Hungarian algorithm on each connected group of candidate pairs; for t >= 0.5
  candidates are already one-to-one, since two objects cannot both overlap a third by more than half). TP = matches, FP = unmatched predictions, FN = unmatched true objects.
- precision = TP / (TP + FP); recall = TP / (TP + FN); F1 = 2 TP / (2 TP + FP + FN).
- **mean matched IoU** (segmentation quality, SQ) = mean IoU of the TP pairs.
- **panoptic quality** (Kirillov et al. 2019): PQ = Σ_TP IoU / (TP + FP/2 + FN/2) = SQ x F1.
- **Data Science Bowl 2018 score**: AP(t) = TP / (TP + FP + FN), averaged over t = 0.50, 0.55, ..., 0.95 for
  each image; the dataset score is the mean over images (the Kaggle leaderboard definition, which is *not*
  COCO AP: there is no ranking by confidence).
- **AJI** (aggregated Jaccard index, Kumar et al. 2017): for each true object G_i the predicted object S_j
  with the highest IoU; AJI = Σ |G_i ∩ S_j| / (Σ |G_i ∪ S_j| + Σ |S_k| over predictions never chosen). As
  published, one prediction may be chosen by several true objects.

Empty images: no true and no predicted object gives 1 for every ratio (perfect agreement on absence);
AJI is 1 as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["DSB_THRESHOLDS", "InstanceScores", "Overlaps", "iou_matrix", "match_instances", "overlaps"]

DSB_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.5, 1.0, 0.05), 2))


@dataclass(frozen=True)
class Overlaps:
    """The sparse contingency table of two label images; objects are renumbered 0..n-1 in label order."""

    true_ids: np.ndarray  # original labels of the true objects
    pred_ids: np.ndarray
    true_area: np.ndarray
    pred_area: np.ndarray
    pair_true: np.ndarray  # index into true_ids of each overlapping pair
    pair_pred: np.ndarray
    inter: np.ndarray  # |T ∩ P| of each pair

    @property
    def n_true(self) -> int:
        return len(self.true_ids)

    @property
    def n_pred(self) -> int:
        return len(self.pred_ids)

    @cached_property
    def union(self) -> np.ndarray:
        return self.true_area[self.pair_true] + self.pred_area[self.pair_pred] - self.inter

    @cached_property
    def iou(self) -> np.ndarray:
        return self.inter / np.maximum(self.union, 1)


def overlaps(true: np.ndarray, pred: np.ndarray) -> Overlaps:
    """Contingency table of two integer label images (0 = background) of the same shape."""
    if true.shape != pred.shape:
        raise ValueError(f"true shape {true.shape} differs from predicted shape {pred.shape}")
    t_ids, t = np.unique(true.ravel(), return_inverse=True)
    p_ids, p = np.unique(pred.ravel(), return_inverse=True)
    t_bg, p_bg = int(t_ids[0] == 0), int(p_ids[0] == 0)  # index 0 is background when present
    t_area = np.bincount(t, minlength=len(t_ids))
    p_area = np.bincount(p, minlength=len(p_ids))
    keep = (t >= t_bg) & (p >= p_bg)  # both pixels on objects
    keys, inter = np.unique(t[keep].astype(np.int64) * len(p_ids) + p[keep], return_counts=True)
    pt, pp = np.divmod(keys, len(p_ids))
    return Overlaps(
        true_ids=t_ids[t_bg:],
        pred_ids=p_ids[p_bg:],
        true_area=t_area[t_bg:],
        pred_area=p_area[p_bg:],
        pair_true=pt - t_bg,
        pair_pred=pp - p_bg,
        inter=inter,
    )


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Dense IoU of every true object (rows) with every predicted object (columns), background excluded.
    For inspection and small images; the metrics use the sparse table."""
    ov = overlaps(true, pred)
    m = np.zeros((ov.n_true, ov.n_pred))
    m[ov.pair_true, ov.pair_pred] = ov.iou
    return m


def _assign(ov: Overlaps, threshold: float) -> np.ndarray:
    """Indices (into the pair arrays) of the matched pairs at ``threshold``."""
    cand = np.flatnonzero(ov.iou > threshold)
    if threshold >= 0.5 or len(cand) == 0:
        return cand
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    # groups of candidate pairs that share objects; each is solved exactly on its own
    nt, n_p = ov.n_true, ov.n_pred
    rows, cols = ov.pair_true[cand], ov.pair_pred[cand] + nt
    graph = coo_matrix((np.ones(len(cand)), (rows, cols)), shape=(nt + n_p, nt + n_p))
    _, comp = connected_components(graph, directed=False)
    group = comp[rows]
    chosen = []
    for g in np.unique(group):
        sel = cand[group == g]
        if len(sel) == 1:
            chosen.append(sel)
            continue
        ti, ri = np.unique(ov.pair_true[sel], return_inverse=True)
        pi, ci = np.unique(ov.pair_pred[sel], return_inverse=True)
        weight = np.zeros((len(ti), len(pi)))
        big = min(len(ti), len(pi)) + 1  # more matches always win; then the larger total IoU
        weight[ri, ci] = big + ov.iou[sel]
        r, c = linear_sum_assignment(weight, maximize=True)
        lookup = {(a, b): k for k, a, b in zip(sel, ri, ci, strict=True)}
        chosen.append(np.array([lookup[(a, b)] for a, b in zip(r, c, strict=True) if (a, b) in lookup]))
    return np.concatenate(chosen) if chosen else cand[:0]


@dataclass
class InstanceScores:
    """Object-level scores of one image (see the module docstring for every definition)."""

    overlaps: Overlaps
    _matches: dict[float, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_true(self) -> int:
        return self.overlaps.n_true

    @property
    def n_pred(self) -> int:
        return self.overlaps.n_pred

    def matches(self, threshold: float = 0.5) -> np.ndarray:
        """Pair indices matched at ``threshold`` (into ``overlaps.pair_true`` / ``pair_pred``)."""
        key = round(float(threshold), 6)
        if key not in self._matches:
            self._matches[key] = _assign(self.overlaps, key)
        return self._matches[key]

    def matched_ious(self, threshold: float = 0.5) -> np.ndarray:
        return self.overlaps.iou[self.matches(threshold)]

    def counts(self, threshold: float = 0.5) -> tuple[int, int, int]:
        tp = len(self.matches(threshold))
        return tp, self.n_pred - tp, self.n_true - tp

    def precision(self, threshold: float = 0.5) -> float:
        tp, fp, fn = self.counts(threshold)
        return _ratio(tp, tp + fp, fn == 0)

    def recall(self, threshold: float = 0.5) -> float:
        tp, fp, fn = self.counts(threshold)
        return _ratio(tp, tp + fn, fp == 0)

    def f1(self, threshold: float = 0.5) -> float:
        tp, fp, fn = self.counts(threshold)
        return _ratio(2 * tp, 2 * tp + fp + fn, True)

    def ap(self, threshold: float = 0.5) -> float:
        """Data Science Bowl 2018 average precision at one threshold: TP / (TP + FP + FN)."""
        tp, fp, fn = self.counts(threshold)
        return _ratio(tp, tp + fp + fn, True)

    def mean_ap(self) -> float:
        """Data Science Bowl 2018 score of this image: AP averaged over IoU 0.50:0.05:0.95."""
        return float(np.mean([self.ap(t) for t in DSB_THRESHOLDS]))

    def mean_matched_iou(self, threshold: float = 0.5) -> float:
        ious = self.matched_ious(threshold)
        return float(ious.mean()) if len(ious) else (1.0 if self.n_true == self.n_pred == 0 else 0.0)

    def pq(self, threshold: float = 0.5) -> float:
        """Panoptic quality: Σ_TP IoU / (TP + FP/2 + FN/2)."""
        tp, fp, fn = self.counts(threshold)
        if tp + fp + fn == 0:
            return 1.0
        return float(self.matched_ious(threshold).sum() / (tp + fp / 2 + fn / 2))

    def aji(self) -> float:
        """Aggregated Jaccard index (Kumar et al. 2017), as published."""
        ov = self.overlaps
        if ov.n_true == 0 and ov.n_pred == 0:
            return 1.0
        order = np.lexsort((-ov.iou, ov.pair_true))  # per true object, best IoU first
        first = order[np.r_[True, np.diff(ov.pair_true[order]) != 0]] if len(order) else order
        inter = float(ov.inter[first].sum())
        union = float(ov.union[first].sum())
        unmatched_true = np.setdiff1d(np.arange(ov.n_true), ov.pair_true[first])
        union += float(ov.true_area[unmatched_true].sum())
        unused = np.setdiff1d(np.arange(ov.n_pred), ov.pair_pred[first])
        union += float(ov.pred_area[unused].sum())
        return inter / union if union else 1.0

    def _matched(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Whether each true and each predicted object is matched at ``threshold``."""
        ov = self.overlaps
        matched = self.matches(threshold)
        t_ok = np.zeros(ov.n_true, bool)
        p_ok = np.zeros(ov.n_pred, bool)
        t_ok[ov.pair_true[matched]] = True
        p_ok[ov.pair_pred[matched]] = True
        return t_ok, p_ok

    def unmatched(self, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """Labels of the true objects missed (false negatives) and of the false positive predictions."""
        t_ok, p_ok = self._matched(threshold)
        return self.overlaps.true_ids[~t_ok], self.overlaps.pred_ids[~p_ok]

    def split_merge(self, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """Labels of true objects that were *split* (unmatched at ``threshold``, and two or more predictions
        each cover at least 10% of it) and of predictions that *merge* objects (unmatched, and covering at
        least 10% of each of two or more true objects)."""
        ov = self.overlaps
        t_ok, p_ok = self._matched(threshold)
        big_t = ov.inter >= 0.1 * ov.true_area[ov.pair_true]
        n_parts = np.bincount(ov.pair_true[big_t], minlength=ov.n_true)
        split = ov.true_ids[(n_parts >= 2) & ~t_ok]
        n_objects = np.bincount(ov.pair_pred[big_t], minlength=ov.n_pred)
        merged = ov.pred_ids[(n_objects >= 2) & ~p_ok]
        return split, merged


def _ratio(num: float, den: float, both_empty_is_perfect: bool) -> float:
    if den == 0:
        return 1.0 if both_empty_is_perfect else 0.0
    return num / den


def match_instances(true: np.ndarray, pred: np.ndarray) -> InstanceScores:
    """Object-level scores of a predicted label image against the true one (see the module docstring).

    Example:
        >>> s = match_instances(true_labels, predicted_labels)
        >>> s.f1(0.5), s.mean_ap(), s.pq(), s.aji()
    """
    return InstanceScores(overlaps(np.asarray(true), np.asarray(pred)))
