"""The ``predict`` workflow: files, folders and datasets in → masks (labels, probabilities, overlays) out.

Composes :mod:`unetkit.data.layouts` (which files are inputs) with the inference pipelines
(:mod:`unetkit.inference.pipeline`, :mod:`unetkit.inference.distributed`): every input is found and checked,
and no output may be or replace an input, before the first result is written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..checkpoint import resolve_model_path
from ..config import FORMATS, PROBS_DTYPES, OutputConfig, PredictConfig, check_values
from ..data.io import FOREIGN_IMAGE_SUFFIXES, IMAGE_SUFFIXES, listed_images, not_read
from ..data.layouts import Naming, detect_layout, find_images, load_layout
from ..data.lazy import missing_chunks, ome_level, open_image
from ..device import tune_allocator
from ..errors import ConfigError, DataError
from ..extras import require_extra
from ..inference.outputs import (
    PNG_MAX_PIXELS,
    PredictedFile,
    PredictedFiles,
    bad_inputs,
    default_format,
    existing,
    output_paths,
    prepare_out,
)
from ..inference.pipeline import InputImage, check_input, predict_one, predict_stack, predict_volumes
from ..inference.predictor import Predictor
from ..safety import guard_outputs

__all__ = [
    "InputImage",
    "PredictedFile",
    "PredictedFiles",
    "collect_inputs",
    "predict_files",
    "samples_as_inputs",
]

log = logging.getLogger(__name__)


def samples_as_inputs(samples: Sequence[Any]) -> list[InputImage]:
    """Dataset samples (:class:`~unetkit.data.layouts.Sample`) → inputs named like the samples; the pages of
    one stack (ISBI) become one input, predicted page by page into a stack of the same name."""
    out: list[InputImage] = []
    seen: set[Path] = set()
    for s in samples:
        if s.image_page is not None:
            if s.image not in seen:
                seen.add(s.image)
                out.append(InputImage(s.image.stem, s.image, stack=True))
        else:
            out.append(InputImage(s.name, s.image))
    return out


def collect_inputs(
    inputs: Sequence[str | Path | InputImage] | str | Path,
    layout: str = "auto",
    naming: Any = None,
    level: int | None = None,
) -> list[InputImage]:
    """Expand files, ``.zarr`` arrays and folders into named inputs. A folder is read as a dataset when it is
    one (any layout ``train`` takes: its images, masks or not; ``layout`` and ``naming`` as for ``train``) and
    as a folder of images otherwise. ``level``: read OME-Zarr images at this resolution level (0: full; every
    input must then be an OME-Zarr image)."""
    if isinstance(inputs, (str, Path)):  # one path, never its characters one by one
        inputs = [inputs]
    naming = naming or Naming()
    forced = layout != "auto" or naming != Naming()

    items: list[InputImage] = []
    for item in inputs:
        if isinstance(item, InputImage):
            items.append(item)
            continue
        p = Path(item)
        if level is not None and not (p.suffix.lower() == ".zarr" and p.is_dir()):
            raise DataError(f"{p}: --level {level} reads OME-Zarr images (NAME.ome.zarr); this is not one")
        if p.suffix.lower() == ".zarr" and p.exists():
            name = p.stem[: -len(".ome")] if p.stem.lower().endswith(".ome") else p.stem
            items.append(InputImage(name, p if level is None else ome_level(p, level)))
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
            foreign = listed_images(p)[1] if p.is_dir() and not found else []
            if not found:
                raise DataError(
                    f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) and no dataset layout (images/, "
                    "ID/images/, a stack, 01/ ...) in this folder"
                    + (f"; {not_read(foreign)}" if foreign else "")
                )
            items.extend(InputImage(f.stem, f) for f in found)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                hint = "; export it as TIFF (Fiji: File > Save As > Tiff; or bfconvert)"
                raise DataError(
                    f"{p}: not an image file unetkit reads; supported: {', '.join(IMAGE_SUFFIXES)}"
                    + (hint if p.suffix.lower() in FOREIGN_IMAGE_SUFFIXES else "")
                )
            items.append(InputImage(p.stem, p, stack=layout == "isbi"))  # --layout isbi: pages are images
        else:
            raise DataError(f"{p}: no such file or folder")
    names = [i.name for i in items]
    dupes = sorted({s for s in names if names.count(s) > 1})
    if dupes:
        raise DataError(
            f"several inputs share the name(s) {dupes[:5]}; their masks would overwrite each other"
        )
    return items


def predict_files(
    model: str | Path | Predictor,
    inputs: Sequence[str | Path | InputImage] | str | Path,
    out: str | Path,
    *,
    format: str | None = None,
    save_probs: bool | str | None = None,
    instances: bool = False,
    overlay: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    skip_bad: bool = False,
    fill_missing_chunks: bool = False,
    protect: Sequence[str | Path] = (),
    layout: str = "auto",
    naming: Any = None,
    progress: bool = True,
    max_pixels_in_memory: int | None = None,
    max_memory_gib: float | None = None,
    object_context: int = 128,
    dask: str | bool | None = None,
    dask_workers: int = 2,
    chunk: int | None = None,
    level: int | None = None,
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
      ``instances`` instead;
    - with ``format="ome-zarr"`` one OME-Zarr image ``NAME.ome.zarr``: the input as a multiscale pyramid with
      its pixel size, and a ``labels`` group holding ``mask`` and ``instances`` as multiscale label images
      (:mod:`unetkit.inference.omezarr`; the ``[ome-zarr]`` extra).

    ``level``: read OME-Zarr inputs at that resolution level (0 = full resolution); the results have that
    level's size and pixel size.
    A multi-page TIFF given to a 2-D model (an ISBI stack) is segmented page by page into stacks. ``layout``
    and ``naming`` (:class:`~unetkit.data.layouts.Naming`) find a dataset folder's images as ``train`` does.

    Every input is checked (readable, channels, size) and no output may be or replace an input, before the
    first result is written. Each result appears atomically under its final name. Existing results are an
    error unless ``overwrite`` (replace them) or ``resume`` (keep them and do the rest: a killed batch goes on
    where it stopped). ``skip_bad``: go on past damaged inputs; they are listed in the result's ``skipped``.
    A zarr input with missing chunks is refused (:func:`~unetkit.data.lazy.missing_chunks`) unless
    ``fill_missing_chunks`` (read them as the store's fill value) or ``skip_bad``.

    ``format`` defaults to PNG, or tiled TIFF for a stack of pages or a mask over
    :data:`~unetkit.inference.outputs.PNG_MAX_PIXELS` pixels (the log says so). An image is segmented whole in
    memory, or streamed (read lazily, results held on disk, memory growing with its width only) when holding it
    whole would need more than 512 MiB beyond streaming (:func:`~unetkit.inference.pipeline.streams`);
    ``max_pixels_in_memory`` replaces that rule by a pixel count. Instance IDs are consistent across tiles and
    blocks for objects up to ``object_context`` pixels across. ``max_memory_gib`` (GiB, as
    ``--max-memory-gib``; default: half the memory available): an image whose row of tiles needs more is refused
    before anything is allocated (memory grows with the width; ``--dask`` splits both ways).

    ``dask``: run on a Dask cluster instead (``True``: a ``LocalCluster`` of ``dask_workers`` processes started
    here; a string: the scheduler's address), ``chunk`` x ``chunk`` pixels per task, results as zarr (see
    :mod:`unetkit.inference.distributed`). The semantic result equals the single-process one.
    """
    tune_allocator()  # as the CLI: tiles' memory reused, not faulted in afresh (device.tune_allocator)
    if isinstance(inputs, (str, Path)):  # one path, never its characters one by one
        inputs = [inputs]
    probs_dtype = _check_options(format, save_probs, overwrite, resume, dask, overlay, chunk, model)
    # every number within its option's range (config: one definition), before anything is read
    check_values("predict", kwargs, PredictConfig)
    sizes = {"max_memory_gib": max_memory_gib, "object_context": object_context, "level": level}
    check_values("output", {**sizes, **({"dask_workers": dask_workers} if dask else {})}, OutputConfig)
    if not isinstance(model, Predictor):
        resolve_model_path(model)  # a missing model is the first thing to say (cheap: the file is not read)
    items = collect_inputs(inputs, layout, naming, level)
    out = Path(out)
    files = [i.path for i in items]
    # folders given as inputs are read as data: no result goes inside one (a later command would read it)
    given = [Path(i) for i in inputs if isinstance(i, (str, Path)) and Path(i).is_dir()]
    protect = [*protect, *given]
    if out.exists() and not out.is_dir():
        guard_outputs(files, out, [out], protect)
        raise DataError(f"--out {out}: exists and is not a folder")
    guard_outputs(files, out, [], protect)
    predictor = model if isinstance(model, Predictor) else Predictor.from_checkpoint(model, **kwargs)
    if dask and predictor.rescales:
        raise ConfigError(
            f"{predictor.rescaling} rescales whole images in memory; --dask works chunk by chunk: "
            + ("drop one" if predictor.diameter is not None else "predict without --dask")
        )
    if dask:
        tables = [out / f"{i.name}_objects.csv" for i in items] if instances else []
        guard_outputs(files, out, [*(out / f"{i.name}.zarr" for i in items), *tables], protect)
        items, _ = _complete(items, fill_missing_chunks, skip_bad)
        assert not isinstance(model, Predictor)
        options = {"probs_dtype": probs_dtype, "instances": instances, "object_context": object_context}
        return _on_dask(
            model,
            predictor,
            items,
            out,
            {**kwargs, **predictor.chosen},  # what --engine auto chose here, every worker runs
            dask,
            dask_workers,
            chunk,
            overwrite,
            resume,
            progress,
            options,
        )
    if predictor.spatial_dims == 3:
        fmt = format or "tiff"
        kinds = {"probs": probs_dtype is not None, "instances": instances, "overlay": overlay}
        vjobs = [(i, output_paths(i.name, out, fmt, **kinds)) for i in items]
        guard_outputs(files, out, [p for _, paths in vjobs for p in paths.values()], protect)
        kept, _ = _complete([i for i, _ in vjobs], fill_missing_chunks, skip_bad)
        vjobs = [job for job in vjobs if job[0] in kept]
        return predict_volumes(
            predictor, vjobs, out, fmt, probs_dtype, instances, overlay, overwrite, resume, skip_bad, progress
        )
    jobs, bad = _image_jobs(
        items, predictor, out, format, probs_dtype, instances, overlay, max_pixels_in_memory, max_memory_gib
    )
    guard_outputs(files, out, [p for *_, paths, _ in jobs for p in paths.values()], protect)
    if bad and not skip_bad:
        raise bad_inputs(bad, len(items))
    kept, incomplete = _complete([job[0] for job in jobs], fill_missing_chunks, skip_bad)  # sizes first
    jobs = [job for job in jobs if job[0] in kept]
    jobs, done = existing(jobs, overwrite, resume, lambda job: job[3])
    prepare_out(out)
    results = _predict_images(
        predictor, jobs, out, probs_dtype, instances, object_context, skip_bad, progress
    )
    results.skipped[:0] = [*incomplete.values(), *bad]
    if done:
        log.info("--resume: kept %d complete result(s), segmented %d", done, len(jobs))
    return results


