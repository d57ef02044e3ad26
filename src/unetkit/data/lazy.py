"""Images read window by window, so that an image larger than memory can be segmented.

:func:`open_image` returns an :class:`ImageSource`: a read-only ``(C, H, W)`` view of an image file whose
windows are read on demand. TIFFs are memory-mapped when stored uncompressed and contiguously, and read
tile by tile or strip by strip through tifffile's zarr view otherwise; zarr arrays (and OME-Zarr groups,
whose full-resolution level is used) are read chunk by chunk; ``.npy`` files are memory-mapped. PNG, JPEG
and BMP have no random access and are read whole.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import DataError
from .io import (
    VOLUME_SUFFIXES,
    channel_axes,
    channel_indices,
    decoding_error,
    read_image,
    stored_channels_first,
    tiff_alpha_samples,
    unreadable,
)

__all__ = ["LAZY_SUFFIXES", "ImageSource", "image_size", "ome_level", "ome_placement", "open_image"]


class ImageSource:
    """A ``(C, H, W)`` view of a stored image (``(C, D, H, W)`` of a volume, ``spatial_dims=3``);
    ``source[..., y0:y1, x0:x1]`` (``source[..., z0:z1, y0:y1, x0:x1]``) reads one window.

    ``array`` is any sliceable array (NumPy, memmap, zarr) with the channels on ``channel_axis`` (``None``:
    a single channel). ``channels`` selects and orders the stored channels (see :meth:`select`).
    """

    def __init__(
        self,
        array: Any,
        channel_axis: int | None,
        name: str | Path = "image",
        handle: Any = None,
        spatial_dims: int = 2,
        alpha: bool = False,
    ):
        if len(array.shape) - (channel_axis is not None) != spatial_dims:
            what = "2-D image" if spatial_dims == 2 else "3-D volume"
            raise DataError(f"{name}: expected a {what}, found an array of shape {tuple(array.shape)}")
        self.spatial_dims = spatial_dims
        self.array = array
        self.channel_axis = channel_axis
        self.name = str(name)
        self._handle = handle
        stored = 1 if channel_axis is None else array.shape[channel_axis]
        self.index = list(range(stored))
        #: the last stored channel is alpha (the file or the viewer says so; never inferred from the count)
        self.alpha = bool(alpha) and channel_axis is not None and stored > 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(n for a, n in enumerate(self.array.shape) if a != self.channel_axis)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.spatial_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def __getitem__(self, key: tuple) -> np.ndarray:
        if not (isinstance(key, tuple) and key and key[0] is Ellipsis and len(key) == 1 + self.spatial_dims):
            raise IndexError("read windows as source[..., rows, cols] (source[..., planes, rows, cols])")
        spatial = list(key[1:])
        try:
            if self.channel_axis is None:
                block = np.asarray(self.array[tuple(spatial)])[None]
            else:
                sel: list[Any] = spatial
                sel.insert(self.channel_axis, slice(None))
                block = np.moveaxis(np.asarray(self.array[tuple(sel)]), self.channel_axis, 0)
        except Exception as exc:  # a damaged compressed tile or strip (zlib, LZW, JPEG ...) found on reading
            if isinstance(exc, DataError) or not decoding_error(exc):
                raise
            raise unreadable(Path(self.name), exc) from None
        return block if self.index == list(range(block.shape[0])) else block[self.index]

    def subsample(self, max_pixels: int = 1 << 22) -> np.ndarray:
        """A regular grid of at most about ``max_pixels`` pixels per channel (the whole image when small)."""
        n = math.prod(self.spatial_shape)
        stride = max(1, math.ceil((n / max_pixels) ** (1 / self.spatial_dims)))
        return self[(Ellipsis, *(slice(None, None, stride),) * self.spatial_dims)]

    def read(self) -> np.ndarray:
        """The whole image as a ``(C, H, W)`` (``(C, D, H, W)``) NumPy array."""
        return self[(Ellipsis, *(slice(None),) * self.spatial_dims)]

    def select(self, channels: int | None, pick: int | None = None) -> ImageSource:
        """Keep the stored channels a model with ``channels`` inputs needs (rules of ``to_channels_first``,
        decided on a subsample: an RGB file holding gray data feeds a 1-channel model, alpha is dropped;
        ``pick``: the channel a one-channel model reads, ``--channel``)."""
        stored = 1 if self.channel_axis is None else self.array.shape[self.channel_axis]
        self.index = list(range(stored))
        if pick is not None:  # the user's choice: no pixels needed
            self.index = channel_indices(np.empty((stored, 0)), channels, self.name, pick=pick)
        else:
            self.index = channel_indices(self.subsample(1 << 16), channels, self.name, alpha=self.alpha)
        return self

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SMALL_DECODE = 1 << 26  # compressed TIFFs up to this many values are decoded whole when opened


def open_image(path: str | Path, *, volume: bool = False, channels: int | None = None) -> ImageSource:
    """Open an image file (or a ``.zarr`` folder) for windowed reading; see the module docstring.

    ``volume``: a 3-D volume ``(D, H, W[, C])`` (a TIFF z-stack, a zarr array, a ``.npy``), read window by window
    the same way. ``channels``: the channels the reader expects; a TIFF whose unlabelled pages are that many
    channels is read as one image (:func:`~unetkit.data.io.pages_reading`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".zarr" or _inside_zarr(path):
        return _open_zarr(path, volume)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    opener = _OPENERS.get(suffix)
    try:
        if opener is not None:
            return opener(path, volume, channels)
    except DataError:
        raise
    except Exception as exc:
        if not decoding_error(exc):
            raise
        raise unreadable(path, exc) from None
    if volume:
        raise DataError(f"{path}: volumes are read from {', '.join(VOLUME_SUFFIXES)} files, not {suffix}")
    arr = read_image(path)
    return ImageSource(arr, 2 if arr.ndim == 3 else None, path)


def _open_npy(path: Path, volume: bool = False, channels: int | None = None) -> ImageSource:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)  # mapped: windows read from the file
    if volume:
        return _volume_source(arr, path)
    if stored_channels_first(arr.shape):
        return ImageSource(arr, 0, path)
    return ImageSource(arr, 2 if arr.ndim == 3 else None, path)


