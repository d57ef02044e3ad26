"""The dataset fingerprint: sizes and spacings, channels and bit depth, intensities per channel, class
frequencies, object diameters and touching objects, measured from the files."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..config import DATASET_KEYS, DataConfig
from ..data.checks import check_dataset, object_diameters
from ..data.io import collapse_gray, sample_channels
from ..data.layouts import read_sample_image, read_sample_mask
from ..data.masks import IGNORE, compact_labels, encode_mask
from ..data.spec import DESCRIPTOR, DatasetSpec
from ..data.weights import touching_pairs
from ..errors import DataError

log = logging.getLogger(__name__)


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
    spec = DatasetSpec.read(root)
    if spec.spacing is not None:
        if len(spec.spacing) != dims:
            raise DataError(
                f"{spec.path}: spacing: expected {dims} numbers (one per axis, z first) for "
                f"{'volumes' if dims == 3 else 'images'}, got {list(spec.spacing)}"
            )
        return list(spec.spacing), DESCRIPTOR
    if sample_path is not None and sample_path.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile

            with tifffile.TiffFile(sample_path) as tif:
                page: Any = tif.pages[0]
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


class _Measurements:
    """What the measured samples show, accumulated sample by sample: sampled pixels (per channel), each image's
    99.5th percentile, the largest value, object diameters, in-plane/z extent ratios and touching objects."""

    def __init__(self, rng: np.random.Generator, volumes: bool) -> None:
        self.rng, self.volumes = rng, volumes
        self.channel: int | None = None  # --channel: the stored channel measured
        self.pixels: list[np.ndarray] = []
        self.highs: list[float] = []
        self.diameters: list[float] = []
        self.ratios: list[float] = []
        self.max_value, self.objects, self.pairs, self.touching_objects = 0.0, 0, 0, 0
        self.dtype = ""

    def add(self, s: Any, encoding: Any) -> None:
        volumes = self.volumes
        image = read_sample_image(s, volumes)
        mask = read_sample_mask(s, volumes)
        self.dtype = str(image.dtype)
        pick = self.channel
        chw = collapse_gray(sample_channels(image, None if pick is None else 1, s.image_label, volumes=volumes, pick=pick))  # fmt: skip
        flat = chw.reshape(chw.shape[0], -1)
        take = self.rng.choice(flat.shape[1], min(flat.shape[1], 50_000), replace=False)
        self.pixels.append(flat[:, take].astype(np.float64))
        self.highs.append(float(np.percentile(flat[:, take], 99.5)))
        self.max_value = max(self.max_value, float(flat.max()))
        self._objects(self._labels(s, mask, encoding))

    def _labels(self, s: Any, mask: np.ndarray, encoding: Any) -> np.ndarray:
        """Instance labels as given (counting touching pairs), other masks' foreground components."""
        if encoding.name == "instances":
            labels = mask if self.volumes or mask.ndim == 2 else mask[..., 0]
            labels = compact_labels(labels.astype(np.int64))
            pairs = touching_pairs(labels)
            self.pairs += len(pairs)
            self.touching_objects += len({i for p in pairs for i in p})
            return labels
        target = encode_mask(encoding, mask, s.mask_label, self.volumes)
        return ndi.label((target > 0) & (target != IGNORE))[0]

    def _objects(self, labels: np.ndarray) -> None:
        diameters = object_diameters(labels, self.volumes)  # specks are not objects
        self.objects += len(diameters)
        self.diameters.extend(diameters)
        if self.volumes:
            for box in ndi.find_objects(labels):
                if box is not None:
                    dz, dy, dx = (b.stop - b.start for b in box)
                    if dy * dx >= 16:
                        self.ratios.append((dy + dx) / 2 / dz)


def _intensity(stack: np.ndarray) -> list[dict[str, float]]:
    """Per channel of the sampled pixels: the 0.5th, 50th and 99.5th percentiles, mean and std."""
    return [
        {
            "p0.5": round(float(np.percentile(c, 0.5)), 4),
            "p50": round(float(np.percentile(c, 50)), 4),
            "p99.5": round(float(np.percentile(c, 99.5)), 4),
            "mean": round(float(c.mean()), 4),
            "std": round(float(c.std()), 4),
        }
        for c in stack
    ]


def fingerprint(
    data: str | Path,
    config: DataConfig | None = None,
    *,
    volumes: bool | None = None,
    num_classes: int | None = None,
    max_samples: int = 200,
    seed: int = 0,
    evidence: str | None = None,
) -> Fingerprint:
    """Measure a dataset (any layout of ``check-data``): every file is checked first, as by ``train``.

    Object statistics come from the masks: instance labels as given, other masks as connected components of
    their foreground. At most ``max_samples`` samples (evenly spaced) are measured beyond the checks."""
    root = Path(data)
    cfg = config or DataConfig()
    report = check_dataset(root, cfg, num_classes=num_classes, volumes=volumes, evidence=evidence)
    volumes = report.volumes
    report.raise_if_problems()
    encoding = report.encoding
    assert encoding is not None and report.in_channels is not None
    dims = 3 if volumes else 2
    samples = report.samples
    pick = np.unique(np.linspace(0, len(samples) - 1, min(len(samples), max_samples)).round().astype(int))
    m = _Measurements(np.random.default_rng(seed), volumes)
    m.channel = cfg.channel
    for i in pick:
        m.add(samples[i], encoding)
    intensity = _intensity(np.concatenate(m.pixels, axis=1))
    shapes = np.array(report.shapes)
    dtype, max_value, highs, diameters, ratios = m.dtype, m.max_value, m.highs, m.diameters, m.ratios
    n_objects, n_pairs, touching_objects = m.objects, m.pairs, m.touching_objects
    integer = np.issubdtype(np.dtype(dtype), np.integer)
    bits = math.ceil(math.log2(max_value + 1)) if integer and max_value > 0 else 32
    freq: Any = (
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
        brightness_cv=round(float(np.std(highs)) / max(float(np.mean(highs)), 1e-12), 4),
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


def describe_dataset(
    data: str | Path, given: DataConfig, dcfg: DataConfig, fp: Fingerprint, reasons: dict[str, str]
) -> None:
    """Record the dataset description in the plan (so `train DATA` reads the data as planned), each value
    with where it came from: the command line, DATA/dataset.yaml, or detection."""
    spec = DatasetSpec.read(data)
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
        elif spec.gives(key):
            reasons[f"data.{key}"] = f"from {spec.path}"
        else:
            reasons[f"data.{key}"] = f"detected in {data}"
    if derived:
        reasons["data.class_values"] = (
            f"the values 0..{len(fp.class_names) - 1} of the {len(fp.class_names)} classes given"
        )
