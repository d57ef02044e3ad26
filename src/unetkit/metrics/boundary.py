"""Boundary distances between a predicted and a true mask, in pixels (or in ``spacing`` units).

The surface of a mask is its set of boundary pixels (mask pixels with a 4-neighbour outside the mask, the
image border counting as outside). With d(a, B) the Euclidean distance from a surface pixel a of A to the
nearest surface pixel of B (exact Euclidean distance transforms):

- Hausdorff distance: HD = max( max_a d(a, B), max_b d(b, A) );
- HD95 = max( P95_a d(a, B), P95_b d(b, A) ), the larger of the two directed 95th percentiles (as MONAI's
  ``compute_hausdorff_distance(percentile=95)`` and the Medical Segmentation Decathlon);
- mean surface distance (symmetric, "ASSD"): the mean of all d(a, B) and d(b, A) together.

Both masks empty: 0 (agreement). Exactly one empty: undefined, reported as NaN (``null`` in JSON).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["boundary_scores", "surface_distances"]


def _surface(mask: np.ndarray) -> np.ndarray:
    eroded = ndi.binary_erosion(mask, ndi.generate_binary_structure(mask.ndim, 1), border_value=0)
    return mask & ~eroded


def surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances: from every surface pixel of ``pred`` to ``truth``'s surface, and back."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground-truth shape {t.shape}")
    sp, st = _surface(p), _surface(t)
    to_t = ndi.distance_transform_edt(~st, sampling=spacing)
    to_p = ndi.distance_transform_edt(~sp, sampling=spacing)
    return to_t[sp], to_p[st]


def boundary_scores(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """``{"hausdorff", "hd95", "mean_surface_distance"}`` of two binary masks (see the module docstring)."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    if not p.any() and not t.any():
        return {"hausdorff": 0.0, "hd95": 0.0, "mean_surface_distance": 0.0}
    if not p.any() or not t.any():
        nan = float("nan")
        return {"hausdorff": nan, "hd95": nan, "mean_surface_distance": nan}
    a, b = surface_distances(p, t, spacing)
    return {
        "hausdorff": float(max(a.max(), b.max())),
        "hd95": float(max(np.percentile(a, 95), np.percentile(b, 95))),
        "mean_surface_distance": float(np.concatenate([a, b]).mean()),
    }
