"""From predicted classes to objects, for images in memory and, block by block, for images on disk.

Three ways, chosen by what the model was trained to predict (:attr:`Predictor.instance_method`):

- ``interior`` (3-class background / interior / border target): the interior class, split where the network
  marked a border and, where interiors still touch through a thin bridge, by the distance-transform watershed
  below; then grown back over the predicted border pixels (at most ``grow`` = 2 pixels). On the synthetic
  nuclei (a border model trained 4 minutes) the watershed raises object F1 at IoU 0.5 from 0.89 (4-connected
  components of the interior) to 0.97;
- ``watershed`` (binary foreground): touching objects are split by a watershed on the (lightly smoothed)
  Euclidean distance transform of the foreground, seeded at its local maxima at least ``min_distance``
  pixels apart (on the synthetic nuclei: F1 0.98 at IoU 0.5 from the true foreground, against 0.89 for
  h-maxima seeds, and 10x faster);
- ``components`` (other classes): connected components of each non-background class.

Components under ``min_size`` pixels are removed; labels are ``1..N`` (int32).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "INSTANCE_METHODS",
    "RegionObjects",
    "block_regions",
    "expand_labels",
    "first_pixel_order",
    "first_pixel_table",
    "instances_blockwise",
    "instances_from_classes",
    "label_instances",
    "region_objects",
    "region_slices",
    "watershed_instances",
]

log = logging.getLogger(__name__)

INSTANCE_METHODS = ("interior", "watershed", "components")


def expand_labels(labels: np.ndarray, distance: float, within: np.ndarray | None = None) -> np.ndarray:
    """Grow every object into the background by up to ``distance`` pixels without merging objects (each
    background pixel joins its nearest object; as scikit-image's ``expand_labels``), only into ``within``
    pixels when given."""
    if distance <= 0:
        return labels
    dist, nearest = ndi.distance_transform_edt(labels == 0, return_indices=True)
    grown = labels[tuple(nearest)]
    keep = (labels == 0) & (dist > distance)
    if within is not None:
        keep |= (labels == 0) & ~within
    return np.where(keep, 0, grown).astype(labels.dtype)


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Remove components under ``min_size`` pixels and number the rest 1..N (int32)."""
    from skimage.segmentation import relabel_sequential

    if labels.max() == 0:
        return labels.astype(np.int32)
    if min_size > 1:
        small = np.bincount(labels.ravel()) < min_size
        small[0] = False
        labels = np.where(small[labels], 0, labels)
    return relabel_sequential(labels.astype(np.int32))[0]


def label_instances(
    classes: np.ndarray, foreground: tuple[int, ...] = (1,), *, min_size: int = 8, grow: float = 0.0
) -> np.ndarray:
    """Objects = 4-connected components of the ``foreground`` classes (e.g. the interior class of a model
    trained with separation borders), without components under ``min_size`` pixels, grown by ``grow`` pixels
    (to give back a border gap cut in training). Returns int32 labels 1..N."""
    labels, _ = ndi.label(np.isin(classes, foreground))
    return expand_labels(_drop_small(labels, min_size), grow)


def watershed_instances(foreground: np.ndarray, *, min_size: int = 8, min_distance: int = 3) -> np.ndarray:
    """Split a binary foreground into objects: watershed of the negated (lightly smoothed) distance
    transform, seeded at its local maxima at least ``min_distance`` pixels apart. A component without a
    seed (thinner than 2 pixels) stays one object."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    fg = np.asarray(foreground, bool)
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    dist = ndi.gaussian_filter(ndi.distance_transform_edt(fg).astype(np.float32), 1.0) * fg
    components, _ = ndi.label(fg)
    peaks = peak_local_max(
        dist, min_distance=min_distance, threshold_abs=1.0, exclude_border=False, labels=components
    )
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=fg)
    unseeded, _ = ndi.label(fg & (labels == 0))
    labels = np.where(unseeded > 0, unseeded + len(peaks), labels)
    return _drop_small(labels, min_size)


def instances_from_classes(
    classes: np.ndarray, method: str, *, min_size: int = 8, grow: float = 2.0, min_distance: int = 3
) -> np.ndarray:
    """Predicted class indices ``(H, W)`` → instance labels ``(H, W)`` int32 (see the module docstring)."""
    if (
        method == "interior"
    ):  # split the interior, then grow back over the predicted border, never into background
        interior = watershed_instances(classes == 1, min_size=min_size, min_distance=min_distance)
        return expand_labels(interior, grow, within=classes > 0)
    if method == "watershed":
        return watershed_instances(classes > 0, min_size=min_size, min_distance=min_distance)
    if method == "components":
        out = np.zeros(classes.shape, np.int32)
        for c in np.unique(classes[classes > 0]):
            labels = label_instances(classes, (int(c),), min_size=min_size)
            out = np.where(labels > 0, labels + out.max(), out)
        return out
    raise ValueError(f"instance method {method!r} is unknown; choose one of {', '.join(INSTANCE_METHODS)}")


def first_pixel_order(labels: np.ndarray) -> np.ndarray:
    """``labels`` renumbered ``1..n`` in raster order of each object's first pixel: the numbering every path
    uses (whole image, block by block, chunk by chunk on Dask), so their IDs are identical."""
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids > 0
    lut = np.zeros(int(ids.max(initial=0)) + 1, np.int32)
    lut[ids[keep][np.argsort(first[keep], kind="stable")]] = np.arange(1, int(keep.sum()) + 1)
    return lut[labels]


def block_regions(shape: tuple[int, ...], block: int) -> list[tuple[tuple[int, int], ...]]:
    """The ``block``-sized regions (``(start, stop)`` per axis) covering ``shape``, in raster order."""
    axes = [[(s, min(s + block, n)) for s in range(0, n, block)] for n in shape]
    return [tuple(r) for r in itertools.product(*axes)]


def region_slices(region: tuple[tuple[int, int], ...]) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in region)


@dataclass
class RegionObjects:
    """The objects seen by one region labelled with ``context`` around it: the region's own labels (``core``,
    local IDs), each local ID's first pixel as a raster index into the whole image (``firsts``), and the local
    IDs that reach the context's edge inside the image (they may be cut there)."""

    core: np.ndarray
    firsts: np.ndarray
    at_edge: np.ndarray
    shape: tuple[int, ...]
    region: tuple[tuple[int, int], ...]

    def candidates(self) -> tuple[np.ndarray, np.ndarray, int]:
        """First pixels of the objects in the region, whether each first pixel lies in the region (the region
        owns that object), and how many owned objects reach the edge of the context."""
        ids = np.unique(self.core)
        ids = ids[ids > 0]
        fp = self.firsts[ids]
        owned = np.ones(len(ids), bool)
        for c, (a, b) in zip(np.unravel_index(fp, self.shape), self.region, strict=True):
            owned &= (c >= a) & (c < b)
        return fp, owned, int(np.isin(ids[owned], self.at_edge).sum())

    def global_ids(self, table: np.ndarray) -> np.ndarray:
        """The region's labels with their global IDs: 1 + the position of their first pixel in ``table``."""
        ids = np.zeros(len(self.firsts), np.int64)
        present = np.unique(self.core)
        present = present[present > 0]
        ids[present] = np.searchsorted(table, self.firsts[present]) + 1
        return ids[self.core]


