"""unetkit: U-Nets for segmentation, from the 2015 paper to images of any size.

Example:
    >>> import unetkit
    >>> unetkit.synthesize_dataset("nuclei", n=20)
    >>> result = unetkit.train("nuclei", "run")
    >>> mask = unetkit.predict(result.best_checkpoint, image)
"""

from __future__ import annotations

import importlib as _importlib
import types as _types
from typing import TYPE_CHECKING

from .version import __version__

if TYPE_CHECKING:  # the names below are imported on first use (PEP 562): `unetkit --version` stays light
    from .checkpoint import load_checkpoint, save_checkpoint
    from .config import (
        DataConfig,
        ModelConfig,
        OutputConfig,
        PredictConfig,
        RunConfig,
        TrainConfig,
        load_config,
    )
    from .data import (
        check_dataset,
        read_image,
        synth_nuclei,
        synth_nuclei_3d,
        synthesize_dataset,
        write_image,
    )
    from .errors import CheckpointError, ConfigError, DataError, UnetkitError
    from .inference import Predictor, predict
    from .metrics.results import Evaluation
    from .models import UNet, create_model, list_models
    from .planning import Plan, fingerprint
    from .pretrained import list_pretrained
    from .training import TrainResult
    from .workflows import (
        TrainHooks,
        evaluate,
        evaluate_model,
        export_bioimageio,
        export_model,
        plan_training,
        predict_files,
        run_demo,
        train,
        write_painted_dataset,
        write_weight_maps,
    )

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "Evaluation",
    "ModelConfig",
    "OutputConfig",
    "Plan",
    "PredictConfig",
    "Predictor",
    "RunConfig",
    "TrainConfig",
    "TrainHooks",
    "TrainResult",
    "UNet",
    "UnetkitError",
    "__version__",
    "check_dataset",
    "create_model",
    "evaluate",
    "evaluate_model",
    "export_bioimageio",
    "export_model",
    "fingerprint",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
    "load_config",
    "plan_training",
    "predict",
    "predict_files",
    "read_image",
    "run_demo",
    "save_checkpoint",
    "synth_nuclei",
    "synth_nuclei_3d",
    "synthesize_dataset",
    "train",
    "write_image",
    "write_painted_dataset",
    "write_weight_maps",
]

# where each public name lives; a name is imported, and kept, the first time it is asked for
_LAZY = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "DataConfig": "config",
    "ModelConfig": "config",
    "OutputConfig": "config",
    "PredictConfig": "config",
    "RunConfig": "config",
    "TrainConfig": "config",
    "load_config": "config",
    "check_dataset": "data",
    "read_image": "data",
    "synth_nuclei": "data",
    "synth_nuclei_3d": "data",
    "synthesize_dataset": "data",
    "write_image": "data",
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "UnetkitError": "errors",
    "Predictor": "inference",
    "predict": "inference",
    "Evaluation": "metrics.results",
    "UNet": "models",
    "create_model": "models",
    "list_models": "models",
    "Plan": "planning",
    "fingerprint": "planning",
    "list_pretrained": "pretrained",
    "TrainResult": "training",
    "TrainHooks": "workflows",
    "evaluate": "workflows",
    "evaluate_model": "workflows",
    "export_bioimageio": "workflows",
    "export_model": "workflows",
    "plan_training": "workflows",
    "predict_files": "workflows",
    "run_demo": "workflows",
    "train": "workflows",
    "write_painted_dataset": "workflows",
    "write_weight_maps": "workflows",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:  # a subpackage (unetkit.data), as when everything was imported up front
        if name.startswith("_"):
            raise AttributeError(f"module 'unetkit' has no attribute {name!r}")
        try:
            return _importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'unetkit' has no attribute {name!r}") from None
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names and the subpackages imported so far."""
    loaded = {n for n, v in globals().items() if isinstance(v, _types.ModuleType) and not n.startswith("_")}
    return sorted(loaded | set(__all__))
