"""Tiled inference: pure tiling geometry, the predictor, and file-level entry points."""

from .api import collect_inputs, predict, predict_files
from .predictor import Predictor
from .tiling import plan_tiles, read_window

__all__ = ["Predictor", "collect_inputs", "plan_tiles", "predict", "predict_files", "read_window"]
