"""Self-configuration (``unetkit plan DATA``): a dataset and a machine in, a training setup with its reasons out.

As nnU-Net showed, most of a result comes from the configuration. Three steps:

1. :func:`fingerprint` measures the dataset: sizes and spacings, channels and bit depth, intensities per channel,
   class frequencies, object diameters (median and 95th percentile, from the masks) and touching objects.
2. :func:`plan_training` turns it into choices by rules written out below (each choice keeps its reason), then
   measures on the target device: a trial forward/backward pass sets the batch that fits in memory, and a short
   real training run (two epochs of a few steps) measures the step and validation times from which the number
   of epochs that fills ``time_budget`` follows.
3. :meth:`Plan.write` writes ``DATA/plan.yaml``: the fingerprint, the measurements, and the ``model`` / ``data``
   / ``train`` sections of a :class:`RunConfig` with every value's reason as a comment. ``unetkit train DATA``
   uses it (making it first if absent); flags override any value; ``--config DATA/plan.yaml`` reads it too.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import ndimage as ndi

from . import __version__
from .config import DATASET_KEYS, INFO_SECTIONS, DataConfig, ModelConfig, RunConfig, load_config, read_yaml
from .data.checks import check_dataset
from .data.io import collapse_gray, to_channels_first
from .data.layouts import read_descriptor, read_sample_image, read_sample_mask
from .data.masks import IGNORE, compact_labels, encode_mask
from .data.synthetic import touching_pairs
from .errors import ConfigError, DataError
from .models.unet import ValidGeometry

__all__ = ["Fingerprint", "Plan", "fingerprint", "parse_duration", "plan_training", "read_plan", "rebudget"]

log = logging.getLogger(__name__)

PLAN_FILE = "plan.yaml"
DEFAULT_BUDGET = "1h"
#: a bare `unetkit train DATA` plans for this much training on a CPU (a GPU: DEFAULT_BUDGET)
CPU_TRAIN_BUDGET = "10m"
_DESCRIPTOR_KEY = {"class_values": "classes", "class_colors": "classes", "class_names": "classes"}


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


def _format_duration(seconds: float) -> str:
    if seconds >= 3600:
        h, rest = divmod(round(seconds), 3600)
        return f"{h}h{rest // 60:02d}m" if rest >= 60 else f"{h}h"
    if seconds >= 60:
        m, sec = divmod(round(seconds), 60)
        return f"{m}m{sec:02d}s" if sec else f"{m}m"
    return f"{seconds:.0f}s"


# ----------------------------------------------------------------------------------------------- fingerprint


@dataclass
class Fingerprint:
    """What :func:`fingerprint` measured. Sizes are ``(H, W)`` or ``(D, H, W)``; diameters in pixels."""

    root: str
    layout: str
    samples: int
    measured_samples: int
    spatial_dims: int
    median_shape: list[int]
    min_shape: list[int]
    max_shape: list[int]
    spacing: list[float] | None  # per spatial axis, from dataset.yaml or TIFF metadata; None: unknown
    spacing_source: str
    channels: int
    dtype: str
    bits: int  # bits actually used by the largest value (integer images)
    intensity: list[dict[str, float]]  # per channel: p0.5, p50, p99.5, mean, std (all pixels sampled)
    brightness_cv: float  # variation between images of each image's 99.5th percentile (std / mean)
    mask_encoding: str
    class_names: list[str]
    class_frequencies: list[float]
    objects: int
    objects_per_image: float
    diameter_median: float | None
    diameter_p95: float | None
    diameter_p5: float | None
    z_extent_ratio: float | None  # 3-D: median in-plane extent / z extent of objects (isotropic objects: ~1)
    touching_pairs: int  # pairs of objects that touch without background between them (instance masks)
    touching_fraction: float  # share of objects touching at least one other
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _spacing(root: Path, sample_path: Path | None, dims: int) -> tuple[list[float] | None, str]:
    descriptor = read_descriptor(root) if root.is_dir() else {}
    if descriptor.get("spacing") is not None:
        raw = descriptor["spacing"]
        if not isinstance(raw, list) or len(raw) != dims or not all(isinstance(v, (int, float)) for v in raw):
            raise DataError(
                f"{root / 'dataset.yaml'}: spacing must be a list of {dims} numbers (one per axis, z first), got {raw!r}"
            )
        return [float(v) for v in raw], "dataset.yaml"
    if sample_path is not None and sample_path.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile

            with tifffile.TiffFile(sample_path) as tif:
                page = tif.pages[0]
                tags = page.tags
                xy = None
                if "XResolution" in tags:
                    num, den = tags["XResolution"].value
                    if num and den and num / den not in (1.0, 72.0, 96.0):  # 72/96 dpi: a default, not a size
                        xy = den / num
                z = (tif.imagej_metadata or {}).get("spacing")
                if dims == 3 and z and xy:
                    return [float(z), xy, xy], "TIFF metadata"
                if dims == 2 and xy:
                    return [xy, xy], "TIFF metadata"
        except Exception:  # metadata is a hint; an unreadable tag is not an error
            pass
    return None, "unknown (no spacing in dataset.yaml or the TIFF metadata)"


def fingerprint(
    data: str | Path,
    config: DataConfig | None = None,
    *,
    volumes: bool | None = None,
    num_classes: int | None = None,
    max_samples: int = 200,
    seed: int = 0,
) -> Fingerprint:
    """Measure a dataset (any layout of ``check-data``): every file is checked first, as by ``train``.

    Object statistics come from the masks: instance labels as given, other masks as connected components of
    their foreground. At most ``max_samples`` samples (evenly spaced) are measured beyond the checks."""
    root = Path(data)
    cfg = config or DataConfig()
    if volumes is None:
        volumes = read_descriptor(root).get("spatial_dims") == 3 if root.is_dir() else False
    report = check_dataset(root, cfg, num_classes=num_classes, volumes=volumes)
    report.raise_if_problems()
    encoding = report.encoding
    assert encoding is not None and report.in_channels is not None
    dims = 3 if volumes else 2
    samples = report.samples
    pick = np.unique(np.linspace(0, len(samples) - 1, min(len(samples), max_samples)).round().astype(int))
    rng = np.random.default_rng(seed)
    pixels: list[np.ndarray] = []
    highs: list[float] = []
    diameters: list[float] = []
    ratios: list[float] = []
    max_value, n_objects, n_pairs, touching_objects = 0.0, 0, 0, 0
    dtype = ""
    for i in pick:
        s = samples[i]
        image = read_sample_image(s, volumes)
        mask = read_sample_mask(s, volumes)
        dtype = str(image.dtype)
        if volumes:
            chw = collapse_gray(image[None] if image.ndim == 3 else np.moveaxis(image, -1, 0))
        else:
            chw = collapse_gray(to_channels_first(image, None))
        flat = chw.reshape(chw.shape[0], -1)
        take = rng.choice(flat.shape[1], min(flat.shape[1], 50_000), replace=False)
        pixels.append(flat[:, take].astype(np.float64))
        highs.append(float(np.percentile(flat[:, take], 99.5)))
        max_value = max(max_value, float(flat.max()))
        if encoding.name == "instances":
            labels = mask if volumes or mask.ndim == 2 else mask[..., 0]
            labels = compact_labels(labels.astype(np.int64))
            pairs = touching_pairs(labels)
            n_pairs += len(pairs)
            touching_objects += len({i for p in pairs for i in p})
        else:
            target = encode_mask(encoding, mask, s.mask_label, volumes)
            labels = ndi.label((target > 0) & (target != IGNORE))[0]
        sizes = np.bincount(labels.ravel())[1:]
        sizes = sizes[sizes >= 4]  # specks are not objects
        n_objects += len(sizes)
        if volumes:
            diameters.extend((6 * sizes / math.pi) ** (1 / 3))
            for box in ndi.find_objects(labels):
                if box is not None:
                    dz, dy, dx = (b.stop - b.start for b in box)
                    if dy * dx >= 16:
                        ratios.append((dy + dx) / 2 / dz)
        else:
            diameters.extend(2 * np.sqrt(sizes / math.pi))
    stack = np.concatenate(pixels, axis=1)
    intensity = [
        {
            "p0.5": round(float(np.percentile(c, 0.5)), 4),
            "p50": round(float(np.percentile(c, 50)), 4),
            "p99.5": round(float(np.percentile(c, 99.5)), 4),
            "mean": round(float(c.mean()), 4),
            "std": round(float(c.std()), 4),
        }
        for c in stack
    ]
    shapes = np.array(report.shapes)
    integer = np.issubdtype(np.dtype(dtype), np.integer)
    bits = math.ceil(math.log2(max_value + 1)) if integer and max_value > 0 else 32
    freq = (
        report.class_pixels / max(int(report.class_pixels.sum()), 1)
        if report.class_pixels is not None
        else []
    )
    d = np.array(diameters) if diameters else None
    spacing, spacing_source = _spacing(root, Path(samples[0].image) if samples else None, dims)
    notes = []
    if encoding.name != "instances":
        notes.append(
            f"masks are {encoding.name}: objects are their connected components, and touching objects cannot be "
            "told apart"
        )
    return Fingerprint(
        root=str(root),
        layout=report.layout,
        samples=len(samples),
        measured_samples=len(pick),
        spatial_dims=dims,
        median_shape=[int(v) for v in np.median(shapes, axis=0)],
        min_shape=[int(v) for v in shapes.min(axis=0)],
        max_shape=[int(v) for v in shapes.max(axis=0)],
        spacing=spacing,
        spacing_source=spacing_source,
        channels=report.in_channels,
        dtype=dtype,
        bits=bits,
        intensity=intensity,
        brightness_cv=round(float(np.std(highs) / max(np.mean(highs), 1e-12)), 4),
        mask_encoding=encoding.name,
        class_names=list(encoding.names),
        class_frequencies=[round(float(f), 4) for f in freq],
        objects=n_objects,
        objects_per_image=round(n_objects / len(pick), 2),
        diameter_median=round(float(np.median(d)), 2) if d is not None else None,
        diameter_p95=round(float(np.percentile(d, 95)), 2) if d is not None else None,
        diameter_p5=round(float(np.percentile(d, 5)), 2) if d is not None else None,
        z_extent_ratio=round(float(np.median(ratios)), 3) if ratios else None,
        touching_pairs=n_pairs,
        touching_fraction=round(touching_objects / max(n_objects, 1), 4),
        notes=notes,
    )


# ------------------------------------------------------------------------------------------------------ plan


@dataclass
class Plan:
    """A training configuration, the reason for each planned value, and what it was based on."""

    config: RunConfig
    reasons: dict[str, str]  # "section.key" → reason
    fingerprint: Fingerprint
    measured: dict[str, Any]
    data: str
    device: str
    time_budget: float | None

    def write(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the plan as YAML with every reason as a comment (atomically)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} exists; pass --overwrite to plan again, or edit it")
        made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        budget = _format_duration(self.time_budget) if self.time_budget else "none"
        lines = [
            f"# unetkit {__version__} plan for {self.data}, made {made} on {self.device}; time budget {budget}.",
            f"# `unetkit train {self.data}` trains with it; flags override any value (e.g. --patch 256),",
            "# `--config` reads it like any run configuration. Edit it, or plan again with `unetkit plan --overwrite`.",
            "# `fingerprint` and `measured` record what the choices were based on; they are not settings.",
            _dump_section("fingerprint", self.fingerprint.to_dict(), {}),
            _dump_section("measured", self.measured, {}),
        ]
        full = self.config.to_dict()
        for section in ("model", "data", "train"):
            planned = {k: v for k, v in full[section].items() if f"{section}.{k}" in self.reasons}
            lines.append(
                _dump_section(
                    section,
                    planned,
                    {k.split(".", 1)[1]: r for k, r in self.reasons.items() if k.startswith(section + ".")},
                )
            )
        text = "\n".join(lines) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return path

    def summary(self) -> str:
        """The main choices in a few lines (the plan file holds them all, with reasons)."""
        m, d, t = self.config.model, self.config.data, self.config.train
        patch = (
            f"{d.patch_depth}x{d.patch_size}x{d.patch_size}" if m.spatial_dims == 3 else f"{d.patch_size}²"
        )
        fp = self.fingerprint
        rows = [
            (
                "dataset",
                f"{fp.samples} {'volumes' if fp.spatial_dims == 3 else 'images'}, median "
                f"{'x'.join(map(str, fp.median_shape))}, {fp.channels} channel(s) {fp.dtype}",
            ),
            (
                "objects",
                f"{fp.objects_per_image:g}/image, diameter median {fp.diameter_median} px, p95 "
                f"{fp.diameter_p95} px, {fp.touching_fraction:.0%} touching",
            ),
            (
                "network",
                f"U-Net depth {m.depth}, base {m.base_channels}, {m.norm} norm"
                + (f", {m.anisotropic_levels} in-plane-only pooling(s)" if m.anisotropic_levels else ""),
            ),
            ("patches", f"{patch}, batch {t.batch_size}, {d.normalization} normalisation"),
            ("targets", f"{d.target}{', weight maps' if d.weight_map else ''}, loss {t.loss}"),
            (
                "training",
                f"{t.epochs} epochs x {t.steps_per_epoch} steps, lr {t.lr:g}"
                + (
                    f", {self.measured['step_seconds']:.2f} s/step measured"
                    if "step_seconds" in self.measured
                    else ""
                ),
            ),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def with_budget(self, seconds: float) -> Plan:
        """The same plan for another time budget: epochs from the measured times, nothing re-measured."""
        cfg, reason = rebudget(self.config, self.measured, seconds)
        reasons = {**self.reasons, "train.epochs": reason}
        return dataclasses.replace(self, config=cfg, reasons=reasons, time_budget=seconds)


def rebudget(cfg: RunConfig, measured: dict[str, Any], seconds: float) -> tuple[RunConfig, str]:
    """``cfg`` with the epochs that fill another time budget, from a plan's measured times."""
    if not measured.get("epoch_seconds"):
        raise ConfigError(
            "--time-budget: this plan has no measured epoch time (made with --no-measure); plan again"
        )
    epochs, reason = _epochs_for(
        seconds, measured["epoch_seconds"], measured["startup_seconds"], cfg.train.steps_per_epoch
    )
    cfg = dataclasses.replace(cfg)
    cfg.train = dataclasses.replace(cfg.train, epochs=epochs, time_budget=seconds, patience=_patience(epochs))
    return cfg, reason


