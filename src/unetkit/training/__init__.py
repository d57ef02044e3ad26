"""Training: the fit loop."""

from .trainer import TrainResult, train

__all__ = ["TrainResult", "train"]
