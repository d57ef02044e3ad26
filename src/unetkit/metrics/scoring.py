"""One image's scores from arrays: semantic (per class, boundary distances) and instance (matching at IoU 0.5,
PQ, AJI, the DSB 2018 score). The evaluation workflow reads the files; this module sees only arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from .boundary import boundary_scores
from .instance import DSB_THRESHOLDS, InstanceScores, match_instances
from .semantic import SemanticScores, confusion_matrix

__all__ = ["score_instances", "score_semantic"]

#: the class index of unlabelled pixels in the targets scored here (unetkit.data.weights.IGNORE)
UNLABELLED = 255


def score_semantic(
    pred: np.ndarray, truth: np.ndarray, names: list[str], ignore: int = UNLABELLED
) -> tuple[dict[str, float], dict[str, Any]]:
    """Class-index prediction and truth (``ignore`` = unlabelled, left out) → scores, per class by name."""
    k = len(names)
    scores = SemanticScores(confusion_matrix(truth, pred, k, ignore=ignore), tuple(names))
    valid = truth != ignore
    boundary = [boundary_scores((pred == c) & valid, (truth == c) & valid) for c in range(1, k)]
    out = {**scores.means(), "pixel_accuracy": scores.pixel_accuracy}
    for key in ("hausdorff", "hd95", "mean_surface_distance"):
        vals = [b[key] for b in boundary]
        out[key] = float(np.mean(vals)) if vals else 0.0
    per = scores.per_class()
    if k > 2:  # every foreground class by name
        for c in range(1, k):
            out[f"dice[{names[c]}]"] = float(per["dice"][c])
            out[f"iou[{names[c]}]"] = float(per["iou"][c])
    details = {"per_class": scores.to_dict()["per_class"], "confusion_matrix": scores.matrix.tolist()}
    if k > 2:
        details["boundary_per_class"] = dict(zip(names[1:], boundary, strict=True))
    return out, details


def score_instances(
    pred_labels: np.ndarray, truth_labels: np.ndarray, matched: InstanceScores | None = None
) -> tuple[dict[str, float], dict[str, Any]]:
    """Object labels (0 = background) → matching scores at IoU 0.5, the DSB score, AJI, splits and merges;
    ``matched``: ``match_instances(truth_labels, pred_labels)`` when the caller has it already."""
    s = matched if matched is not None else match_instances(truth_labels, pred_labels)
    tp, fp, fn = s.counts(0.5)
    split, merged = s.split_merge(0.5)
    out = {
        "n_true": float(s.n_true),
        "n_pred": float(s.n_pred),
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(fn),
        "precision": s.precision(0.5),
        "recall": s.recall(0.5),
        "f1": s.f1(0.5),
        "pq": s.pq(0.5),
        "sq": s.mean_matched_iou(0.5),
        "dsb_score": s.mean_ap(),
        "aji": s.aji(),
        "splits": float(len(split)),
        "merges": float(len(merged)),
    }
    fg = score_semantic(
        (pred_labels > 0).astype(np.uint8), (truth_labels > 0).astype(np.uint8), ["bg", "fg"]
    )[0]
    out.update({"dice": fg["dice"], "iou": fg["iou"]})
    ov = s.overlaps
    best = np.zeros(ov.n_true)
    np.maximum.at(best, ov.pair_true, ov.iou)
    details = {
        "ap_per_threshold": {f"{t:.2f}": s.ap(t) for t in DSB_THRESHOLDS},
        "object_iou": best.round(4).tolist(),  # best IoU of every true object (0: missed)
        "split_labels": split.tolist(),
        "merged_labels": merged.tolist(),
    }
    return out, details
