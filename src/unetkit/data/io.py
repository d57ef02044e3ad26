"""Reading and writing images and masks (PNG, JPEG, TIFF, NumPy).

Images come back as NumPy arrays ``(H, W)`` or ``(H, W, C)`` with their stored dtype; nothing is
rescaled here (normalisation is an explicit, recorded step: :mod:`unetkit.data.normalize`).
"""

from __future__ import annotations

import errno
import logging
import pickle
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from ..atomic import atomic_path
from ..errors import ConfigError, DataError

__all__ = [
    "DECODER_PACKAGES",
    "DECODE_ERRORS",
    "FORMATS",
    "IMAGE_SUFFIXES",
    "UNLABELLED_AXES",
    "VOLUME_SUFFIXES",
    "ImageFormat",
    "channel_axes",
    "channel_indices",
    "check_pixel_values",
    "collapse_gray",
    "count_planes",
    "declares_alpha",
    "decoding_error",
    "pages_reading",
    "read_image",
    "read_volume",
    "sample_channels",
    "tiff_alpha_samples",
    "to_channels_first",
    "write_image",
    "write_volume",
]

log = logging.getLogger(__name__)


def read_image(path: str | Path, page: int | None = None) -> np.ndarray:
    """Read one 2-D image (grayscale or multi-channel) without changing its values.

    Returns ``(H, W)`` or ``(H, W, C)``. Palette PNGs return their indices; 16-bit PNGs keep 16 bits. A TIFF
    is read by its axes metadata: samples/channels become the last axis; a multi-page TIFF needs ``page``
    (one plane per sample, as in the ISBI layout).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); replace it or remove it from the dataset")
    suffix = path.suffix.lower()
    fmt = FORMATS.get(suffix, _PIL)
    try:
        arr = (fmt.read or _read_pil)(path, page)
    except DataError:
        raise
    except ValueError as exc:
        if suffix == ".npy" and "allow_pickle" in str(exc):  # e.g. Cellpose's NAME_seg.npy: a pickled dict
            raise DataError(
                f"{path}: holds Python objects, not an array (Cellpose's _seg.npy files do); unetkit never unpickles "
                "files: save the masks as PNG or TIFF (Cellpose: NAME_cp_masks.png)"
            ) from None
        raise unreadable(path, exc) from None
    except Exception as exc:
        if not (decoding_error(exc) or isinstance(exc, fmt.errors)):
            raise
        raise unreadable(path, exc) from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise DataError(
            f"{path}: expected a 2-D image (H, W) or (H, W, C), found shape {arr.shape}; "
            "for a stack with one sample per plane use the ISBI layout (--layout isbi)"
        )
    return arr


def check_pixel_values(pixels: np.ndarray, path: str | Path, sampled: bool = False) -> None:
    """Refuse pixel values no segmentation can be right for: complex numbers (their imaginary part would be
    lost), NaN or infinity. ``sampled``: ``pixels`` are a sample of the image (said in the message)."""
    if np.iscomplexobj(pixels):
        raise DataError(
            f"{path}: complex-valued pixels ({pixels.dtype}); save the magnitude (or one part) as a real image"
        )
    if np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all():
        bad = int((~np.isfinite(pixels)).sum())
        where = " in a sample of its pixels" if sampled else ""
        raise DataError(f"{path}: {bad} NaN or infinite pixel value(s){where}; fix or remove the image")


#: what image decoders raise for a damaged, truncated or foreign file: Pillow (OSError without an errno,
#: SyntaxError for broken PNG chunks, DecompressionBombError, a ValueError), tifffile (TiffFileError, a
#: ValueError; IndexError/KeyError on a broken directory), NumPy (ValueError, EOFError, UnpicklingError), zarr and
#: numcodecs (ValueError, KeyError on bad metadata), and their decompressors (zlib.error, struct.error)
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, SyntaxError, EOFError, IndexError, KeyError, OSError, struct.error, zlib.error,
    Image.DecompressionBombError, pickle.UnpicklingError,
)  # fmt: skip


#: packages whose own exception classes are decoders' complaints (imagecodecs raises DeflateError, LzwError …
#: for damaged compressed tiles; tifffile, Pillow, numcodecs and zarr their own errors)
DECODER_PACKAGES = ("imagecodecs", "numcodecs", "PIL", "tifffile", "zarr")


def decoding_error(exc: BaseException, *, missing: bool = False) -> bool:
    """Whether ``exc`` is a decoder's complaint about a file's bytes ("damaged or truncated"), as opposed to a
    fault of the machine (no memory; a permission, a missing file, an I/O error: an OSError with an errno) or
    a bug, which must propagate as what they are, and which ``--skip-bad`` must never skip. ``missing``: a
    missing file counts too (a store probed for a group that is not there)."""
    if isinstance(exc, (MemoryError, RecursionError)):
        return False
    if isinstance(exc, OSError) and exc.errno is not None:
        return missing and exc.errno == errno.ENOENT
    if isinstance(exc, DECODE_ERRORS):
        return True
    return type(exc).__module__.split(".")[0] in DECODER_PACKAGES


def unreadable(path: Path, exc: BaseException) -> DataError:
    """The error for a file that exists but cannot be decoded as an image."""
    return DataError(f"{path}: cannot be read as an image, the file is damaged or truncated ({exc})")


def stored_channels_first(shape: tuple[int, ...]) -> bool:
    """A 3-D NumPy image stored ``(C, H, W)`` (a few channels first, a longer last axis)."""
    return len(shape) == 3 and shape[0] in (1, 2, 3, 4) and shape[-1] > 4


def read_volume(path: str | Path) -> np.ndarray:
    """Read a 3-D volume: a multi-page TIFF (a z-stack), a 3-D or 4-D ``.npy``, or a ``.zarr`` array.

    Returns ``(D, H, W)`` or ``(D, H, W, C)``. TIFF planes (axes Z, I, Q, T...) become D; channel/sample
    axes become the last one. An ``.npy`` or zarr array ``(C, D, H, W)`` with few channels is moved to
    channels-last.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != ".zarr" and not path.is_file():
        raise DataError(f"{path}: no such file")
    fmt = FORMATS.get(suffix, _PIL)
    reader = fmt.volume
    if reader is None:
        raise DataError(
            f"{path}: volumes are read from {', '.join(VOLUME_SUFFIXES)} files, not {suffix or path.name}"
        )
    try:
        arr = reader(path)
    except DataError:
        raise
    except Exception as exc:
        if not (decoding_error(exc) or isinstance(exc, fmt.errors)):
            raise
        raise unreadable(path, exc) from None
    arr = np.squeeze(arr) if arr.ndim > 4 else arr
    if arr.ndim == 4 and arr.shape[0] <= 4 < arr.shape[-1]:
        arr = np.moveaxis(arr, 0, -1)  # (C, D, H, W)
    if arr.ndim not in (3, 4):
        raise DataError(f"{path}: expected a volume (D, H, W) or (D, H, W, C), found shape {arr.shape}")
    return arr


