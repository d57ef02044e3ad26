"""Reading a window of an array with mirror extrapolation outside it (the paper's Fig. 2), in part.

Shared by training (patches near the border) and inference (tiles): pure NumPy, no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["read_window", "reflect_indices"]


def reflect_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Indices ``start..stop-1`` mirrored into ``[0, length)`` without repeating the edge pixel
    (NumPy's ``reflect`` mode, applied as often as needed)."""
    idx = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(idx)
    period = 2 * length - 2
    idx = np.mod(idx, period)
    return np.where(idx >= length, period - idx, idx)


def read_window(array: Any, window: Sequence[tuple[int, int]]) -> np.ndarray:
    """Read ``window`` (one ``(start, stop)`` per trailing spatial axis) from ``array``, mirroring outside.

    Only the bounding box of the needed pixels is sliced from ``array``, so memory-mapped or lazy arrays
    are read in part. Leading axes (channels) are kept whole.
    """
    spatial = array.shape[-len(window) :]
    key: Any
    if all(0 <= a and b <= n for (a, b), n in zip(window, spatial, strict=True)):
        key = (..., *(slice(a, b) for a, b in window))
        return np.asarray(array[key])
    indices = [reflect_indices(a, b, n) for (a, b), n in zip(window, spatial, strict=True)]
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)
    key = (..., *box)
    block = np.asarray(array[key])
    key = (..., *np.ix_(*(i - s.start for i, s in zip(indices, box, strict=True))))
    return block[key]
