"""Dataset layouts → lists of samples, with every pairing problem collected (not just the first).

Layouts (``--layout``; detected when ``auto``):
- ``paired``: ``DATA/images/NAME.ext`` + ``DATA/masks/NAME.ext`` (or ``labels/``), matched by stem; mask
  stems may end in ``_mask``, ``_label``, ``_seg``, ... or follow ``--mask-pattern '{stem}_gt'``.
- ``dsb``: Kaggle Data Science Bowl 2018, ``DATA/ID/images/ID.png`` + ``DATA/ID/masks/*.png`` (one binary
  PNG per nucleus), merged into one instance label image.
- ``isbi``: ISBI 2012 EM, a multi-page TIFF of images and one of labels (``*label*.tif``), a sample per page.
- ``ctc``: Cell Tracking Challenge, ``DATA/01/t000.tif`` + ``DATA/01_GT/SEG/man_seg000.tif``; only
  annotated frames are used.
- ``list``: a CSV (columns ``image,mask``) or JSON (``[{"image": ..., "mask": ...}]``) file of paths,
  relative to the list file.
A ``DATA/dataset.yaml`` may describe the dataset (layout, mask encoding, classes, ignore value) so that
nothing has to be guessed; ``unetkit synth`` writes one.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import DataError
from .io import IMAGE_SUFFIXES, count_planes, read_image, read_volume

__all__ = [
    "DESCRIPTOR",
    "LAYOUTS",
    "MASK_SUFFIXES",
    "Layout",
    "Sample",
    "detect_layout",
    "find_images",
    "load_layout",
    "mask_stem",
    "paired_folders",
    "read_descriptor",
    "read_sample_image",
    "read_sample_mask",
]

MASK_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_seg", "_gt")
LAYOUTS = ("paired", "dsb", "isbi", "ctc", "list")
DESCRIPTOR = "dataset.yaml"
DESCRIPTOR_KEYS = (
    "layout",
    "mask_encoding",
    "mask_pattern",
    "classes",
    "ignore_index",
    "target",
    "spatial_dims",
    "spacing",
)


@dataclass(frozen=True)
class Sample:
    """One training image and its mask: files, or pages of multi-page files, or (DSB) one file per object."""

    name: str
    image: Path
    mask: Path | tuple[Path, ...]
    image_page: int | None = None
    mask_page: int | None = None

    @property
    def mask_label(self) -> str:
        if isinstance(self.mask, tuple):
            return f"{self.mask[0].parent}/ ({len(self.mask)} object masks)" if self.mask else "no masks"
        return f"{self.mask}" + (f" [page {self.mask_page}]" if self.mask_page is not None else "")

    @property
    def image_label(self) -> str:
        return f"{self.image}" + (f" [page {self.image_page}]" if self.image_page is not None else "")


@dataclass
class Layout:
    """The samples a layout found, the problems it met, and encoding defaults the layout implies."""

    name: str
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)


def find_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted (hidden files skipped)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def mask_stem(stem: str) -> str:
    for suffix in MASK_SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def read_descriptor(root: str | Path) -> dict[str, Any]:
    """``DATA/dataset.yaml`` as a dict (empty when absent); unknown keys are an error."""
    path = Path(root) / DESCRIPTOR
    if not Path(root).is_dir() or not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict) or set(raw) - set(DESCRIPTOR_KEYS):
        raise DataError(f"{path}: expected a mapping with keys among {list(DESCRIPTOR_KEYS)}, got {raw!r}")
    return raw


def detect_layout(root: str | Path) -> str:
    """Name of the layout of ``root``; a clear error listing the layouts when none fits."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() in (".csv", ".json"):
            return "list"
        raise DataError(f"{root}: a dataset is a folder, or a .csv/.json list of image,mask paths")
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    descriptor = read_descriptor(root)
    if descriptor.get("layout"):
        return str(descriptor["layout"])
    if (root / "images").is_dir() and any((root / n).is_dir() for n in ("masks", "labels")):
        return "paired"
    subdirs = [d for d in root.iterdir() if d.is_dir()]
    if any((d / "images").is_dir() and (d / "masks").is_dir() for d in subdirs):
        return "dsb"
    if any(re.fullmatch(r"\d+", d.name) and (root / f"{d.name}_GT" / "SEG").is_dir() for d in subdirs):
        return "ctc"
    tifs = [p for p in root.iterdir() if p.suffix.lower() in (".tif", ".tiff")]
    if any("label" in p.stem.lower() for p in tifs) and len(tifs) >= 2:
        return "isbi"
    found = sorted(p.name for p in root.iterdir())[:8]
    raise DataError(
        f"{root}: no known dataset layout (found {found}); expected images/ + masks/ (paired), ID/images + "
        "ID/masks (dsb), a volume TIFF + a *label*.tif (isbi), 01/ + 01_GT/SEG/ (ctc), or pass a .csv/.json "
        "list; or force one with --layout"
    )


