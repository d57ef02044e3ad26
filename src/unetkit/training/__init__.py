"""Training: the typed loop state, the run folder, one epoch and validation, the setup of a run, the fit loop
and torch.distributed. The ``train`` workflow (:func:`unetkit.workflows.train`) composes them."""

from .loop import TrainingInterrupted
from .run_folder import RUN_FILES, RunFolder
from .state import TrainResult, TrainState

__all__ = ["RUN_FILES", "RunFolder", "TrainResult", "TrainState", "TrainingInterrupted"]
