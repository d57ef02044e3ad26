"""Typed configuration: dataclasses with defaults, saved as YAML next to every run.

``None`` means "derive from the data" (for example ``ModelConfig.in_channels``). Loading rejects unknown
keys with the list of valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_write_text
from .errors import ConfigError

#: sections of a plan file (``unetkit plan``) that describe what the choices were based on; not settings
INFO_SECTIONS = ("fingerprint", "measured")
#: how a dataset's images and masks are found (fields of DataConfig): a checkpoint stores these beside its mask
#: encoding (how the masks were read), so its description is stored once
FINDING_KEYS = ("layout", "images_dir", "masks_dir", "image_pattern", "mask_pattern")
#: the dataset description (fields of DataConfig): how the data is found and its masks read; stored whole in
#: the plan
DATASET_KEYS = (
    *FINDING_KEYS,
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
    "Range",
    "RunConfig",
    "TrainConfig",
    "check_config",
    "check_values",
    "load_config",
    "option",
    "read_yaml",
]

# -- the choices of every option with a fixed set of values: one source, imported by the modules that
#    implement them, the CLI (argparse choices) and check_config ------------------------------------------
LAYOUTS = ("paired", "flat", "dsb", "isbi", "ctc", "list")
ENCODINGS = ("binary", "classes", "rgb", "instances")
TARGETS = ("foreground", "border")
NORMALIZATIONS = ("percentile", "fixed", "dataset", "minmax", "zscore", "none")
#: what validation holds out (DataConfig.val_split)
VAL_SPLITS = ("auto", "images", "objects", "rows")
LOSS_NAMES = ("bce", "ce", "dice", "bce_dice", "ce_dice", "focal", "focal_dice")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "poly", "constant")
PADDINGS = ("same", "valid")
UPSAMPLINGS = ("transpose", "bilinear")
NORMS = ("batch", "instance", "group", "none")
#: model fields that only one architecture takes (``ModelConfig.kwargs`` leaves them out for the others,
#: ``check_config`` refuses them there)
ARCH_ONLY = {"dense-unet": ("growth_rate", "dense_layers", "compression", "bottleneck", "memory_efficient")}
#: all of them, in order (their CLI flags)
ARCH_ONLY_FIELDS = tuple(name for names in ARCH_ONLY.values() for name in names)
BLENDS = ("gaussian", "taper", "constant", "crop")
PRECISIONS = ("float32", "bfloat16", "auto")
ENGINES = ("torch", "onnxruntime", "openvino", "auto")
#: batch-norm statistics while training (TrainConfig.freeze_norm)
FREEZE_NORM = ("auto", "on", "off")
#: what best.pt and early stopping follow (TrainConfig.select_by): a metrics.csv column without its "val_"
SELECT_BY = ("auto", "dice", "pq")

#: the learning rate of a run from scratch, and of a fine-tuning run (``--init``), unless one is given
DEFAULT_LR = 1e-3
FINE_TUNE_LR = 2e-4

#: keys renamed since files were written with them: still read (config.yaml, plan.yaml, checkpoints)
LEGACY_KEYS = {"ModelConfig": {"name": "arch"}}

#: the largest YAML file unetkit reads (configurations, plans, dataset descriptions, class maps)
YAML_MAX_BYTES = 1 << 20


#: the deepest nesting a YAML file may have (a configuration needs 3; a model description about 8)
YAML_MAX_DEPTH = 64


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (a 600-byte "billion laughs" file cannot expand to gigabytes) and
    without deep nesting (``[[[[…`` 100,000 deep would exhaust Python's recursion limit)."""

    _depth = 0

    aliases = False

    def compose_node(self, parent, index):
        if not self.aliases and self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(
                f"YAML aliases (*{event.anchor}) are not accepted here; write the values out"
            )
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                raise yaml.YAMLError(f"nested more than {YAML_MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _AliasLoader(_NoAliasLoader):
    """For formats whose files use aliases (bioimage.io's ``rdf.yaml``): aliases allowed, their expansion
    bounded after loading (:func:`_expanded_size`)."""

    aliases = True


#: the most values a YAML file with aliases may expand to
YAML_MAX_EXPANDED = 1_000_000


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """How many values ``value`` holds once every alias is written out (shared objects counted once each)."""
    key = id(value)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a cycle counts once
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    memo[key] = 1 + sum(_expanded_size(v, memo) for _, v in items)
    return memo[key]


def read_yaml(path: str | Path, option: str, aliases: bool = False) -> Any:
    """A small YAML (or JSON) file's content, safely: no Python tags, no aliases (``aliases``: allowed, but the
    content they expand to bounded by YAML_MAX_EXPANDED values), at most YAML_MAX_BYTES, nested at most
    YAML_MAX_DEPTH levels, UTF-8. Errors are :class:`ConfigError` naming ``option`` and the file."""
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
        content = yaml.load(text, Loader=_AliasLoader if aliases else _NoAliasLoader)
        if aliases and _expanded_size(content, {}) > YAML_MAX_EXPANDED:
            raise ConfigError(
                f"{option} {path}: its aliases expand to more than {YAML_MAX_EXPANDED:,} values (an alias bomb)"
            )
        return content
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{option} {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{option} {path}: not valid YAML ({_short(str(exc))})") from None


def _short(text: str, limit: int = 300) -> str:
    """An error message never repeats a hostile file whole."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " …"


@dataclass(frozen=True)
class Range:
    """The values a numeric option takes: ``low`` and ``high`` bounds (None: unbounded), each included unless
    ``open``. Part of the option's one definition (:func:`option`): :func:`check_values` refuses a value outside
    it by name, ``--help`` says it, and the napari widgets take their bounds from it."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    #: what to do instead, said after the range when a value is refused
    hint: str = ""

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return (
            f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        )


#: the usual ranges
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1, high_open=True)


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    choices: Sequence[Any] | None = None,
    valid: Range | None = None,
    metavar: str | None = None,
    aliases: Sequence[str] = (),
    default_text: str | None = None,
) -> Any:
    """A configuration field with what the CLI (and the docs) need to offer it: the help text (without the
    default: that is added from ``default``), the choices or the valid range, earlier flag spellings still
    accepted."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if valid is not None:
        meta["valid"] = valid
    if metavar is not None:
        meta["metavar"] = metavar
    if aliases:
        meta["aliases"] = tuple(aliases)
    if default_text is not None:
        meta["default_text"] = default_text
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """The network. Defaults: a small, batch-normalised, padded U-Net that trains in minutes on a CPU.

    The paper's network is ``base_channels=64, depth=4, padding="valid", norm=None, num_classes=2``.
    """

    arch: str = option("unet", "architecture (`unetkit models` lists them)", metavar="NAME")
    in_channels: int | None = option(
        None, "input channels", default_text="from the training images", valid=AT_LEAST_ONE
    )
    num_classes: int | None = option(
        None,
        "number of classes (classes encoding); output channels of the model",
        default_text="from the mask encoding: 1 sigmoid output for 2 classes",
        valid=AT_LEAST_ONE,
    )
    depth: int = option(4, "number of poolings (the paper: 4)", valid=AT_LEAST_ONE)
    base_channels: int = option(
        16, "channels at the first level, doubling per level (the paper: 64)", valid=AT_LEAST_ONE
    )
    padding: str = option("same", "same: any size; valid: the paper's unpadded network", choices=PADDINGS)
    up: str = option("transpose", "up-sampling (the paper: transpose)", choices=UPSAMPLINGS)
    norm: str | None = option("batch", "normalisation layers", choices=NORMS)
    act: str = option("relu", "activation")
    dropout: float = option(
        0.0, "dropout at the end of the contracting path (the paper: 0.5)", valid=FRACTION
    )
    level_dropout: list[float] | None = option(None, "dropout per level, deepest last", valid=FRACTION)
    spatial_dims: int = option(
        2,
        "3: volumes (TIFF z-stacks, .npy, .zarr) and a 3-D network",
        choices=(2, 3),
        default_text="2, or DATA/dataset.yaml's",
    )
    anisotropic_levels: int = option(
        0, "volumes: the first N poolings keep z (coarse z spacing)", valid=NON_NEGATIVE
    )
    deep_supervision: bool = option(
        False, "unet++: a loss on every nested output; dense-unet: a loss on every decoder level"
    )
    growth_rate: int | None = option(
        None,
        "dense-unet: feature maps each dense layer adds",
        default_text="base_channels / 2",
        valid=AT_LEAST_ONE,
    )
    dense_layers: list[int] | None = option(
        None,
        "dense-unet: layers per dense block: one value for every level, or depth + 1 values from the top level "
        "to the bottleneck",
        default_text="4 at every level",
        valid=AT_LEAST_ONE,
    )
    compression: float = option(
        0.5,
        "dense-unet: share of the channels a transition down keeps (1: FC-DenseNet)",
        valid=Range(0, 1, low_open=True),
    )
    bottleneck: bool = option(True, "dense-unet: a 1x1 convolution to 4x the growth rate before each 3x3")
    memory_efficient: bool = option(
        False,
        "dense-unet: recompute each dense layer's concatenation in the backward pass (gradient checkpointing): "
        "less training memory, more time; same gradients",
    )

    def foreign(self) -> dict[str, str]:
        """The fields of other architectures (:data:`ARCH_ONLY`), each with the architecture it belongs to."""
        return {name: arch for arch, names in ARCH_ONLY.items() if arch != self.arch for name in names}

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``create_model(arch, ...)``: every field but ``arch`` and :meth:`foreign`."""
        foreign = self.foreign()
        return {k: v for k, v in asdict(self).items() if k != "arch" and k not in foreign}