def write_volume(path: str | Path, array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a ``(D, H, W)`` (or ``(C, D, H, W)``) array as a multi-page, zlib-compressed TIFF z-stack, or
    ``.npy``, atomically; never as colour, whatever the size of the last axis."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise DataError(f"{path}: already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    with atomic_path(path, path.suffix.lower()) as tmp:
        if path.suffix.lower() == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, array)
        else:
            axes = "ZYX" if array.ndim == 3 else "CZYX"
            tifffile.imwrite(
                tmp, array, compression="zlib", photometric="minisblack", metadata={"axes": axes}
            )
    return path


def _plane_axes(axes: str, stack: bool) -> list[str]:
    """Axes that enumerate 2-D planes. In a known stack (``stack``), a leading planar sample axis (how
    tifffile stores a (3|4, H, W) array by default) counts as planes too."""
    planes = [a for a in axes if a not in "YXSC"]
    if stack and not planes and axes[:1] in ("S", "C") and len(axes) == 3:
        planes = [axes[0]]
    return planes


def _check_one_stack_axis(path: Path, axes: str, shape: tuple[int, ...]) -> None:
    """A TIFF holds a 2-D image, or a stack of them along one axis: a hyperstack (time and z, or several
    unnamed axes) has no single reading, so it is refused with what was found, never flattened in silence."""
    extra = [(a, n) for a, n in zip(axes, shape, strict=True) if a not in "YXSC" and n > 1]
    if len(extra) > 1:
        raise DataError(
            f"{path}: a {len(shape)}-D TIFF (axes {axes}, shape {tuple(shape)}) with {len(extra)} axes beside the "
            "image's: unetkit reads 2-D images, stacks along one axis and volumes; save what to segment as its "
            "own files (e.g. one time point per file)"
        )


