"""Resampling an image and its labels by one factor (``--input-scale``, ``--diameter``): linear for pixels, nearest
for labels, the output size ``round(size * factor)`` on both, so image and mask stay aligned."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["scaled_shape", "zoom_image", "zoom_labels"]


def scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, ...]:
    """The size :func:`zoom_image` and :func:`zoom_labels` give ``shape`` (spatial axes only)."""
    return tuple(max(1, round(s * factor)) for s in shape)


def zoom_image(x: np.ndarray, factor: float) -> np.ndarray:
    """A channels-first image ``(C, *spatial)`` zoomed by ``factor`` in its spatial axes (linear)."""
    return ndi.zoom(x, (1, *[factor] * (x.ndim - 1)), order=1, mode="nearest", grid_mode=True)


def zoom_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """A label image (instances, classes) zoomed by ``factor`` (nearest: no new values)."""
    return ndi.zoom(labels, factor, order=0, mode="nearest", grid_mode=True)
