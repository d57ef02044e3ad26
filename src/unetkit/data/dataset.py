"""Training samples in memory and the random-patch dataset drawn from them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..inference.tiling import read_window
from .io import read_image, to_channels_first
from .layouts import Sample
from .masks import encode_mask
from .normalize import normalize

__all__ = ["LoadedImage", "PatchDataset", "load_samples", "split_samples"]

log = logging.getLogger(__name__)


@dataclass
class LoadedImage:
    """A normalised image ``(C, H, W)`` float32 with its class-index target ``(H, W)`` uint8."""

    name: str
    image: np.ndarray
    target: np.ndarray


def load_samples(
    samples: list[Sample],
    *,
    in_channels: int | None,
    encoding: str,
    normalization: str,
    low: float,
    high: float,
) -> list[LoadedImage]:
    """Read, check and normalise every sample. Shape mismatches are reported with both file names."""
    loaded = []
    for s in samples:
        raw = read_image(s.image)
        chw = to_channels_first(raw, in_channels, s.image)
        if in_channels is None:
            in_channels = chw.shape[0]
        mask = read_image(s.mask)
        if mask.shape[:2] != chw.shape[1:]:
            raise DataError(
                f"{s.mask}: mask is {mask.shape[0]}x{mask.shape[1]} but its image {s.image} is "
                f"{chw.shape[1]}x{chw.shape[2]}; masks must have the image's height and width"
            )
        target = encode_mask(mask, encoding, s.mask)
        loaded.append(LoadedImage(s.name, normalize(chw, normalization, low, high), target))
    return loaded


def split_samples(
    items: list[LoadedImage], val_fraction: float, seed: int
) -> tuple[list[LoadedImage], list[LoadedImage], str]:
    """Hold out whole images for validation, or, with fewer than 4 images, a region of each image.

    Returns ``(train, val, note)``; the note says which split was used.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if len(items) >= 4:
        order = np.random.default_rng(seed).permutation(len(items))
        n_val = max(1, round(len(items) * val_fraction))
        val = [items[i] for i in sorted(order[:n_val])]
        train = [items[i] for i in sorted(order[n_val:])]
        return train, val, f"validating on {n_val} of {len(items)} images"
    # Few annotated images is the normal case in this field: validate on the last rows of each image.
    train, val = [], []
    for it in items:
        h = it.image.shape[1]
        cut = h - max(1, round(h * val_fraction))
        if cut < 1:
            raise DataError(
                f"{it.name}: image of {h} rows is too small to split into training and validation"
            )
        train.append(LoadedImage(it.name, it.image[:, :cut], it.target[:cut]))
        val.append(LoadedImage(f"{it.name}[rows {cut}:]", it.image[:, cut:], it.target[cut:]))
    note = (
        f"only {len(items)} image(s): validating on the bottom {val_fraction:.0%} of each image "
        "(rows held out from training); add images for a more reliable validation score"
    )
    return train, val, note


class PatchDataset(Dataset):
    """Random patches with their targets, ``length`` per epoch, reproducible for a seed and epoch.

    ``patch_in`` is the network's input size; ``patch_out`` the size of the target it is compared with
    (smaller for a ``valid`` network, whose input is the target window plus its margin on every side).
    Windows beyond an image (small images) are filled by mirroring. With ``augment``, each patch is
    flipped and rotated by a multiple of 90 degrees at random.
    """

    def __init__(
        self,
        items: list[LoadedImage],
        patch_in: int,
        patch_out: int,
        length: int,
        *,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        if not items:
            raise DataError("no training images")
        self.items = items
        self.patch_in, self.patch_out = patch_in, patch_out
        self.margin = (patch_in - patch_out) // 2
        self.length = length
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        areas = np.array([it.target.size for it in items], np.float64)
        self.weights = areas / areas.sum()  # sample images in proportion to their area

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        item = self.items[int(rng.choice(len(self.items), p=self.weights))]
        h, w = item.target.shape
        y = int(rng.integers(0, max(0, h - self.patch_out) + 1))
        x = int(rng.integers(0, max(0, w - self.patch_out) + 1))
        m, po = self.margin, self.patch_out
        image = read_window(item.image, [(y - m, y + po + m), (x - m, x + po + m)])
        target = read_window(item.target, [(y, y + po), (x, x + po)])
        if self.augment:
            k = int(rng.integers(4))
            image, target = np.rot90(image, k, axes=(-2, -1)), np.rot90(target, k)
            if rng.random() < 0.5:
                image, target = image[..., ::-1], target[..., ::-1]
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(target))


def describe(items: list[LoadedImage]) -> str:
    shapes = {it.image.shape for it in items}
    return f"{len(items)} image(s), shapes {sorted(shapes)[:3]}{'...' if len(shapes) > 3 else ''}"


def check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return path
