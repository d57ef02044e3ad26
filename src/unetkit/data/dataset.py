"""Lazily read training samples and the random-patch dataset drawn from them.

Nothing is loaded up front: a :class:`SampleStore` decodes, normalises and encodes a sample when a patch
needs it and keeps at most ``cache_mb`` of them in memory (least recently used are dropped), so a dataset
larger than RAM trains.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.utils.data import Dataset

from ..errors import DataError
from .augment import Augmenter
from .io import sample_channels
from .layouts import Sample, read_sample_image, read_sample_mask
from .masks import IGNORE, MaskEncoding, encode_mask, mask_weights
from .normalize import Normalizer
from .resample import zoom_image, zoom_labels
from .windows import read_window

__all__ = ["MIN_OBJECTS_TO_HOLD_OUT", "PatchDataset", "SampleStore", "View", "held_out_region", "split_views"]

log = logging.getLogger(__name__)


class SampleStore:
    """Decoded samples on demand: ``store[i]`` → normalised image ``(C, H, W)`` float32, target ``(H, W)`` uint8."""

    def __init__(
        self,
        samples: list[Sample],
        encoding: MaskEncoding,
        normalizer: Normalizer,
        in_channels: int,
        cache_mb: float = 2048,
        weights: tuple[float, float] | tuple[float, float, bool] | None = None,
        volumes: bool = False,
        input_scale: float = 1.0,
        channel: int | None = None,
    ) -> None:
        self.samples = samples
        self.channel = channel  # the stored channel a one-channel model reads (--channel)
        self.input_scale = float(input_scale)  # 2-D: images and masks resampled by it (--input-scale)
        self.volumes = volumes  # 3-D samples: (C, D, H, W) images, (D, H, W) targets
        self.weights = weights  # (w0, sigma[, balance]): also compute the paper's weight map per sample
        self.encoding = encoding
        self.normalizer = normalizer
        self.in_channels = in_channels
        self.budget = int(cache_mb * 2**20)
        self._cache: OrderedDict[int, tuple[np.ndarray, ...]] = OrderedDict()
        self._bytes = 0
        self.reads = 0  # decodes from disk (for tests and diagnostics)
        self._objects: dict[int, np.ndarray | None] = {}  # validation images' object labels (few, kept)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        """``(image, target)``, or ``(image, target, weights)`` when weight maps are on (cached together)."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        s = self.samples[i]
        raw = read_sample_image(s, self.volumes)
        chw = sample_channels(raw, self.in_channels, s.image_label, volumes=self.volumes, pick=self.channel)
        image = self.normalizer(chw)
        mask = read_sample_mask(s, self.volumes)
        if self.input_scale != 1:
            image, mask = zoom_image(image, self.input_scale), zoom_labels(mask, self.input_scale)
        target = encode_mask(self.encoding, mask, s.mask_label, self.volumes)
        item: tuple[np.ndarray, ...] = (image, target)
        if self.weights is not None:
            w0, sigma, *rest = self.weights
            balance = bool(rest[0]) if rest else True
            weights = mask_weights(self.encoding, mask, target, w0, sigma, balance, volume=self.volumes)
            item = (image, target, weights)
        self.reads += 1
        size = sum(a.nbytes for a in item)
        while self._cache and self._bytes + size > self.budget:
            _, old = self._cache.popitem(last=False)
            self._bytes -= sum(a.nbytes for a in old)
        if size <= self.budget:
            self._cache[i] = item
            self._bytes += size
        return item

    def objects(self, i: int) -> np.ndarray | None:
        """Sample ``i``'s objects, its mask's instance labels on the network's grid (0: background and ignored
        pixels), for validation by objects; None unless the masks hold instances of 2-D images."""
        if self.encoding.name != "instances" or self.volumes:
            return None
        if i not in self._objects:
            mask = np.asarray(read_sample_mask(self.samples[i], False))
            if mask.ndim == 2:
                if self.encoding.ignore_value is not None:
                    mask = np.where(mask == self.encoding.ignore_value, 0, mask)
                if self.input_scale != 1:
                    mask = zoom_labels(mask, self.input_scale)
            self._objects[i] = mask if mask.ndim == 2 else None  # None remembered: not read again
        return self._objects[i]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"], state["_bytes"] = OrderedDict(), 0  # workers start with an empty cache
        state["_objects"] = {}
        return state


