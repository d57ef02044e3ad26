"""Reading and writing images and masks (PNG, JPEG, TIFF, NumPy).

Images come back as NumPy arrays ``(H, W)`` or ``(H, W, C)`` with their stored dtype; nothing is
rescaled here (normalisation is an explicit, recorded step: :mod:`unetkit.data.normalize`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..errors import DataError

__all__ = ["IMAGE_SUFFIXES", "read_image", "to_channels_first", "write_image"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".npy")


def read_image(path: str | Path) -> np.ndarray:
    """Read one 2-D image (grayscale or multi-channel) without changing its values.

    Returns ``(H, W)`` or ``(H, W, C)``. Palette PNGs return their indices; 16-bit PNGs keep 16 bits.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            arr = tifffile.imread(path)
        else:
            with Image.open(path) as im:
                arr = _pil_to_array(im)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DataError(f"{path}: cannot be read as an image ({exc})") from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] > 4:
        arr = np.moveaxis(arr, 0, -1)  # TIFF/NumPy stored channels-first
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise DataError(
            f"{path}: expected a 2-D image (H, W) or (H, W, C), found shape {arr.shape}; "
            "3-D stacks are not supported yet: save each plane as its own image"
        )
    return arr


def _pil_to_array(im: Image.Image) -> np.ndarray:
    if im.mode == "P":
        return np.asarray(im)  # palette indices, not colours
    if im.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im).astype(np.uint16, copy=False)
    if im.mode == "I":
        arr = np.asarray(im)
        return arr.astype(np.uint16) if arr.min() >= 0 and arr.max() < 2**16 else arr
    if im.mode in ("1", "L", "F", "RGB", "RGBA", "LA"):
        return np.asarray(im)
    return np.asarray(im.convert("RGB"))


def to_channels_first(image: np.ndarray, channels: int | None, name: str | Path = "image") -> np.ndarray:
    """``(H, W[, C])`` → ``(C, H, W)`` matching ``channels`` (``None``: keep what the image has).

    An alpha channel is dropped with a note; a colour image whose channels are all equal (common for
    grayscale data saved as RGB) becomes one channel when one is wanted. Any other mismatch is an error.
    """
    arr = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    if arr.shape[0] in (2, 4) and channels != arr.shape[0]:
        log.info("%s: dropping the alpha channel", name)
        arr = arr[:-1]
    if channels is None or arr.shape[0] == channels:
        return arr
    if channels == 1 and all(np.array_equal(arr[0], arr[c]) for c in range(1, arr.shape[0])):
        return arr[:1]
    raise DataError(
        f"{name}: has {arr.shape[0]} channel(s) but {channels} are expected (the model's in_channels); "
        f"convert the image, or train a model with in_channels={arr.shape[0]}"
    )


def write_image(path: str | Path, array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an array as PNG (uint8/uint16, 2-D or RGB) or TIFF (any dtype), atomically.

    Refuses to replace an existing file unless ``overwrite`` is true.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise DataError(f"{path}: already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        if suffix in (".tif", ".tiff"):
            tifffile.imwrite(tmp, array, compression="zlib")
        elif suffix == ".png":
            if array.dtype not in (np.uint8, np.uint16):
                raise DataError(f"{path}: PNG holds uint8 or uint16, got {array.dtype}; use .tif")
            Image.fromarray(array).save(tmp, format="PNG")
        elif suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, array)
        else:
            raise DataError(f"{path}: unsupported output format {suffix!r}; use .png, .tif or .npy")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