def load_layout(root: str | Path, layout: str = "auto", mask_pattern: str | None = None) -> Layout:
    """Samples of the dataset at ``root`` in ``layout`` (``auto``: detected)."""
    root = Path(root)
    name = detect_layout(root) if layout == "auto" else layout
    if name not in LAYOUTS:
        raise DataError(f"--layout {name!r} is unknown; choose auto or one of {', '.join(LAYOUTS)}")
    if name == "list":
        if not root.is_file():
            raise DataError(f"{root}: the list layout needs a .csv or .json file of image,mask paths")
    elif not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    result = {"paired": _paired, "dsb": _dsb, "isbi": _isbi, "ctc": _ctc, "list": _list}[name](
        root, mask_pattern
    )
    if not result.samples and not result.problems:
        result.problems.append(f"{root}: no samples found in the {name} layout")
    return result


def paired_folders(root: str | Path, mask_pattern: str | None = None) -> list[Sample]:
    """Samples of a paired-folder dataset; raises on the first listed problem."""
    layout = _paired(Path(root), mask_pattern)
    if layout.problems:
        raise DataError("\n".join(layout.problems))
    return layout.samples


def _stem_key(pattern: str | None) -> Any:
    if pattern is None:
        return mask_stem
    if "{stem}" not in pattern:
        raise DataError(f"--mask-pattern {pattern!r} must contain {{stem}}, e.g. '{{stem}}_gt'")
    before, after = pattern.split("{stem}", 1)
    regex = re.compile(re.escape(before) + "(?P<stem>.+)" + re.escape(after))

    def key(stem: str) -> str | None:
        m = regex.fullmatch(stem)
        return m.group("stem") if m else None

    return key


