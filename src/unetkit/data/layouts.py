"""Dataset layouts → lists of samples, with every pairing problem collected (not just the first).

Layouts (``--layout``; detected when ``auto``):
- ``paired``: an image folder and a mask folder matched by file name: ``images/`` + ``masks/`` by default;
  also ``labels/``, ``annotations/``, ``gt/``, ``raw/`` ... (any other names with ``--images-dir`` and
  ``--masks-dir``). Mask names may add a suffix or prefix to the image's (``_mask``, ``_label``,
  ``_cp_masks``, ``mask_`` ...), or follow ``--mask-pattern 'mask_{stem}'`` (with ``--image-pattern
  'img_{stem}'`` when the image names carry a prefix of their own).
- ``flat``: images and masks side by side in one folder: ``img_01.tif`` + ``img_01_label.tif``.
- ``dsb``: Kaggle Data Science Bowl 2018, ``DATA/ID/images/ID.png`` + ``DATA/ID/masks/*.png`` (one binary
  PNG per nucleus), merged into one instance label image.
- ``isbi``: ISBI 2012 EM, a multi-page TIFF of images and one of labels (``*label*.tif``), a sample per page.
- ``ctc``: Cell Tracking Challenge, ``DATA/01/t000.tif`` + ``DATA/01_GT/SEG/man_seg000.tif``; only
  annotated frames are used.
- ``list``: a CSV (columns ``image,mask``) or JSON (``[{"image": ..., "mask": ...}]``) file of paths,
  relative to the list file.
A ``DATA/dataset.yaml`` may describe the dataset (layout, folders, naming, mask encoding, classes, ignore
value) so that nothing has to be guessed; ``unetkit synth`` writes one. With ``masks=False`` every layout
lists its images alone (the test half of a dataset, for ``predict``).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LAYOUTS
from ..errors import DataError
from .io import (
    IMAGE_SUFFIXES,
    count_planes,
    first_time,
    listed_images,
    not_read,
    read_image,
    read_volume,
    refuse_lossy_mask,
)
from .spec import DESCRIPTOR, DatasetSpec

__all__ = [
    "DESCRIPTOR",
    "IMAGE_DIRS",
    "LAYOUTS",
    "MASK_DIRS",
    "MASK_PREFIXES",
    "MASK_SUFFIXES",
    "Layout",
    "Sample",
    "detect_layout",
    "find_images",
    "load_layout",
    "mask_stem",
    "paired_folders",
    "read_sample_image",
    "read_sample_mask",
]

log = logging.getLogger(__name__)

#: mask names = image name + one of these (longest first), or one of the prefixes + image name
MASK_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label", "_seg", "_gt")
MASK_PREFIXES = ("masks_", "mask_", "labels_", "label_", "seg_", "gt_")
#: folder names recognised as the image and the mask half of a paired dataset
IMAGE_DIRS = ("images", "image", "imgs", "img", "raw", "inputs", "input")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "gt", "ground_truth", "groundtruth", "seg")


@dataclass(frozen=True)
class Sample:
    """One image and its mask: files, or pages of multi-page files, or (DSB) one file per object.

    ``mask`` is ``None`` for an image listed without its mask (``load_layout(..., masks=False)``)."""

    name: str
    image: Path
    mask: Path | tuple[Path, ...] | None
    image_page: int | None = None
    mask_page: int | None = None

    @property
    def mask_label(self) -> str:
        if self.mask is None:
            return f"{self.name}: no mask"
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


@dataclass(frozen=True)
class Naming:
    """Where a dataset's halves are and how mask names follow image names (all optional)."""

    images_dir: str | None = None
    masks_dir: str | None = None
    image_pattern: str | None = None
    mask_pattern: str | None = None