def _inside_zarr(path: Path) -> bool:
    """An array inside a ``.zarr`` store (e.g. one level of an OME-Zarr pyramid, ``image.ome.zarr/1``)."""
    return path.is_dir() and any(p.suffix.lower() == ".zarr" for p in path.parents)


def image_size(path: str | Path) -> tuple[int, int]:
    """Height and width of an image file without reading its pixels (PNG/JPEG/BMP: the header only)."""
    path = Path(path)
    if path.suffix.lower() in LAZY_SUFFIXES or _inside_zarr(path):
        with open_image(path) as src:
            h, w = src.spatial_shape[-2:]
            return h, w
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception as exc:
        if not decoding_error(exc):
            raise
        raise unreadable(path, exc) from None


def _volume_source(arr: Any, path: Path, handle: Any = None) -> ImageSource:
    """``(D, H, W)``, ``(C, D, H, W)`` (few channels first) or ``(D, H, W, C)`` as a volume source."""
    shape = tuple(arr.shape)
    if len(shape) == 3:
        return ImageSource(arr, None, path, handle, spatial_dims=3)
    if len(shape) == 4 and shape[0] <= 4 < shape[-1]:
        return ImageSource(arr, 0, path, handle, spatial_dims=3)
    if len(shape) == 4 and shape[-1] <= 4:
        return ImageSource(arr, 3, path, handle, spatial_dims=3)
    raise DataError(
        f"{path}: an array of shape {shape} is not a volume (D, H, W), (C, D, H, W) or (D, H, W, C)"
    )


def _open_tiff(path: Path, volume: bool = False, channels: int | None = None) -> ImageSource:
    tif = tifffile.TiffFile(path)
    try:
        series = tif.series[0]
        axes = series.axes
        if not volume:  # unlabelled pages that are the channels the reader expects: one image
            axes = channel_axes(axes, tuple(series.shape), tif.is_shaped, channels) or axes
        squeeze = [i for i, a in enumerate(axes) if a not in "YXSC" and series.shape[i] == 1]
        core = [a for i, a in enumerate(axes) if i not in squeeze]
        if volume:
            planes = [a for a in core if a not in "YXSC"]
            if len(planes) != 1 or core.index(planes[0]) != 0:
                raise DataError(
                    f"{path}: axes {axes} (shape {series.shape}) are not one z-stack of 2-D planes; "
                    "save the volume as (Z, Y, X[, C])"
                )
        elif any(a not in "YXSC" for a in core) or len(core) > 3:
            raise DataError(
                f"{path}: holds a stack (axes {axes}, shape {series.shape}); predict takes one 2-D image per "
                "file: split the stack, or save one plane per file"
            )
        offset, size = series.dataoffset, path.stat().st_size
        if offset is not None and offset + series.nbytes > size:
            raise DataError(
                f"{path}: truncated: its header declares {series.nbytes} bytes of pixels at byte {offset}, the "
                f"file holds {size} bytes; copy the file again from its source"
            )
        try:  # uncompressed and contiguous: map it, read-only (a read-write map could change the user's file)
            arr: Any = tifffile.memmap(path, mode="r")
        except ValueError:  # compressed or not contiguous: small ones decoded now, large ones tile by tile
            if series.size <= SMALL_DECODE:
                arr = series.asarray()
            else:
                import zarr

                arr = zarr.open(series.aszarr(), mode="r")
        if squeeze:
            arr = _Squeezed(arr, squeeze)
        channel_axis = next((i for i, a in enumerate(core) if a in "SC"), None)
        alpha = (
            channel_axis is not None and core[channel_axis] == "S" and tiff_alpha_samples(tif.pages[0]) > 0
        )
        return ImageSource(arr, channel_axis, path, handle=tif, spatial_dims=3 if volume else 2, alpha=alpha)
    except Exception:
        tif.close()
        raise


