"""Explicit intensity normalisation, recorded in the checkpoint and applied identically at predict time.

Never "divide by 255 if the maximum exceeds 1": the same scheme maps 8-bit, 16-bit and float images to
the same range, per image and channel.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["METHODS", "normalize"]

METHODS = ("percentile", "minmax", "zscore", "none")


def normalize(
    image: np.ndarray, method: str = "percentile", low: float = 1.0, high: float = 99.8
) -> np.ndarray:
    """Normalise a ``(C, H, W)`` image per channel and return float32.

    - ``percentile``: the ``low`` and ``high`` percentiles map to 0 and 1 (robust to hot pixels; the
      default of StarDist and Cellpose). Values outside are not clipped.
    - ``minmax``: minimum → 0, maximum → 1.
    - ``zscore``: zero mean, unit standard deviation.
    - ``none``: values as stored, as float32.
    A constant channel maps to 0.
    """
    if method not in METHODS:
        raise ConfigError(f"normalization {method!r} is unknown; choose one of {', '.join(METHODS)}")
    x = image.astype(np.float32, copy=True)
    if method == "none":
        return x
    flat = x.reshape(x.shape[0], -1)
    if method == "percentile":
        lo, hi = np.percentile(flat, [low, high], axis=1)
    elif method == "minmax":
        lo, hi = flat.min(axis=1), flat.max(axis=1)
    else:
        lo, hi = flat.mean(axis=1), flat.mean(axis=1) + flat.std(axis=1)
    scale = np.where(hi - lo > 1e-8, hi - lo, 1.0).astype(np.float32)
    x -= lo.astype(np.float32)[:, None, None]
    x /= scale[:, None, None]
    return x
