"""Metrics: arrays in, numbers out."""

from .semantic import confusion_counts, dice, dice_iou, iou

__all__ = ["confusion_counts", "dice", "dice_iou", "iou"]
from .instance import DSB_THRESHOLDS, InstanceScores, iou_matrix, match_instances

__all__ += ["DSB_THRESHOLDS", "InstanceScores", "iou_matrix", "match_instances"]
