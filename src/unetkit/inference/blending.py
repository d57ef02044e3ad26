"""Importance maps for blending overlapping tiles of a padded network.

A padded network is least reliable near its tile's borders (zero padding, missing context), so overlapping
tiles are averaged with weights that fall off towards the tile border:

- ``gaussian``: a Gaussian centred on the tile with sigma = ``sigma_scale`` x size per axis (0.125, as nnU-Net
  and MONAI), scaled to a maximum of 1 and floored at a small positive value so that every pixel keeps
  some weight;
- ``taper``: a linear ramp over ``ramp`` pixels from each border (a separable tent, flat in the middle);
- ``constant``: uniform weights (plain averaging).

Maps are cached per shape: a run uses one or two tile shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

__all__ = ["BLEND_MODES", "importance_map"]

BLEND_MODES = ("gaussian", "taper", "constant")
_FLOOR = 1e-3  # smallest weight, relative to the centre


def importance_map(
    shape: Sequence[int], mode: str = "gaussian", *, sigma_scale: float = 0.125, ramp: int | None = None
) -> np.ndarray:
    """Weights of one tile of spatial ``shape`` (float32, maximum 1, minimum > 0). Read-only and cached."""
    if mode not in BLEND_MODES:
        raise ValueError(f"blend mode {mode!r} is unknown; choose one of {', '.join(BLEND_MODES)}")
    return _cached(tuple(int(n) for n in shape), mode, float(sigma_scale), ramp)


@lru_cache(maxsize=16)
def _cached(shape: tuple[int, ...], mode: str, sigma_scale: float, ramp: int | None) -> np.ndarray:
    weights = np.ones(shape, np.float64)
    for axis, n in enumerate(shape):
        if mode == "gaussian":
            centre = (n - 1) / 2
            sigma = max(sigma_scale * n, 1e-6)
            profile = np.exp(-0.5 * ((np.arange(n) - centre) / sigma) ** 2)
        elif mode == "taper":
            r = max(1, ramp if ramp is not None else n // 4)
            i = np.arange(n)
            profile = np.minimum(1.0, (np.minimum(i, n - 1 - i) + 1) / (r + 1))
        else:
            profile = np.ones(n)
        weights *= profile.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    weights /= weights.max()
    out = np.maximum(weights, _FLOOR).astype(np.float32)
    out.setflags(write=False)
    return out
