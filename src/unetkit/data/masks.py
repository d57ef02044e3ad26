"""Mask encodings → training targets, identical at training and evaluation time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["ENCODINGS", "encode_mask"]

ENCODINGS = ("binary",)


def encode_mask(mask: np.ndarray, encoding: str = "binary", name: str | Path = "mask") -> np.ndarray:
    """Decode a stored mask into a class-index target ``(H, W)`` uint8.

    ``binary``: 0 is background, any non-zero value foreground (covers 0/1, 0/255 and instance labels).
    """
    if encoding not in ENCODINGS:
        raise DataError(f"mask encoding {encoding!r} is unknown; choose one of {', '.join(ENCODINGS)}")
    if mask.ndim == 3:
        if mask.shape[-1] in (3, 4) and all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, 3)):
            mask = mask[..., 0]
        else:
            raise DataError(
                f"{name}: a colour mask (shape {mask.shape}) cannot be read as '{encoding}'; save masks as "
                "single-channel label images"
            )
    return (mask != 0).astype(np.uint8)