def region_objects(
    read: Callable[[tuple[slice, ...]], np.ndarray],
    shape: tuple[int, ...],
    region: tuple[tuple[int, int], ...],
    context: int,
    label: Callable[[np.ndarray], np.ndarray],
) -> RegionObjects:
    """Label ``region`` grown by ``context`` (clipped to the image): ``read(slices)`` reads classes, ``label``
    turns classes into object labels."""
    box = tuple((max(0, a - context), min(n, b + context)) for (a, b), n in zip(region, shape, strict=True))
    labels = label(np.asarray(read(region_slices(box))))
    ids, first = np.unique(labels.ravel(), return_index=True)
    local = np.unravel_index(first, labels.shape)
    firsts = np.zeros(int(ids.max(initial=0)) + 1, np.int64)
    firsts[ids] = np.ravel_multi_index(tuple(i + a for i, (a, _) in zip(local, box, strict=True)), shape)
    core = labels[tuple(slice(a - c, b - c) for (a, b), (c, _) in zip(region, box, strict=True))]
    edges = [
        np.take(labels, at, axis=axis).ravel()
        for axis, ((a, b), n) in enumerate(zip(box, shape, strict=True))
        for at, inside in ((0, a > 0), (b - a - 1, b < n))
        if inside
    ]
    at_edge = np.unique(np.concatenate(edges)) if edges else np.zeros(0, labels.dtype)
    return RegionObjects(core, firsts, at_edge, tuple(shape), region)