@dataclass
class DataConfig:
    """How the dataset is found and read, how masks become targets, normalisation, split and patches."""

    layout: str = option("auto", "dataset layout", choices=("auto", *LAYOUTS), default_text="auto, detected")
    images_dir: str | None = option(
        None, "paired layout: the image folder in DATA", metavar="DIR", default_text="images/, raw/ ..."
    )
    masks_dir: str | None = option(
        None, "paired layout: the mask folder in DATA", metavar="DIR", default_text="masks/, labels/, gt/ ..."
    )
    image_pattern: str | None = option(
        None, "image file name around the part shared with the mask, e.g. 'img_{stem}'"
    )
    mask_pattern: str | None = option(
        None,
        "mask file name around the image's, e.g. '{stem}_gt' or 'mask_{stem}'",
        default_text="the same name, or a known suffix/prefix: _mask, _label, _cp_masks, mask_ ...",
    )
    mask_encoding: str = option(
        "auto",
        "how masks are read",
        choices=("auto", *ENCODINGS),
        default_text="auto: DATA/dataset.yaml, the layout, or 0/x masks as binary; never a guess",
    )
    class_values: list[int] | None = option(None, "classes: the mask value of each class")
    class_colors: list[list[int]] | None = option(None, "rgb: the colour of each class")
    class_names: list[str] | None = option(None, "the name of each class")
    target: str = option("foreground", "instance masks: foreground, or border (3 classes)", choices=TARGETS)
    ignore_index: int | None = option(None, "mask value of unlabelled pixels, left out of loss and metrics")
    border_gap: int = option(
        0,
        "instances: cut a 1- or 2-pixel background gap between touching objects",
        choices=(0, 1, 2),
        valid=NON_NEGATIVE,
    )
    weight_map: bool = option(
        False,
        "weight the cross-entropy per pixel: class balance + w0*exp(-(d1+d2)^2/(2 sigma^2)) (the paper's)",
    )
    w0: float = option(10.0, "weight map: separation weight (the paper: 10)", valid=NON_NEGATIVE)
    sigma: float = option(5.0, "weight map: decay in pixels (the paper: 5)", valid=POSITIVE)
    weight_balance: bool = option(True, "weight map: the paper's class-balance term w_c (off: w_c = 1)")
    normalization: str = option(
        "percentile",
        "percentile (per image, --norm-low to --norm-high), fixed (/--norm-scale), dataset (mean/std), minmax, "
        "zscore, none",
        choices=NORMALIZATIONS,
    )
    norm_low: float = option(1.0, "percentile normalisation: the percentile mapped to 0", valid=Range(0, 100))
    norm_high: float = option(
        99.8, "percentile normalisation: the percentile mapped to 1", valid=Range(0, 100)
    )
    norm_scale: float = option(255.0, "fixed normalisation: divide by this", valid=POSITIVE)
    val_fraction: float = option(
        0.2,
        "fraction of images (or of each image, for < 4 images) held out for validation",
        valid=Range(0, 1, low_open=True, high_open=True),
    )
    val_split: str = option(
        "auto",
        "what validation holds out: whole images, whole objects (with their surroundings) or the bottom rows of "
        "each image",
        choices=VAL_SPLITS,
        default_text="auto: images from 4 images on; with fewer, objects for 2-D object masks, else rows",
    )
    patch_size: int = option(
        256, "training patch size = network input size in pixels", aliases=("--patch",), valid=AT_LEAST_ONE
    )
    input_scale: float | None = option(
        None,
        "resample every training image and mask by this factor, and every image the model later predicts "
        "(recorded in the checkpoint): below 1 shrinks objects larger than the network suits (2-D)",
        default_text="1; with --init, the factor that brings your objects into the sizes the model learnt",
        valid=Range(1 / 8, 8),
    )
    patch_depth: int | None = option(
        None, "volumes: patch size along z", default_text="--patch-size", valid=AT_LEAST_ONE
    )
    channel: int | None = option(
        None,
        "read only this stored channel of multi-channel images, from 0 (e.g. the nuclear stain of DAPI + "
        "marker TIFFs): train trains a one-channel model on it and records it, so predict reads the same "
        "channel; evaluate MODEL: the channel the model reads",
        metavar="N",
        default_text="every channel of the images",
        valid=NON_NEGATIVE,
    )
    augment: bool = option(True, "random flips and 90-degree rotations")
    elastic: bool = option(False, "the paper's elastic deformation (3x3 grid, --elastic-sigma px)")
    elastic_sigma: float = option(10.0, "elastic displacement std in pixels", valid=NON_NEGATIVE)
    elastic_points: int = option(3, "elastic deformation: control points per side", valid=Range(2))
    rotate: float = option(0.0, "free rotation up to this many degrees", valid=NON_NEGATIVE)
    scale: float = option(0.0, "scaling by up to this fraction, e.g. 0.2", valid=FRACTION)
    intensity: float = option(0.0, "brightness/contrast/gamma jitter strength, e.g. 0.2", valid=NON_NEGATIVE)
    noise: float = option(0.0, "Gaussian noise std in normalised units", valid=NON_NEGATIVE)
    blur: float = option(0.0, "Gaussian blur sigma up to this", valid=NON_NEGATIVE)
    fg_fraction: float = option(0.33, "share of patches centred near a labelled object", valid=Range(0, 1))
    cache_mb: int = option(
        2048, "decoded images kept in memory per process, in MB; the rest is re-read", valid=NON_NEGATIVE
    )


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: int = option(40, "maximum number of epochs", valid=AT_LEAST_ONE)
    batch_size: int = option(
        8,
        "patches per step (the global batch, split between --nproc processes)",
        aliases=("--batch",),
        valid=AT_LEAST_ONE,
    )
    steps_per_epoch: int = option(25, "optimiser steps per epoch", valid=AT_LEAST_ONE)
    lr: float | None = option(
        None,
        "learning rate",
        default_text=f"{DEFAULT_LR:g}, or {FINE_TUNE_LR:g} when fine-tuning (--init)",
        valid=POSITIVE,
    )
    weight_decay: float = option(0.0, "weight decay", valid=NON_NEGATIVE)
    optimizer: str = option(
        "adam", "optimiser; sgd uses --momentum (the paper: sgd, 0.99)", choices=OPTIMIZERS
    )
    momentum: float = option(0.99, "SGD momentum (the paper: 0.99)", valid=FRACTION)
    schedule: str = option("cosine", "learning-rate schedule, per step, to 1% of --lr", choices=SCHEDULES)
    warmup: int = option(0, "linear warm-up steps", valid=NON_NEGATIVE)
    loss: str = option(
        "auto", "auto: bce_dice for 1 output channel, ce_dice for >= 2", choices=("auto", *LOSS_NAMES)
    )
    class_weights: list[float] | None = option(
        None, "one weight per class for the cross-entropy term", metavar="W", valid=NON_NEGATIVE
    )
    compile: bool = option(False, "torch.compile the model (slower start)")
    sync_bn: bool = option(False, "distributed: synchronise batch-norm statistics across GPUs")
    freeze_norm: str = option(
        "auto",
        "keep the batch-norm statistics of the starting model (its scale and shift still train): on a few "
        "images, statistics of batches of their patches are not those of the images the model will see",
        choices=FREEZE_NORM,
        default_text="auto: on when fine-tuning (--init) on at most 5 training images",
    )
    select_by: str = option(
        "auto",
        "what best.pt and early stopping follow: validation Dice, or the panoptic quality of the held-out objects "
        "(instance masks of images)",
        choices=SELECT_BY,
        default_text="auto: pq when fine-tuning (--init) on instance masks, else dice",
    )
    patience: int = option(
        10,
        "early stopping: epochs without a better validation score (Dice; the held-out objects' PQ when "
        "fine-tuning on instance masks)",
        valid=AT_LEAST_ONE,
    )
    time_budget: float | None = option(
        None, "seconds: no epoch starts that would end past it", default_text="no limit", valid=POSITIVE
    )
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps", default_text="auto: CUDA when present")
    amp: bool = option(
        True,
        "mixed precision: bfloat16 (or float16) on CUDA, bfloat16 for images on CPUs with native bfloat16 "
        "(AVX512-BF16, AMX); off: float32",
    )
    num_workers: int = option(0, "DataLoader worker processes", aliases=("--workers",), valid=NON_NEGATIVE)
    init: str | None = option(
        None,
        "fine-tune: start from this model (RUN, RUN/best.pt, or a built-in model: nuclei): its architecture, "
        "normalisation and weights; "
        "the input layer is adapted and the output layer starts anew when channels or classes differ",
        metavar="MODEL",
        default_text="none: train from scratch",
    )