def _dump_section(name: str, values: dict[str, Any], reasons: dict[str, str]) -> str:
    out = [f"{name}:"]
    for key, value in values.items():
        text = yaml.safe_dump(
            value, default_flow_style=True, width=10_000, allow_unicode=True, sort_keys=False
        ).strip()
        text = text.removesuffix("...").strip()
        reason = reasons.get(key)
        out.append(f"  {key}: {text}" + (f"  # {reason}" if reason else ""))
    return "\n".join(out)


def read_plan(path: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """A plan file's configuration and its ``fingerprint`` / ``measured`` sections."""
    path = Path(path)
    cfg = load_config(path)
    raw = read_yaml(path, "--plan") or {}
    return cfg, {k: raw.get(k) or {} for k in INFO_SECTIONS}


def _receptive_field(depth: int) -> int:
    """Receptive field of the U-Net of this depth (two 3x3 convolutions per level): 185 px at depth 4."""
    return 2 * ValidGeometry(depth).margin + 1


def _round_up(v: float, m: int) -> int:
    return int(math.ceil(v / m) * m)


def _patience(epochs: int) -> int:
    return max(10, epochs // 3)


def _epochs_for(budget: float, epoch_seconds: float, startup: float, steps: int) -> tuple[int, str]:
    usable = 0.92 * budget - startup
    epochs = int(usable // epoch_seconds)
    if epochs < 1:
        raise ConfigError(
            f"--time-budget {_format_duration(budget)}: one epoch ({steps} steps and validation) takes "
            f"{epoch_seconds:.0f} s after {startup:.0f} s of start-up here; give at least "
            f"{_format_duration(math.ceil((startup + epoch_seconds) / 0.92))}"
        )
    return epochs, (
        f"fills the {_format_duration(budget)} budget: 92% of it, less {startup:.0f} s start-up, "
        f"at the measured {epoch_seconds:.1f} s per epoch (steps + validation)"
    )


def plan_training(
    data: str | Path,
    *,
    device: str = "auto",
    time_budget: str | float | None = DEFAULT_BUDGET,
    config: RunConfig | None = None,
    calibrate: bool = True,
    progress: bool = False,
    budget_includes_planning: bool = False,
) -> Plan:
    """Fingerprint ``data`` and choose a training setup for ``device`` and ``time_budget`` (see the module).

    ``config``: how to read the data (layout, mask encoding, class map, ignore index are kept; everything
    else is planned). ``calibrate=False`` skips the measured training run: the epochs are then the default
    and the plan says so (quick, for looking at the choices). ``budget_includes_planning``: the epochs fill
    what is left of the budget after planning (``unetkit train`` planning on the fly)."""
    import torch

    from .device import resolve_device

    budget = parse_duration(time_budget)
    dev = resolve_device(device)  # a bad --device is refused before anything is read
    base = config or RunConfig()
    t_start = time.perf_counter()
    volumes = (base.model.spatial_dims == 3) or (
        Path(data).is_dir() and read_descriptor(data).get("spatial_dims") == 3
    )
    fp = fingerprint(data, base.data, volumes=volumes, num_classes=base.model.num_classes)
    cuda = dev.type == "cuda"
    reasons: dict[str, str] = {}
    model = dataclasses.replace(base.model)
    dcfg = dataclasses.replace(base.data)
    _describe_dataset(data, base.data, dcfg, fp, reasons)
    tcfg = dataclasses.replace(base.train, device=device)
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
    depth = next((d for d in range(2, 7) if _receptive_field(d) >= target_rf), 6)
    need = max(4 * d95, 64 if dims == 3 else 128)
    grid = max(2**depth, 16)
    cap = _round_up(inplane, 2**depth)
    patch = min(_round_up(need, grid), cap)
    limit = 512 if dims == 2 else 128
    if cuda and patch < min(cap, limit):  # a GPU affords more context: grow towards the image size
        patch = min(cap, _round_up(max(patch, 256 if dims == 2 else 96), 2**depth), limit)
    while depth > 2 and patch / 2**depth < 4:
        depth -= 1
    model.name, model.padding, model.depth = "unet", "same", depth
    model.spatial_dims = dims
    rf = _receptive_field(depth)
    reasons["model.name"] = "the U-Net itself; the variants change little once the configuration is right"
    reasons["model.padding"] = "padded convolutions: any tile size, the output covers the whole input"
    reasons["model.spatial_dims"] = "volumes (dataset.yaml: spatial_dims 3)" if dims == 3 else "2-D images"
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

    # --- width, normalisation of the network
    model.base_channels = (32 if cuda else 16) if dims == 2 else (32 if cuda else 8)
    reasons["model.base_channels"] = (
        "32 on a GPU (nnU-Net's width)"
        if cuda
        else f"{model.base_channels} on the CPU: compute per pixel grows with the square of the width, and the "
        "budget buys more steps"
    )

    # --- intensities
    quantitative = not fp.dtype.startswith("uint") or fp.intensity[0]["p0.5"] < 0
    if quantitative and fp.brightness_cv < 0.25:
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

    # --- targets: touching objects → the paper's border class and weight maps
    crowded = fp.mask_encoding == "instances" and fp.touching_fraction >= 0.05
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
    dcfg.fg_fraction = 0.5 if fg < 0.05 else 0.33
    reasons["data.fg_fraction"] = (
        f"foreground is {fg:.1%} of pixels: half the patches centred on objects"
        if fg < 0.05
        else f"foreground is {fg:.0%} of pixels: a third of the patches centred on objects"
    )

    # --- augmentation
    few = fp.samples < 30
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
    dcfg.scale = 0.2 if spread > 2.5 else 0.0
    reasons["data.scale"] = f"object diameters span {spread:.1f}x (5th to 95th percentile): " + (
        "random scaling by up to 20% widens what the network sees" if dcfg.scale else "no scaling needed"
    )
    dcfg.intensity = 0.2 if fp.brightness_cv > 0.2 else 0.0
    reasons["data.intensity"] = f"brightness varies between images by CV {fp.brightness_cv:.2f}: " + (
        "brightness/contrast/gamma jitter" if dcfg.intensity else "no intensity jitter needed"
    )

    # --- batch: a trial forward/backward pass on the device
    in_ch = fp.channels
    classes = 3 if crowded else (1 if len(fp.class_names) <= 2 else len(fp.class_names))
    shape = (dcfg.patch_depth, patch, patch) if dims == 3 else (patch, patch)
    want = (16 if cuda else 8) if dims == 2 else (4 if cuda else 2)
    batch, trial = _fit_batch(model, in_ch, classes, shape, want, dev)
    model.norm = "batch" if batch >= 4 else "instance"
    reasons["model.norm"] = (
        f"batch norm: {batch} patches per step give stable statistics"
        if batch >= 4
        else f"instance norm: {batch} patches per step are too few for batch statistics (nnU-Net's choice)"
    )
    tcfg.batch_size = batch
    reasons["train.batch_size"] = trial
    tcfg.optimizer, tcfg.schedule = "adam", "cosine"
    reasons["train.optimizer"] = "Adam: robust to the learning rate, fast on short budgets"
    reasons["train.schedule"] = "cosine decay to 1% over the planned epochs"

    # --- training length: measured
    measured: dict[str, Any] = {"device": str(dev), "threads": torch.get_num_threads(), "trial": trial}
    tcfg.steps_per_epoch = 25
    cfg = RunConfig(model=model, data=dcfg, train=tcfg)
    if calibrate and budget is not None:
        timing = _calibrate(data, cfg, progress)
        step, val, startup = timing["step_seconds"], timing["validation_seconds"], timing["startup_seconds"]
        # validation and checkpoints take at most ~15% of an epoch
        steps = int(min(250, max(25, math.ceil(val / 0.15 / max(step, 1e-6)))))
        tcfg.steps_per_epoch = steps
        epoch_seconds = steps * step + val
        measured.update(timing, epoch_seconds=round(epoch_seconds, 3))
        reasons["train.steps_per_epoch"] = (
            f"validation ({val:.1f} s) stays under ~15% of an epoch at {step:.2f} s per step"
        )
        if budget_includes_planning:
            startup += time.perf_counter() - t_start
        epochs, why = _epochs_for(budget, epoch_seconds, startup, steps)
        if (
            epochs < 5 and steps > 10
        ):  # short budgets: shorter epochs, so checkpoints and the schedule have room
            steps = max(10, int(steps * epochs / 5))
            epoch_seconds = steps * step + val
            tcfg.steps_per_epoch = steps
            measured["epoch_seconds"] = round(epoch_seconds, 3)
            epochs, why = _epochs_for(budget, epoch_seconds, startup, steps)
        tcfg.epochs = epochs
        reasons["train.epochs"] = why
        tcfg.time_budget = budget
        reasons["train.time_budget"] = "the run also stops before an epoch that would overrun the budget"
        total_steps = epochs * steps
    else:
        total_steps = tcfg.epochs * tcfg.steps_per_epoch
        reasons["train.epochs"] = "the default: not measured (no --time-budget, or calibration skipped)"
        reasons["train.steps_per_epoch"] = "the default"
    tcfg.lr = 2e-3 if total_steps < 3000 else 1e-3
    reasons["train.lr"] = (
        f"{total_steps} steps are few: a higher Adam rate converges within them"
        if total_steps < 3000
        else f"{total_steps} steps: Adam's usual 1e-3"
    )
    tcfg.patience = _patience(tcfg.epochs)
    reasons["train.patience"] = "a third of the epochs (at least 10): a budgeted run mostly trains to its end"
    measured["planning_seconds"] = round(time.perf_counter() - t_start, 1)
    cfg = RunConfig(model=model, data=dcfg, train=tcfg)
    return Plan(cfg, reasons, fp, measured, str(data), str(dev), budget)


def _describe_dataset(
    data: str | Path, given: DataConfig, dcfg: DataConfig, fp: Fingerprint, reasons: dict[str, str]
) -> None:
    """Record the dataset description in the plan (so `train DATA` reads the data as planned), each value
    with where it came from: the command line, DATA/dataset.yaml, or detection."""
    descriptor = read_descriptor(data) if Path(data).is_dir() else {}
    dcfg.layout = fp.layout
    if dcfg.mask_encoding == "auto":
        dcfg.mask_encoding = fp.mask_encoding
    if dcfg.class_names is None and fp.mask_encoding in ("classes", "rgb"):
        dcfg.class_names = list(fp.class_names)
    derived = fp.mask_encoding == "classes" and dcfg.class_values is None
    if derived:  # from --num-classes N: the values 0..N-1
        dcfg.class_values = list(range(len(fp.class_names)))
    for key in DATASET_KEYS:
        if getattr(dcfg, key) in (None, "auto"):
            continue
        if getattr(given, key) not in (None, "auto"):
            reasons[f"data.{key}"] = "given on the command line"
        elif _DESCRIPTOR_KEY.get(key, key) in descriptor:
            reasons[f"data.{key}"] = f"from {Path(data) / 'dataset.yaml'}"
        else:
            reasons[f"data.{key}"] = f"detected in {data}"
    if derived:
        reasons["data.class_values"] = (
            f"the values 0..{len(fp.class_names) - 1} of the {len(fp.class_names)} classes given"
        )


def _fit_batch(
    model_cfg: ModelConfig, in_ch: int, classes: int, shape: tuple[int, ...], want: int, device: Any
) -> tuple[int, str]:
    """The largest batch up to ``want`` whose training step fits the device's memory, by trial steps."""
    import torch

    from .losses import get_loss
    from .models import create_model

    kw = {k: v for k, v in dataclasses.asdict(model_cfg).items() if k != "name"}
    kw.update(in_channels=in_ch, num_classes=classes, norm="batch")
    net = create_model(model_cfg.name, **kw).to(device)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = get_loss("auto", classes)
    cuda = device.type == "cuda"
    if cuda:
        total = torch.cuda.get_device_properties(device).total_memory
        allowed = 0.8 * total
    else:
        total = _mem_available()
        allowed = 0.5 * total
    batch = want
    while True:
        try:
            seconds, peak = _trial(net, opt, loss_fn, in_ch, classes, shape, batch, device)
        except torch.OutOfMemoryError:
            peak, seconds = float("inf"), float("nan")
            torch.cuda.empty_cache()
        if peak <= allowed or batch <= 1:
            break
        batch //= 2
    where = "GPU memory" if cuda else "available RAM"
    size = "x".join(map(str, shape))
    return batch, (
        f"a trial step of {batch} x {size} used {peak / 2**20:.0f} MiB, within {allowed / 2**30:.1f} GiB "
        f"({'80' if cuda else '50'}% of {where}); {seconds:.2f} s per step, model only"
    )


def _trial(net, opt, loss_fn, in_ch, classes, shape, batch, device) -> tuple[float, float]:
    import torch

    x = torch.randn(batch, in_ch, *shape, device=device)
    y = (
        (torch.rand(batch, 1, *shape, device=device) > 0.5).float()
        if classes == 1
        else torch.randint(0, classes, (batch, *shape), device=device)
    )
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _reset_peak_rss()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x).float(), y, None)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) if cuda else _peak_rss()) - base
    return float(np.median(times[1:])), float(max(peak, 0))


