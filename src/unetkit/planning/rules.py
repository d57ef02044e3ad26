"""The planning rules: pure functions from a dataset's fingerprint (and the device) to settings, each with
its reason in words. Their thresholds are named here; each rule is unit-tested on hand-made fingerprints.

Each rule sets fields of the configuration sections it is given and records ``reasons[field] = why``.
"""

from __future__ import annotations

import math
import re

from ..config import ARCH_ONLY, DataConfig, ModelConfig, TrainConfig
from ..errors import ConfigError
from ..models import ValidGeometry
from ..pretrained import PretrainedModel
from .fingerprint import Fingerprint

__all__ = [
    "augmentation_rules",
    "epochs_for",
    "format_duration",
    "geometry_rules",
    "init_proposal",
    "intensity_rules",
    "learning_rate_rule",
    "length_rules",
    "norm_rule",
    "parse_duration",
    "patience_for",
    "receptive_field",
    "target_rules",
    "width_rule",
]

#: objects touching another, as a share of objects, from which the paper's border class and weights are used
CROWDED_TOUCHING = 0.05
#: fewer training images than this: the paper's elastic deformation
FEW_IMAGES = 30
#: object diameters (95th / 5th percentile) spread more than this: random scaling
SCALE_SPREAD = 2.5
#: brightness varies between images by more than this coefficient of variation: intensity jitter
BRIGHTNESS_JITTER_CV = 0.2
#: this many training images or fewer cannot show how unseen images vary in brightness (one image has a CV of 0
#: by construction): intensity jitter regardless of their CV
TINY_DATASET = 5
#: quantitative (signed or float) images steadier than this CV: dataset-wide z-score (as CT)
QUANTITATIVE_CV = 0.25
#: foreground under this share of pixels: half the patches centred on objects
RARE_FOREGROUND = 0.05
#: the smallest bottleneck side in pixels
MIN_BOTTLENECK = 4
#: fewer patches per step than this: instance norm instead of batch norm
BATCH_FOR_BATCHNORM = 4
#: fewer optimiser steps than this: a higher Adam learning rate
FEW_STEPS = 3000
#: validation and checkpoints take at most this share of an epoch
VALIDATION_SHARE = 0.15
#: steps per epoch, at least and at most
STEPS_PER_EPOCH = (25, 250)
#: fewer epochs than this fit the budget: shorter epochs, so checkpoints and the schedule have room
MIN_EPOCHS = 5


def receptive_field(depth: int) -> int:
    """Receptive field of the U-Net of this depth (two 3x3 convolutions per level): 185 px at depth 4."""
    return 2 * ValidGeometry(depth).margin + 1


#: why an architecture option left at its default is what it is
OPTION_DEFAULTS = {
    "growth_rate": "the default: half of base_channels per dense layer (DenseNet-BC), about a U-Net's FLOPs",
    "dense_layers": "the default: 4 layers in every dense block (FC-DenseNet56)",
    "compression": "the default: transitions keep half the channels (DenseNet-BC)",
    "bottleneck": "the default: a 1x1 convolution to 4x the growth rate before each 3x3 (DenseNet-BC)",
    "memory_efficient": "the default: every map kept for the backward pass (--memory-efficient recomputes them)",
}


def architecture_options(model: ModelConfig, reasons: dict[str, str]) -> None:
    """The chosen architecture's own options go into the plan as given (or as their defaults): the plan file must
    rebuild the network that was measured."""
    defaults = ModelConfig()
    names = ["deep_supervision", *ARCH_ONLY.get(model.arch, ())]
    for name in names:
        if getattr(model, name) != getattr(defaults, name):
            reasons[f"model.{name}"] = "given on the command line"
        elif name in OPTION_DEFAULTS:
            reasons[f"model.{name}"] = OPTION_DEFAULTS[name]


