"""Dataset layouts → lists of (image, mask) file pairs.

Paired folders: ``DATA/images/NAME.ext`` with ``DATA/masks/NAME.ext`` (or ``labels/``), matched by stem;
mask stems may carry a suffix such as ``_mask``, ``_label`` or ``_seg``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .io import IMAGE_SUFFIXES

__all__ = ["MASK_SUFFIXES", "Sample", "find_images", "paired_folders"]

MASK_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_seg", "_gt")


@dataclass(frozen=True)
class Sample:
    """One training image and its mask file."""

    name: str
    image: Path
    mask: Path


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


def paired_folders(root: str | Path) -> list[Sample]:
    """Pair ``root/images/*`` with ``root/masks/*`` (or ``root/labels/*``) by file stem."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    images_dir = root / "images"
    masks_dir = next((root / n for n in ("masks", "labels") if (root / n).is_dir()), None)
    if not images_dir.is_dir() or masks_dir is None:
        found = sorted(p.name for p in root.iterdir())[:10]
        raise DataError(
            f"{root}: expected the paired-folder layout ({root}/images/ and {root}/masks/ or labels/), "
            f"found {found}; create those folders with matching file names"
        )
    images = find_images(images_dir)
    if not images:
        raise DataError(f"{images_dir}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    masks: dict[str, Path] = {}
    for m in find_images(masks_dir):
        key = mask_stem(m.stem)
        if key in masks:
            raise DataError(f"{masks_dir}: two masks for image '{key}': {masks[key].name} and {m.name}")
        masks[key] = m
    samples, missing = [], []
    for im in images:
        if im.stem in masks:
            samples.append(Sample(im.stem, im, masks[im.stem]))
        else:
            missing.append(im.name)
    if missing:
        raise DataError(
            f"{masks_dir}: no mask for {len(missing)} image(s), e.g. {missing[:3]}; masks must share the image's "
            f"file stem, optionally with one of the suffixes {list(MASK_SUFFIXES)}"
        )
    return samples