#: the tile side for a model that records no training patch (the built-in models, packages, a bare network);
#: a model that does tiles at its patch, at least :data:`MIN_DEFAULT_TILE` (see ``inference.predictor.default_tile``)
DEFAULT_TILE = 512
MIN_DEFAULT_TILE = 256
#: the largest tile side: of --tile, and of the training patch a checkpoint may record
MAX_TILE = 16384

#: where a surface's default differs from the definition (a PredictConfig field, or a parameter of
#: ``predict_files``) on purpose, and why: surface → option → (value, reason)
SURFACE_DEFAULTS: dict[str, dict[str, tuple[Any, str]]] = {
    "napari": {
        "instances": (
            True,
            "a viewer shows objects to look at and correct; a file pipeline writes the mask unless asked for labels",
        ),
    },
}


@dataclass
class PredictConfig:
    """Tiled inference: the same defaults for ``unetkit predict``, :class:`~unetkit.Predictor` and
    :func:`~unetkit.predict_files`."""

    tile: int | None = option(
        None,
        "network input size per tile",
        default_text=f"the model's training patch size, at least {MIN_DEFAULT_TILE} ({DEFAULT_TILE} if it records "
        "none, as the built-in model)",
        valid=Range(
            1,
            MAX_TILE,
            hint="a tile is mirrored out to its size around a smaller image; use the default, or a tile of a few hundred to a few thousand pixels",
        ),
    )
    overlap: float | None = option(
        None,
        "fraction of a tile shared with each neighbour (padded networks); given, every tile is --tile pixels",
        default_text="2-D: what the network needs, its context on each side of a seam (64 px at depth 4), "
        "with each image's tiles as few and as small as cover it, up to the pixels of --batch-size tiles of "
        "--tile; volumes: 0.25",
        valid=FRACTION,
    )
    blend: str | None = option(
        None,
        "how overlapping tiles are combined: gaussian, taper, constant, or crop (cut at the middle of each "
        "overlap); valid networks are always tiled exactly",
        choices=BLENDS,
        default_text="gaussian",
    )
    batch_size: int = option(4, "tiles per forward pass", aliases=("--batch",), valid=AT_LEAST_ONE)
    threshold: float = option(
        0.5,
        "foreground probability threshold of a binary model",
        valid=Range(0, 1, low_open=True, high_open=True),
    )
    tta: bool = option(
        False, "test-time augmentation: average over 8 flips/rotations of each tile (8x the time)"
    )
    invert: bool = option(
        False,
        "the objects are dark on a bright background (bright-field, stained sections) and the model learnt "
        "bright ones on dark (the built-in nuclei model: fluorescence): read the images with their intensities "
        "reversed",
    )
    min_size: int | None = option(
        None,
        "drop objects under this many pixels",
        default_text="a tenth of the typical object's area in each image, at least 2 (8 when it finds none)",
        valid=NON_NEGATIVE,
    )
    diameter: str | None = option(
        None,
        "the objects' diameter in pixels in these images, or auto (estimated by a first pass): the image is "
        "rescaled so its objects match the size the model learnt, and the result mapped back",
        metavar="D",
        default_text="none: the image as it is",
    )
    channel: int | None = option(
        None,
        "the stored channel a one-channel model reads, from 0 (a colour image: 0 red, 1 green, 2 blue; a "
        "multi-channel TIFF: its channel order), e.g. the nuclear stain of a multi-stain image",
        metavar="N",
        default_text="the image's one channel, a colour image's equal channels, or the one channel that varies",
        valid=NON_NEGATIVE,
    )
    precision: str = option(
        "auto",
        "auto: bfloat16 on CPUs with native bfloat16 (about 2x faster here), else float32",
        choices=PRECISIONS,
    )
    engine: str = option(
        "torch",
        "torch, onnxruntime or openvino (the checkpoint is exported and verified first, once: kept in "
        "~/.cache/unetkit/onnx; a .onnx MODEL runs on onnxruntime unless openvino is asked for; openvino needs the "
        "[openvino] extra and computes in --precision float32 or bfloat16), or auto: the fastest on this CPU, and "
        "without --tile or --batch-size the largest pass that pays, measured on the model's first use and "
        "remembered",
        choices=ENGINES,
    )
    compile: bool = option(
        False,
        "torch.compile the model (about 1.2-1.3x faster on a CPU; the first run compiles for a minute, later ones "
        "load kernels from ~/.cache/unetkit/inductor in seconds)",
    )
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps", default_text="auto: CUDA when present")