def _paired(root: Path, mask_pattern: str | None) -> Layout:
    images_dir = root / "images"
    masks_dir = next((root / n for n in ("masks", "labels") if (root / n).is_dir()), None)
    if not images_dir.is_dir() or masks_dir is None:
        found = sorted(p.name for p in root.iterdir())[:10]
        raise DataError(
            f"{root}: expected the paired-folder layout ({root}/images/ and {root}/masks/ or labels/), "
            f"found {found}; create those folders with matching file names"
        )
    problems: list[str] = []
    images: dict[str, Path] = {}
    for im in find_images(images_dir):
        if im.stem in images:
            problems.append(f"{im}: duplicate image name: {images[im.stem].name} has the same stem")
        else:
            images[im.stem] = im
    key = _stem_key(mask_pattern)
    masks: dict[str, Path] = {}
    for m in find_images(masks_dir):
        k = key(m.stem)
        if k is None:
            problems.append(f"{m}: does not match --mask-pattern {mask_pattern!r}")
        elif k in masks:
            problems.append(f"{m}: duplicate mask for image '{k}' (also {masks[k].name})")
        else:
            masks[k] = m
    if not images:
        problems.append(f"{images_dir}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    for stem, im in images.items():
        if stem not in masks:
            problems.append(
                f"{im}: image without mask: no file in {masks_dir.name}/ with the stem '{stem}' "
                f"(or '{stem}' + one of {list(MASK_SUFFIXES)})"
            )
    for k, m in masks.items():
        if k not in images:
            problems.append(f"{m}: mask without image: no file in images/ with the stem '{k}'")
    samples = [Sample(s, images[s], masks[s]) for s in sorted(images) if s in masks]
    return Layout("paired", samples, problems)


def _dsb(root: Path, _pattern: str | None) -> Layout:
    samples, problems = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (d / "images").is_dir():
            continue
        images = find_images(d / "images")
        masks = find_images(d / "masks") if (d / "masks").is_dir() else []
        if len(images) != 1:
            problems.append(f"{d / 'images'}: expected exactly one image, found {len(images)}")
            continue
        if not masks:
            problems.append(f"{d / 'masks'}: image without mask: no object masks for {images[0].name}")
            continue
        samples.append(Sample(d.name, images[0], tuple(masks)))
    return Layout("dsb", samples, problems, {"mask_encoding": "instances"})


def _isbi(root: Path, _pattern: str | None) -> Layout:
    tifs = sorted(p for p in root.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    labels = [p for p in tifs if "label" in p.stem.lower()]
    volumes = [p for p in tifs if p not in labels]
    if len(labels) != 1 or len(volumes) != 1:
        raise DataError(
            f"{root}: the isbi layout needs one image stack and one '*label*.tif' stack, found images "
            f"{[p.name for p in volumes]} and labels {[p.name for p in labels]}"
        )
    image, label = volumes[0], labels[0]
    n_img, n_lab = count_planes(image, stack=True), count_planes(label, stack=True)
    problems = []
    if n_img != n_lab:
        problems.append(f"{label}: {n_lab} label page(s) for {n_img} image page(s) in {image.name}")
    samples = [Sample(f"{image.stem}_{k:03d}", image, label, k, k) for k in range(min(n_img, n_lab))]
    return Layout("isbi", samples, problems, {"mask_encoding": "binary"})


def _ctc(root: Path, _pattern: str | None) -> Layout:
    samples, problems = [], []
    for seq in sorted(d for d in root.iterdir() if d.is_dir() and re.fullmatch(r"\d+", d.name)):
        seg = root / f"{seq.name}_GT" / "SEG"
        if not seg.is_dir():
            continue
        frames = {m.group(1): p for p in seq.iterdir() if (m := re.fullmatch(r"t(\d+)\.tiff?", p.name))}
        for mask in sorted(seg.iterdir()):
            m = re.fullmatch(r"man_seg(\d+)\.tiff?", mask.name)
            if not m:
                continue  # 3-D slice annotations (man_seg_TTT_ZZZ) are not used for 2-D training
            if m.group(1) not in frames:
                problems.append(f"{mask}: mask without image: no {seq.name}/t{m.group(1)}.tif")
                continue
            samples.append(Sample(f"{seq.name}_t{m.group(1)}", frames[m.group(1)], mask))
    return Layout("ctc", samples, problems, {"mask_encoding": "instances"})


def _list(path: Path, _pattern: str | None) -> Layout:
    base = path.parent
    rows: list[tuple[str, str]] = []
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                if not reader.fieldnames or not {"image", "mask"} <= set(reader.fieldnames):
                    raise DataError(f"{path}: the CSV needs a header with columns 'image' and 'mask'")
                rows = [(r["image"], r["mask"]) for r in reader]
        else:
            raw = json.loads(path.read_text())
            rows = [(r["image"], r["mask"]) if isinstance(r, dict) else (r[0], r[1]) for r in raw]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise DataError(f'{path}: expected a list of {{"image": ..., "mask": ...}} entries ({exc})') from None
    samples, problems, seen = [], [], set()
    for line, (im, mk) in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        ip, mp = (base / im).resolve(), (base / mk).resolve()
        for p in (ip, mp):
            if not p.is_file():
                problems.append(f"{p}: no such file (listed in {path.name}, entry {line})")
        name = ip.stem
        if name in seen:
            problems.append(f"{ip}: duplicate image name '{name}' in {path.name}")
        seen.add(name)
        if ip.is_file() and mp.is_file():
            samples.append(Sample(name, ip, mp))
    return Layout("list", samples, problems)


def read_sample_image(sample: Sample, volume: bool = False) -> np.ndarray:
    """The sample's image ``(H, W[, C])``, or with ``volume`` its volume ``(D, H, W[, C])``."""
    if volume:
        return read_volume(sample.image)
    return read_image(sample.image, sample.image_page)


def read_sample_mask(sample: Sample, volume: bool = False) -> np.ndarray:
    """The sample's mask; DSB object masks are merged into one instance label image.

    Where object masks overlap, a pixel keeps the object whose file comes first in sorted name order.
    """
    if volume:
        if isinstance(sample.mask, tuple):
            raise DataError(f"{sample.image}: volumes need one mask file per volume, not per object")
        return read_volume(sample.mask)
    if not isinstance(sample.mask, tuple):
        return read_image(sample.mask, sample.mask_page)
    labels: np.ndarray | None = None
    for i, path in enumerate(sample.mask, start=1):
        obj = read_image(path)
        if obj.ndim == 3:
            obj = obj[..., 0]
        if labels is None:
            labels = np.zeros(obj.shape, np.uint16 if len(sample.mask) < 65535 else np.uint32)
        if obj.shape != labels.shape:
            raise DataError(
                f"{path}: object mask is {obj.shape[0]}x{obj.shape[1]}, the others {labels.shape}"
            )
        labels[(obj != 0) & (labels == 0)] = i
    assert labels is not None
    return labels
