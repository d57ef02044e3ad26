"""Where predictions go: arrays that hold them while an image is processed, and files they end up in.

Small images are held in NumPy arrays and written with :func:`unetkit.data.io.write_image`. Images over a
size limit are held in a zarr store on disk (in a hidden work folder next to the outputs, removed at the
end) and written tile by tile: a tiled, compressed TIFF (BigTIFF past 2 GiB) or a zarr group, so that
memory never holds a whole image. Every file appears atomically under its final name.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import math
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..atomic import atomic_path
from ..config import FORMATS, PROBS_DTYPES
from ..data.io import write_image

__all__ = ["CHUNK", "FORMATS", "PROBS_DTYPES", "Plane", "RowSink", "encode_probs", "new_array", "save"]

CHUNK = 512  # zarr chunk / strip height (rows)
TIFF_TILE = 256

# A 2-D output as blocks: read(rows, cols) → (rows, cols[, S]) array; shape (H, W[, S]); dtype.
Plane = tuple[Callable[[slice, slice], np.ndarray], tuple[int, ...], np.dtype]


def new_array(shape: tuple[int, ...], dtype: Any, store: Any = None, name: str = "") -> Any:
    """A NumPy array, or with ``store`` (a zarr group) a chunked zarr array ``name`` in it."""
    if store is None:
        return np.zeros(shape, dtype)
    chunks = (*shape[:-2], min(CHUNK, shape[-2]), min(CHUNK, shape[-1]))
    if len(shape) == 3 and shape[-1] <= 4:  # (H, W, S) colour
        chunks = (min(CHUNK, shape[0]), min(CHUNK, shape[1]), shape[2])
    return store.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)


def encode_probs(probs: np.ndarray, dtype: str) -> np.ndarray:
    """float32 probabilities → stored dtype: ``float16``, ``float32``, or ``uint8`` (p x 255, rounded)."""
    if dtype == "uint8":
        return np.rint(probs * 255).astype(np.uint8)
    return probs.astype(dtype)


class RowSink:
    """Collects rows arriving in order and writes them to ``write(y0, y1, rows)`` in strips whose height
    is a multiple of ``strip`` (aligned to zarr chunks, so no chunk is written twice)."""

    def __init__(self, write: Callable[[int, int, np.ndarray], None], height: int, strip: int = CHUNK):
        self.write, self.height, self.strip = write, height, strip
        self.parts: list[np.ndarray] = []
        self.start = 0
        self.rows = 0

    def __call__(self, y0: int, y1: int, rows: np.ndarray) -> None:
        assert y0 == self.start + self.rows, "rows must arrive in order"
        self.parts.append(rows)
        self.rows += y1 - y0
        if self.rows >= self.strip or y1 == self.height:
            block = np.concatenate(self.parts, axis=-2) if len(self.parts) > 1 else self.parts[0]
            n = self.rows if y1 == self.height else self.rows // self.strip * self.strip
            self.write(self.start, self.start + n, block[..., :n, :])
            rest = block[..., n:, :]
            self.parts = [rest] if rest.shape[-2] else []
            self.start += n
            self.rows -= n


def blocks(shape: tuple[int, int], size: int) -> Iterator[tuple[slice, slice]]:
    for y in range(0, shape[0], size):
        for x in range(0, shape[1], size):
            yield slice(y, min(shape[0], y + size)), slice(x, min(shape[1], x + size))


def save(path: Path, planes: list[Plane], fmt: str, *, zarr_name: str = "", in_memory: bool = True) -> Path:
    """Write one output (``planes``: one or more 2-D planes of equal shape) as ``fmt`` at ``path``.

    ``fmt``: ``png`` (one uint8/uint16 plane), ``tiff`` or ``zarr`` (``path`` is then the group and
    ``zarr_name`` the array). ``in_memory``: the planes are small enough to assemble whole.
    """
    if fmt == "zarr":
        import zarr

        group = zarr.open_group(str(path), mode="a")
        read, shape, dtype = planes[0]
        full = (len(planes), *shape) if len(planes) > 1 else shape
        arr = new_array(full, dtype, group, zarr_name)
        for i, (read, _, _) in enumerate(planes):
            for rows, cols in blocks((shape[0], shape[1]), CHUNK):
                if len(planes) > 1:
                    arr[i, rows, cols] = read(rows, cols)
                else:
                    arr[rows, cols] = read(rows, cols)
        return path
    if in_memory:
        arrays = [read(slice(None), slice(None)) for read, _, _ in planes]
        return write_image(path, arrays[0] if len(arrays) == 1 else np.stack(arrays), overwrite=True)
    if fmt == "png":
        return _save_png_rows(path, planes[0])
    return _save_tiled_tiff(path, planes)


def _save_png_rows(path: Path, plane: Plane) -> Path:
    """One plane (uint8 or uint16 grey, or uint8 RGB/RGBA) as a PNG written band by band: the file standard
    readers (Pillow, imageio, Fiji) open, in memory bounded by one band of rows. Rows use PNG's "up" filter
    (masks repeat row to row), deflated with zlib's default level as Pillow does."""
    read, shape, dtype = plane
    h, w = shape[:2]
    samples = shape[2] if len(shape) > 2 else 1
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16) or samples not in (1, 3, 4) or (samples > 1 and dtype != np.uint8):
        raise ValueError(f"PNG holds uint8/uint16 grey or uint8 RGB(A), not {samples} x {dtype}")
    colour = {1: 0, 3: 2, 4: 6}[samples]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate = zlib.compressobj(6)
    previous = np.zeros((1, w * samples * dtype.itemsize), np.uint8)
    with atomic_path(path, ".png") as tmp, open(tmp, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8 * dtype.itemsize, colour, 0, 0, 0)))
        for y in range(0, h, CHUNK):
            band = np.ascontiguousarray(
                read(slice(y, min(h, y + CHUNK)), slice(0, w)), dtype.newbyteorder(">")
            )
            rows = band.reshape(band.shape[0], -1).view(np.uint8)
            up = np.diff(np.concatenate([previous, rows]), axis=0)  # uint8 wraps, as PNG's filter does
            previous = rows[-1:]
            filtered = np.concatenate([np.full((len(up), 1), 2, np.uint8), up], axis=1)
            if data := deflate.compress(filtered.tobytes()):
                f.write(chunk(b"IDAT", data))
        f.write(chunk(b"IDAT", deflate.flush()))
        f.write(chunk(b"IEND", b""))
    return path


