"""Workflows: the only code that composes the packages (data, models, training, inference, metrics, planning).

Each command of the CLI parses its options and calls one function here; the Python API exposes the same
functions with the same defaults:

- :func:`train` — a dataset → a run folder (``best.pt``, ``last.pt``, logs);
- :func:`plan_training` — a dataset → a plan (``plan.yaml``): the settings this data and machine call for;
- :func:`predict_files` — images, folders or datasets → masks, labels, probabilities, overlays;
- :func:`evaluate` / :func:`evaluate_model` — predictions (or a model) against the truth → scores, report;
- :func:`export_model` — a checkpoint → ONNX or TorchScript, verified;
- :func:`export_bioimageio` — a checkpoint → a BioImage Model Zoo package;
- :func:`write_painted_dataset` — one painted image (e.g. napari layers) → a dataset folder for :func:`train`;
- :func:`run_demo` — the whole loop on the built-in synthetic nuclei.
"""

from .bioimageio import export_bioimageio
from .demo import run_demo
from .evaluate import evaluate, evaluate_model
from .export import export_model
from .painted import write_painted_dataset
from .plan import plan_training
from .predict import collect_inputs, predict_files
from .train import TrainHooks, train
from .weights import write_weight_maps

__all__ = [
    "TrainHooks",
    "collect_inputs",
    "evaluate",
    "evaluate_model",
    "export_bioimageio",
    "export_model",
    "plan_training",
    "predict_files",
    "run_demo",
    "train",
    "write_painted_dataset",
    "write_weight_maps",
]
