"""Metrics: arrays in, numbers out (and the file-level evaluation and report built on them)."""

from .boundary import boundary_scores, surface_distances
from .instance import DSB_THRESHOLDS, InstanceScores, iou_matrix, match_instances, overlaps
from .isbi import isbi_scores, pixel_error, rand_info_scores, warping_error
from .semantic import SemanticScores, confusion_counts, confusion_matrix, dice, dice_iou, iou

__all__ = [
    "DSB_THRESHOLDS",
    "InstanceScores",
    "SemanticScores",
    "boundary_scores",
    "confusion_counts",
    "confusion_matrix",
    "dice",
    "dice_iou",
    "iou",
    "iou_matrix",
    "isbi_scores",
    "match_instances",
    "overlaps",
    "pixel_error",
    "rand_info_scores",
    "surface_distances",
    "warping_error",
]