@dataclass(frozen=True)
class View:
    """Sample ``index`` of a store, restricted to rows ``[row0, row1)`` (``None``: all rows), or with its
    ``held_out`` pixels (whole objects and their surroundings) the only ones that count (``validation``) or the
    ones that do not (training: unlabelled there)."""

    index: int
    name: str
    rows: tuple[int, int] | None = None
    held_out: np.ndarray | None = field(default=None, compare=False, repr=False)
    validation: bool = False

    def pixels(self, shape: tuple[int, ...]) -> int:
        """The pixels (voxels) of this view of a sample of spatial ``shape`` that count, without reading it."""
        if self.held_out is not None:
            held = int(self.held_out.sum())
            return held if self.validation else int(np.prod(shape)) - held
        rows = self.rows[1] - self.rows[0] if self.rows else shape[0]
        return int(rows * np.prod(shape[1:]))

    def objects(self, store: SampleStore) -> np.ndarray | None:
        """The view's object labels (:meth:`SampleStore.objects`; its rows when it has rows), or None."""
        labels = store.objects(self.index)
        if labels is None or self.rows is None:
            return labels
        return labels[self.rows[0] : self.rows[1]]

    def read(self, store: SampleStore) -> tuple[np.ndarray, ...]:
        item = store[self.index]
        if self.held_out is not None:
            image, target, *rest = item
            hidden = ~self.held_out if self.validation else self.held_out
            return (image, np.where(hidden, np.uint8(IGNORE), target), *rest)
        if self.rows is None:
            return item
        r0, r1 = self.rows
        return (item[0][:, r0:r1], *(a[r0:r1] for a in item[1:]))


#: object-wise validation needs at least this many objects in an image (one validates, the others train), else
#: its bottom rows are held out, which cut objects at the row and may hold none
MIN_OBJECTS_TO_HOLD_OUT = 2


