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

import logging
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "INSTANCE_METHODS",
    "expand_labels",
    "instances_blockwise",
    "instances_from_classes",
    "label_instances",
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


def instances_blockwise(
    read: Callable[[slice, slice], np.ndarray],
    shape: tuple[int, int],
    write: Callable[[slice, slice, np.ndarray], None],
    label: Callable[[np.ndarray], np.ndarray],
    *,
    block: int = 2048,
    context: int = 128,
    out_read: Callable[[slice, slice], np.ndarray] | None = None,
    progress: bool = False,
) -> int:
    """Instance labels of an image too large for memory, block by block, with one ID per object.

    Each ``block`` x ``block`` core is labelled (``label``: classes → int labels) together with ``context``
    pixels around it; an object is kept by the block whose core holds its first pixel (raster order), and
    written whole, so an object crossing block borders gets one ID as long as it is smaller than
    ``context`` (as StarDist's ``predict_instances_big``). ``read(rows, cols)`` reads classes,
    ``write(rows, cols, labels)`` writes labels (``out_read`` reads them back, to paint objects over
    earlier blocks' context). Returns the number of objects.
    """
    from tqdm.auto import tqdm

    h, w = shape
    total = 0
    truncated = 0
    corners = [(y0, x0) for y0 in range(0, h, block) for x0 in range(0, w, block)]
    for y0, x0 in tqdm(corners, desc="instances", unit="block", disable=not progress, leave=False):
        ry = slice(max(0, y0 - context), min(h, y0 + block + context))
        rx = slice(max(0, x0 - context), min(w, x0 + block + context))
        labels = label(read(ry, rx))
        flat = labels.ravel()
        nz = np.flatnonzero(flat)
        ids, first = np.unique(flat[nz], return_index=True)
        fy, fx = np.divmod(nz[first], labels.shape[1])
        fy, fx = fy + ry.start, fx + rx.start
        mine = (fy >= y0) & (fy < y0 + block) & (fx >= x0) & (fx < x0 + block)
        keep = np.zeros(int(flat.max()) + 1, np.int64)
        keep[ids[mine]] = np.arange(1, int(mine.sum()) + 1) + total
        edge = _outer_edge_ids(labels, ry, rx, shape)
        truncated += int(np.isin(ids[mine], edge).sum())
        painted = keep[labels]
        if painted.any():
            current = out_read(ry, rx) if out_read is not None else np.zeros(labels.shape, np.int32)
            write(ry, rx, np.where(painted > 0, painted, current).astype(np.int32))
        total += int(mine.sum())
    if truncated:
        log.warning(
            "%d object(s) reach beyond the %d-pixel context of their block and may be split; "
            "raise the block context (CLI: --object-context)",
            truncated,
            context,
        )
    return total


def _outer_edge_ids(labels: np.ndarray, ry: slice, rx: slice, shape: tuple[int, int]) -> np.ndarray:
    """Labels on the block region's borders that are inside the image (cut by the region, not the image)."""
    edges = []
    if ry.start > 0:
        edges.append(labels[0])
    if ry.stop < shape[0]:
        edges.append(labels[-1])
    if rx.start > 0:
        edges.append(labels[:, 0])
    if rx.stop < shape[1]:
        edges.append(labels[:, -1])
    return np.unique(np.concatenate(edges)) if edges else np.zeros(0, labels.dtype)
