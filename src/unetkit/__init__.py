"""unetkit: U-Nets for segmentation, from the 2015 paper to images of any size.

Example:
    >>> import unetkit
    >>> unetkit.synthesize_dataset("nuclei", n=20)
    >>> result = unetkit.train("nuclei", "run")
    >>> mask = unetkit.predict(result.best_checkpoint, image)
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import DataConfig, ModelConfig, PredictConfig, RunConfig, TrainConfig, load_config
from .data import check_dataset, read_image, synth_nuclei, synth_nuclei_3d, synthesize_dataset, write_image
from .errors import CheckpointError, ConfigError, DataError, UnetkitError
from .inference import Predictor, predict
from .metrics.results import Evaluation
from .models import UNet, create_model, list_models
from .planning import Plan, fingerprint
from .pretrained import list_pretrained
from .training import TrainResult
from .version import __version__
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
)

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "Evaluation",
    "ModelConfig",
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
]
