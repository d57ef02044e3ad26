"""The one way unetkit writes a file or a folder: never half-written, never a partial file under the real name.

Every output (masks, probabilities, checkpoints, config.yaml, plans, metrics CSV/JSON, reports, exports,
zarr groups) is written to a hidden temporary path next to its destination (``.NAME.<random><suffix>``),
flushed to disk, and renamed onto the real name in one step. A kill leaves either the old file or the new
one, plus at most a hidden temporary that later runs remove (``is_temporary``).

    with atomic_path(out / "mask.tif") as tmp:   # a library that wants a path (tifffile, PIL, torch.jit)
        tifffile.imwrite(tmp, array)
    atomic_write_text(out / "config.yaml", text)  # text and bytes
    with atomic_folder(out / "NAME.zarr") as tmp: # a folder (zarr): built in full, then renamed
        ...
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_folder",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "is_temporary",
    "publish_folder",
    "temporary_of",
]

#: the names of temporaries: a leading dot, the real name, a random part (mkstemp's 8 characters)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


def _permissions(path: str | Path, folder: bool = False) -> None:
    """The permissions a plain ``open``/``mkdir`` would have given (mkstemp/mkdtemp make them owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


def _fsync(path: str | Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """A temporary file path next to ``path`` (ending in ``suffix``, default ``path``'s own, so libraries
    choose the right format); when the block ends without an error it is synced and renamed onto ``path``,
    otherwise removed. Errors while writing name ``path``, not the temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix, dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)
        _permissions(tmp)
        os.replace(tmp, path)
    except OSError as exc:  # disk full, quota, read-only: name the file being written
        if exc.filename in (None, tmp):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, ".tmp") as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """A temporary folder next to ``path``; when the block ends without an error it becomes ``path``.

    An existing ``path`` is an error unless ``replace`` (then it is removed just before the rename: callers
    decide that it is unetkit's own output, never an input). On error the temporary folder is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        publish_folder(tmp, path, replace=replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish_folder(tmp: str | Path, path: str | Path, *, replace: bool = True) -> Path:
    """Move a finished folder (built elsewhere on the same file system, e.g. a zarr group in a work folder that
    several processes wrote) onto ``path`` in one rename. An existing ``path`` is removed first with
    ``replace`` (callers decide that it is unetkit's own output, never an input), else an error."""
    tmp, path = Path(tmp), Path(path)
    _permissions(tmp, folder=True)
    if path.exists() or path.is_symlink():
        if not replace:
            raise FileExistsError(17, "already exists", str(path))
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    os.replace(tmp, path)
    return path


def temporary_of(path: str | Path) -> str | None:
    """The file name a temporary (``.NAME.xxxxxxxx[.sfx]``, left by a write a kill cut short) was written for,
    or None if ``path`` does not look like one."""
    found = _TEMPORARY.match(Path(path).name)
    return found.group("name") if found else None


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` looks like a temporary of :func:`atomic_path` (see :func:`temporary_of`)."""
    return temporary_of(path) is not None
