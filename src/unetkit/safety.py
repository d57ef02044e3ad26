"""The output-never-overlaps-input guard, shared by every command that writes (core: knows only paths).

Inputs are sacred: no result may be an input, sit in a folder that holds inputs, lie inside an input ``.zarr``,
or have an input's path, with or without ``--overwrite`` (which replaces earlier results only).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .errors import DataError

__all__ = ["guard_outputs", "require_writable", "sample_files", "writable"]


def guard_outputs(
    inputs: Sequence[Path], out: Path, outputs: Sequence[Path], protect: Sequence[str | Path] = ()
) -> None:
    """Refuse, before any work, an output that is, replaces or sits among the inputs (with or without
    ``--overwrite``): OUT must not be an input, the folder holding input images, or inside an input ``.zarr``;
    no output may have an input's path. ``protect``: more files or folders that must stay untouched (the
    ground truth of ``evaluate MODEL DATA``)."""
    out_r = out.resolve()
    files = {Path(p).resolve() for p in inputs}
    guarded = files | {Path(p).resolve() for p in protect}
    folders = {p.parent for p in guarded if not p.is_dir()} | {p for p in guarded if p.is_dir()}
    for f in files | folders:
        if out_r == f or (f.suffix.lower() == ".zarr" and f in out_r.parents):
            what = f"{f}, a folder holding inputs" if f in folders and f not in files else f"the input {f}"
            raise DataError(
                f"--out {out}: is {what}; results would mix with or replace the inputs (even with --overwrite): "
                "choose another folder"
            )
    for o in outputs:
        if o.resolve() in guarded:
            raise DataError(
                f"--out {out}: the result {o} would replace the input {o.resolve()}; choose another folder"
            )


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