def find_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted (hidden files skipped). Files beside them in image formats
    unetkit does not read (a microscope's .czi, .nd2 ...) are said once per folder, with the fix, never passed
    over in silence."""
    found, foreign = listed_images(folder)
    if foreign and first_time(_SAID, said := f"{folder}: {not_read(foreign)}"):
        log.warning("%s%s", said, f"; the {len(found)} image(s) it reads are used" if found else "")
    return found


_SAID: set[str] = set()


def mask_stem(stem: str) -> str:
    """The image stem a mask stem names: ``img1_mask`` → ``img1``, ``mask_img1`` → ``img1`` (else itself)."""
    low = stem.lower()
    for suffix in MASK_SUFFIXES:
        if low.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    for prefix in MASK_PREFIXES:
        if low.startswith(prefix) and len(stem) > len(prefix):
            return stem[len(prefix) :]
    return stem


def _listing(root: Path) -> list[str]:
    return sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))[
        :10
    ]


def _folder(root: Path, name: str, option: str) -> Path:
    path = Path(name) if Path(name).is_absolute() else root / name
    if not path.is_dir():
        raise DataError(f"{option} {name}: no such folder in {root} (found {_listing(root)})")
    return path


def paired_dirs(root: Path, naming: Naming = Naming(), masks: bool = True) -> tuple[Path, Path | None]:
    """The image and mask folders of a paired dataset; refuses (listing the candidates) when several fit."""
    if naming.images_dir:
        images = _folder(root, naming.images_dir, "--images-dir")
    else:
        found = [root / n for n in IMAGE_DIRS if (root / n).is_dir()]
        if len(found) != 1:
            what = (
                f"several image folders {[p.name for p in found]}"
                if found
                else f"no image folder ({_listing(root)})"
            )
            raise DataError(
                f"{root}: {what}; name the images with --images-dir DIR (and the masks with --masks-dir DIR)"
            )
        images = found[0]
    if naming.masks_dir:
        masks_dir = _folder(root, naming.masks_dir, "--masks-dir")
        if masks_dir.resolve() == images.resolve():
            raise DataError(
                f"{root}: the masks folder ({naming.masks_dir}) is the images folder ({images.name}): every image "
                "would be read as its own mask; name the folder that holds the masks (--masks-dir, or masks_dir "
                "in dataset.yaml)"
            )
        return images, masks_dir
    found = [root / n for n in MASK_DIRS if (root / n).is_dir() and root / n != images]
    if len(found) > 1:
        raise DataError(
            f"{root}: several mask folders {[p.name for p in found]}; choose one with --masks-dir DIR"
        )
    if not found and masks:
        raise DataError(
            f"{root}: images in {images.name}/ but no mask folder (one of {list(MASK_DIRS)}); name it with "
            "--masks-dir DIR"
        )
    return images, (found[0] if found else None)


def detect_layout(root: str | Path, naming: Naming = Naming()) -> str:
    """Name of the layout of ``root``; a clear error listing the layouts when none fits."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() in (".csv", ".json"):
            return "list"
        raise DataError(f"{root}: a dataset is a folder, or a .csv/.json list of image,mask paths")
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    spec = DatasetSpec.read(root)
    if spec.layout:
        return spec.layout
    if naming.images_dir or naming.masks_dir or spec.images_dir or spec.masks_dir:
        return "paired"
    if any((root / n).is_dir() for n in IMAGE_DIRS):
        return "paired"
    subdirs = [d for d in root.iterdir() if d.is_dir()]
    if any((d / "images").is_dir() for d in subdirs):
        return "dsb"
    if any(re.fullmatch(r"\d+", d.name) and (root / f"{d.name}_GT" / "SEG").is_dir() for d in subdirs):
        return "ctc"
    files = find_images(root)
    if _flat_split(files, naming)[1]:
        return "flat"
    tifs = [p for p in files if p.suffix.lower() in (".tif", ".tiff")]
    if any("label" in p.stem.lower() for p in tifs) and len(tifs) >= 2:
        return "isbi"
    raise DataError(
        f"{root}: no known dataset layout (found {_listing(root)}); expected images/ + masks/ (paired, or "
        "--images-dir/--masks-dir), NAME + NAME_mask files side by side (flat), ID/images + ID/masks (dsb), "
        "an image stack + a *label*.tif stack (isbi), 01/ + 01_GT/SEG/ (ctc), or a .csv/.json list; or force "
        "one with --layout"
    )


def load_layout(
    root: str | Path,
    layout: str = "auto",
    mask_pattern: str | None = None,
    *,
    naming: Naming | None = None,
    masks: bool = True,
) -> Layout:
    """Samples of the dataset at ``root`` in ``layout`` (``auto``: detected).

    ``naming``: folders and name patterns (``DATA/dataset.yaml`` fills what it leaves unset). ``masks=False``:
    the images alone, masks attached where present (a test set for ``predict``)."""
    root = Path(root)
    naming = _with_descriptor(root, naming or Naming(mask_pattern=mask_pattern))
    name = detect_layout(root, naming) if layout == "auto" else layout
    if name not in LAYOUTS:
        raise DataError(f"--layout {name!r} is unknown; choose auto or one of {', '.join(LAYOUTS)}")
    if name == "list":
        if not root.is_file():
            raise DataError(f"{root}: the list layout needs a .csv or .json file of image,mask paths")
    elif not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    result = {"paired": _paired, "flat": _flat, "dsb": _dsb, "isbi": _isbi, "ctc": _ctc, "list": _list}[name](
        root, naming, masks
    )
    if not result.samples and not result.problems:
        result.problems.append(f"{root}: no samples found in the {name} layout")
    return result


def _with_descriptor(root: Path, naming: Naming) -> Naming:
    spec = DatasetSpec.read(root)
    return Naming(
        *(
            getattr(naming, k) or getattr(spec, k)
            for k in ("images_dir", "masks_dir", "image_pattern", "mask_pattern")
        )
    )


def paired_folders(root: str | Path, mask_pattern: str | None = None) -> list[Sample]:
    """Samples of a paired-folder dataset; raises on the first listed problem."""
    layout = _paired(Path(root), Naming(mask_pattern=mask_pattern), True)
    if layout.problems:
        raise DataError("\n".join(layout.problems))
    return layout.samples


def _pattern_key(pattern: str | None, option: str) -> Callable[[str], str | None] | None:
    """``'mask_{stem}'`` → a function from a file stem to the ``{stem}`` part (None: no match)."""
    if pattern is None:
        return None
    if "{stem}" not in pattern:
        raise DataError(f"{option} {pattern!r} must contain {{stem}}, e.g. 'mask_{{stem}}' or '{{stem}}_gt'")
    before, after = pattern.split("{stem}", 1)
    regex = re.compile(re.escape(before) + "(?P<stem>.+)" + re.escape(after))

    def key(stem: str) -> str | None:
        m = regex.fullmatch(stem)
        return m.group("stem") if m else None

    return key


def _image_keys(images: list[Path], naming: Naming, problems: list[str]) -> dict[str, Path]:
    key = _pattern_key(naming.image_pattern, "--image-pattern")
    out: dict[str, Path] = {}
    for im in images:
        k = key(im.stem) if key else im.stem
        if k is None:
            problems.append(f"{im}: does not match --image-pattern {naming.image_pattern!r}")
        elif k in out:
            problems.append(f"{im}: duplicate image name: {out[k].name} has the same name")
        else:
            out[k] = im
    return out


def _mask_key(stem: str, images: dict[str, Any], naming: Naming, same_stem: bool) -> str | None:
    """The image key a mask file belongs to: by --mask-pattern, else its stem, a known suffix or prefix."""
    key = _pattern_key(naming.mask_pattern, "--mask-pattern")
    if key:
        return key(stem)
    candidates = ([stem] if same_stem else []) + [mask_stem(stem)]
    return next((c for c in candidates if c in images), None)


def _pair(images: dict[str, Path], mask_files: list[Path], naming: Naming, where: str, masks: bool) -> Layout:
    problems: list[str] = []
    found: dict[str, Path] = {}
    for m in mask_files:
        k = _mask_key(m.stem, images, naming, same_stem=True)
        if k is None:
            how = f"--mask-pattern {naming.mask_pattern!r}" if naming.mask_pattern else "any image name"
            problems.append(
                f"{m}: mask without image: its name does not match {how} (pair names with --mask-pattern, "
                "e.g. 'mask_{stem}' or '{stem}_gt')"
            )
        elif k in found:
            problems.append(f"{m}: duplicate mask for image '{images[k].name}' (also {found[k].name})")
        else:
            found[k] = m
    for k, im in images.items():
        if k not in found and masks:
            problems.append(
                f"{im}: image without mask: no mask named '{k}' in {where} (nor with a suffix "
                f"{list(MASK_SUFFIXES)} or prefix {list(MASK_PREFIXES)}, nor --mask-pattern)"
            )
    samples = [Sample(k, images[k], found.get(k)) for k in sorted(images) if k in found or not masks]
    return Layout("paired", samples, problems if masks else [])


def _paired(root: Path, naming: Naming, masks: bool) -> Layout:
    images_dir, masks_dir = paired_dirs(root, naming, masks)
    problems: list[str] = []
    images = _image_keys(find_images(images_dir), naming, problems)
    if not images:
        problems.append(f"{images_dir}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    mask_files = find_images(masks_dir) if masks_dir is not None else []
    layout = _pair(images, mask_files, naming, f"{masks_dir.name if masks_dir else 'masks'}/", masks)
    layout.problems[:0] = problems
    return layout


def _flat_split(files: list[Path], naming: Naming) -> tuple[dict[str, Path], list[Path]]:
    """A flat folder's files → images by key, and the files that are masks of them."""
    if naming.mask_pattern:
        key = _pattern_key(naming.mask_pattern, "--mask-pattern")
        mask_files = [f for f in files if key and key(f.stem) is not None]
    else:
        stems = {f.stem for f in files}
        mask_files = [f for f in files if mask_stem(f.stem) != f.stem and mask_stem(f.stem) in stems]
    problems: list[str] = []
    images = _image_keys([f for f in files if f not in mask_files], naming, problems)
    return images, mask_files


def _flat(root: Path, naming: Naming, masks: bool) -> Layout:
    images, mask_files = _flat_split(find_images(root), naming)
    layout = _pair(images, mask_files, naming, f"{root.name}/", masks)
    layout.name = "flat"
    return layout


def _dsb(root: Path, _naming: Naming, masks: bool) -> Layout:
    samples, problems = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (d / "images").is_dir():
            continue
        images = find_images(d / "images")
        objects = find_images(d / "masks") if (d / "masks").is_dir() else []
        if len(images) != 1:
            problems.append(f"{d / 'images'}: expected exactly one image, found {len(images)}")
            continue
        if not objects and masks:
            problems.append(f"{d / 'masks'}: image without mask: no object masks for {images[0].name}")
            continue
        samples.append(Sample(d.name, images[0], tuple(objects) if objects else None))
    return Layout("dsb", samples, problems, {"mask_encoding": "instances"})


def _isbi(root: Path, _naming: Naming, masks: bool) -> Layout:
    tifs = sorted(p for p in root.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    labels = [p for p in tifs if "label" in p.stem.lower()]
    volumes = [p for p in tifs if p not in labels]
    if (
        masks and len(labels) == 1 and len(volumes) > 1
    ):  # ISBI 2012 as downloaded: train-labels pairs train-volume
        prefix = labels[0].stem.lower().split("label")[0]
        paired = [v for v in volumes if prefix and v.stem.lower().startswith(prefix)]
        volumes = paired if len(paired) == 1 else volumes
    if not masks and labels and len(volumes) > 1:  # images alone: every stack, not the labels
        return Layout(
            "isbi", [s for v in volumes for s in _stack_samples(v)], [], {"mask_encoding": "binary"}
        )
    if len(volumes) != 1 or len(labels) > 1 or (masks and not labels):
        raise DataError(
            f"{root}: the isbi layout needs one image stack and one '*label*.tif' stack, found images "
            f"{[p.name for p in volumes]} and labels {[p.name for p in labels]}"
        )
    image, label = volumes[0], (labels[0] if labels else None)
    n_img = count_planes(image, stack=True)
    n_lab = count_planes(label, stack=True) if label else n_img
    problems = []
    if n_img != n_lab:
        problems.append(f"{label}: {n_lab} label page(s) for {n_img} image page(s) in {image.name}")
    samples = [
        Sample(f"{image.stem}_{k:03d}", image, label, k, k if label else None)
        for k in range(min(n_img, n_lab))
    ]
    return Layout("isbi", samples, problems, {"mask_encoding": "binary"})


def _stack_samples(image: Path) -> list[Sample]:
    return [Sample(f"{image.stem}_{k:03d}", image, None, k) for k in range(count_planes(image, stack=True))]


def _ctc(root: Path, _naming: Naming, masks: bool) -> Layout:
    samples, problems = [], []
    for seq in sorted(d for d in root.iterdir() if d.is_dir() and re.fullmatch(r"\d+", d.name)):
        seg = root / f"{seq.name}_GT" / "SEG"
        frames = {m.group(1): p for p in seq.iterdir() if (m := re.fullmatch(r"t(\d+)\.tiff?", p.name))}
        annotated: dict[str, Path] = {}
        for mask in sorted(seg.iterdir()) if seg.is_dir() else []:
            m = re.fullmatch(r"man_seg(\d+)\.tiff?", mask.name)
            if not m:
                continue  # 3-D slice annotations (man_seg_TTT_ZZZ) are not used for 2-D training
            if m.group(1) not in frames:
                problems.append(f"{mask}: mask without image: no {seq.name}/t{m.group(1)}.tif")
                continue
            annotated[m.group(1)] = mask
        for t in sorted(frames):  # with masks: the annotated frames; without: every frame
            if t in annotated or not masks:
                samples.append(Sample(f"{seq.name}_t{t}", frames[t], annotated.get(t)))
    return Layout("ctc", samples, problems, {"mask_encoding": "instances"})


def _list(path: Path, _naming: Naming, masks: bool) -> Layout:
    base = path.parent
    rows: list[tuple[str, str | None]] = []
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                need = {"image", "mask"} if masks else {"image"}
                if not reader.fieldnames or not need <= set(reader.fieldnames):
                    raise DataError(f"{path}: the CSV needs a header with columns 'image' and 'mask'")
                rows = [(r["image"], r.get("mask") or None) for r in reader]
        else:
            raw = json.loads(path.read_text())
            rows = [
                (r["image"], r["mask"] if masks else r.get("mask")) if isinstance(r, dict) else (r[0], r[1])
                for r in raw
            ]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise DataError(f'{path}: expected a list of {{"image": ..., "mask": ...}} entries ({exc})') from None
    samples, problems, seen = [], [], set()
    for line, (im, mk) in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        ip = (base / im).resolve()
        mp = (base / mk).resolve() if mk else None
        for p in (ip, mp):
            if p is not None and not p.is_file():
                problems.append(f"{p}: no such file (listed in {path.name}, entry {line})")
        name = ip.stem
        if name in seen:
            problems.append(f"{ip}: duplicate image name '{name}' in {path.name}")
        seen.add(name)
        if ip.is_file() and (mp is None or mp.is_file()):
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
    for path in sample.mask if isinstance(sample.mask, tuple) else [sample.mask] if sample.mask else []:
        refuse_lossy_mask(path)
    if volume:
        if sample.mask is None:
            raise DataError(f"{sample.image_label}: no mask for this volume")
        if isinstance(sample.mask, tuple):
            raise DataError(f"{sample.image}: volumes need one mask file per volume, not per object")
        return read_volume(sample.mask)
    if sample.mask is None:
        raise DataError(f"{sample.image_label}: no mask for this image")
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
