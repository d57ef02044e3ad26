"""Prediction entry points for Python users and the CLI."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..data.io import (
    IMAGE_SUFFIXES,
    check_pixel_values,
    count_planes,
    read_image,
    read_volume,
    write_image,
    write_volume,
)
from ..data.layouts import find_images
from ..data.lazy import ImageSource, open_image
from ..errors import ConfigError, DataError
from ..safety import guard_outputs, require_writable
from ..viz import contour_overlay
from .postprocess import instances_blockwise
from .predictor import Predictor
from .writers import (
    FORMATS,
    PROBS_DTYPES,
    Plane,
    RowSink,
    encode_probs,
    new_array,
    remove_stale_work,
    remove_tree,
    save,
    work_dir,
)

__all__ = [
    "InputImage",
    "PredictedFile",
    "PredictedFiles",
    "collect_inputs",
    "guard_outputs",
    "predict",
    "predict_files",
    "samples_as_inputs",
]

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


@dataclass(frozen=True)
class InputImage:
    """One input of :func:`predict_files`: its output name and file (a stack's pages are one input)."""

    name: str
    path: Path


class PredictedFiles(list):
    """The :class:`PredictedFile` of every input written, and ``skipped``: one line per damaged input that
    ``skip_bad`` went past (empty when all were written)."""

    skipped: list[str]

    def __init__(self, items: Sequence[PredictedFile] = (), skipped: Sequence[str] = ()):
        super().__init__(items)
        self.skipped = list(skipped)


def samples_as_inputs(samples: Sequence[Any]) -> list[InputImage]:
    """Dataset samples (:class:`~unetkit.data.layouts.Sample`) → inputs named like the samples; the pages of
    one stack (ISBI) become one input, predicted page by page into a stack of the same name."""
    out: list[InputImage] = []
    seen: set[Path] = set()
    for s in samples:
        if s.image_page is not None:
            if s.image not in seen:
                seen.add(s.image)
                out.append(InputImage(s.image.stem, s.image))
        else:
            out.append(InputImage(s.name, s.image))
    return out


def collect_inputs(
    inputs: Sequence[str | Path | InputImage], layout: str = "auto", naming: Any = None
) -> list[InputImage]:
    """Expand files, ``.zarr`` arrays and folders into named inputs. A folder is read as a dataset when it is
    one (any layout ``train`` takes: its images, masks or not; ``layout`` and ``naming`` as for ``train``) and
    as a folder of images otherwise."""
    from ..data.layouts import Naming, detect_layout, load_layout

    naming = naming or Naming()
    forced = layout != "auto" or naming != Naming()

    items: list[InputImage] = []
    for item in inputs:
        if isinstance(item, InputImage):
            items.append(item)
            continue
        p = Path(item)
        if p.suffix.lower() == ".zarr" and p.exists():
            items.append(InputImage(p.stem, p))
        elif p.is_dir() or (p.is_file() and p.suffix.lower() in (".csv", ".json")):
            if forced:  # the user named the layout: its errors are theirs to see
                found_layout = load_layout(p, layout, naming=naming, masks=False)
            else:
                try:
                    detect_layout(p)
                    found_layout = load_layout(p, masks=False)
                except DataError:
                    found_layout = None
            if found_layout is not None and found_layout.samples:
                with_masks = sum(s.mask is not None for s in found_layout.samples)
                log.info(
                    "%s: a %s dataset: segmenting its %d image(s)%s",
                    p,
                    found_layout.name,
                    len(found_layout.samples),
                    f" (not the {with_masks} mask(s) beside them)" if with_masks else "",
                )
                items.extend(samples_as_inputs(found_layout.samples))
                continue
            found = find_images(p) if p.is_dir() else []
            if not found:
                raise DataError(
                    f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) and no dataset layout (images/, "
                    "ID/images/, a stack, 01/ ...) in this folder"
                )
            items.extend(InputImage(f.stem, f) for f in found)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{p}: not an image file; supported: {', '.join(IMAGE_SUFFIXES)}")
            items.append(InputImage(p.stem, p))
        else:
            raise DataError(f"{p}: no such file or folder")
    names = [i.name for i in items]
    dupes = sorted({s for s in names if names.count(s) > 1})
    if dupes:
        raise DataError(
            f"several inputs share the name(s) {dupes[:5]}; their masks would overwrite each other"
        )
    return items


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
    inputs: Sequence[str | Path | InputImage],
    out: str | Path,
    *,
    format: str | None = None,
    save_probs: bool | str = False,
    instances: bool = False,
    overlay: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    skip_bad: bool = False,
    protect: Sequence[str | Path] = (),
    layout: str = "auto",
    naming: Any = None,
    progress: bool = True,
    max_pixels_in_memory: int = 1 << 26,
    max_memory: float | None = None,
    object_context: int = 128,
    dask: str | bool | None = None,
    dask_workers: int = 2,
    chunk: int | None = None,
    **kwargs: object,
) -> PredictedFiles:
    """Segment image files (or folders of them, datasets in any layout, or ``.zarr`` arrays) into ``out``.

    Per input ``NAME`` (of the input's height and width):

    - ``NAME.png`` (``format="png"``) or ``NAME.tif`` (``"tiff"``): the mask in the user's encoding: 0/255 for
      binary and instance masks (a border model's interior and border are both the object), the class values
      for class masks, the colours for colour masks;
    - ``NAME_probs.tif`` with ``save_probs`` (``True`` = ``"float16"``, or ``"float32"``, or ``"uint8"`` =
      p x 255): the foreground probability ``(H, W)`` of a binary model, ``(C, H, W)`` otherwise;
    - ``NAME_instances.tif`` with ``instances``: object labels (uint16, or uint32 past 65,535 objects);
    - ``NAME_overlay.png`` with ``overlay``: contours drawn on the image (at most 2048 pixels a side);
    - with ``format="zarr"`` one group ``NAME.zarr`` holding the arrays ``mask``, ``probs`` and
      ``instances`` instead.
    A multi-page TIFF given to a 2-D model (an ISBI stack) is segmented page by page into stacks. ``layout``
    and ``naming`` (:class:`~unetkit.data.layouts.Naming`) find a dataset folder's images as ``train`` does.

    Every input is checked (readable, channels, size) and no output may be or replace an input, before the
    first result is written. Each result appears atomically under its final name. Existing results are an
    error unless ``overwrite`` (replace them) or ``resume`` (keep them and do the rest: a killed batch goes on
    where it stopped). ``skip_bad``: go on past damaged inputs; they are listed in the result's ``skipped``.

    ``format`` defaults to PNG, or TIFF for images over ``max_pixels_in_memory`` pixels: those are read
    lazily and held on disk while they are processed, so memory does not grow with the image. Instance IDs
    are consistent across tiles and blocks for objects up to ``object_context`` pixels across. ``max_memory``
    (bytes; default: half the memory available): an image whose row of tiles needs more is refused before
    anything is allocated (memory grows with the width; ``--dask`` splits both ways).

    ``dask``: run on a Dask cluster instead (``True``: a ``LocalCluster`` of ``dask_workers`` processes started
    here; a string: the scheduler's address), ``chunk`` x ``chunk`` pixels per task, results as zarr (see
    :mod:`unetkit.inference.distributed`). The semantic result equals the single-process one.
    """
    if format is not None and format not in FORMATS:
        raise ConfigError(f"--format {format!r} is unknown; choose one of {', '.join(FORMATS)}")
    probs_dtype = "float16" if save_probs is True else (save_probs or None)
    if probs_dtype is not None and probs_dtype not in PROBS_DTYPES:
        raise ConfigError(f"--save-probs {probs_dtype!r} is unknown; choose one of {', '.join(PROBS_DTYPES)}")
    if overwrite and resume:
        raise ConfigError("--overwrite replaces results and --resume keeps them: choose one")
    items = collect_inputs(inputs, layout, naming)
    out = Path(out)
    if out.exists() and not out.is_dir():
        guard_outputs([i.path for i in items], out, [out], protect)
        raise DataError(f"--out {out}: exists and is not a folder")
    if dask:
        if isinstance(model, Predictor):
            raise ConfigError(
                "distributed prediction loads the model on every worker: pass its file, not a Predictor"
            )
        if format not in (None, "zarr") or overlay:
            raise ConfigError("--dask writes zarr groups (--format zarr) and no --overlay")
        if chunk is not None and chunk < 16:
            raise ConfigError(f"--chunk must be at least 16 pixels, got {chunk}")
    guard_outputs([i.path for i in items], out, [], protect)
    predictor = model if isinstance(model, Predictor) else Predictor.from_checkpoint(model, **kwargs)  # type: ignore[arg-type]
    files = [i.path for i in items]
    if dask:
        guard_outputs(files, out, [out / f"{i.name}.zarr" for i in items], protect)
        return PredictedFiles(
            _predict_dask(
                model,
                predictor,
                items,
                out,
                kwargs,
                address=None if dask is True else str(dask),
                workers=dask_workers,
                chunk=chunk or (256 if predictor.spatial_dims == 3 else 2048),
                probs_dtype=probs_dtype,
                instances=instances,
                object_context=object_context,
                overwrite=overwrite,
                resume=resume,
                progress=progress,
            )
        )  # type: ignore[arg-type]
    if predictor.spatial_dims == 3:
        fmt = format or "tiff"
        jobs = [
            (
                i,
                output_paths(
                    i.name, out, fmt, probs=probs_dtype is not None, instances=instances, overlay=overlay
                ),
            )
            for i in items
        ]
        guard_outputs(files, out, [p for _, paths in jobs for p in paths.values()], protect)
        return _predict_volumes(
            predictor, jobs, out, fmt, probs_dtype, instances, overlay, overwrite, resume, skip_bad, progress
        )
    jobs, bad = [], []
    for item in items:  # every input checked before the first result is written
        try:
            h, w, pages = _check_input(item.path, predictor, max_pixels_in_memory, max_memory)
        except DataError as exc:
            bad.append(str(exc))
            continue
        large = h * w > max_pixels_in_memory
        fmt = format or ("tiff" if large or pages > 1 else "png")
        if fmt == "png" and (large or pages > 1):
            why = (
                f"{h} x {w} pixels is too large to write as PNG in bounded memory"
                if large
                else f"a stack of {pages} pages"
            )
            raise DataError(f"{item.path}: {why}; use --format tiff or --format zarr")
        paths = output_paths(
            item.name, out, fmt, probs=probs_dtype is not None, instances=instances, overlay=overlay
        )
        jobs.append((item, large, fmt, paths, pages))
    guard_outputs(files, out, [p for *_, paths, _ in jobs for p in paths.values()], protect)
    if bad and not skip_bad:
        raise _bad_inputs(bad, len(items))
    jobs, done = _existing(jobs, overwrite, resume, lambda job: job[3])
    prepare_out(out)
    results = PredictedFiles(skipped=bad)
    bar = tqdm(jobs, desc="predict", unit="image", disable=not progress or len(jobs) == 1)
    for item, large, fmt, paths, pages in bar:
        try:
            if pages > 1:
                results.append(
                    _predict_stack(predictor, item, pages, paths, probs_dtype, instances, progress)
                )
                continue
            with open_image(item.path).select(predictor.in_channels) as source:
                results.append(
                    _predict_one(
                        predictor,
                        item.path,
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
        except DataError as exc:
            if not skip_bad:
                raise
            results.skipped.append(str(exc))
    if done:
        log.info("--resume: kept %d complete result(s), segmented %d", done, len(jobs))
    return results


def _bad_inputs(bad: list[str], total: int) -> DataError:
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


def _check_input(
    path: Path, predictor: Predictor, max_pixels: int, max_memory: float | None = None
) -> tuple[int, int, int]:
    """Height, width and pages of a 2-D model's input, after reading it as the prediction will (an image that
    fits in memory is decoded whole; a large one is opened and sampled)."""
    pages = count_planes(path) if path.suffix.lower() in (".tif", ".tiff") else 1
    if pages > 1:
        first = read_image(path, 0)
        predictor.channels_first(first, f"{path} [page 0]")
        check_pixel_values(first, path)
        return first.shape[0], first.shape[1], pages
    with open_image(path) as source:
        h, w = source.spatial_shape
        predictor.check_size((h, w), path, max_memory)  # declared sizes, before anything is read or allocated
        source.select(predictor.in_channels)
        # a small image decodes whole now (a damaged file fails before any result); a large one is sampled
        pixels = source[..., 0:h, 0:w] if h * w <= max_pixels else source.subsample(1 << 20)
        check_pixel_values(np.asarray(pixels), path, sampled=h * w > max_pixels)
    return h, w, 1


def _existing(jobs: list, overwrite: bool, resume: bool, paths_of: Any) -> tuple[list, int]:
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


def _predict_stack(
    predictor: Predictor,
    item: InputImage,
    pages: int,
    paths: dict[str, Path],
    probs_dtype: str | None,
    want_instances: bool,
    progress: bool,
) -> PredictedFile:
    """A multi-page TIFF (one 2-D image per page, as ISBI stacks) → stacks of masks (and labels, probs)."""
    masks, labels, probs = [], [], []
    for k in tqdm(range(pages), desc=item.name, unit="page", disable=not progress):
        image = read_image(item.path, k)
        p = predictor.predict_proba(image, f"{item.path} [page {k}]")
        classes = predictor.to_labels(p)
        masks.append(predictor.to_mask(classes))
        if probs_dtype:
            probs.append(encode_probs(p[0] if len(p) == 1 else p, probs_dtype))
        if want_instances:
            labels.append(predictor.instances(classes))
    written = {"mask": write_volume(paths["mask"], np.stack(masks), overwrite=True)}
    objects = None
    if want_instances:
        stack = np.stack(labels)
        objects = int(sum(int(lab.max()) for lab in labels))
        written["instances"] = write_volume(
            paths["instances"], stack.astype(np.uint16 if stack.max() < 2**16 else np.uint32), overwrite=True
        )
    if probs_dtype:
        written["probs"] = write_volume(paths["probs"], np.stack(probs), overwrite=True)
    if "overlay" in paths:
        first = read_image(item.path, 0)
        shown = labels[0] if labels else masks[0]
        written["overlay"] = write_image(paths["overlay"], contour_overlay(first, shown), overwrite=True)
    return PredictedFile(
        source=item.path,
        mask=written["mask"],
        probs=written.get("probs"),
        shape=(pages, *masks[0].shape[:2]),  # type: ignore[arg-type]
        instances=written.get("instances"),
        overlay=written.get("overlay"),
        objects=objects,
    )


def _predict_dask(
    model: str | Path,
    predictor: Predictor,
    items: list[InputImage],
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
    resume: bool,
    progress: bool,
) -> list[PredictedFile]:
    from .distributed import DaskRun, model_spec, predict_chunks

    files = [i.path for i in items]
    finals = [out / f"{i.name}.zarr" for i in items]
    volumes = predictor.spatial_dims == 3
    shapes = {}
    for f in files:  # headers only: every input is checked before the cluster starts
        with open_image(f, volume=volumes) as source:
            shapes[f] = tuple(source.spatial_shape)
    todo, _ = _existing(
        list(zip(files, finals, strict=True)), overwrite, resume, lambda job: {"mask": job[1]}
    )
    files, finals = [f for f, _ in todo], [final for _, final in todo]
    prepare_out(out)
    results = []
    with DaskRun(address, workers) as cluster:
        spec = model_spec(model, cluster.threads_per_task(), settings)
        log.info("Dask: %d worker(s) at %s", cluster.n_workers, cluster.client.scheduler.address)
        for f, final in zip(files, finals, strict=True):
            work = Path(work_dir(out, final.stem))  # where every worker can write
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
    work = work_dir(out, paths["mask"].stem) if large or fmt == "zarr" else None
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
    jobs: list[tuple[InputImage, dict[str, Path]]],
    out: Path,
    fmt: str,
    probs_dtype: str | None,
    instances: bool,
    overlay: bool,
    overwrite: bool,
    resume: bool,
    skip_bad: bool,
    progress: bool,
) -> PredictedFiles:
    """A 3-D model: each input is a volume (TIFF z-stack, ``.npy``, ``.zarr``), segmented in memory and
    written as a multi-page TIFF (or a zarr group); the overlay shows the middle slice."""
    import zarr

    if fmt == "png":
        raise ConfigError("a 3-D model writes volumes: use --format tiff (the default) or --format zarr")
    bad = []
    for item, _ in jobs:  # headers and channels of every input before the first result is written
        try:
            with open_image(item.path, volume=True).select(predictor.in_channels):
                pass
        except DataError as exc:
            bad.append(str(exc))
    if bad and not skip_bad:
        raise _bad_inputs(bad, len(jobs))
    jobs = [(i, paths) for i, paths in jobs if not any(str(i.path) in b for b in bad)]
    jobs, _ = _existing(jobs, overwrite, resume, lambda job: job[1])
    prepare_out(out)
    results = PredictedFiles(skipped=bad)
    for item, paths in tqdm(jobs, desc="predict", unit="volume", disable=not progress or len(jobs) == 1):
        f = item.path
        try:
            volume = read_volume(f)
        except DataError as exc:
            if not skip_bad:
                raise
            results.skipped.append(str(exc))
            continue
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
            work = work_dir(out, item.name)
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