def first_pixel_table(candidates: Iterable[tuple[np.ndarray, np.ndarray, int]], context: int) -> np.ndarray:
    """The sorted first pixels of all objects, from every region's :meth:`RegionObjects.candidates` (in any
    order): an object's global ID is 1 + its position here. An object whose first pixel no region owns was
    seen differently by two regions (it is larger than the context): it keeps an ID of its own, with a warning."""
    owned, seen, cut = [], [], 0
    for fp, mine, n_cut in candidates:
        owned.append(fp[mine])
        seen.append(fp)
        cut += n_cut
    owned_fp = np.concatenate(owned) if owned else np.zeros(0, np.int64)
    seen_fp = np.unique(np.concatenate(seen)) if seen else np.zeros(0, np.int64)
    orphans = np.setdiff1d(seen_fp, owned_fp)
    if cut or len(orphans):
        log.warning(
            "%d object(s) reach beyond the %d-pixel context of their block and may be split; "
            "raise the block context (CLI: --object-context)",
            cut + len(orphans),
            context,
        )
    return np.unique(np.concatenate([owned_fp, orphans]))


def instances_blockwise(
    read: Callable[[tuple[slice, ...]], np.ndarray],
    shape: tuple[int, ...],
    write: Callable[[tuple[slice, ...], np.ndarray], None],
    label: Callable[[np.ndarray], np.ndarray],
    *,
    block: int = 2048,
    context: int = 128,
    out_read: Callable[[tuple[slice, ...]], np.ndarray] | None = None,
    progress: bool = False,
) -> int:
    """Instance labels of an image too large for memory, block by block, with one ID per object.

    The one algorithm of every large-image path (this process, or chunk tasks on Dask:
    :mod:`unetkit.inference.distributed` runs the same two passes): each ``block``-sized region is labelled
    (``label``: classes → object labels) with ``context`` pixels around it. Pass 1 collects every object's
    first pixel (raster order) from the region that holds it; pass 2 writes each region's own pixels with
    global IDs, the rank of their object's first pixel. So an object crossing block borders gets one ID as long
    as it is smaller than ``context`` (as StarDist's ``predict_instances_big``), and the IDs equal
    :func:`first_pixel_order` of a whole-image labelling, whatever the block size or the order the regions are
    done in. ``read(slices)`` reads classes, ``write(slices, labels)`` writes labels; with ``out_read(slices)``
    (reading them back) each block is labelled once, its local labels parked in the output between the passes
    (Dask tasks label twice instead: they share no state). Returns the number of objects.
    """
    from tqdm.auto import tqdm

    regions = block_regions(tuple(shape), block)
    bar = tqdm(total=2 * len(regions), desc="instances", unit="block", disable=not progress, leave=False)
    candidates, kept = [], []
    for region in regions:
        objects = region_objects(read, tuple(shape), region, context, label)
        candidates.append(objects.candidates())
        if out_read is not None:  # park the local labels in the output; pass 2 renumbers them in place
            write(region_slices(region), objects.core.astype(np.int32))
            kept.append(objects.firsts)
        bar.update(1)
    table = first_pixel_table(candidates, context)
    for i, region in enumerate(regions):
        where = region_slices(region)
        if out_read is not None:
            objects = RegionObjects(
                np.asarray(out_read(where)), kept[i], np.zeros(0, np.int64), tuple(shape), region
            )
        else:
            objects = region_objects(read, tuple(shape), region, context, label)
        write(where, objects.global_ids(table).astype(np.int32))
        bar.update(1)
    bar.close()
    return len(table)