def _save_tiled_tiff(path: Path, planes: list[Plane]) -> Path:
    _, shape, dtype = planes[0]
    h, w = shape[:2]
    samples = shape[2:]
    t = TIFF_TILE

    def tiles() -> Iterator[np.ndarray]:
        for read, _, _ in planes:
            for y in range(0, h, t):
                band = read(slice(y, min(h, y + t)), slice(0, w))
                for x in range(0, w, t):
                    tile = np.zeros((t, t, *samples), dtype)
                    part = band[:, x : x + t]
                    tile[: part.shape[0], : part.shape[1]] = part
                    yield tile

    full = (len(planes), *shape) if len(planes) > 1 else shape
    nbytes = math.prod(full) * np.dtype(dtype).itemsize
    with atomic_path(path, ".tif") as tmp:
        tifffile.imwrite(
            tmp,
            data=tiles(),
            shape=full,
            dtype=dtype,
            tile=(t, t),
            compression="zlib",
            photometric="rgb" if samples and samples[0] in (3, 4) else "minisblack",
            bigtiff=nbytes > 2**31 - 2**25,
        )
    return path


WORK = ".work."


def work_dir(out: Path, name: str) -> Path:
    """A hidden work folder for ``name`` in ``out``, named with this process's id so that a later run can tell
    a stale one (its process is gone) from one in use."""
    return Path(tempfile.mkdtemp(prefix=f".{name}{WORK}{os.getpid()}.", dir=out))


@contextlib.contextmanager
def work_folder(out: Path, name: str) -> Iterator[Path]:
    """:func:`work_dir`, removed on leaving, however left: made inside the ``try``, and on an interruption
    found by its name if the signal came while it was being made."""
    work = None
    interrupted = True
    try:
        work = work_dir(out, name)
        yield work
        interrupted = False
    finally:
        if interrupted:
            # an interrupted zarr write goes on in zarr's IO thread: let it end before removing, or it recreates
            # files in a folder already removed (CI found one left behind this way)
            _drain_zarr_io()
        made = [work] if work is not None else list(out.glob(f".{glob.escape(name)}{WORK}{os.getpid()}.*"))
        for path in made:
            remove_tree(path)


def _drain_zarr_io(timeout: float = 10.0) -> bool:
    """Wait (at most ``timeout`` s) for the tasks still running on zarr's IO event loop: a signal interrupts the
    main thread's wait for a zarr write, not the write, which may recreate files after their folder was removed.
    True if there were any."""
    import asyncio
    import sys

    sync = sys.modules.get("zarr.core.sync")  # zarr not imported: nothing can be pending
    loop = getattr(sync, "loop", [None])[0] if sync is not None else None
    if loop is None or loop.is_closed() or not loop.is_running():
        return False

    async def others() -> int:
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.wait(pending, timeout=timeout) if pending else None
        return len(pending)

    try:
        return bool(asyncio.run_coroutine_threadsafe(others(), loop).result(timeout + 1))
    except Exception:  # a loop shutting down: nothing more to wait for
        return False


_TEMP_ROOT: list[Path] = []


def temp_root() -> Path:
    """``TMP/unetkit-UID``, the one folder this user's unetkit temporary files live under (unpacked packages,
    on-the-fly exports, a plan's trial run); the first call in a process sweeps what killed processes left there.
    Per user and private (0700): a shared ``/tmp`` is writable by everyone, and another user's folder, or one
    that is a link, is never used (a folder of this process's own is made instead, and nothing is swept)."""
    if not _TEMP_ROOT:
        root = Path(tempfile.gettempdir()) / f"unetkit-{os.getuid()}"
        root.mkdir(mode=0o700, exist_ok=True)
        if root.is_symlink() or root.stat().st_uid != os.getuid():
            root = Path(tempfile.mkdtemp(prefix="unetkit-"))
        else:
            remove_stale_work(root)
        _TEMP_ROOT.append(root)
    return _TEMP_ROOT[0]


def process_temp(name: str) -> Path:
    """A folder under :func:`temp_root` that lives as long as this process (removed at exit; swept by the next
    process if this one is killed)."""
    folder = work_dir(temp_root(), name)
    atexit.register(remove_tree, folder)
    return folder


def remove_stale_work(out: Path) -> list[Path]:
    """Remove the work folders in ``out`` whose process no longer runs (a run killed by SIGKILL or a power
    cut); nothing else is touched. Returns what was removed."""
    removed = []
    for d in out.glob(f".*{WORK}*"):
        pid = d.name.split(WORK, 1)[1].split(".", 1)[0]
        if not d.is_dir() or not pid.isdigit() or _alive(int(pid)):
            continue
        remove_tree(d)
        removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