def _read_tiff(path: Path, page: int | None) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes = series.axes
        _check_one_stack_axis(path, axes, tuple(series.shape))
        planes = _plane_axes(axes, stack=page is not None)
        n_planes = int(np.prod([series.shape[axes.index(a)] for a in planes])) if planes else 1
        if page is None and n_planes > 1:
            channels = (
                "; if they are the channels of one image, save it with its axes (tifffile: metadata={'axes': "
                "'CYX'}; Fiji: Image > Hyperstacks > Re-order)"
                if axes[0] in UNLABELLED_AXES
                else ""
            )
            raise DataError(
                f"{path}: multi-page TIFF with {n_planes} planes (axes {axes}); for 3-D volumes pass --spatial-dims 3 "
                "(or write spatial_dims: 3 in DATA/dataset.yaml); else use one file per image, or the ISBI layout "
                f"(--layout isbi) for a stack with one sample per page{channels}"
            )
        if page is not None and not 0 <= page < n_planes:
            raise DataError(f"{path}: has {n_planes} plane(s); page {page} does not exist")
        arr = series.asarray()
        alpha = tiff_alpha_samples(tif.pages[0])
    if planes:
        arr = arr.reshape(-1, *arr.shape[len(planes) :])[page or 0]
        axes = axes[len(planes) :]
    for ch in "SC":
        if ch in axes and arr.ndim == 3:
            arr = np.moveaxis(arr, axes.index(ch), -1)
            if ch == "S" and alpha:  # the samples the file calls alpha (RGBA): not image data
                arr = arr[..., :-alpha] if arr.shape[-1] - alpha > 1 else arr[..., 0]
    return arr


#: tifffile's names for a page axis whose metadata does not say what it is (channels of one image, or images)
UNLABELLED_AXES = "QI"


def channel_axes(axes: str, shape: tuple[int, ...], shaped: bool, channels: int | None) -> str | None:
    """The axes to read a 3-D TIFF series with when its unlabelled pages are ``channels`` channels of one image:
    ``"CYX"`` for a ``(C, H, W)`` array saved without axes, ``"YXC"`` for an ``(H, W, C)`` array tifffile stored
    row by row (``shaped``: its own metadata kept the array's shape); None when they are not."""
    if not channels or channels < 2 or len(axes) != 3 or axes[0] not in UNLABELLED_AXES:
        return None
    if shape[0] == channels:
        return "CYX"
    return "YXC" if shaped and shape[-1] == channels else None


def pages_reading(path: str | Path, channels: int, images: bool = False) -> str:
    """How a 2-D model taking ``channels`` channels reads a multi-page TIFF: ``"images"`` (a stack, segmented
    page by page) or ``"channels"`` (one image: :func:`channel_axes`). The file's axes metadata decides
    (``C``/``S``: channels; ``Z``, ``T`` and the like: images). Pages it does not label (a NumPy array saved
    without axes) are channels when :func:`channel_axes` says so, images when ``images`` (the ISBI layout) or
    when the file is named as ISBI 2012 names its stacks (``test-volume.tif``); otherwise refused: 2 unlabelled
    pages may be 2 channels or 2 images, and reading the wrong one gives a wrong result with no error."""
    path = Path(path)
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, shape, shaped = series.axes, tuple(series.shape), tif.is_shaped
    if axes[0] not in UNLABELLED_AXES or images or path.stem.lower().split("-")[-1] == "volume":
        return "images"
    if channel_axes(axes, shape, shaped, channels):
        return "channels"
    raise DataError(
        f"{path}: {shape[0]} pages (shape {shape}) without axes metadata: channels of one image, or separate "
        f"images? The model takes {channels} channel(s). Pass --layout isbi to segment every page as an image; "
        "for channels, use a model trained on such images, or save the file with its axes (tifffile: "
        "metadata={'axes': 'CYX'}; Fiji: Image > Hyperstacks > Re-order)"
    )