def _multiscales(attrs: Any) -> list[dict[str, Any]] | None:
    """An OME-Zarr group's ``multiscales`` (NGFF 0.4 at the top of the attributes, 0.5 under ``ome``)."""
    found = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    return found if isinstance(found, list) and found and isinstance(found[0], dict) else None


def ome_level(path: str | Path, level: int) -> Path:
    """The array of resolution ``level`` (0: full resolution) of the OME-Zarr image ``path``."""
    import zarr

    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr: FileNotFoundError / GroupNotFoundError, ValueError for bad metadata
        if not decoding_error(exc, missing=True):
            raise
        raise DataError(f"{path}: --level reads OME-Zarr images; this is not a zarr group") from None
    scales = _multiscales(group.attrs)
    if not scales:
        raise DataError(f"{path}: --level reads OME-Zarr images; this zarr group has no multiscales metadata")
    datasets = scales[0].get("datasets") or []
    group_any: Any = group
    if not 0 <= level < len(datasets):
        sizes = ", ".join(
            f"{i}: {'x'.join(map(str, group_any[d['path']].shape))}"
            for i, d in enumerate(datasets)
            if d["path"] in group
        )
        raise DataError(f"{path}: --level {level} does not exist; its levels are {sizes}")
    key = str(datasets[level].get("path"))
    if Path(key).is_absolute() or ".." in Path(key).parts:
        raise DataError(f"{path}: the multiscales path {key[:80]!r} points outside the store")
    return path / key


def ome_placement(path: str | Path) -> dict[str, Any] | None:
    """Where the pixels of ``path`` lie when it is a level of an OME-Zarr image: ``scale`` and
    ``translation`` (y, x; the level's own) and ``units`` (y, x; None when not given); else None."""
    import zarr

    path = Path(path)
    for group_path, key in ((path.parent, path.name), (path, None)):
        try:
            group = zarr.open_group(str(group_path), mode="r")
        except Exception as exc:  # not a group (or not a readable one): the next place, or none
            if not decoding_error(exc, missing=True):
                raise
            continue
        scales = _multiscales(group.attrs)
        if not scales:
            continue
        axes = [a.get("name") if isinstance(a, dict) else a for a in scales[0].get("axes") or []]
        units = [a.get("unit") if isinstance(a, dict) else None for a in scales[0].get("axes") or []]
        for dataset in scales[0].get("datasets") or []:
            if key is not None and dataset.get("path") != key:
                continue
            moves = {
                t.get("type"): t.get(t.get("type")) for t in dataset.get("coordinateTransformations") or []
            }
            scale, shift = moves.get("scale"), moves.get("translation") or [0.0] * len(axes)
            if not isinstance(scale, list) or "y" not in axes or "x" not in axes or len(scale) != len(axes):
                return None
            iy, ix = axes.index("y"), axes.index("x")
            return {
                "scale": (float(scale[iy]), float(scale[ix])),
                "translation": (float(shift[iy]), float(shift[ix]))
                if len(shift) == len(axes)
                else (0.0, 0.0),
                "units": (units[iy], units[ix]),
            }
    return None


#: the largest zarr metadata file read (a plate of thousands of wells stays under 1 MB)
ZARR_MAX_METADATA = 16 * 2**20
#: the largest chunk decompressed at once (a 4096² float32 chunk is 64 MiB)
ZARR_MAX_CHUNK = 512 * 2**20
_ZARR_METADATA = (".zattrs", ".zarray", ".zgroup", ".zmetadata", "zarr.json")


def check_zarr_metadata(folder: Path) -> None:
    """Metadata files are bounded in size before zarr parses them (a 144 MB .zattrs took minutes)."""
    for name in _ZARR_METADATA:
        f = folder / name
        if f.is_file() and f.stat().st_size > ZARR_MAX_METADATA:
            raise DataError(
                f"{f}: {f.stat().st_size:,} bytes of metadata (at most {ZARR_MAX_METADATA:,}): not an image store "
                "unetkit reads"
            )