def geometry_rules(
    fp: Fingerprint, cuda: bool, model: ModelConfig, dcfg: DataConfig, reasons: dict[str, str]
) -> None:
    """Objects → depth (receptive field 2x the 95th-percentile diameter), patch size, 3-D anisotropy."""
    dims = fp.spatial_dims
    # --- objects → depth and patch
    d95 = fp.diameter_p95 or 16.0
    d50 = fp.diameter_median or d95
    median = fp.median_shape
    inplane = min(median[-2:])
    z_ratio = 1.0
    if dims == 3:
        if fp.spacing is not None:
            z_ratio = fp.spacing[0] / max(min(fp.spacing[1:]), 1e-12)
            z_how = f"z spacing {fp.spacing[0]:g} vs {min(fp.spacing[1:]):g} in-plane ({fp.spacing_source})"
        elif fp.z_extent_ratio is not None:
            z_ratio = fp.z_extent_ratio
            z_how = f"objects are {z_ratio:.1f}x wider in-plane than deep (no spacing metadata: taken as anisotropy)"
        else:
            z_how = "no spacing metadata and no objects: assumed isotropic"
    target_rf = 2 * d95
    depth = next((d for d in range(2, 7) if receptive_field(d) >= target_rf), 6)
    need = max(4 * d95, 64 if dims == 3 else 128)
    grid = max(2**depth, 16)
    cap = _round_up(inplane, 2**depth)
    patch = min(_round_up(need, grid), cap)
    limit = 512 if dims == 2 else 128
    if cuda and patch < min(cap, limit):  # a GPU affords more context: grow towards the image size
        patch = min(cap, _round_up(max(patch, 256 if dims == 2 else 96), 2**depth), limit)
    while depth > 2 and patch / 2**depth < MIN_BOTTLENECK:
        depth -= 1
    model.padding, model.depth = "same", depth
    model.spatial_dims = dims
    rf = receptive_field(depth)
    reasons["model.arch"] = (
        "the U-Net itself; the variants change little once the configuration is right"
        if model.arch == "unet"
        else f"chosen (--arch {model.arch}): the batch and the epochs below are measured on it"
    )
    architecture_options(model, reasons)
    reasons["model.padding"] = "padded convolutions: any tile size, the output covers the whole input"
    reasons["model.spatial_dims"] = "volumes" if dims == 3 else "2-D images"  # the plan says whence
    reasons["model.depth"] = (
        f"receptive field {rf} px covers 2x the 95th-percentile object diameter ({d95:.0f} px); "
        f"the bottleneck is {patch // 2**depth} px (>= 4)"
    )
    dcfg.patch_size = patch
    why_patch = (
        f"at least 4x the 95th-percentile object diameter: several objects (median {d50:.0f} px) with their "
        "surroundings"
    )
    if patch == cap:
        why_patch = (
            f"the median image side ({inplane} px), rounded to the pooling grid: the whole context there is"
        )
    elif cuda:
        why_patch += "; enlarged for context on the GPU"
    reasons["data.patch_size"] = why_patch
    if dims == 3:
        levels = 0
        r = z_ratio
        while r >= 2 and levels < depth:
            levels += 1
            r /= 2
        model.anisotropic_levels = levels
        reasons["model.anisotropic_levels"] = (
            f"{z_how}: the first {levels} pooling(s) keep z so that voxels become about isotropic"
            if levels
            else f"{z_how}: every pooling halves z too"
        )
        z_mult = 2 ** (depth - levels)
        z_need = max(patch / max(z_ratio, 1.0), 4 * z_mult)
        dcfg.patch_depth = min(_round_up(z_need, z_mult), _round_up(median[0], z_mult))
        reasons["data.patch_depth"] = (
            f"the in-plane patch scaled by the z anisotropy ({z_ratio:.1f}), within the median depth "
            f"({median[0]} slices)"
        )


def width_rule(dims: int, cuda: bool, model: ModelConfig, reasons: dict[str, str]) -> None:
    """The network's width: nnU-Net's 32 on a GPU; narrower on a CPU, where the budget buys more steps."""
    model.base_channels = (32 if cuda else 16) if dims == 2 else (32 if cuda else 8)
    reasons["model.base_channels"] = (
        "32 on a GPU (nnU-Net's width)"
        if cuda
        else f"{model.base_channels} on the CPU: compute per pixel grows with the square of the width, and the "
        "budget buys more steps"
    )


def intensity_rules(fp: Fingerprint, dcfg: DataConfig, reasons: dict[str, str]) -> None:
    """Normalisation: dataset-wide z-score for quantitative images with a stable range, else per-image
    percentiles."""
    quantitative = not fp.dtype.startswith("uint") or fp.intensity[0]["p0.5"] < 0
    if quantitative and fp.brightness_cv < QUANTITATIVE_CV:
        dcfg.normalization = "dataset"
        reasons["data.normalization"] = (
            f"{fp.dtype} values with a stable range across images (brightness CV {fp.brightness_cv:.2f}): "
            "absolute intensities mean something (as CT); z-score with the training set's mean and std"
        )
    else:
        dcfg.normalization = "percentile"
        reasons["data.normalization"] = (
            f"{fp.dtype} images ({fp.bits} bits used; brightness CV between images {fp.brightness_cv:.2f}): each "
            "image's 1st-99.8th percentiles to 0-1, the same whatever the bit depth or exposure"
        )