def count_planes(path: str | Path, stack: bool = False) -> int:
    """Number of 2-D planes in an image file (pages of a multi-page TIFF; 1 for other files).

    ``stack``: the file is known to hold grayscale planes (see :func:`_plane_axes`).
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower(), _PIL)
    counter = fmt.planes
    if counter is None:
        return 1
    try:
        return counter(path, stack)
    except DataError:
        raise
    except Exception as exc:
        if not (decoding_error(exc) or isinstance(exc, fmt.errors)):
            raise
        raise DataError(f"{path}: cannot be read as a {path.suffix.lower()} file ({exc})") from None


def _tiff_planes(path: Path, stack: bool) -> int:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        _check_one_stack_axis(path, series.axes, tuple(series.shape))
        planes = _plane_axes(series.axes, stack)
        return int(np.prod([series.shape[series.axes.index(a)] for a in planes]))


def _read_pil(path: Path, page: int | None) -> np.ndarray:
    with Image.open(path) as im:
        if page:
            im.seek(page)
        return _pil_to_array(im)


def _read_npy(path: Path, page: int | None) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    if page is not None:
        return arr[page]
    return np.moveaxis(arr, 0, -1) if stored_channels_first(arr.shape) else arr


def _tiff_volume(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, arr = series.axes, series.asarray()
    planes = [a for a in axes if a not in "YXSC"]
    if not planes:
        raise DataError(f"{path}: a single 2-D image (axes {axes}); a volume needs several planes")
    arr = arr.reshape(-1, *arr.shape[len(planes) :]) if axes[: len(planes)] == "".join(planes) else arr
    rest = axes[len(planes) :]
    return np.moveaxis(arr, 1, -1) if arr.ndim == 4 and rest and rest[0] in "SC" else arr


def _npy_volume(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _zarr_volume(path: Path) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(str(path), mode="r")[...])


@dataclass(frozen=True)
class ImageFormat:
    """How unetkit reads the files of one suffix (:data:`FORMATS`): ``read(path, page)``, a 2-D image as stored,
    ``(H, W)`` or ``(H, W, C)`` (``page``: one plane of a multi-page file; None: a format of volumes only);
    ``volume(path)``, the array of a 3-D file (None: no volumes); ``planes(path, stack)``, how many 2-D planes a
    multi-page file holds (None: one). Readers raise their decoder's own errors (:func:`decoding_error` tells
    damage from a fault; ``errors``: the exception types of a decoder that :data:`DECODE_ERRORS` does not name)
    or :class:`DataError`; shapes are checked by their callers."""

    read: Callable[[Path, int | None], np.ndarray] | None
    volume: Callable[[Path], np.ndarray] | None = None
    planes: Callable[[Path, bool], int] | None = None
    errors: tuple[type[BaseException], ...] = ()


_PIL = ImageFormat(_read_pil)
_TIFF = ImageFormat(_read_tiff, _tiff_volume, _tiff_planes)
#: the one suffix-to-reader table: every file format unetkit reads, images and volumes (a new format is one
#: entry here; to be read window by window as well, a branch in :func:`unetkit.data.lazy.open_image`)
FORMATS: dict[str, ImageFormat] = {
    ".png": _PIL,
    ".tif": _TIFF,
    ".tiff": _TIFF,
    ".jpg": _PIL,
    ".jpeg": _PIL,
    ".bmp": _PIL,
    ".npy": ImageFormat(_read_npy, _npy_volume),
    ".zarr": ImageFormat(None, _zarr_volume),
}
#: the suffixes of image files (found in dataset folders; read by :func:`read_image`)
IMAGE_SUFFIXES = tuple(suffix for suffix, f in FORMATS.items() if f.read is not None)
#: the suffixes :func:`read_volume` reads
VOLUME_SUFFIXES = tuple(suffix for suffix, f in FORMATS.items() if f.volume is not None)
#: image formats unetkit does not read (microscopes' own, slide scanners', other pictures): a folder's files in
#: them are named, never passed over in silence
FOREIGN_IMAGE_SUFFIXES = (
    ".czi", ".nd2", ".lif", ".lof", ".lsm", ".oib", ".oif", ".oir", ".ims", ".vsi", ".ets", ".zvi", ".dv",
    ".r3d", ".stk", ".ics", ".ids", ".sld", ".lei", ".svs", ".ndpi", ".scn", ".mrxs", ".qptiff", ".dm3", ".dm4",
    ".mrc", ".gif", ".webp", ".jp2", ".heic",
)  # fmt: skip


def listed_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """The files directly inside ``folder`` (hidden ones skipped), sorted, from one listing: those in image formats
    unetkit reads, and those in formats it does not (:data:`FOREIGN_IMAGE_SUFFIXES`)."""
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    return (
        [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES],
        [p for p in files if p.suffix.lower() in FOREIGN_IMAGE_SUFFIXES],
    )


def refuse_lossy_mask(path: str | Path) -> None:
    """A mask (labels, classes, a prediction) saved as JPEG is refused: lossy compression changed its values
    along every edge (a binary mask gains dozens of values), so no reading of it is exact."""
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        raise DataError(
            f"{path}: a mask saved as JPEG, whose lossy compression changes the values along every edge (a binary "
            "mask gains dozens of values): save masks as PNG or TIFF (lossless)"
        )


def not_read(files: list[Path]) -> str:
    """What to say of image files in formats unetkit does not read, with the fix."""
    shown = ", ".join(f.name for f in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    return (
        f"{len(files)} file(s) in formats unetkit does not read ({shown}): export them as TIFF (Fiji: File > "
        "Save As > Tiff; or bfconvert)"
    )


def _pil_to_array(im: Image.Image) -> np.ndarray:
    if im.mode == "P":
        return np.asarray(im)  # palette indices, not colours
    if im.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im).astype(np.uint16, copy=False)
    if im.mode == "I":
        arr = np.asarray(im)
        return arr.astype(np.uint16) if arr.min() >= 0 and arr.max() < 2**16 else arr
    if im.mode in ("1", "L", "F", "RGB"):
        return np.asarray(im)
    if im.mode in ALPHA_MODES:  # the file says its last channel is alpha: not image data
        return np.asarray(im)[..., :-1].squeeze(-1) if im.mode == "LA" else np.asarray(im)[..., :3]
    return np.asarray(im.convert("RGB"))


#: image modes whose last channel is alpha (transparency), dropped when read
ALPHA_MODES = ("LA", "RGBA")


def declares_alpha(path: str | Path) -> bool:
    """Whether an image file says it has an alpha channel (a PNG in mode LA or RGBA, a TIFF whose extra samples
    are alpha), which reading drops. A file's channels are never taken for alpha by their count: a TIFF of two
    or four stains keeps them all."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                return tiff_alpha_samples(tif.pages[0]) > 0
        with Image.open(path) as im:
            return im.mode in ALPHA_MODES
    except DECODE_ERRORS:  # unreadable: reading it says why
        return False