def _zarr_array(path: Path) -> Any:
    """The image array of a zarr array or group (an OME-Zarr image's full resolution, or its first array),
    its metadata and chunk size bounded before anything is decompressed."""
    import zarr

    node: Any
    check_zarr_metadata(path)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        if not decoding_error(exc, missing=True):
            raise
        raise DataError(f"{path}: cannot be opened as a zarr array or group ({exc})") from None
    if isinstance(node, zarr.Group):
        attrs: Any = node.attrs
        multiscales = _multiscales(attrs)
        key = (
            multiscales[0]["datasets"][0].get("path") if multiscales else next(iter(node.array_keys()), None)
        )
        if key is None:
            raise DataError(f"{path}: a zarr group without arrays; point predict at the image array")
        parts = Path(str(key)).parts
        if not isinstance(key, str) or not parts or Path(key).is_absolute() or ".." in parts:
            raise DataError(f"{path}: the multiscales path {str(key)[:80]!r} points outside the store")
        check_zarr_metadata(path / key)
        try:
            node = node[key]
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: the multiscales path {key[:80]!r} names no array ({exc})") from None
    check_zarr_chunks(node, path)
    return node


def check_zarr_chunks(node: Any, path: Path) -> None:
    """A chunk is decompressed whole: one larger than :data:`ZARR_MAX_CHUNK` is refused from the metadata (a
    512² image stored as one 60000² chunk inflated to 3.4 GiB)."""
    chunk = math.prod(node.chunks) * node.dtype.itemsize
    if chunk > ZARR_MAX_CHUNK:
        raise DataError(
            f"{path}: chunks of {'x'.join(map(str, node.chunks))} ({chunk / 2**30:.1f} GiB each, for an array of "
            f"{'x'.join(map(str, node.shape))}) would be decompressed whole; rechunk the store (e.g. 1024x1024)"
        )


def missing_chunks(path: str | Path) -> str | None:
    """Why the zarr image ``path`` is incomplete (chunks missing, as an unfinished copy leaves a store), or None.

    zarr reads a missing chunk as the array's fill value without a word, so an incomplete store would be
    segmented as if its missing parts were empty. Stores that leave chunks equal to the fill value unwritten on
    purpose are read with ``--fill-missing-chunks``."""
    path = Path(path)
    if not (path.suffix.lower() == ".zarr" or _inside_zarr(path)):
        return None
    node = _zarr_array(path)
    total, stored = int(node.nchunks), int(node.nchunks_initialized)
    if stored >= total:
        return None
    return (
        f"{path}: {total - stored:,} of {total:,} chunks are missing (an unfinished copy?); zarr would read them as "
        f"the fill value {node.fill_value!r}: copy the store again, or pass --fill-missing-chunks if the store "
        "leaves chunks equal to its fill value unwritten on purpose"
    )


def _open_zarr(path: Path, volume: bool = False) -> ImageSource:
    node = _zarr_array(path)
    shape = node.shape
    lead = 0
    while len(shape) - lead > (3 if volume else 2) and shape[lead] == 1:
        lead += 1
    if lead:
        node = _Squeezed(node, list(range(lead)))
        shape = node.shape
    if volume:
        return _volume_source(node, path)
    if len(shape) == 2:
        return ImageSource(node, None, path)
    if len(shape) == 3 and shape[0] <= 4 < shape[-1]:
        return ImageSource(node, 0, path)  # (C, Y, X), the OME-Zarr order
    if len(shape) == 3 and shape[-1] <= 4:
        return ImageSource(node, 2, path)
    raise DataError(
        f"{path}: zarr array of shape {tuple(shape)} is not a 2-D image (Y, X), (C, Y, X) or (Y, X, C)"
    )


class _Squeezed:
    """An array seen without some of its singleton axes (OME-Zarr's t, c, z of size 1; TIFF's Q, I)."""

    def __init__(self, array: Any, drop: list[int]):
        self.array, self.drop = array, drop
        self.shape = tuple(n for i, n in enumerate(array.shape) if i not in drop)
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: tuple) -> np.ndarray:
        full = list(key)
        for i in self.drop:
            full.insert(i, 0)
        return self.array[tuple(full)]


#: how each windowed file format is opened (the windowed counterpart of :data:`~unetkit.data.io.FORMATS`)
_OPENERS = {".tif": _open_tiff, ".tiff": _open_tiff, ".npy": _open_npy}
#: the files read window by window (a ``.zarr`` store too, opened by :func:`_open_zarr`); other formats are
#: decoded whole (:data:`~unetkit.data.io.FORMATS`) when opened
LAZY_SUFFIXES = (*_OPENERS, ".zarr")
