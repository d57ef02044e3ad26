"""Typed configuration: dataclasses with defaults, saved as YAML next to every run.

``None`` means "derive from the data" (for example ``ModelConfig.in_channels``). Loading rejects unknown
keys with the list of valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_write_text
from .errors import ConfigError

#: sections of a plan file (``unetkit plan``) that describe what the choices were based on; not settings
INFO_SECTIONS = ("fingerprint", "measured")
#: the dataset description (fields of DataConfig): how the data is found and its masks read; stored whole in
#: the plan and the checkpoint
DATASET_KEYS = (
    "layout",
    "images_dir",
    "masks_dir",
    "image_pattern",
    "mask_pattern",
    "mask_encoding",
    "class_values",
    "class_colors",
    "class_names",
    "ignore_index",
)

__all__ = [
    "DataConfig",
    "ModelConfig",
    "PredictConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "read_yaml",
]

# -- the choices of every option with a fixed set of values: one source, imported by the modules that
#    implement them, the CLI (argparse choices) and check_config ------------------------------------------
LAYOUTS = ("paired", "flat", "dsb", "isbi", "ctc", "list")
ENCODINGS = ("binary", "classes", "rgb", "instances")
TARGETS = ("foreground", "border")
NORMALIZATIONS = ("percentile", "fixed", "dataset", "minmax", "zscore", "none")
LOSS_NAMES = ("bce", "ce", "dice", "bce_dice", "ce_dice", "focal", "focal_dice")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "poly", "constant")
PADDINGS = ("same", "valid")
UPSAMPLINGS = ("transpose", "bilinear")
NORMS = ("batch", "instance", "group", "none")
BLENDS = ("gaussian", "taper", "constant", "crop")
PRECISIONS = ("float32", "bfloat16", "auto")
ENGINES = ("torch", "onnxruntime")

#: the largest YAML file unetkit reads (configurations, plans, dataset descriptions, class maps)
YAML_MAX_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: a 600-byte "billion laughs" file cannot expand to gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(
                f"YAML aliases (*{event.anchor}) are not accepted here; write the values out"
            )
        return super().compose_node(parent, index)


def read_yaml(path: str | Path, option: str) -> Any:
    """A small YAML (or JSON) file's content, safely: no Python tags, no aliases, at most YAML_MAX_BYTES,
    UTF-8. Errors are :class:`ConfigError` naming ``option`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{option} {path}: no such file")
    size = path.stat().st_size
    if size > YAML_MAX_BYTES:
        raise ConfigError(
            f"{option} {path}: {size} bytes; a configuration file is at most {YAML_MAX_BYTES} bytes"
        )
    try:
        text = path.read_bytes().decode("utf-8")
        return yaml.load(text, Loader=_NoAliasLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{option} {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{option} {path}: not valid YAML ({_short(str(exc))})") from None


def _short(text: str, limit: int = 300) -> str:
    """An error message never repeats a hostile file whole."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " …"


@dataclass
class ModelConfig:
    """The network. Defaults: a small, batch-normalised, padded U-Net that trains in minutes on a CPU.

    The paper's network is ``base_channels=64, depth=4, padding="valid", norm=None, num_classes=2``.
    """

    name: str = "unet"
    in_channels: int | None = None  # None: taken from the training images
    num_classes: int | None = None  # None: from the mask encoding (1 sigmoid output for 2 classes)
    depth: int = 4
    base_channels: int = 16
    padding: str = "same"
    up: str = "transpose"
    norm: str | None = "batch"
    act: str = "relu"
    dropout: float = 0.0
    level_dropout: list[float] | None = None
    spatial_dims: int = 2  # 3: volumes
    anisotropic_levels: int = 0  # 3-D: the first k poolings keep z
    deep_supervision: bool = False  # unet++ only


@dataclass
class DataConfig:
    """How the dataset is found and read, how masks become targets, normalisation, split and patches."""

    layout: str = "auto"  # auto | paired | flat | dsb | isbi | ctc | list
    images_dir: str | None = None  # paired layout: the image folder (default: images/, raw/, ...)
    masks_dir: str | None = None  # paired layout: the mask folder (default: masks/, labels/, gt/, ...)
    image_pattern: str | None = None  # image name around the shared part, e.g. "img_{stem}"
    mask_pattern: str | None = None  # mask name around the shared part, e.g. "{stem}_gt" or "mask_{stem}"
    mask_encoding: str = "auto"  # auto | binary | classes | rgb | instances
    class_values: list[int] | None = None  # classes: the mask value of each class
    class_colors: list[list[int]] | None = None  # rgb: the colour of each class
    class_names: list[str] | None = None
    target: str = "foreground"  # instances: foreground | border (background/interior/border)
    ignore_index: int | None = None  # mask value of unlabelled pixels (left out of loss and metrics)
    border_gap: int = 0  # instances: background gap (1 or 2 px) cut between touching objects; 0: none
    weight_map: bool = False  # the paper's pixel weights (class balance + separation term) in the loss
    w0: float = 10.0  # weight map: separation weight (paper: 10)
    sigma: float = 5.0  # weight map: decay in pixels (paper: 5)
    weight_balance: bool = True  # weight map: the class-balance term w_c (paper); False: w_c = 1
    normalization: str = "percentile"  # percentile | fixed | dataset | minmax | zscore | none
    norm_low: float = 1.0  # percentile mapped to 0
    norm_high: float = 99.8  # percentile mapped to 1
    norm_scale: float = 255.0  # fixed: divide by this
    val_fraction: float = 0.2
    patch_size: int = 256
    patch_depth: int | None = None  # volumes: patch size along z (None: patch_size)
    augment: bool = True  # random flips and 90-degree rotations
    elastic: bool = False  # the paper's elastic deformation (3x3 grid, elastic_sigma px)
    elastic_sigma: float = 10.0
    elastic_points: int = 3
    rotate: float = 0.0  # free rotation, up to this many degrees
    scale: float = 0.0  # scaling by up to this fraction
    intensity: float = 0.0  # brightness/contrast/gamma jitter strength
    noise: float = 0.0  # Gaussian noise std (normalised units)
    blur: float = 0.0  # Gaussian blur sigma, up to
    fg_fraction: float = 0.33  # share of patches centred near a labelled object
    cache_mb: int = 2048  # decoded images kept in memory (per process); the rest is re-read from disk


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: int = 40
    batch_size: int = 8
    steps_per_epoch: int = 25
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    momentum: float = 0.99  # sgd (the paper's 0.99)
    schedule: str = "cosine"  # cosine | poly | constant (per step, to 1% of lr)
    warmup: int = 0  # linear warm-up steps
    loss: str = "auto"  # auto: bce_dice for 1 class, ce_dice for >= 2; also bce, ce, dice, focal, focal_dice
    class_weights: list[float] | None = None  # one per class, for the cross-entropy term
    compile: bool = False  # torch.compile the model
    sync_bn: bool = False  # distributed: synchronise batch-norm statistics across GPUs
    patience: int = 10  # early stopping: epochs without a better validation Dice
    time_budget: float | None = None  # seconds: no epoch starts that would end past it (None: no limit)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = True  # mixed precision on CUDA (ignored on the CPU)
    num_workers: int = 0


@dataclass
class PredictConfig:
    """Tiled inference."""

    tile: int | None = None  # network input size per tile; None: the training patch size (at least 256)
    overlap: float = 0.25  # fraction of a tile shared with each neighbour (padded networks)
    blend: str | None = None  # gaussian | taper | constant | crop; None: gaussian, or exact crop for valid
    batch_size: int = 4
    threshold: float = 0.5
    device: str = "auto"


@dataclass
class RunConfig:
    """Every setting of one training run; written to ``RUN/config.yaml``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> RunConfig:
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{source}: expected a mapping with sections model/data/train, got {type(raw).__name__}"
            )
        unknown = set(raw) - {"model", "data", "train", *INFO_SECTIONS}
        if unknown:
            raise ConfigError(
                f"{source}: unknown section(s) {sorted(unknown)}; valid sections are model, data, train"
            )
        return cls(
            model=_build(ModelConfig, raw.get("model") or {}, f"{source}: model"),
            data=_build(DataConfig, raw.get("data") or {}, f"{source}: data"),
            train=_build(TrainConfig, raw.get("train") or {}, f"{source}: train"),
        )

    def to_yaml(self, path: str | Path) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        return load_config(path)


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML run configuration (any subset of keys; the rest keep their defaults)."""
    raw = read_yaml(path, "--config") or {}
    return RunConfig.from_dict(raw, source=str(path))


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_short(repr(raw))}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {_short(repr(sorted(map(str, unknown))))}; valid keys are {sorted(names)}"
        )
    values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in raw.items()}
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check (and gently coerce, e.g. 1 → 1.0) a YAML value against a dataclass field's type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {_short(repr(value))} is not a valid {hint}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, where) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def replace(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that ignores ``None`` values (unset CLI flags)."""
    return dataclasses.replace(obj, **{k: v for k, v in changes.items() if v is not None})


def check_config(cfg: RunConfig) -> None:
    """Reject bad settings by name (with the valid choices or range) before anything is read or computed."""
    t, d, m = cfg.train, cfg.data, cfg.model
    checks = [
        (t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}"),
        (t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}"),
        (t.steps_per_epoch >= 1, f"train.steps_per_epoch must be >= 1, got {t.steps_per_epoch}"),
        (t.lr > 0, f"train.lr must be > 0, got {t.lr}"),
        (t.patience >= 1, f"train.patience must be >= 1, got {t.patience}"),
        (
            t.time_budget is None or t.time_budget > 0,
            f"train.time_budget must be > 0 seconds, got {t.time_budget}",
        ),
        (t.num_workers >= 0, f"train.num_workers must be >= 0, got {t.num_workers}"),
        (
            d.patch_size >= 2**m.depth,
            f"data.patch_size {d.patch_size} is smaller than 2**depth = {2**m.depth}",
        ),
        (d.cache_mb >= 0, f"data.cache_mb must be >= 0, got {d.cache_mb}"),
        (t.warmup >= 0, f"train.warmup must be >= 0 steps, got {t.warmup}"),
        (0 <= t.momentum < 1, f"train.momentum must be in [0, 1), got {t.momentum}"),
        (0 <= d.fg_fraction <= 1, f"data.fg_fraction must be in [0, 1], got {d.fg_fraction}"),
        (
            min(d.rotate, d.scale, d.intensity, d.noise, d.blur, d.elastic_sigma) >= 0,
            "augmentation strengths must be >= 0",
        ),
        (d.scale < 1, f"data.scale must be < 1, got {d.scale}"),
        (m.num_classes is None or m.num_classes >= 1, f"model.num_classes must be >= 1, got {m.num_classes}"),
        (
            d.normalization != "percentile" or 0 <= d.norm_low < d.norm_high <= 100,
            "data.norm_low and norm_high must satisfy 0 <= low < high <= 100",
        ),
        (d.normalization != "fixed" or d.norm_scale > 0, f"data.norm_scale must be > 0, got {d.norm_scale}"),
        (
            not d.weight_map or t.loss != "dice",
            "data.weight_map weights the cross-entropy term; use a loss with one (ce, bce, ce_dice, bce_dice)",
        ),
        (
            not d.weight_map or (d.w0 >= 0 and d.sigma > 0),
            f"data.w0 must be >= 0 and data.sigma > 0, got w0={d.w0}, sigma={d.sigma}",
        ),
    ]
    choices = [
        ("data.layout", d.layout, ("auto", *LAYOUTS)),
        ("data.mask_encoding", d.mask_encoding, ("auto", *ENCODINGS)),
        ("data.target", d.target, TARGETS),
        ("data.normalization", d.normalization, NORMALIZATIONS),
        ("train.optimizer", t.optimizer, OPTIMIZERS),
        ("train.schedule", t.schedule, SCHEDULES),
        ("train.loss", t.loss, ("auto", *LOSS_NAMES)),
        ("model.padding", m.padding, PADDINGS),
    ]
    for name, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"{name} {value!r} is unknown; choose one of {', '.join(map(str, allowed))}")
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
