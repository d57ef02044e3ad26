"""Object scale: a U-Net segments objects near the size it learnt. ``--diameter D`` rescales an image whose
objects are about ``D`` pixels across to the model's training scale (``preprocessing["object_diameter"]``, the
median object diameter of its training masks), predicts, and maps the probabilities back to the image's own
size; ``--diameter auto`` estimates ``D`` from a first pass (the median diameter of the objects it finds).

A model trained on many scales (the built-in ones) records the range it segments well instead
(``preprocessing["object_diameter_range"]``): images whose objects lie inside it are left as they are, others
are brought to the nearest end of it."""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

from ..data.checks import object_diameters, typical_diameter
from ..data.resample import zoom_image
from ..errors import ConfigError

__all__ = ["estimate_diameter", "parse_diameter", "rescale", "resize_to", "target_diameter"]

log = logging.getLogger(__name__)

#: scale factors closer to 1 than this are not worth a resampling
NEGLIGIBLE = 0.05
#: the largest rescaling ``--diameter`` applies either way (beyond it the image, or the objects, vanish)
MAX_FACTOR = 8.0


def parse_diameter(value: str | float | None) -> float | str | None:
    """``--diameter``: None, "auto", or a positive number of pixels."""
    if value is None or value == "auto":
        return value
    try:
        d = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"--diameter {value!r}: give the objects' diameter in pixels, e.g. 17, or auto"
        ) from None
    if not 0 < d < 1e5:
        raise ConfigError(f"--diameter must be a positive number of pixels, got {value}")
    return d


def factor_for(diameter: float, trained: float) -> float:
    """How much to zoom an image whose objects are ``diameter`` px so they become ``trained`` px."""
    factor = trained / diameter
    if not 1 / MAX_FACTOR <= factor <= MAX_FACTOR:
        raise ConfigError(
            f"--diameter {diameter:g}: the model learnt objects of {trained:g} px; rescaling by {factor:.3g} is "
            f"beyond 1/{MAX_FACTOR:g}..{MAX_FACTOR:g}"
        )
    return factor


def target_diameter(diameter: float, trained: float, trained_range: list[float] | None = None) -> float:
    """The object size to bring ``diameter`` to: ``trained``, or with a recorded ``trained_range`` the nearest
    size inside it (``diameter`` itself when it lies inside)."""
    if not trained_range:
        return trained
    lo, hi = float(trained_range[0]), float(trained_range[1])
    return min(max(diameter, lo), hi)


#: a channels-first image ``(C, *spatial)`` zoomed by a factor in its spatial axes (linear)
rescale = zoom_image


def resize_to(probs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Probabilities ``(C, *spatial)`` resampled to the spatial ``shape`` (linear), back on the image's grid."""
    factors = [t / s for t, s in zip(shape, probs.shape[1:], strict=True)]
    out = ndi.zoom(probs, (1, *factors), order=1, mode="nearest", grid_mode=True)
    if out.shape[1:] != tuple(shape):  # zoom rounds sizes: pad or cut the last row/column
        pad = [(0, 0)] + [(0, max(0, t - s)) for t, s in zip(shape, out.shape[1:], strict=True)]
        out = np.pad(out, pad, mode="edge")[(slice(None), *(slice(0, t) for t in shape))]
    return out.astype(np.float32, copy=False)


def estimate_diameter(labels: np.ndarray, volume: bool = False) -> float | None:
    """The typical equivalent diameter of the objects in ``labels`` (:func:`~unetkit.data.checks.typical_diameter`:
    the median weighted by object area); None when there are no objects."""
    return typical_diameter(object_diameters(labels, volume), volume)