def tiff_alpha_samples(page: Any) -> int:
    """How many of a TIFF page's last samples are alpha (ExtraSamples 1: associated, 2: unassociated)."""
    extra = tuple(getattr(page, "extrasamples", ()) or ())
    return sum(1 for e in extra if int(e) in (1, 2))


def collapse_gray(chw: np.ndarray) -> np.ndarray:
    """A ``(C, H, W)`` image whose channels are all equal (grayscale stored as colour) as one channel."""
    if chw.shape[0] > 1 and all(np.array_equal(chw[0], chw[c]) for c in range(1, chw.shape[0])):
        return chw[:1]
    return chw


def to_channels_first(
    image: np.ndarray,
    channels: int | None,
    name: str | Path = "image",
    pick: int | None = None,
    *,
    alpha: bool = False,
) -> np.ndarray:
    """``(H, W[, C])`` → ``(C, H, W)`` matching ``channels`` (``None``: keep what the image has).

    ``alpha``: the last channel is alpha, dropped (a napari RGBA layer; files lose theirs when read, see
    :func:`declares_alpha`); a colour image whose channels are all equal (common for
    grayscale data saved as RGB) becomes one channel when one is wanted, and so does one whose other channels
    hold one value each (one stain exported in colour). ``pick``: the stored channel a one-channel model reads
    (``--channel``). Any other mismatch is an error.
    """
    arr = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    index = channel_indices(arr, channels, name, alpha=alpha and image.ndim == 3, pick=pick)
    return arr if index == list(range(arr.shape[0])) else arr[index]