def split_views(
    store: SampleStore, heights: list[int], val_fraction: float, seed: int, how: str = "auto"
) -> tuple[list[View], list[View], str]:
    """Hold out whole images for validation (``how="images"``, or ``auto`` from 4 images on), whole objects of
    each image with their surroundings (``objects``, or ``auto`` below 4 images of 2-D object masks), or the
    bottom rows of each image (``rows``). ``val_fraction``: the share of images, or of each image's pixels.

    Returns ``(train, val, note)``; the note says which split was used. Holding out objects rather than rows
    keeps every validation object whole (a cut through an object is scored as a wrong border) and spreads
    validation over the image instead of its bottom strip.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    names = [s.name for s in store.samples]
    n = len(names)
    if how == "images" or (how == "auto" and n >= 4):
        if n < 2:
            raise DataError("data.val_split images: needs at least 2 images; use objects or rows")
        order = np.random.default_rng(seed).permutation(n)
        n_val = min(n - 1, max(1, round(n * val_fraction)))
        val = [View(int(i), names[i]) for i in sorted(order[:n_val])]
        train = [View(int(i), names[i]) for i in sorted(order[n_val:])]
        return train, val, f"validating on {n_val} of {n} images"
    objects = how == "objects" or (
        how == "auto" and not store.volumes and store.encoding.name in ("instances", "binary")
    )
    train, val, held = [], [], 0
    for i, h in enumerate(heights):
        region = _held_out_objects(store, i, val_fraction, seed) if objects else None
        if region is not None:
            train.append(View(i, names[i], held_out=region))
            val.append(View(i, f"{names[i]}[held-out objects]", held_out=region, validation=True))
            held += 1
            continue
        cut = h - max(1, round(h * val_fraction))
        if cut < 1:
            raise DataError(
                f"{names[i]}: an image of {h} rows is too small to split into training and validation"
            )
        train.append(View(i, names[i], (0, cut)))
        val.append(View(i, f"{names[i]}[rows {cut}:]", (cut, h)))
    where = (
        f"whole objects with their surroundings, about {val_fraction:.0%} of each image"
        if held == n
        else f"the bottom {val_fraction:.0%} of each image"
        if not held
        else f"whole objects in {held} image(s), the bottom {val_fraction:.0%} of the others"
    )
    note = (
        f"only {n} image(s): validating on {where} (left out of training); add images for a more reliable "
        "validation score"
    )
    return train, val, note


def _held_out_objects(store: SampleStore, index: int, share: float, seed: int) -> np.ndarray | None:
    """:func:`held_out_region` of sample ``index`` (its labelled objects; IGNORE pixels are not labelled)."""
    target = store[index][1]
    if target.ndim != 2:
        return None
    known = target != IGNORE
    return held_out_region(
        ndi.label((target > 0) & known)[0], known, share, np.random.default_rng([seed, index])
    )


def held_out_region(
    labels: np.ndarray, known: np.ndarray, share: float, rng: np.random.Generator
) -> np.ndarray | None:
    """The validation region of one 2-D image: randomly chosen whole objects (``labels``: connected objects
    numbered from 1) with a margin of background around each, about ``share`` of the ``known`` (labelled)
    pixels; objects the region touches join it whole. An object whose region alone would take half the labelled
    pixels, or that would leave no object to train on, is passed over for the next (two objects, one large: the small
    one validates). None when fewer than
    :data:`MIN_OBJECTS_TO_HOLD_OUT` objects, or none can be held out without taking half the labelled pixels or
    the whole image: the rows are the better split then."""
    count = int(labels.max()) if labels.size else 0
    if count < MIN_OBJECTS_TO_HOLD_OUT:
        return None
    boxes = ndi.find_objects(labels)
    region = np.zeros(labels.shape, bool)
    # a share of the *labelled* pixels: sparse labels (painted, or corrections around a few objects) keep most of
    # their few objects for training (of a whole image's pixels, the held-out objects took nearly all of them)
    labelled = int(known.sum())
    goal, held = share * labelled, 0
    covered: set[int] = set()  # the objects the region touches so far
    for k in rng.permutation(count):
        box = boxes[k]
        if box is None:
            continue
        margin = max(4, max(b.stop - b.start for b in box) // 2)
        grown = tuple(slice(max(0, b.start - margin), b.stop + margin) for b in box)
        added = int((known[grown] & ~region[grown]).sum())
        joined = covered | set(np.unique(labels[grown]).tolist()) - {0}
        if held + added > 0.5 * labelled or len(joined) >= count:
            continue  # too large for validation, or no object left to train on: another object
        region[grown] = True
        held, covered = held + added, joined
        if held >= goal:
            break
    touched = np.unique(labels[region])
    region |= np.isin(labels, touched[touched > 0])  # no object is cut by the region's edge
    if not region.any() or region.all() or (region & known).sum() > 0.5 * labelled:
        return None  # too few objects, too large: the rows are a better split
    return region


class PatchDataset(Dataset):
    """Random patches with their targets, ``length`` per epoch, reproducible for a seed and epoch.

    ``patch_in`` is the network's input size; ``patch_out`` the size of the target it is compared with
    (smaller for a ``valid`` network, whose input is the target window plus its margin on every side).
    Windows beyond an image (small images) are filled by mirroring. Images are drawn in proportion to their
    area; with probability ``fg_fraction`` the patch is centred near a random labelled object pixel, so sparse
    objects are seen. ``augment`` (an :class:`Augmenter`, or True for flips and 90-degree rotations) is
    applied identically to image, target and weight map.
    """

    def __init__(
        self,
        store: SampleStore,
        views: list[View],
        shapes: list[tuple[int, ...]],
        patch_in: int | tuple[int, ...],
        patch_out: int | tuple[int, ...],
        length: int,
        *,
        augment: bool | Augmenter = True,
        fg_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not views:
            raise DataError("no training images")
        if not 0 <= fg_fraction <= 1:
            raise DataError(f"data.fg_fraction must be between 0 and 1, got {fg_fraction}")
        self.store, self.views = store, views
        self.shapes = [
            (v.rows[1] - v.rows[0], *shapes[v.index][1:]) if v.rows else tuple(shapes[v.index]) for v in views
        ]
        ndim = len(self.shapes[0])
        self.patch_in = (patch_in,) * ndim if isinstance(patch_in, int) else tuple(patch_in)
        self.patch_out = (patch_out,) * ndim if isinstance(patch_out, int) else tuple(patch_out)
        self.margin = tuple((i - o) // 2 for i, o in zip(self.patch_in, self.patch_out, strict=True))
        self.length = length
        self.augmenter = augment if isinstance(augment, Augmenter) else Augmenter(flips=bool(augment))
        self.fg_fraction = fg_fraction
        self.seed = seed
        self.epoch = 0
        areas = np.array([np.prod(s) for s in self.shapes], np.float64)
        self.area_weights = areas / areas.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _corner(self, rng: np.random.Generator, target: np.ndarray) -> tuple[int, ...]:
        shape, po = target.shape, self.patch_out
        if self.fg_fraction and rng.random() < self.fg_fraction:
            objects = np.flatnonzero((target != 0) & (target != IGNORE))
            if objects.size:
                at = np.unravel_index(int(objects[rng.integers(objects.size)]), shape)
                return tuple(
                    min(max(0, int(p) - int(rng.integers(o))), max(0, n - o))
                    for p, n, o in zip(at, shape, po, strict=True)
                )
        return tuple(int(rng.integers(0, max(0, n - o) + 1)) for n, o in zip(shape, po, strict=True))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        """``(image, target)`` or ``(image, target, weights)``: one random patch, every array transformed alike."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(rng.choice(len(self.views), p=self.area_weights))
        image, *labels = self.views[k].read(self.store)
        corner = self._corner(rng, labels[0])
        if len(corner) == 3:  # a volume
            window = [(c - m, c + o + m) for c, o, m in zip(corner, self.patch_out, self.margin, strict=True)]
            image, labels = self.augmenter.volume(
                rng, read_window(image, window), [read_window(a, window) for a in labels], self.margin
            )
        else:
            m, po = self.margin[0], self.patch_out[0]
            pad = self.augmenter.context(self.patch_in[0])
            window = [(c - m - pad, c + po + m + pad) for c in corner]
            image, labels = self.augmenter(
                rng, read_window(image, window), [read_window(a, window) for a in labels], m, pad
            )
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (image, *labels))