def _proc_kib(path: str, field: str) -> float | None:
    """A ``field:  N kB`` line of a Linux ``/proc`` file, in bytes (None elsewhere)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return None


def _mem_available() -> float:
    free = _proc_kib("/proc/meminfo", "MemAvailable")
    return free if free is not None else 8 * 2.0**30  # unknown: assume a small machine


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark of this process (Linux) and return the current RSS in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return 0.0
    return _proc_kib("/proc/self/status", "VmRSS") or 0.0


def _peak_rss() -> float:
    return _proc_kib("/proc/self/status", "VmHWM") or 0.0


def _calibrate(data: str | Path, cfg: RunConfig, progress: bool) -> dict[str, float]:
    """A real training run of 3 epochs x 6 steps in a scratch folder: step, validation and start-up times."""
    from .training.trainer import train

    steps, epochs = 6, 3
    trial = dataclasses.replace(cfg)
    trial.train = dataclasses.replace(
        cfg.train, epochs=epochs, steps_per_epoch=steps, patience=10, time_budget=None
    )
    with tempfile.TemporaryDirectory(prefix="unetkit-plan-") as tmp:
        t0 = time.perf_counter()
        logger = logging.getLogger("unetkit")
        level = logger.level
        logger.setLevel(logging.WARNING)  # the trial run's own messages would only confuse
        try:
            train(data, Path(tmp) / "run", trial, progress=progress)
        finally:
            logger.setLevel(level)
        wall = time.perf_counter() - t0
        rows = list(csv.DictReader(open(Path(tmp) / "run" / "metrics.csv")))
    warm = min(rows[1:], key=lambda r: float(r["seconds"]))  # after the first epoch's warm-up
    val = float(warm["val_seconds"])
    step = (float(warm["seconds"]) - val) / steps
    # everything but warm epochs: checks, caching, the first epoch's warm-up (kernels, weight maps), writes
    startup = max(0.0, wall - epochs * float(warm["seconds"]))
    return {
        "step_seconds": round(step, 4),
        "validation_seconds": round(val, 3),
        "startup_seconds": round(startup, 2),
        "data_wait": round(float(warm["data_wait"]), 4),
    }