def target_rules(fp: Fingerprint, dcfg: DataConfig, tcfg: TrainConfig, reasons: dict[str, str]) -> bool:
    """Touching objects → the paper's border class and weight maps; the loss; foreground sampling. Returns
    whether the objects are crowded (a 3-class border target)."""
    # --- targets: touching objects → the paper's border class and weight maps
    crowded = fp.mask_encoding == "instances" and fp.touching_fraction >= CROWDED_TOUCHING
    if fp.mask_encoding == "instances":
        dcfg.target = "border" if crowded else "foreground"
        dcfg.weight_map = crowded
        if crowded:
            why = (
                f"{fp.touching_fraction:.0%} of objects touch another ({fp.touching_pairs} pairs): "
                "a border class between them lets instances be separated"
            )
            reasons["data.target"] = why
            reasons["data.weight_map"] = "the paper's weights (w0 10, sigma 5) on the thin separating borders"
            dcfg.w0, dcfg.sigma = 10.0, 5.0
            dcfg.weight_balance = False
            reasons["data.weight_balance"] = (
                "the separation term alone (w_c = 1): the loss's Dice term balances the classes already, and "
                "class-balance weights on the rare border class grow every object outwards"
            )
            reasons["data.w0"] = "the paper's separation weight"
            reasons["data.sigma"] = "the paper's decay in pixels"
        else:
            reasons["data.target"] = (
                f"only {fp.touching_fraction:.0%} of objects touch: foreground vs background is enough"
            )
            reasons["data.weight_map"] = "no touching objects to separate"
    tcfg.loss = "auto"
    reasons["train.loss"] = (
        "ce_dice: softmax cross-entropy (weighted per pixel) + Dice over the classes"
        if crowded or (fp.mask_encoding != "instances" and len(fp.class_names) > 2)
        else "bce_dice: cross-entropy for calibrated probabilities + Dice for the small foreground"
    )
    fg = 1.0 - (fp.class_frequencies[0] if fp.class_frequencies else 0.5)
    dcfg.fg_fraction = 0.5 if fg < RARE_FOREGROUND else 0.33
    reasons["data.fg_fraction"] = (
        f"foreground is {fg:.1%} of pixels: half the patches centred on objects"
        if fg < RARE_FOREGROUND
        else f"foreground is {fg:.0%} of pixels: a third of the patches centred on objects"
    )

    return crowded


def augmentation_rules(fp: Fingerprint, dcfg: DataConfig, reasons: dict[str, str]) -> None:
    """Augment what the data varies in: every extra transform slows learning what it does not need."""
    few = fp.samples < FEW_IMAGES
    dcfg.augment = True
    reasons["data.augment"] = "flips and 90-degree rotations: the content has no preferred orientation"
    dcfg.elastic = few
    reasons["data.elastic"] = (
        f"{fp.samples} images are few: the paper's elastic deformation (3x3 grid, 10 px)"
        if few
        else f"{fp.samples} images are enough variety; elastic deformation would cost step time"
    )
    # augment what the data varies in: every extra transform slows learning what it does not need
    spread = (fp.diameter_p95 or 1) / max(fp.diameter_p5 or 1, 1e-6)
    dcfg.scale = 0.2 if spread > SCALE_SPREAD else 0.0
    reasons["data.scale"] = f"object diameters span {spread:.1f}x (5th to 95th percentile): " + (
        "random scaling by up to 20% widens what the network sees" if dcfg.scale else "no scaling needed"
    )
    tiny = fp.samples <= TINY_DATASET
    dcfg.intensity = 0.2 if tiny or fp.brightness_cv > BRIGHTNESS_JITTER_CV else 0.0
    reasons["data.intensity"] = (
        f"{fp.samples} image(s) cannot show how unseen images vary in brightness: brightness/contrast/gamma jitter"
        if tiny
        else f"brightness varies between images by CV {fp.brightness_cv:.2f}: "
        + ("brightness/contrast/gamma jitter" if dcfg.intensity else "no intensity jitter needed")
    )


def norm_rule(batch: int, model: ModelConfig, reasons: dict[str, str]) -> None:
    """Batch norm when a step holds enough patches for stable statistics, else instance norm (nnU-Net)."""
    model.norm = "batch" if batch >= BATCH_FOR_BATCHNORM else "instance"
    reasons["model.norm"] = (
        f"batch norm: {batch} patches per step give stable statistics"
        if batch >= BATCH_FOR_BATCHNORM
        else f"instance norm: {batch} patches per step are too few for batch statistics (nnU-Net's choice)"
    )


def learning_rate_rule(total_steps: int, tcfg: TrainConfig, reasons: dict[str, str]) -> None:
    tcfg.lr = 2e-3 if total_steps < FEW_STEPS else 1e-3
    reasons["train.lr"] = (
        f"{total_steps} steps are few: a higher Adam rate converges within them"
        if total_steps < FEW_STEPS
        else f"{total_steps} steps: Adam's usual 1e-3"
    )