def sample_channels(
    image: np.ndarray,
    channels: int | None,
    name: str | Path,
    *,
    volumes: bool = False,
    pick: int | None = None,
) -> np.ndarray:
    """A file's raw pixels, ``(H, W[, C])`` or a volume ``(D, H, W[, C])``, as ``(C, ...)`` with the channels a
    model of ``channels`` inputs reads (``pick``: the one stored channel, ``--channel``)."""
    if not volumes:
        return to_channels_first(image, channels, name, pick)
    chw = image[None] if image.ndim == 3 else np.moveaxis(image, -1, 0)
    index = channel_indices(chw, channels, name, pick=pick)
    return chw if index == list(range(chw.shape[0])) else chw[index]


def channel_indices(
    chw: np.ndarray,
    channels: int | None,
    name: str | Path = "image",
    *,
    alpha: bool = False,
    pick: int | None = None,
) -> list[int]:
    """Which stored channels of a ``(C, ...)`` image (or a subsample of it) feed a model with ``channels``
    input channels, by the rules of :func:`to_channels_first` (``alpha``: the last channel is alpha; ``pick``:
    the channel chosen for a one-channel model)."""
    n = chw.shape[0]
    if pick is not None:
        if channels not in (None, 1):
            raise ConfigError(
                f"--channel {pick} picks the one channel a one-channel model reads; this model reads {channels}"
            )
        if not 0 <= pick < n:
            raise DataError(
                f"{name}: --channel {pick}, but the image has {n} channel(s) (0"
                f"{f'-{n - 1}' if n > 1 else ''}): choose one of them"
            )
        return [pick]
    index = list(range(n))
    if alpha and channels != n:
        log.debug("%s: dropping the alpha channel", name)  # check-data notes it once for a dataset
        index = index[:-1]
    if channels is None or len(index) == channels:
        return index
    if channels == 1 and collapse_gray(chw[index]).shape[0] == 1:
        return index[:1]
    if len(index) == 1 and channels == 3:
        return index * 3  # a grayscale image among colour ones
    if channels == 1:
        # one stain exported as colour (DAPI in blue, the other channels empty): the one channel that varies is
        # the image; a channel that holds one value says nothing, so nothing is guessed
        varying = [i for i in index if chw[i].size and chw[i].min() != chw[i].max()]
        if len(varying) == 1:
            said = f"{name}: only channel {_channel_name(varying[0], len(index))} varies (the others hold one value each): the model reads it"  # fmt: skip
            if first_time(_TOLD, said):  # once per image (its header is checked, then it is read)
                log.info("%s", said)
            return varying
        names = ", ".join(_channel_name(i, len(index)) for i in varying)
        vary = f" (channels {names} vary: a merge of stains?)" if varying else ""
        colour = "; 0 red, 1 green, 2 blue" if len(index) in (3, 4) else ""
        raise DataError(
            f"{name}: has {len(index)} channel(s) but the model reads one{vary}: pass --channel N for the stain it "
            f"segments (0-{len(index) - 1}{colour}), or train a model on {len(index)}-channel images (`unetkit "
            "train` takes the channel count from the data)"
        )
    rgba = " (an RGBA image? its colours: image[..., :3])" if n == 4 and channels == 3 else ""
    raise DataError(
        f"{name}: has {len(index)} channel(s) but the model takes {channels}{rgba}; convert the image, or train a "
        f"model on {len(index)}-channel images (`unetkit train` takes the channel count from the data; --init "
        "adapts a model's first layer)"
    )


