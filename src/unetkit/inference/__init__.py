"""Tiled inference: pure tiling geometry, the streaming predictor, post-processing, the file pipelines and
what they write. The workflow that turns files and folders into results is
:func:`unetkit.workflows.predict_files`."""

from .pipeline import predict
from .predictor import Predictor
from .tiling import plan_tiles, read_window

__all__ = ["Predictor", "plan_tiles", "predict", "read_window"]
