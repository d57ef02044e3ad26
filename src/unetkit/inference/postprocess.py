"""From predicted classes to objects."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["expand_labels", "label_instances"]


def expand_labels(labels: np.ndarray, distance: float) -> np.ndarray:
    """Grow every object into the background by up to ``distance`` pixels without merging objects
    (each background pixel joins its nearest object; as scikit-image's ``expand_labels``)."""
    if distance <= 0:
        return labels
    dist, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    grown = labels[iy, ix]
    return np.where((labels == 0) & (dist > distance), 0, grown).astype(labels.dtype)


def label_instances(
    classes: np.ndarray, foreground: tuple[int, ...] = (1,), *, min_size: int = 8, grow: float = 0.0
) -> np.ndarray:
    """Objects = 4-connected components of the ``foreground`` classes (e.g. the interior class of a model
    trained with separation borders), without components under ``min_size`` pixels, grown by ``grow`` pixels
    (to give back a border gap cut in training). Returns int32 labels 1..N."""
    labels, n = ndi.label(np.isin(classes, foreground))
    if n and min_size > 1:
        small = np.bincount(labels.ravel()) < min_size
        small[0] = False
        labels[small[labels]] = 0
        labels, _ = ndi.label(labels > 0)  # consecutive ids again
    return expand_labels(labels.astype(np.int32), grow)
