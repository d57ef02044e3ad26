"""Metrics: arrays in, numbers out."""

from .semantic import confusion_counts, dice, dice_iou, iou

__all__ = ["confusion_counts", "dice", "dice_iou", "iou"]
