"""``check-data``: every problem with a dataset, found in one pass before any training starts.

The same pass measures what training needs to know: the number of input channels, the mask encoding when it
is unambiguous, class frequencies, instances per image and (for ``normalization: dataset``) the per-channel
mean and standard deviation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .io import check_pixel_values, collapse_gray, declares_alpha, sample_channels
from .layouts import Naming, Sample, load_layout, read_sample_image, read_sample_mask
from .masks import IGNORE, MaskEncoding, encode_mask, instance_evidence, suggest_encoding
from .normalize import Normalizer, background_position
from .spec import DatasetSpec

__all__ = ["DataReport", "check_dataset", "naming_of", "resolve_encoding"]

log = logging.getLogger(__name__)


@dataclass
class DataReport:
    """What :func:`check_dataset` found. ``ok`` is true only if training would succeed."""

    root: Path
    layout: str
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    encoding: MaskEncoding | None = None
    in_channels: int | None = None
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    shape_names: list[str] = field(default_factory=list)  # the image each of ``shapes`` belongs to
    empty_masks: list[str] = field(default_factory=list)  # masks without any foreground pixel
    encoding_source: str = ""  # where the mask encoding came from
    dtypes: set[str] = field(default_factory=set)
    class_pixels: np.ndarray | None = None
    instances: list[int] = field(default_factory=list)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    object_diameter: float | None = None  # median equivalent diameter of the masks' objects, in pixels
    volumes: bool = False  # the samples were read as 3-D volumes
    #: where the images' backgrounds lie, 0 (dark: fluorescence) to 1 (bright: bright-field): the median image's
    #: :func:`~unetkit.data.normalize.background_position`, in the first channel the model reads
    background: float | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.samples) and self.encoding is not None

    def raise_if_problems(self) -> None:
        if not self.ok:
            listed = self.problems or [f"{self.root}: no usable samples"]
            raise DataError(
                f"{self.root}: {len(listed)} problem(s) in the dataset; nothing was trained. Fix them "
                f"(`unetkit check-data {self.root}` lists them all):\n  " + "\n  ".join(listed)
            )

    def summary(self) -> str:
        rows = [("dataset", f"{self.root} (layout {self.layout})"), ("samples", str(len(self.samples)))]
        if self.shapes:
            rows.append(("image size", self.size_summary()))
        rows.append(("channels", f"{self.in_channels} ({', '.join(sorted(self.dtypes))})"))
        if self.encoding is not None:
            enc = self.encoding
            what = f"{enc.name}" + (f" → {enc.target}" if enc.name == "instances" else "")
            ignore = f", ignoring value {enc.ignore_value}" if enc.ignore_value is not None else ""
            source = f" (from {self.encoding_source})" if self.encoding_source else ""
            rows.append(("mask encoding", f"{what}: {enc.num_classes} classes {enc.names}{ignore}{source}"))
        if self.class_pixels is not None and self.class_pixels.sum() > 0 and self.encoding is not None:
            freq = self.class_pixels / self.class_pixels.sum()
            rows.append(
                (
                    "class pixels",
                    ", ".join(f"{n} {f:.1%}" for n, f in zip(self.encoding.names, freq, strict=True)),
                )
            )
        if self.instances:
            rows.append(
                (
                    "objects/image",
                    f"{min(self.instances)} … {max(self.instances)} (mean {np.mean(self.instances):.1f})",
                )
            )
        if self.mean is not None and self.std is not None:
            rows.append(
                (
                    "intensity",
                    "mean "
                    + ", ".join(f"{m:.4g}" for m in self.mean)
                    + "; std "
                    + ", ".join(f"{s:.4g}" for s in self.std),
                )
            )
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def size_summary(self) -> str:
        """Real image sizes: the one size, or the smallest and largest image by area, with their names."""
        fmt = lambda shape: "x".join(map(str, shape))  # noqa: E731
        sizes = sorted(set(self.shapes))
        if len(sizes) == 1:
            return f"{fmt(sizes[0])} (all {len(self.shapes)}; {'D x ' if len(sizes[0]) == 3 else ''}H x W)"
        area = [int(np.prod(s)) for s in self.shapes]
        lo, hi = int(np.argmin(area)), int(np.argmax(area))
        names = self.shape_names or [""] * len(self.shapes)
        return (
            f"{len(sizes)} sizes: smallest {fmt(self.shapes[lo])} ({Path(names[lo]).name}), largest "
            f"{fmt(self.shapes[hi])} ({Path(names[hi]).name})"
        )

    def normalizer(self, cfg: DataConfig) -> Normalizer:
        return Normalizer(cfg.normalization, cfg.norm_low, cfg.norm_high, cfg.norm_scale, self.mean, self.std)


def naming_of(cfg: DataConfig) -> Naming:
    """The folders and name patterns of a data configuration."""
    return Naming(cfg.images_dir, cfg.masks_dir, cfg.image_pattern, cfg.mask_pattern)


def resolve_encoding(
    cfg: DataConfig, root: Path, layout_defaults: dict, num_classes: int | None
) -> MaskEncoding | None:
    """The mask encoding from the config, else ``DATA/dataset.yaml``, else the layout; ``None``: decide from the data."""
    spec = DatasetSpec.read(root)
    name = cfg.mask_encoding
    if name == "auto":
        name = spec.mask_encoding or layout_defaults.get("mask_encoding") or "auto"
    values: Sequence[int] | None = cfg.class_values
    colors: Sequence[Sequence[int]] | None = cfg.class_colors
    names: Sequence[str] | None = cfg.class_names
    if values is None and colors is None and spec.class_names is not None:
        values, colors, names = spec.class_values, spec.class_colors, spec.class_names
    ignore = cfg.ignore_index if cfg.ignore_index is not None else spec.ignore_index
    if name == "auto" and (values or colors):  # a class map says what the values are: classes, or colours
        name = "rgb" if colors else "classes"
    if name == "auto":
        return None
    if name == "classes" and values is None and num_classes is not None:
        values = list(range(max(num_classes, 2)))
    return MaskEncoding(
        name=name,
        values=tuple(values) if values else None,
        colors=tuple(tuple(c) for c in colors) if colors else None,  # type: ignore[misc]
        class_names=tuple(names) if names else None,
        target=cfg.target,
        ignore_value=ignore,
        border_gap=cfg.border_gap,
    )


@dataclass
class _Tally:
    """What reading the samples found, sample by sample."""

    n_classes: int
    channel_of: dict[str, int] = field(default_factory=dict)
    stats: list[tuple[int, np.ndarray, np.ndarray, int]] = field(
        default_factory=list
    )  # dataset normalisation
    raw_values: set[int] = field(default_factory=set)  # masks of an undecided encoding: their values
    raw_rgb: list[str] = field(default_factory=list)  # ... and those in colour
    raw_counts: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    alpha_noted: bool = False
    small_noted: bool = False
    usable: list[Sample] = field(default_factory=list)
    diameters: list[np.ndarray] = field(default_factory=list)  # equivalent diameters of the masks' objects
    positions: list[float] = field(default_factory=list)  # each image's background position (normalize.py)

    def __post_init__(self) -> None:
        self.class_pixels = np.zeros(self.n_classes, np.int64)


def described_volumes(root: str | Path) -> bool:
    """Whether the dataset description of ``root`` says its samples are volumes (``spatial_dims: 3``)."""
    return DatasetSpec.read(root).volumes


def check_dataset(
    root: str | Path,
    cfg: DataConfig | None = None,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    volumes: bool | None = None,
    evidence: str | None = None,
) -> DataReport:
    """Read every image and mask once and report every problem (see the module docstring).

    ``volumes``: samples are 3-D volumes (TIFF z-stacks, ``.npy``, ``.zarr``); masks are encoded slice by
    slice (a 3-class border target marks each slice's object outlines). ``None``: as the dataset description
    says (``spatial_dims: 3`` in ``dataset.yaml``; 2-D otherwise), the one reading train and plan share.
    ``evidence``: why ambiguous masks hold object labels (see :func:`~unetkit.data.masks.instance_evidence`)."""
    cfg = cfg or DataConfig()
    root = Path(root)
    if volumes is None:
        volumes = described_volumes(root)
    layout = load_layout(root, cfg.layout, naming=naming_of(cfg))
    report = DataReport(root, layout.name, layout.samples, list(layout.problems), volumes=volumes)
    try:
        encoding = resolve_encoding(cfg, root, layout.defaults, num_classes)
    except ConfigError as exc:
        report.problems.append(str(exc))
        return report
    if cfg.mask_encoding != "auto":
        report.encoding_source = "the settings given"
    elif DatasetSpec.read(root).mask_encoding:
        report.encoding_source = f"{root / 'dataset.yaml'}"
    elif layout.defaults.get("mask_encoding"):
        report.encoding_source = f"the {layout.name} layout"
    tally = _Tally(encoding.num_classes if encoding else 2)
    for s in layout.samples:
        if _check_sample(s, cfg, encoding, volumes, report, tally):
            tally.usable.append(s)
    _check_channels(report, tally, in_channels)
    _dataset_statistics(report, tally)
    ambiguous = (
        encoding is None and not report.problems and not tally.raw_rgb and len(tally.raw_values - {0}) > 1
    )
    why = (
        instance_evidence([str(s.mask) for s in layout.samples], cfg.target, evidence) if ambiguous else None
    )
    if why:  # read again as what the evidence says: object labels
        again = check_dataset(root, dataclasses.replace(cfg, mask_encoding="instances"), num_classes=num_classes,
                              in_channels=in_channels, volumes=volumes)  # fmt: skip
        again.encoding_source = f"{why}; the masks hold {len(tally.raw_values - {0})}+ labels"
        again.notes.append(f"masks read as object labels (instances): {why}")
        return again
    if encoding is None and not report.problems:
        encoding = _binary_or_refuse(root, cfg, report, tally)
    _check_empty_masks(root, report, tally)
    report.encoding = encoding
    report.class_pixels = tally.class_pixels
    found = np.concatenate(tally.diameters) if tally.diameters else np.zeros(0)
    typical = typical_diameter(found, volumes)
    report.object_diameter = round(typical, 2) if typical is not None else None
    report.background = round(float(np.median(tally.positions)), 4) if tally.positions else None
    report.samples = tally.usable if not report.problems else layout.samples
    return report


def _check_sample(
    s: Sample,
    cfg: DataConfig,
    encoding: MaskEncoding | None,
    volumes: bool,
    report: DataReport,
    tally: _Tally,
) -> bool:
    """Read one sample's image and mask and report what is wrong with them; whether it can be trained on."""
    image = mask = None
    try:
        image = read_sample_image(s, volumes)
    except DataError as exc:
        report.problems.append(str(exc))
    try:
        mask = read_sample_mask(s, volumes)
    except DataError as exc:
        report.problems.append(str(exc))
    if image is None or mask is None:
        return False
    report.dtypes.add(str(image.dtype))
    try:
        check_pixel_values(image, s.image_label)
    except DataError as exc:
        report.problems.append(str(exc))
        return False
    if not volumes and not tally.alpha_noted and declares_alpha(s.image):  # said once: no header read after
        report.notes.append(f"{s.image_label}: has an alpha channel, which is dropped")
        tally.alpha_noted = True
    try:  # grayscale stored as RGB → 1; --channel: the one picked
        pick = cfg.channel
        chw = collapse_gray(sample_channels(image, None if pick is None else 1, s.image_label, volumes=volumes, pick=pick))  # fmt: skip
    except DataError as exc:
        report.problems.append(str(exc))
        return False
    tally.channel_of[s.image_label] = chw.shape[0]
    tally.positions.append(background_position(chw[0]))
    spatial = tuple(chw.shape[1:])
    if tuple(mask.shape[: len(spatial)]) != spatial:
        have, want = "x".join(map(str, mask.shape[: len(spatial)])), "x".join(map(str, spatial))
        report.problems.append(
            f"{s.mask_label}: mask is {have} but its image {s.image_label} is {want}; "
            "masks must have the image's shape"
        )
        return False
    report.shapes.append(spatial)
    report.shape_names.append(s.image_label)
    if min(spatial[-2:]) < cfg.patch_size and not tally.small_noted:
        report.notes.append(
            f"{s.image_label}: {'x'.join(map(str, spatial))} is smaller than the training patch "
            f"{cfg.patch_size}; it is padded by mirroring"
        )
        tally.small_noted = True
    if cfg.normalization == "dataset":
        flat = chw.reshape(chw.shape[0], -1).astype(np.float64)
        tally.stats.append((chw.shape[0], flat.sum(1), (flat**2).sum(1), flat.shape[1]))
    return _check_mask(s, mask, encoding, volumes, report, tally)


def _check_mask(
    s: Sample,
    mask: np.ndarray,
    encoding: MaskEncoding | None,
    volumes: bool,
    report: DataReport,
    tally: _Tally,
) -> bool:
    """A mask read in the encoding (class pixels counted), or, with none decided yet, its values collected."""
    if encoding is not None:
        try:
            target = encode_mask(encoding, mask, s.mask_label, volumes)
        except DataError as exc:
            report.problems.append(str(exc))
            return False
        n = tally.n_classes
        counts = np.bincount(target[target != IGNORE].ravel(), minlength=n)[:n]
        tally.class_pixels += counts
        if counts[1:].sum() == 0:
            report.empty_masks.append(s.mask_label)
        if encoding.name == "instances":
            report.instances.append(int(len(np.unique(mask)) - (1 if (mask == 0).any() else 0)))
            tally.diameters.append(object_diameters(np.where(target == IGNORE, 0, mask), volumes))
        else:
            tally.diameters.append(object_diameters(ndi.label((target > 0) & (target != IGNORE))[0], volumes))
        return True
    if not volumes and mask.ndim == 3 and not all(np.array_equal(mask[..., 0], mask[..., c]) for c in (1, 2)):
        tally.raw_rgb.append(s.mask_label)
        return True
    m = mask[..., 0] if mask.ndim == 3 and not volumes else mask
    if len(tally.raw_values) < 1000:
        tally.raw_values.update(np.unique(m).tolist())
    nz = int(np.count_nonzero(m))
    tally.raw_counts += (m.size - nz, nz)
    tally.diameters.append(object_diameters(ndi.label(m != 0)[0], volumes))
    if nz == 0:
        report.empty_masks.append(s.mask_label)
    return True


def _check_channels(report: DataReport, tally: _Tally, in_channels: int | None) -> None:
    """One channel count (any: a TIFF of two stains trains a two-channel model; grey among colour images is read
    as RGB), and the model's if given."""
    channel_of = tally.channel_of
    counts = set(channel_of.values())
    if in_channels is not None and counts - {in_channels} and not (in_channels == 3 and counts <= {1, 3}):
        example = next(k for k, v in channel_of.items() if v != in_channels)
        report.problems.append(
            f"{example}: has {channel_of[example]} channel(s) but the model expects {in_channels}"
            + ("; --channel N trains it on one of them (from 0)" if in_channels == 1 else "")
        )
    elif len(counts) == 1 or counts == {1, 3}:  # one count, or grey among colour (read as colour)
        report.in_channels = in_channels or max(counts)
    elif counts:
        examples = {v: k for k, v in channel_of.items()}
        report.problems.append(
            "mixed channel counts: "
            + ", ".join(f"{f} has {c}" for c, f in sorted(examples.items()))
            + "; convert the images to one channel count"
        )


def _dataset_statistics(report: DataReport, tally: _Tally) -> None:
    """The training set's mean and std per channel (``normalization: dataset``)."""
    if not (report.in_channels and tally.stats):
        return
    total = sum(n for *_, n in tally.stats)
    ch = report.in_channels
    s1 = sum(np.broadcast_to(a, (ch,)) * 1.0 for _, a, _, _ in tally.stats)
    s2 = sum(np.broadcast_to(b, (ch,)) * 1.0 for _, _, b, _ in tally.stats)
    mean = np.asarray(s1, np.float64) / total
    report.mean = tuple(float(v) for v in mean)
    report.std = tuple(float(v) for v in np.sqrt(np.maximum(s2 / total - mean**2, 0)))


def _binary_or_refuse(root: Path, cfg: DataConfig, report: DataReport, tally: _Tally) -> MaskEncoding | None:
    """No encoding was given or implied: masks holding 0 and at most one other value are binary; anything
    else is refused with the flag to pass (values are never classified by counting them)."""
    raw_values = tally.raw_values
    if tally.raw_rgb:
        report.problems.append(
            f"{tally.raw_rgb[0]}: colour mask ({len(tally.raw_rgb)} in all); pass --mask-encoding rgb with a "
            "colour table (--class-map FILE)"
        )
        return None
    if len(raw_values - {0}) <= 1:
        report.notes.append(
            f"masks hold only the values {sorted(raw_values)}: reading them as binary (foreground = non-zero); "
            "pass --mask-encoding to choose otherwise"
        )
        tally.class_pixels = tally.raw_counts
        report.encoding_source = "detected: the masks hold 0 and at most one other value"
        return MaskEncoding("binary", target=cfg.target, ignore_value=cfg.ignore_index)
    shown = sorted(raw_values)[:10]
    report.problems.append(
        f"{root}: cannot tell what the mask values {shown}{'…' if len(raw_values) > 10 else ''} mean "
        f"({len(raw_values - {0})}{'+' if len(raw_values) >= 1000 else ''} values besides 0); pass --mask-encoding "
        f"{suggest_encoding(raw_values, False, max(raw_values))}"
        + (
            "; 255 often marks unlabelled pixels: --ignore-index 255"
            if 255 in raw_values and len(raw_values) <= 4
            else ""
        )
    )
    return None


def _check_empty_masks(root: Path, report: DataReport, tally: _Tally) -> None:
    """Every mask empty is a problem (nothing to learn); some empty ones are listed and noted."""
    usable = tally.usable
    if usable and len(report.empty_masks) == len(usable):
        report.problems.append(
            f"{root}: every mask is empty (no foreground pixel in {len(usable)} mask(s)): there is nothing to learn; "
            "check that the masks belong to the images and how they are read (--mask-encoding, --ignore-index)"
        )
    elif report.empty_masks:
        for label in report.empty_masks[:20]:
            log.warning("%s: empty mask (no foreground pixel): fine for an image without objects", label)
        more = len(report.empty_masks) - 20
        report.notes.append(
            f"{len(report.empty_masks)} of {len(usable)} mask(s) are empty"
            + (f" (first 20 listed above, {more} more)" if more > 0 else "")
        )


def object_diameters(labels: np.ndarray, volume: bool = False, min_size: int = 4) -> np.ndarray:
    """Equivalent diameters in pixels of the objects of a label image (a disc, or for volumes a ball, of the
    same area); specks under ``min_size`` pixels are not objects. Labels may be any integers (never an array
    as long as the largest)."""
    _, sizes = np.unique(labels[labels > 0], return_counts=True)
    sizes = sizes[sizes >= min_size].astype(np.float64)
    return (6 * sizes / np.pi) ** (1 / 3) if volume else 2 * np.sqrt(sizes / np.pi)


def typical_diameter(diameters: np.ndarray, volume: bool = False) -> float | None:
    """The typical object diameter of a set of objects (:func:`object_diameters`): their median weighted by
    area (pixels vote, not objects: fragments of over-split large objects and small false detections do not drag
    it down), None for no objects. The one estimate of size: ``--diameter auto`` applies it to a first pass's
    objects, fine-tuning (``--input-scale``) and a model's record of what it learnt to the masks."""
    if not len(diameters):
        return None
    order = np.sort(np.asarray(diameters, np.float64))
    weights = order ** (3 if volume else 2)
    cumulative = np.cumsum(weights)
    return float(order[np.searchsorted(cumulative, cumulative[-1] / 2)])