#: which metrics ``evaluate`` computes (auto: instance for instance masks, else semantic)
MODES = ("auto", "semantic", "instance", "isbi")
#: how a prediction mask gives objects in instance mode
PRED_ENCODINGS = ("auto", "instances", "binary")


@dataclass
class EvaluateConfig:
    """How ``unetkit evaluate``, :func:`~unetkit.evaluate` and :func:`~unetkit.evaluate_model` score: the same
    defaults for all three (and the napari Evaluate widget)."""

    mode: str = option("auto", "which metrics", choices=MODES, default_text="auto: from the data")
    pred_encoding: str = option(
        "auto",
        "instance mode: how a prediction mask gives objects: auto (NAME_instances files and label images by their "
        "IDs, masks with one value besides 0 by connected components), instances, binary",
        choices=PRED_ENCODINGS,
    )


#: result formats of ``unetkit predict`` and :func:`~unetkit.predict_files`
FORMATS = ("png", "tiff", "zarr", "ome-zarr")
#: how probabilities are stored (``--save-probs``)
PROBS_DTYPES = ("float32", "float16", "uint8")


@dataclass
class OutputConfig:
    """What ``unetkit predict`` and :func:`~unetkit.predict_files` write and how they go through the inputs: the
    same defaults for both (the napari Segment widget's differ only where :data:`SURFACE_DEFAULTS` says why)."""

    instances: bool = option(
        False,
        "also write NAME_instances.tif: one label per object (interior components for a 3-class border model, "
        "distance-transform watershed for a binary one; the split follows the objects' measured size)",
    )
    overlay: bool = option(False, "also write NAME_overlay.png: contours on the image")
    save_probs: str | None = option(
        None,
        "also write the probabilities (NAME_probs.tif): float16 (when given bare), float32, or uint8 (p x 255)",
        choices=PROBS_DTYPES,
        default_text="none",
    )
    format: str | None = option(
        None,
        "png, tiff (tiled, compressed), zarr (one NAME.zarr group with mask, probs and instances) or ome-zarr "
        "(NAME.ome.zarr: the image as a multiscale OME-Zarr with mask and instances in its labels group; "
        "napari-ome-zarr opens it)",
        choices=FORMATS,
        default_text="png; tiff for stacks of pages and masks over 64 megapixels",
    )
    level: int | None = option(
        None,
        "read OME-Zarr inputs at resolution level N of their pyramid (0 = full resolution; the results have that "
        "level's size and pixel size)",
        metavar="N",
        default_text="0",
        valid=NON_NEGATIVE,
    )
    max_memory_gib: float | None = option(
        None,
        "refuse an image whose row of tiles needs more memory than this, in GiB, before anything is allocated",
        metavar="GIB",
        aliases=("--max-memory",),
        default_text="half the memory available",
        valid=Range(0, low_open=True, hint="give the memory to allow in GiB, e.g. 8"),
    )
    object_context: int = option(
        128,
        "largest object size in pixels that keeps one ID when a large image is labelled in blocks",
        valid=Range(0, hint="give a size in pixels, e.g. 128 (the default)"),
    )
    dask_workers: int = option(
        2, "--dask without an address: worker processes of the local cluster", valid=AT_LEAST_ONE
    )
    chunk: int | None = option(
        None, "--dask: pixels per chunk side, one task each", default_text="2048; 256 for volumes"
    )
    overwrite: bool = option(False, "replace existing results in OUT (never an input: refused)")
    resume: bool = option(
        False,
        "keep the complete results already in OUT and segment the rest (after a kill or a --skip-bad run)",
    )
    skip_bad: bool = option(
        False,
        "go on past inputs that cannot be read or do not fit the model; they are listed at the end and the exit "
        "code is 1",
    )
    fill_missing_chunks: bool = option(
        False,
        "read the missing chunks of a zarr input as its fill value (for stores that leave chunks equal to it "
        "unwritten); without it such an input is refused as incomplete",
    )


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


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML run configuration (any subset of keys; the rest keep their defaults)."""
    raw = read_yaml(path, "--config") or {}
    return RunConfig.from_dict(raw, source=str(path))


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_short(repr(raw))}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for old, new in LEGACY_KEYS.get(cls.__name__, {}).items():  # files written before a rename
        if old in raw and new not in raw:
            raw = {(new if k == old else k): v for k, v in raw.items()}
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


def check_values(section: str, values: Any, of: type | None = None) -> None:
    """Refuse, by name, a value of a configuration section (a dataclass, or a mapping of some of the fields of
    the dataclass ``of``) that is not a finite number where one is due, or lies outside its option's
    :class:`Range` (every element of a list option). ``None``: not set."""
    given = values if isinstance(values, dict) else {f.name: getattr(values, f.name) for f in fields(values)}
    for f in fields(of or values):
        if f.name not in given:
            continue
        value = given[f.name]
        flag = "--" + f.name.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{section}.{f.name} ({flag}) must be a finite number, got {v}")
            valid = f.metadata.get("valid")
            if valid is not None and v not in valid:
                hint = f"; {valid.hint}" if valid.hint else ""
                raise ConfigError(f"{section}.{f.name} ({flag}) must be {valid}, got {value}{hint}")


def check_config(cfg: RunConfig) -> None:
    """Reject bad settings by name (with the valid choices or range) before anything is read or computed."""
    t, d, m = cfg.train, cfg.data, cfg.model
    for section, values in (("model", m), ("data", d), ("train", t)):
        check_values(section, values)
    checks = [  # what no one option's range says: options together
        (
            d.patch_size >= 2**m.depth,
            f"data.patch_size {d.patch_size} is smaller than 2**depth = {2**m.depth}",
        ),
        (
            d.normalization != "percentile" or d.norm_low < d.norm_high,
            "data.norm_low and norm_high must satisfy 0 <= low < high <= 100",
        ),
        (
            not d.weight_map or t.loss != "dice",
            "data.weight_map weights the cross-entropy term; use a loss with one (ce, bce, ce_dice, bce_dice)",
        ),
    ]
    choices = [
        ("data.layout", d.layout, ("auto", *LAYOUTS)),
        ("data.mask_encoding", d.mask_encoding, ("auto", *ENCODINGS)),
        ("data.target", d.target, TARGETS),
        ("data.normalization", d.normalization, NORMALIZATIONS),
        ("data.val_split", d.val_split, VAL_SPLITS),
        ("train.optimizer", t.optimizer, OPTIMIZERS),
        ("train.schedule", t.schedule, SCHEDULES),
        ("train.freeze_norm", t.freeze_norm, FREEZE_NORM),
        ("train.select_by", t.select_by, SELECT_BY),
        ("train.loss", t.loss, ("auto", *LOSS_NAMES)),
        ("model.padding", m.padding, PADDINGS),
    ]
    defaults = ModelConfig()
    for name, owner in m.foreign().items():
        if getattr(m, name) != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"model.{name} ({flag}) is a {owner} option; this run's architecture is {m.arch!r}: "
                f"add --arch {owner} or drop {flag}"
            )
    for name, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"{name} {value!r} is unknown; choose one of {', '.join(map(str, allowed))}")
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