def _complete(
    items: list[InputImage], fill_missing_chunks: bool, skip_bad: bool
) -> tuple[list[InputImage], dict[Path, str]]:
    """The inputs without zarr stores that miss chunks (:func:`~unetkit.data.lazy.missing_chunks`), and why
    each was left out (``skip_bad``; else the first is an error). ``fill_missing_chunks``: the user's choice to
    read them as the fill value."""
    if fill_missing_chunks:
        return items, {}
    incomplete = {i.path: m for i in items if (m := missing_chunks(i.path))}
    if incomplete and not skip_bad:
        first, more = next(iter(incomplete.values())), len(incomplete) - 1
        raise DataError(first + (f" (and {more} more input(s) like it)" if more else ""))
    for reason in incomplete.values():  # --skip-bad: left out before anything starts, listed at the end
        log.warning("skipped: %s", reason)
    return [i for i in items if i.path not in incomplete], incomplete


def _predict_images(
    predictor: Predictor,
    jobs: list[tuple[InputImage, bool, str, dict[str, Path], int]],
    out: Path,
    probs_dtype: str | None,
    instances: bool,
    object_context: int,
    skip_bad: bool,
    progress: bool,
) -> PredictedFiles:
    """Each 2-D input through its pipeline: a stack page by page, an image in memory or streamed."""
    results = PredictedFiles()
    bar = tqdm(jobs, desc="predict", unit="image", disable=not progress or len(jobs) == 1)
    for item, large, fmt, paths, pages in bar:
        try:
            if pages > 1:
                results.append(predict_stack(predictor, item, pages, paths, probs_dtype, instances, progress))
                continue
            source = predictor.select(open_image(item.path, channels=predictor.in_channels))
            with source:
                results.append(
                    predict_one(
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
    return results


def _on_dask(
    model: str | Path,
    predictor: Predictor,
    items: list[InputImage],
    out: Path,
    settings: dict[str, Any],
    dask: str | bool,
    workers: int,
    chunk: int | None,
    overwrite: bool,
    resume: bool,
    progress: bool,
    options: dict[str, Any],
) -> PredictedFiles:
    """Every input on a Dask cluster (``dask``: True for a local one, or the scheduler's address)."""
    from ..inference.distributed import predict_dask_files

    return PredictedFiles(
        predict_dask_files(
            model,
            predictor,
            items,
            out,
            settings,
            address=None if dask is True else str(dask),
            workers=workers,
            chunk=chunk or (256 if predictor.spatial_dims == 3 else 2048),
            overwrite=overwrite,
            resume=resume,
            progress=progress,
            **options,
        )
    )


def _check_options(
    format: str | None,
    save_probs: bool | str | None,
    overwrite: bool,
    resume: bool,
    dask: str | bool | None,
    overlay: bool,
    chunk: int | None,
    model: Any,
) -> str | None:
    """The options checked before any file is read; returns the probabilities' dtype (or None)."""
    if format is not None and format not in FORMATS:
        raise ConfigError(f"--format {format!r} is unknown; choose one of {', '.join(FORMATS)}")
    probs_dtype = "float16" if save_probs is True else (save_probs or None)
    if probs_dtype is not None and probs_dtype not in PROBS_DTYPES:
        raise ConfigError(f"--save-probs {probs_dtype!r} is unknown; choose one of {', '.join(PROBS_DTYPES)}")
    if overwrite and resume:
        raise ConfigError("--overwrite replaces results and --resume keeps them: choose one")
    if dask:
        if isinstance(model, Predictor):
            raise ConfigError(
                "distributed prediction loads the model on every worker: pass its file, not a Predictor"
            )
        if format not in (None, "zarr") or overlay:
            raise ConfigError("--dask writes zarr groups (--format zarr) and no --overlay")
        if chunk is not None and chunk < 16:
            raise ConfigError(f"--chunk must be at least 16 pixels, got {chunk}")
    if format == "ome-zarr":
        require_extra(("ome_zarr", "dask"), "ome-zarr", "predict --format ome-zarr")
        if probs_dtype is not None:
            raise ConfigError(
                "--format ome-zarr writes the image and its labels (mask, instances); probabilities are not "
                "labels: use --format zarr or tiff with --save-probs"
            )
    return probs_dtype


def _image_jobs(
    items: list[InputImage],
    predictor: Predictor,
    out: Path,
    format: str | None,
    probs_dtype: str | None,
    instances: bool,
    overlay: bool,
    max_pixels: int | None,
    max_memory_gib: float | None,
) -> tuple[list[tuple[InputImage, bool, str, dict[str, Path], int]], list[str]]:
    """Every 2-D input checked (readable, channels, size) and its outputs named, before anything is written;
    the inputs that fail, one line each."""
    jobs, bad = [], []
    for item in items:
        try:
            h, w, pages, large = check_input(
                item.path, predictor, max_pixels, max_memory_gib, instances, item.stack
            )
        except DataError as exc:
            bad.append(str(exc))
            continue
        if large and predictor.rescales:
            raise DataError(
                f"{item.path}: {h} x {w} pixels is predicted tile by tile from disk; {predictor.rescaling} "
                "rescales images that fit in memory: rescale this one beforehand"
                + (", or drop --diameter" if predictor.diameter is not None else "")
            )
        fmt = format or default_format(h, w, pages)
        if fmt != "png" and not format and pages == 1:
            log.info(
                "%s: %d x %d pixels: the mask is written as tiled TIFF (PNG readers refuse masks past %d "
                "megapixels; --format png to insist)", item.path, h, w, PNG_MAX_PIXELS >> 20,
            )  # fmt: skip
        if fmt == "ome-zarr" and (pages > 1 or predictor.encoding.name == "rgb"):
            what = f"a stack of {pages} pages" if pages > 1 else "masks encoded as colours"
            raise DataError(
                f"{item.path}: {what} cannot be written as OME-Zarr labels; use --format tiff or --format zarr"
            )
        if fmt == "png" and pages > 1:
            raise DataError(f"{item.path}: a stack of {pages} pages; use --format tiff or --format zarr")
        paths = output_paths(
            item.name, out, fmt, probs=probs_dtype is not None, instances=instances, overlay=overlay
        )
        jobs.append((item, large, fmt, paths, pages))
    return jobs, bad