def parse_duration(text: str | float | int | None, option: str = "--time-budget") -> float | None:
    """Seconds in ``"90s"``, ``"5m"``, ``"2h"``, ``"1h30m"``, ``"1.5h"`` (a number is seconds)."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    s = text.strip().lower().replace(" ", "")
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s)?", s)
    if not s or parts is None or not any(parts.groups()):
        raise ConfigError(f"{option} {text!r}: give a duration such as 90s, 5m, 2h or 1h30m")
    h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
    seconds = h * 3600 + m * 60 + sec
    if seconds <= 0:
        raise ConfigError(f"{option} {text!r}: the duration must be positive")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds >= 3600:
        h, rest = divmod(round(seconds), 3600)
        return f"{h}h{rest // 60:02d}m" if rest >= 60 else f"{h}h"
    if seconds >= 60:
        m, sec = divmod(round(seconds), 60)
        return f"{m}m{sec:02d}s" if sec else f"{m}m"
    return f"{seconds:.0f}s"


def _round_up(v: float, m: int) -> int:
    return int(math.ceil(v / m) * m)


def patience_for(epochs: int) -> int:
    return max(10, epochs // 3)


def epochs_for(budget: float, epoch_seconds: float, startup: float, steps: int) -> tuple[int, str]:
    usable = 0.92 * budget - startup
    epochs = int(usable // epoch_seconds)
    if epochs < 1:
        raise ConfigError(
            f"--time-budget {format_duration(budget)}: one epoch ({steps} steps and validation) takes "
            f"{epoch_seconds:.0f} s after {startup:.0f} s of start-up here; give at least "
            f"{format_duration(math.ceil((startup + epoch_seconds) / 0.92))}"
        )
    return epochs, (
        f"fills the {format_duration(budget)} budget: 92% of it, less {startup:.0f} s start-up, "
        f"at the measured {epoch_seconds:.1f} s per epoch (steps + validation)"
    )


def length_rules(
    timing: dict[str, float], budget: float, startup: float, tcfg: TrainConfig, reasons: dict[str, str]
) -> float:
    """The run's length from the measured step and validation times: steps per epoch such that validation
    stays under ``VALIDATION_SHARE`` of an epoch, then the epochs that fill ``budget`` after ``startup``
    (shorter epochs when fewer than ``MIN_EPOCHS`` fit). Returns the planned epoch's seconds."""
    step, val = timing["step_seconds"], timing["validation_seconds"]
    low, high = STEPS_PER_EPOCH
    steps = int(min(high, max(low, math.ceil(val / VALIDATION_SHARE / max(step, 1e-6)))))
    reasons["train.steps_per_epoch"] = (
        f"validation ({val:.1f} s) stays under ~{VALIDATION_SHARE:.0%} of an epoch at {step:.2f} s per step"
    )
    epoch_seconds = steps * step + val
    usable = 0.92 * budget - startup  # as epochs_for counts it
    if usable < MIN_EPOCHS * epoch_seconds and steps > 10:  # short epochs, rather than too few (or none)
        steps = max(10, min(steps, int((usable / MIN_EPOCHS - val) / max(step, 1e-6))))
        epoch_seconds = steps * step + val
    epochs, why = epochs_for(budget, epoch_seconds, startup, steps)  # refused only if 10 steps do not fit
    tcfg.steps_per_epoch, tcfg.epochs, tcfg.time_budget = steps, epochs, budget
    reasons["train.epochs"] = why
    reasons["train.time_budget"] = "the run also stops before an epoch that would overrun the budget"
    return epoch_seconds


def init_proposal(fp: Fingerprint, models: list[PretrainedModel], target: str) -> str | None:
    """``--init NAME`` when a built-in model was made for data like this (its registry entry's ``proposed_for``:
    spatial dims, channels, mask encodings, object diameters in pixels), with ``--target`` when the plan's target
    is not the model's (its output layer then carries over instead of starting anew). A proposal only: the run
    trains from scratch unless the user passes it."""
    for model in models:
        want = model.proposed_for
        if not want:
            continue
        lo, hi = want.get("diameter", (0, math.inf))
        fits = (
            fp.spatial_dims == want.get("spatial_dims", fp.spatial_dims)
            and fp.channels == want.get("channels", fp.channels)
            and fp.mask_encoding in want.get("encodings", [fp.mask_encoding])
            and fp.diameter_median is not None
            and lo <= fp.diameter_median <= hi
        )
        if fits:
            flags = f"--init {model.name}" + (
                f" --target {want['target']}" if want.get("target", target) != target else ""
            )
            return (
                f"{flags}: the built-in model '{model.name}' ({model.summary}) was made for data like this "
                f"({fp.channels} channel, {fp.mask_encoding} masks, objects {fp.diameter_median:g} px across); "
                "fine-tuning it usually beats training from scratch, above all on a few images"
            )
    return None
