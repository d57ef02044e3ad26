"""The output-never-overlaps-input guard, shared by every command that writes (core: knows only paths).

Inputs are sacred: no result may be an input, sit in (or under) a folder that holds inputs, lie inside an input
``.zarr``, or have an input's path, with or without ``--overwrite`` (which replaces earlier results only). Folder
outputs (``--out`` of predict, train, weights, evaluate, a report's folder) pass :func:`guard_outputs`; single files
(``--csv``, ``--json``, ``plan --out``, ``export --out``) pass :func:`guard_file`, which also refuses to replace a
file unetkit did not write.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import DataError

__all__ = ["guard_file", "guard_outputs", "head_text", "require_writable", "sample_files", "writable"]


def _guarded(inputs: Sequence[Path], protect: Sequence[str | Path]) -> tuple[set[Path], set[Path], set[Path]]:
    """(input files, every guarded path, folders holding inputs)."""
    files = {Path(p).resolve() for p in inputs}
    guarded = files | {Path(p).resolve() for p in protect}
    folders = {p.parent for p in guarded if not p.is_dir()} | {p for p in guarded if p.is_dir()}
    return files, guarded, folders


def guard_outputs(
    inputs: Sequence[Path],
    out: Path,
    outputs: Sequence[Path],
    protect: Sequence[str | Path] = (),
    flag: str = "--out",
    data_folders: Sequence[Path] = (),
) -> None:
    """Refuse, before any work, an output that is, replaces or sits among the inputs (with or without
    ``--overwrite``): OUT must not be an input, a folder holding inputs, a folder under one of ``data_folders``
    or of the protected folders (folders given as data: a later command would read the results as data), or
    inside an input ``.zarr``;
    no output may have an input's path. ``protect``: more files or folders that must stay untouched (the ground
    truth of ``evaluate MODEL DATA``, the starting checkpoint, the dataset description)."""
    out_r = out.resolve()
    files, guarded, folders = _guarded(inputs, protect)
    holding = {Path(d).resolve() for d in data_folders} | {
        Path(p).resolve() for p in protect if Path(p).is_dir()
    }
    for f in sorted(files | folders | holding):
        inside = f in out_r.parents and (f in holding or f.suffix.lower() == ".zarr")
        if out_r == f or inside:
            what = f"{f}, a folder holding inputs" if f in folders and f not in files else f"the input {f}"
            where = "is" if out_r == f else "is inside"
            raise DataError(
                f"{flag} {out}: {where} {what}; results would mix with or replace the inputs (even with "
                "--overwrite): choose a folder outside it"
            )
    for o in outputs:
        if o.resolve() in guarded:
            raise DataError(
                f"{flag} {out}: the result {o} would replace the input {o.resolve()}; choose another folder"
            )


def guard_file(
    path: str | Path,
    flag: str,
    inputs: Sequence[Path] = (),
    protect: Sequence[str | Path] = (),
    *,
    overwrite: bool = False,
    ours: Callable[[Path], bool] | None = None,
    data_folders: Sequence[Path] = (),
    data_suffixes: Sequence[str] = (),
) -> Path:
    """Refuse, before any work, a single output file that is an input (or a protected file: the model in use, a
    configuration, the dataset description), that a later command would read as data (a ``data_suffixes`` file
    under one of ``data_folders``, or anything inside an input ``.zarr``), a folder, or an existing file: that
    one needs ``--overwrite`` and, when ``ours`` is given, must be a file unetkit wrote (``ours(path)``)."""
    p = Path(path)
    r = p.resolve()
    files, guarded, folders = _guarded(inputs, protect)
    if r in guarded or r in folders:
        raise DataError(
            f"{flag} {p}: is the input {r}; it would be replaced (even with --overwrite): choose another file"
        )
    holding = {Path(d).resolve() for d in data_folders}
    if any(f.suffix.lower() == ".zarr" and f in r.parents for f in files | folders) or (
        any(h == r.parent or h in r.parents for h in holding) and r.suffix.lower() in data_suffixes
    ):
        raise DataError(
            f"{flag} {p}: sits among the inputs in {r.parent}, where a later command would read it as data: "
            "choose a file outside that folder"
        )
    if p.is_dir():
        raise DataError(f"{flag} {p}: is a folder; give a file name")
    if p.exists():
        if not overwrite:
            raise DataError(f"{flag} {p}: already exists; pass --overwrite to replace it")
        if ours is not None and not ours(p):
            raise DataError(
                f"{flag} {p}: exists and was not written by unetkit; --overwrite replaces only unetkit's own "
                "results: choose another file"
            )
    return p


def head_text(path: Path, size: int = 4096) -> str:
    """The first ``size`` bytes of a file as text (for recognising what wrote it); empty if unreadable."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size).decode("utf-8", "replace")
    except OSError:
        return ""


def sample_files(samples: Sequence[object]) -> list[Path]:
    """Every file of dataset samples (images and masks; DSB object masks one by one)."""
    out: list[Path] = []
    for s in samples:
        out.append(s.image)  # type: ignore[attr-defined]
        mask = s.mask  # type: ignore[attr-defined]
        out.extend(mask if isinstance(mask, tuple) else [mask] if mask is not None else [])
    return out


def require_writable(folder: Path) -> None:
    """Prove that files can be created in ``folder`` (raises the OSError that says why, naming the folder)."""
    fd, probe = tempfile.mkstemp(prefix=".unetkit-write-test.", dir=folder)
    os.close(fd)
    os.unlink(probe)


def writable(folder: Path) -> bool:
    try:
        require_writable(folder)
    except OSError:
        return False
    return True