#: what :func:`channel_indices` said about which channel a model reads, not said twice
_TOLD: set[str] = set()


def first_time(said: set[str], text: str, keep: int = 4096) -> bool:
    """Whether ``text`` is new to ``said`` (a process's record of what it said once), adding it: a long process (a
    server, a notebook) keeps the last ``keep`` only."""
    if text in said:
        return False
    if len(said) >= keep:
        said.clear()
    said.add(text)
    return True


def _channel_name(i: int, n: int) -> str:
    """A stored channel by its number from 0, with its colour in a colour image: "2 (blue)"."""
    return f"{i} ({('red', 'green', 'blue')[i]})" if n in (3, 4) and i < 3 else str(i)


def write_image(
    path: str | Path, array: np.ndarray, *, overwrite: bool = False, axes: str | None = None
) -> Path:
    """Write an array as PNG (uint8/uint16, 2-D or RGB) or TIFF (any dtype), atomically.

    ``axes="YXC"``: the last axis holds the channels of one image, as :func:`read_image` returns them (any count:
    a TIFF of other than 3 or 4 channels is written channels first with its axes, ``CYX``, which
    :func:`read_image` reads back as it was; without ``axes`` such an array is written as pages, a stack). Refuses
    to replace an existing file unless ``overwrite`` is true.
    """
    path = Path(path)
    if axes not in (None, "YX", "YXC"):
        raise ValueError(f"axes={axes!r}: write_image knows 'YX' and 'YXC'")
    if axes is not None and len(axes) != np.ndim(array):
        raise ValueError(f"axes={axes!r} for an array of shape {np.shape(array)}")
    if path.exists() and not overwrite:
        raise DataError(f"{path}: already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    suffix = path.suffix.lower()
    if suffix not in (".tif", ".tiff", ".png", ".npy"):
        raise DataError(f"{path}: unsupported output format {suffix!r}; use .png, .tif or .npy")
    array = np.asarray(array)
    if suffix == ".png" and array.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: PNG holds uint8 or uint16, got {array.dtype}; use .tif")
    if suffix == ".png" and not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise DataError(
            f"{path}: PNG holds a grey (H, W) or colour (H, W, 3|4) image, got shape {array.shape}; use .tif"
        )
    with atomic_path(path, suffix) as tmp:
        if suffix in (".tif", ".tiff"):
            # explicit photometric: (H, W, 3|4) is a colour image, anything else grayscale planes
            rgb = array.ndim == 3 and array.shape[-1] in (3, 4)
            # a fourth channel is data, not alpha (tifffile would declare it alpha, and reading drops alpha)
            extra = ("unspecified",) if rgb and array.shape[-1] == 4 else None
            if axes == "YXC" and not rgb:  # channels of one image, said so: pages would read as a stack
                tifffile.imwrite(
                    tmp, np.moveaxis(array, -1, 0), compression="zlib", photometric="minisblack",
                    metadata={"axes": "CYX"},
                )  # fmt: skip
            else:
                tifffile.imwrite(
                    tmp,
                    array,
                    compression="zlib",
                    photometric="rgb" if rgb else "minisblack",
                    extrasamples=extra,
                )
        elif suffix == ".png":
            Image.fromarray(array).save(tmp, format="PNG")
        else:
            with open(tmp, "wb") as fh:
                np.save(fh, array)
    return path
