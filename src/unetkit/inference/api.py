"""Prediction entry points for Python users and the CLI."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..data.io import IMAGE_SUFFIXES, read_volume, write_image, write_volume
from ..data.layouts import find_images
from ..data.lazy import ImageSource, image_size, open_image
from ..errors import ConfigError, DataError
from ..viz import contour_overlay
from .postprocess import instances_blockwise
from .predictor import Predictor
from .writers import FORMATS, PROBS_DTYPES, Plane, RowSink, encode_probs, new_array, remove_tree, save

__all__ = ["PredictedFile", "collect_inputs", "predict", "predict_files"]

log = logging.getLogger(__name__)


def predict(
    model: str | Path | Predictor, image: np.ndarray, *, return_probs: bool = False, **kwargs: object
):
    """Segment one image array of any size.

    ``model`` is a checkpoint path or a :class:`Predictor`; ``image`` is ``(H, W)`` or ``(H, W, C)`` raw
    (un-normalised) pixels. Returns the ``(H, W)`` uint8 label image (0/1 for a binary model), or
    ``(labels, probs)`` with ``return_probs=True``.

    Example:
        >>> mask = predict("run/best.pt", image)
    """
    predictor = model if isinstance(model, Predictor) else Predictor.from_checkpoint(model, **kwargs)  # type: ignore[arg-type]
    probs = predictor.predict_proba(image)
    labels = predictor.to_labels(probs)
    return (labels, probs) if return_probs else labels


@dataclass
class PredictedFile:
    """What :func:`predict_files` wrote for one input (``None``: not asked for)."""

    source: Path
    mask: Path
    probs: Path | None
    shape: tuple[int, int]
    instances: Path | None = None
    overlay: Path | None = None
    objects: int | None = None


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, ``.zarr`` arrays and folders (their image files, sorted) into a list of images; error on
    anything else."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.suffix.lower() == ".zarr" and p.exists():
            files.append(p)
        elif p.is_dir():
            found = find_images(p / "images") if (p / "images").is_dir() else find_images(p)
            if not found:
                raise DataError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{p}: not an image file; supported: {', '.join(IMAGE_SUFFIXES)}")
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    stems = [f.stem for f in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise DataError(
            f"several inputs share the name(s) {dupes[:5]}; their masks would overwrite each other"
        )
    return files


def output_paths(
    stem: str, out: Path, fmt: str, *, probs: bool, instances: bool, overlay: bool
) -> dict[str, Path]:
    """The files written for one input called ``stem`` (see :func:`predict_files`)."""
    if fmt == "zarr":
        paths = {"mask": out / f"{stem}.zarr"}
    else:
        paths = {"mask": out / f"{stem}.{'png' if fmt == 'png' else 'tif'}"}
        if probs:
            paths["probs"] = out / f"{stem}_probs.tif"
        if instances:
            paths["instances"] = out / f"{stem}_instances.tif"
    if overlay:
        paths["overlay"] = out / f"{stem}_overlay.png"
    return paths


def predict_files(
    model: str | Path | Predictor,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    format: str | None = None,
    save_probs: bool | str = False,
    instances: bool = False,
    overlay: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    max_pixels_in_memory: int = 1 << 26,
    object_context: int = 128,
    dask: str | bool | None = None,
    dask_workers: int = 2,
    chunk: int | None = None,
    **kwargs: object,
) -> list[PredictedFile]:
    """Segment image files (or folders of them, or ``.zarr`` arrays) and write the results to ``out``.

    Per input ``NAME`` (of the input's height and width):

    - ``NAME.png`` (``format="png"``) or ``NAME.tif`` (``"tiff"``): the mask, 0/255 for a binary model,
      otherwise in the training masks' encoding (class values, colours, or 0/1/2 for background / interior /
      border);
    - ``NAME_probs.tif`` with ``save_probs`` (``True`` = ``"float16"``, or ``"float32"``, or ``"uint8"`` =
      p x 255): the foreground probability ``(H, W)`` of a binary model, ``(C, H, W)`` otherwise;
    - ``NAME_instances.tif`` with ``instances``: object labels (uint16, or uint32 past 65,535 objects);
    - ``NAME_overlay.png`` with ``overlay``: contours drawn on the image (at most 2048 pixels a side);
    - with ``format="zarr"`` one group ``NAME.zarr`` holding the arrays ``mask``, ``probs`` and
      ``instances`` instead.

    ``format`` defaults to PNG, or TIFF for images over ``max_pixels_in_memory`` pixels: those are read
    lazily and held on disk while they are processed, so memory does not grow with the image. Instance IDs
    are consistent across tiles and blocks for objects up to ``object_context`` pixels across. Existing
    files are kept unless ``overwrite``; every check happens before the first tile is computed.

    ``dask``: run on a Dask cluster instead (``True``: a ``LocalCluster`` of ``dask_workers`` processes started
    here; a string: the scheduler's address), ``chunk`` x ``chunk`` pixels per task, results as zarr (see
    :mod:`unetkit.inference.distributed`). The semantic result equals the single-process one.
    """
    if format is not None and format not in FORMATS:
        raise ConfigError(f"--format {format!r} is unknown; choose one of {', '.join(FORMATS)}")
    probs_dtype = "float16" if save_probs is True else (save_probs or None)
    if probs_dtype is not None and probs_dtype not in PROBS_DTYPES:
        raise ConfigError(f"--save-probs {probs_dtype!r} is unknown; choose one of {', '.join(PROBS_DTYPES)}")
    files = collect_inputs(inputs)
    out = Path(out)
    if dask:
        if isinstance(model, Predictor):
            raise ConfigError(
                "distributed prediction loads the model on every worker: pass its file, not a Predictor"
            )
        if format not in (None, "zarr") or overlay:
            raise ConfigError("--dask writes zarr groups (--format zarr) and no --overlay")
        if chunk is not None and chunk < 16:
            raise ConfigError(f"--chunk must be at least 16 pixels, got {chunk}")
    predictor = model if isinstance(model, Predictor) else Predictor.from_checkpoint(model, **kwargs)  # type: ignore[arg-type]
    if dask:
        return _predict_dask(
            model,
            predictor,
            files,
            out,
            kwargs,
            address=None if dask is True else str(dask),
            workers=dask_workers,
            chunk=chunk or (256 if predictor.spatial_dims == 3 else 2048),
            probs_dtype=probs_dtype,
            instances=instances,
            object_context=object_context,
            overwrite=overwrite,
            progress=progress,
        )  # type: ignore[arg-type]
    if predictor.spatial_dims == 3:
        return _predict_volumes(
            predictor, files, out, format or "tiff", probs_dtype, instances, overlay, overwrite, progress
        )
    jobs = []
    for f in files:
        h, w = image_size(f)  # headers only: every input is checked before the first tile is computed
        large = h * w > max_pixels_in_memory
        fmt = format or ("tiff" if large else "png")
        if fmt == "png" and large:
            raise DataError(
                f"{f}: {h} x {w} pixels is too large to write as PNG in bounded memory; "
                "use --format tiff or --format zarr"
            )
        paths = output_paths(
            f.stem, out, fmt, probs=probs_dtype is not None, instances=instances, overlay=overlay
        )
        jobs.append((f, large, fmt, paths))
    if not overwrite:
        clash = [p for *_, paths in jobs for p in paths.values() if p.exists()]
        if clash:
            raise DataError(f"{clash[0]}: already exists ({len(clash)} in all); pass --overwrite to replace")
    results = []
    bar = tqdm(jobs, desc="predict", unit="image", disable=not progress or len(jobs) == 1)
    for f, large, fmt, paths in bar:
        with open_image(f).select(predictor.in_channels) as source:
            results.append(
                _predict_one(
                    predictor,
                    f,
                    source,
                    out,
                    large,
                    fmt,
                    paths,
                    probs_dtype,
                    instances,
                    object_context,
                    progress,
                )
            )
    return results


def _predict_dask(
    model: str | Path,
    predictor: Predictor,
    files: list[Path],
    out: Path,
    settings: dict[str, Any],
    *,
    address: str | None,
    workers: int,
    chunk: int,
    probs_dtype: str | None,
    instances: bool,
    object_context: int,
    overwrite: bool,
    progress: bool,
) -> list[PredictedFile]:
    from .distributed import DaskRun, model_spec, predict_chunks

    finals = [out / f"{f.stem}.zarr" for f in files]
    volumes = predictor.spatial_dims == 3
    shapes = {}
    for f in files:  # headers only: every input is checked before the cluster starts
        with open_image(f, volume=volumes) as source:
            shapes[f] = tuple(source.spatial_shape)
    if not overwrite:
        clash = [p for p in finals if p.exists()]
        if clash:
            raise DataError(f"{clash[0]}: already exists ({len(clash)} in all); pass --overwrite to replace")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with DaskRun(address, workers) as cluster:
        spec = model_spec(model, cluster.threads_per_task(), settings)
        log.info("Dask: %d worker(s) at %s", cluster.n_workers, cluster.client.scheduler.address)
        for f, final in zip(files, finals, strict=True):
            work = Path(tempfile.mkdtemp(prefix=f".{f.stem}.work.", dir=out))  # where every worker can write
            try:
                group = work / "result.zarr"
                objects = predict_chunks(
                    cluster,
                    spec,
                    predictor,
                    f,
                    group,
                    work,
                    chunk=chunk,
                    probs_dtype=probs_dtype,
                    instances=instances,
                    object_context=object_context,
                    progress=progress,
                )
                if final.exists():
                    remove_tree(final)
                os.replace(group, final)
            finally:
                remove_tree(work)
            results.append(
                PredictedFile(
                    source=f,
                    mask=final,
                    probs=final if probs_dtype else None,
                    shape=shapes[f],
                    instances=final if instances else None,
                    objects=objects,
                )
            )
    return results


def _predict_one(
    predictor: Predictor,
    f: Path,
    source: ImageSource,
    out: Path,
    large: bool,
    fmt: str,
    paths: dict[str, Path],
    probs_dtype: str | None,
    want_instances: bool,
    object_context: int,
    progress: bool,
) -> PredictedFile:
    import zarr

    h, w = source.spatial_shape
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{f.stem}.work.", dir=out)) if large or fmt == "zarr" else None
    try:
        store = zarr.open_group(str(work / "arrays.zarr"), mode="w") if large and work else None
        classes = new_array((h, w), np.uint8, store, "classes")
        probs = new_array((predictor.num_classes, h, w), probs_dtype, store, "probs") if probs_dtype else None

        def write(y0: int, y1: int, rows: np.ndarray) -> None:
            classes[y0:y1] = predictor.to_labels(rows)
            if probs is not None:
                probs[:, y0:y1] = encode_probs(rows, probs_dtype)  # type: ignore[arg-type]

        predictor.stream(source, RowSink(write, h), progress=progress, name=f)

        labels = None
        objects = None
        if want_instances:
            if large:
                labels = new_array((h, w), np.int32, store, "instances")
                objects = instances_blockwise(
                    lambda r, c: np.asarray(classes[r, c]),
                    (h, w),
                    lambda r, c, v: labels.__setitem__((r, c), v),
                    predictor.instances,
                    context=object_context,
                    out_read=lambda r, c: np.asarray(labels[r, c]),
                    progress=progress,
                )
            else:
                labels = predictor.instances(classes)
                objects = int(labels.max())
        return _write_outputs(predictor, f, source, fmt, paths, classes, probs, labels, objects, large, work)
    finally:
        if work is not None:
            remove_tree(work)


def _write_outputs(
    predictor: Predictor,
    f: Path,
    source: ImageSource,
    fmt: str,
    paths: dict[str, Path],
    classes: Any,
    probs: Any,
    labels: Any,
    objects: int | None,
    large: bool,
    work: Path | None,
) -> PredictedFile:
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
                [(lambda r, cc, i=i: np.asarray(probs[i, r, cc]), (h, w), probs.dtype) for i in range(c)],
            )
        )
    if labels is not None:
        dtype = np.dtype(np.uint16 if (objects or 0) < 2**16 else np.uint32)
        outputs.append(("instances", [(lambda r, c: np.asarray(labels[r, c]).astype(dtype), (h, w), dtype)]))
    written: dict[str, Path] = {}
    if fmt == "zarr":
        assert work is not None
        group = work / "result.zarr"
        for key, planes in outputs:
            save(group, planes, "zarr", zarr_name=key)
        final = paths["mask"]
        if final.exists():
            remove_tree(final)
        os.replace(group, final)
        written = {key: final for key, _ in outputs}
    else:
        for key, planes in outputs:
            fmt_key = "png" if key == "mask" and fmt == "png" else "tiff"
            written[key] = save(paths[key], planes, fmt_key, in_memory=not large)
    if "overlay" in paths:
        view = labels if labels is not None else classes
        written["overlay"] = write_image(paths["overlay"], _overlay(source, view), overwrite=True)
    return PredictedFile(
        source=f,
        mask=written["mask"],
        probs=written.get("probs"),
        shape=(h, w),
        instances=written.get("instances"),
        overlay=written.get("overlay"),
        objects=objects,
    )


def _overlay(source: ImageSource, labels: Any, side: int = 2048, detail: int = 1024) -> np.ndarray:
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


def _predict_volumes(
    predictor: Predictor,
    files: list[Path],
    out: Path,
    fmt: str,
    probs_dtype: str | None,
    instances: bool,
    overlay: bool,
    overwrite: bool,
    progress: bool,
) -> list[PredictedFile]:
    """A 3-D model: each input is a volume (TIFF z-stack, ``.npy``, ``.zarr``), segmented in memory and
    written as a multi-page TIFF (or a zarr group); the overlay shows the middle slice."""
    import zarr

    if fmt == "png":
        raise ConfigError("a 3-D model writes volumes: use --format tiff (the default) or --format zarr")
    jobs = [
        (
            f,
            output_paths(
                f.stem, out, fmt, probs=probs_dtype is not None, instances=instances, overlay=overlay
            ),
        )
        for f in files
    ]
    clash = [p for _, paths in jobs for p in paths.values() if p.exists()]
    if clash and not overwrite:
        raise DataError(f"{clash[0]}: already exists ({len(clash)} in all); pass --overwrite to replace")
    volumes = {
        f: read_volume(f) for f, _ in jobs[:1]
    }  # the first is read now: a bad file fails before compute
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for f, paths in tqdm(jobs, desc="predict", unit="volume", disable=not progress or len(jobs) == 1):
        volume = volumes.pop(f, None)
        volume = read_volume(f) if volume is None else volume
        probs = predictor.predict_proba(volume, f, progress=progress)
        classes = predictor.to_labels(probs)
        labels = predictor.instances(classes) if instances else None
        arrays = {"mask": predictor.to_mask(classes)}
        if probs_dtype:
            arrays["probs"] = encode_probs(probs[0] if len(probs) == 1 else probs, probs_dtype)
        if labels is not None:
            arrays["instances"] = labels.astype(np.uint16 if labels.max() < 2**16 else np.uint32)
        written: dict[str, Path] = {}
        if fmt == "zarr":
            work = Path(tempfile.mkdtemp(prefix=f".{f.stem}.work.", dir=out))
            try:
                group = zarr.open_group(str(work / "result.zarr"), mode="w")
                for key, arr in arrays.items():
                    group.create_array(
                        key, data=arr, chunks=(*arr.shape[:-3], *(min(64, n) for n in arr.shape[-3:]))
                    )
                if paths["mask"].exists():
                    remove_tree(paths["mask"])
                os.replace(work / "result.zarr", paths["mask"])
            finally:
                remove_tree(work)
            written = dict.fromkeys(arrays, paths["mask"])
        else:
            for key, arr in arrays.items():
                written[key] = write_volume(paths[key], arr, overwrite=True)
        if overlay:
            mid = volume.shape[0] // 2
            shown = labels if labels is not None else classes
            written["overlay"] = write_image(
                paths["overlay"], contour_overlay(volume[mid], shown[mid]), overwrite=True
            )
        results.append(
            PredictedFile(
                source=f,
                mask=written["mask"],
                probs=written.get("probs"),
                shape=tuple(classes.shape),  # type: ignore[arg-type]
                instances=written.get("instances"),
                overlay=written.get("overlay"),
                objects=int(labels.max()) if labels is not None else None,
            )
        )
    return results
