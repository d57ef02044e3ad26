"""What prediction writes, in one place: the result records, output names, the existing-result check
(``--overwrite``/``--resume``), the dtypes of masks and labels, atomic publication of files and zarr groups,
and the overlay picture.

Every result appears under its final name in one step (:mod:`unetkit.atomic`); a zarr group is built in a
work folder (:func:`~unetkit.inference.writers.work_dir`) and renamed into place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import publish_folder
from ..data.io import write_image
from ..data.lazy import ImageSource
from ..errors import DataError
from ..safety import require_writable
from ..viz import contour_overlay
from .objects import write_objects_csv
from .predictor import Predictor
from .writers import Plane, remove_stale_work, save

__all__ = [
    "PNG_MAX_PIXELS",
    "PredictedFile",
    "PredictedFiles",
    "bad_inputs",
    "default_format",
    "existing",
    "instance_dtype",
    "output_paths",
    "prepare_out",
    "publish_group",
    "write_outputs",
]

log = logging.getLogger(__name__)


@dataclass
class PredictedFile:
    """What :func:`predict_files` wrote for one input (``None``: not asked for)."""

    source: Path
    mask: Path
    probs: Path | None
    shape: tuple[int, ...]  # (H, W), or (D, H, W) for volumes and stacks
    instances: Path | None = None
    overlay: Path | None = None
    objects: int | None = None
    #: ``NAME_objects.csv``: every object with its confidence (least confident first), area, centroid, box and
    #: mean intensity (with ``instances``)
    table: Path | None = None


class PredictedFiles(list):
    """The :class:`PredictedFile` of every input written, and ``skipped``: one line per damaged input that
    ``skip_bad`` went past (empty when all were written)."""

    skipped: list[str]

    def __init__(self, items: Sequence[PredictedFile] = (), skipped: Sequence[str] = ()):
        super().__init__(items)
        self.skipped = list(skipped)


#: the largest mask written as PNG by default: Pillow, and the readers built on it (napari's, imageio, most
#: scripts), warn past 89 and refuse past 179 megapixels; larger masks are tiled TIFF unless --format png
PNG_MAX_PIXELS = 1 << 26


def default_format(h: int, w: int, pages: int) -> str:
    """The format of a 2-D input's results when ``--format`` is not given, one rule whatever path the image
    takes through memory: a stack of pages → TIFF (one page per plane); a mask over :data:`PNG_MAX_PIXELS`
    pixels → tiled TIFF; else PNG."""
    return "tiff" if pages > 1 or h * w > PNG_MAX_PIXELS else "png"


def output_paths(
    stem: str, out: Path, fmt: str, *, probs: bool, instances: bool, overlay: bool
) -> dict[str, Path]:
    """The files written for one input called ``stem`` (see :func:`predict_files`)."""
    if fmt == "zarr":
        paths = {"mask": out / f"{stem}.zarr"}
    elif fmt == "ome-zarr":
        paths = {"mask": out / f"{stem}.ome.zarr"}
    else:
        paths = {"mask": out / f"{stem}.{'png' if fmt == 'png' else 'tif'}"}
        if probs:
            paths["probs"] = out / f"{stem}_probs.tif"
        if instances:
            paths["instances"] = out / f"{stem}_instances.tif"
    if (
        instances
    ):  # every object with its confidence, area, centroid, box and intensity (beside zarr groups too)
        paths["objects"] = out / f"{stem}_objects.csv"
    if overlay:
        paths["overlay"] = out / f"{stem}_overlay.png"
    return paths


def bad_inputs(bad: list[str], total: int) -> DataError:
    """One line for one bad input; a list, one line each, for several."""
    if len(bad) == 1:
        return DataError(
            f"{bad[0]}; nothing was written (fix or remove it, or pass --skip-bad to go on without it)"
        )
    return DataError(
        f"{len(bad)} of {total} inputs cannot be segmented; nothing was written. Fix or remove them, or pass "
        "--skip-bad to go on without them:\n  " + "\n  ".join(bad)
    )


def prepare_out(out: Path) -> None:
    """Create OUT, prove it writable before any compute, and remove work folders that killed runs left there
    (only unetkit's own, of processes that no longer run)."""
    out.mkdir(parents=True, exist_ok=True)
    require_writable(out)
    for stale in remove_stale_work(out):
        log.info("removed %s, left by a run that was killed", stale)


def existing(jobs: list, overwrite: bool, resume: bool, paths_of: Any) -> tuple[list, int]:
    """The jobs still to do: every job unless some results exist (an error without --overwrite or --resume;
    with --resume, jobs whose results are all there are complete, since results appear atomically)."""
    clash = [p for job in jobs for p in paths_of(job).values() if p.exists()]
    if not clash or overwrite:
        return jobs, 0
    if not resume:
        raise DataError(
            f"{clash[0]}: already exists ({len(clash)} result file(s) in all); pass --resume to keep complete "
            "results and do the rest, or --overwrite to replace them"
        )
    todo = [job for job in jobs if not all(p.exists() for p in paths_of(job).values())]
    return todo, len(jobs) - len(todo)


def write_outputs(
    predictor: Predictor,
    f: Path,
    source: ImageSource,
    fmt: str,
    paths: dict[str, Path],
    done: Any,
    large: bool,
    work: Path | None,
) -> PredictedFile:
    """The results of one 2-D image (``done``: :class:`~unetkit.inference.pipeline.Segmented`) in ``fmt``."""
    classes, probs, labels, objects, table = done
    h, w = source.spatial_shape
    mask_sample = predictor.to_mask(np.zeros((1, 1), np.uint8))
    mask_plane: Plane = (
        lambda r, c: predictor.to_mask(np.asarray(classes[r, c])),
        (h, w, *mask_sample.shape[2:]),
        mask_sample.dtype,
    )
    outputs: list[tuple[str, list[Plane]]] = [("mask", [mask_plane])]
    if probs is not None:
        c = probs.shape[0]
        outputs.append(
            (
                "probs",
                [(_probs_reader(probs, i), (h, w), probs.dtype) for i in range(c)],
            )
        )
    if labels is not None:
        dtype = instance_dtype(objects)
        outputs.append(("instances", [(lambda r, c: np.asarray(labels[r, c]).astype(dtype), (h, w), dtype)]))
    written: dict[str, Path] = {}
    if fmt == "ome-zarr":
        from .omezarr import write_ome_zarr

        assert work is not None
        layers = {key: planes[0] for key, planes in outputs}
        properties = {"instances": table} if table is not None else None
        final = publish_group(
            write_ome_zarr(work / "result.ome.zarr", source, layers, properties), paths["mask"]
        )
        written = {key: final for key in layers}
    elif fmt == "zarr":
        assert work is not None
        group = work / "result.zarr"
        for key, planes in outputs:
            save(group, planes, "zarr", zarr_name=key)
        final = publish_group(group, paths["mask"])
        written = {key: final for key, _ in outputs}
    else:
        for key, planes in outputs:
            fmt_key = "png" if key == "mask" and fmt == "png" else "tiff"
            written[key] = save(paths[key], planes, fmt_key, in_memory=not large)
    if "overlay" in paths:
        view = labels if labels is not None else classes
        written["overlay"] = write_image(paths["overlay"], overlay_picture(source, view), overwrite=True)
    if table is not None and "objects" in paths:
        written["objects"] = write_objects_csv(paths["objects"], table)
    return PredictedFile(
        source=f,
        mask=written["mask"],
        probs=written.get("probs"),
        shape=(h, w),
        instances=written.get("instances"),
        overlay=written.get("overlay"),
        objects=objects,
        table=written.get("objects"),
    )


def overlay_picture(source: ImageSource, labels: Any, side: int = 2048, detail: int = 1024) -> np.ndarray:
    """Contours on the image, at most ``side`` pixels a side. An image that had to be shrunk gets a second
    panel: its centre at full resolution (``detail`` pixels), outlined in white on the overview."""
    h, w = source.spatial_shape
    stride = max(1, -(-max(h, w) // side))
    overview = contour_overlay(
        np.moveaxis(source[..., ::stride, ::stride], 0, -1), np.asarray(labels[::stride, ::stride])
    )
    if stride == 1:
        return overview
    dh, dw = min(detail, h), min(detail, w)
    y0, x0 = (h - dh) // 2, (w - dw) // 2
    rows, cols = slice(y0, y0 + dh), slice(x0, x0 + dw)
    zoom = contour_overlay(np.moveaxis(source[..., rows, cols], 0, -1), np.asarray(labels[rows, cols]))
    by, bx = slice(y0 // stride, (y0 + dh) // stride), slice(x0 // stride, (x0 + dw) // stride)
    for edge in (
        overview[by.start, bx],
        overview[by.stop - 1, bx],
        overview[by, bx.start],
        overview[by, bx.stop - 1],
    ):
        edge[...] = 255
    height = max(overview.shape[0], zoom.shape[0])
    canvas = np.full((height, overview.shape[1] + 8 + zoom.shape[1], 3), 255, np.uint8)
    canvas[: overview.shape[0], : overview.shape[1]] = overview
    canvas[: zoom.shape[0], overview.shape[1] + 8 :] = zoom
    return canvas


def instance_dtype(objects: int | None) -> np.dtype:
    """Instance labels are written as uint16, or uint32 past 65,535 objects."""
    return np.dtype(np.uint16 if (objects or 0) < 2**16 else np.uint32)


def publish_group(group: Path, final: Path) -> Path:
    """Move a finished zarr group from its work folder onto ``final`` (a result of ours, replaced whole)."""
    return publish_folder(group, final)


def _probs_reader(probs: Any, i: int) -> Any:
    """Rows and columns of class ``i``'s probabilities."""
    return lambda r, c: np.asarray(probs[i, r, c])
