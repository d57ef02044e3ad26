"""The file pipelines: one 2-D image (in memory, or streamed tile row by tile row for large ones), a stack of
2-D pages, and 3-D volumes. Each reads its input, runs the :class:`Predictor` and hands the arrays to
:mod:`unetkit.inference.outputs`. Choosing a pipeline per input is :func:`unetkit.workflows.predict_files`'s
job."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ..data.io import (
    check_pixel_values,
    count_planes,
    pages_reading,
    read_image,
    read_volume,
    write_image,
    write_volume,
)
from ..data.lazy import ImageSource, open_image
from ..errors import ConfigError, DataError
from ..viz import contour_overlay
from .objects import ObjectSums, confidence_maps, object_table, write_objects_csv
from .outputs import (
    PredictedFile,
    PredictedFiles,
    bad_inputs,
    existing,
    instance_dtype,
    prepare_out,
    publish_group,
    write_outputs,
)
from .postprocess import block_regions, instances_blockwise, region_slices
from .predictor import Predictor, available_memory
from .writers import RowSink, encode_probs, new_array, work_folder

__all__ = [
    "IN_MEMORY_ALLOWANCE",
    "InputImage",
    "check_input",
    "predict",
    "predict_one",
    "predict_stack",
    "predict_volumes",
    "streams",
    "whole_bytes",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputImage:
    """One input of :func:`~unetkit.workflows.predict_files`: its output name and file (a stack's pages are
    one input). ``stack``: its pages are images (the ISBI layout), whatever their count."""

    name: str
    path: Path
    stack: bool = False


def predict(
    model: str | Path | Predictor,
    image: np.ndarray | str | Path,
    *,
    return_probs: bool = False,
    **kwargs: object,
):
    """Segment one image array of any size.

    ``model`` is a checkpoint path or a :class:`Predictor`; ``image`` is ``(H, W)`` or ``(H, W, C)`` raw
    (un-normalised) pixels, or an image file's path. Returns the ``(H, W)`` uint8 label image (0/1 for a binary model), or
    ``(labels, probs)`` with ``return_probs=True``.

    Example:
        >>> mask = predict("run/best.pt", image)
    """
    predictor = model if isinstance(model, Predictor) else Predictor.from_checkpoint(model, **kwargs)
    probs = predictor.predict_proba(image)
    labels = predictor.to_labels(probs)
    return (labels, probs) if return_probs else labels


#: an image is segmented whole in memory when that needs at most this many bytes more than streaming it would
IN_MEMORY_ALLOWANCE = 512 * 2**20
#: bytes per pixel the instance stage adds to an image segmented whole (labels, distances, seeds, watershed
#: queues; measured: an 8000 x 8000 binary image peaked at 1.1 GB without --instances, 3.2 GB with)
INSTANCE_BYTES = 36


def whole_bytes(predictor: Predictor, shape: tuple[int, int], instances: bool) -> int:
    """Bytes that grow with an image segmented whole in memory: its float32 channels, probabilities and their
    weights, the mask, and the instance stage's arrays (measured 13 B/px for a 1-channel binary model, as here)."""
    per_pixel = 4 * (predictor.in_channels + predictor.num_classes + 1) + 1
    return shape[0] * shape[1] * (per_pixel + (INSTANCE_BYTES if instances else 0))


def streams(
    predictor: Predictor, shape: tuple[int, int], instances: bool, max_pixels: int | None = None
) -> bool:
    """Whether an image of ``shape`` is streamed (read tile row by tile row, results held on disk) rather than
    segmented whole in memory. ``max_pixels`` decides when given. Otherwise memory does, one rule for every
    size: whole only while that needs at most :data:`IN_MEMORY_ALLOWANCE` more than streaming would, so a
    smaller image never needs more than that much more memory than a larger one (with a fixed 64-megapixel
    switch an 8000 x 8000 image with ``--instances`` peaked at 3.2 GB held whole, 8200 x 8200 at 1.3 GB
    streamed). Holding whole is kept for the images it suits: exact normalisation statistics, no work folder.
    An image that must be rescaled (``--diameter``, ``input_scale``) is held whole while that fits in half the
    available memory."""
    if max_pixels is not None:
        return shape[0] * shape[1] > max_pixels
    whole = whole_bytes(predictor, shape, instances)
    if predictor.rescales:
        return whole > available_memory() / 2
    return whole > predictor.streamed_bytes(shape) + IN_MEMORY_ALLOWANCE


def check_input(
    path: Path,
    predictor: Predictor,
    max_pixels: int | None = None,
    max_memory_gib: float | None = None,
    instances: bool = False,
    stack: bool = False,
) -> tuple[int, int, int, bool]:
    """Height, width and pages of a 2-D model's input, and whether it is streamed (:func:`streams`), after
    reading it as the prediction will (an image segmented whole is decoded whole now; a streamed one is opened
    and sampled). A multi-page TIFF is a stack of images or one image of several channels as
    :func:`~unetkit.data.io.pages_reading` decides (``stack``: the ISBI layout says images).
    ``max_memory_gib``: GiB a streamed row of tiles may need (default: half the available memory)."""
    pages = count_planes(path) if path.suffix.lower() in (".tif", ".tiff") else 1
    if pages > 1 and pages_reading(path, predictor.in_channels, stack) == "channels":
        log.info("%s: its pages are read as the model's %d channels", path, predictor.in_channels)
        pages = 1
    if pages > 1:
        first = read_image(path, 0)
        predictor.channels_first(first, f"{path} [page 0]")  # its channels, and NaN/complex pixels refused
        return first.shape[0], first.shape[1], pages, False
    with open_image(path, channels=predictor.in_channels) as source:
        h, w = source.spatial_shape
        # declared sizes, before anything is read or allocated
        predictor.check_size((h, w), path, max_memory_gib)
        predictor.select(source)
        large = streams(predictor, (h, w), instances, max_pixels)
        # a small image decodes whole now (a damaged file fails before any result); a large one is sampled
        pixels = source.subsample(1 << 20) if large else source[..., 0:h, 0:w]
        check_pixel_values(np.asarray(pixels), path, sampled=large)
    return h, w, 1, large


def predict_stack(
    predictor: Predictor,
    item: InputImage,
    pages: int,
    paths: dict[str, Path],
    probs_dtype: str | None,
    want_instances: bool,
    progress: bool,
) -> PredictedFile:
    """A multi-page TIFF (one 2-D image per page, as ISBI stacks) → stacks of masks (and labels, probs)."""
    masks, labels, probs, tables = [], [], [], []
    for k in tqdm(range(pages), desc=item.name, unit="page", disable=not progress):
        image = read_image(item.path, k)
        p = predictor.predict_proba(image, f"{item.path} [page {k}]")
        classes = predictor.to_labels(p)
        masks.append(predictor.to_mask(classes))
        if probs_dtype:
            probs.append(encode_probs(p[0] if len(p) == 1 else p, probs_dtype))
        if want_instances:
            page_labels, table = predictor.objects(classes, p, predictor.channels_first(image))
            labels.append(page_labels)
            tables.append({"page": np.full(len(table["label"]), k, np.int64), **table})
    written = {"mask": write_volume(paths["mask"], np.stack(masks), overwrite=True)}
    objects = None
    if want_instances:
        stack = np.stack(labels)
        objects = int(sum(int(lab.max()) for lab in labels))
        written["instances"] = write_volume(
            paths["instances"], stack.astype(instance_dtype(int(stack.max()))), overwrite=True
        )
        joined = {key: np.concatenate([t[key] for t in tables]) for key in tables[0]}
        written["objects"] = write_objects_csv(paths["objects"], joined)
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
        shape=(pages, *masks[0].shape[:2]),
        instances=written.get("instances"),
        overlay=written.get("overlay"),
        objects=objects,
        table=written.get("objects"),
    )


def segment_source(
    predictor: Predictor,
    source: ImageSource,
    store: Any = None,
    probs_dtype: str | None = None,
    want_instances: bool = False,
    object_context: int = 128,
    progress: bool = False,
    *,
    name: str | Path = "image",
    on_tiles: Any = None,
) -> Segmented:
    """One 2-D image (a lazy source: file, zarr, Dask or NumPy array) → class indices ``(H, W)``, encoded
    probabilities ``(C, H, W)`` (with ``probs_dtype``) and instance labels ``(H, W)`` with their count and the
    objects table (:mod:`~unetkit.inference.objects`; with ``want_instances``), held in NumPy arrays or, with
    ``store`` (a zarr group), on disk, where a large image's objects are labelled block by block. What
    ``predict`` runs per image and the napari plugin per layer; ``on_tiles(done, total)``: see
    :meth:`Predictor.stream`."""
    h, w = source.spatial_shape
    classes = new_array((h, w), np.uint8, store, "classes")
    probs = new_array((predictor.num_classes, h, w), probs_dtype, store, "probs") if probs_dtype else None
    # for the objects table: the largest class and the foreground probability per pixel, as p x 255
    sure = new_array((h, w), np.uint8, store, "sure") if want_instances else None
    fg = new_array((h, w), np.uint8, store, "fg") if want_instances else None

    def write(y0: int, y1: int, rows: np.ndarray) -> None:
        classes[y0:y1] = predictor.to_labels(rows)
        if probs is not None:
            probs[:, y0:y1] = encode_probs(rows, probs_dtype)  # type: ignore[arg-type]
        if sure is not None and fg is not None:
            s, f = confidence_maps(rows)
            sure[y0:y1], fg[y0:y1] = encode_probs(s, "uint8"), encode_probs(f, "uint8")

    if predictor.rescales:  # rescaled whole, in memory (only images that fit get here)
        write(
            0, h, predictor.proba_channels_first(np.asarray(source[..., 0:h, 0:w]), name, progress=progress)
        )
        if on_tiles is not None:
            on_tiles(1, 1)
    else:
        predictor.stream(source, RowSink(write, h), progress=progress, name=name, on_tiles=on_tiles)

    labels: Any = None
    objects = table = None
    if want_instances:
        split = predictor.split(lambda where: np.asarray(classes[where]), (h, w))
        if store is not None:
            labels = new_array((h, w), np.int32, store, "instances")
            objects = instances_blockwise(
                lambda where: np.asarray(classes[where]),
                (h, w),
                lambda where, values: labels.__setitem__(where, values),
                predictor.labeller(split),
                context=object_context,
                out_read=lambda where: np.asarray(labels[where]),
                progress=progress,
                workers=predictor.labelling.workers,
            )
        else:
            labels = predictor.labeller(split)(classes)
            objects = int(labels.max())
        table = objects_table(
            source, labels, sure, fg, objects, split.diameter, block=None if store is None else 2048,
            classes=classes, splittable=predictor.labelling.splittable,
        )  # fmt: skip
    return Segmented(classes, probs, labels, objects, table)


class Segmented(NamedTuple):
    """What :func:`segment_source` returns (arrays in memory, or zarr arrays on disk)."""

    classes: Any
    probs: Any
    labels: Any
    objects: int | None
    table: dict[str, np.ndarray] | None


def objects_table(
    source: ImageSource,
    labels: Any,
    sure: Any,
    fg: Any,
    objects: int,
    diameter: float | None,
    block: int | None = None,
    *,
    classes: Any,
    splittable: Callable[[np.ndarray], np.ndarray | None],
) -> dict[str, np.ndarray]:
    """The objects table of one 2-D image (:func:`~unetkit.inference.objects.object_table`), from arrays in
    memory or, with ``block``, block by block with one pixel of context (the outer ring of objects on a block's
    edge), so memory stays bounded; the intensity is the mean over the image's channels as read; ``classes``
    and ``splittable`` (:meth:`.Labelling.splittable`): where the labelling, not the network, split objects."""
    h, w = source.spatial_shape
    total: ObjectSums | None = None
    for region in block_regions((h, w), block or max(h, w)):
        box = tuple((max(0, a - 1), min(n, b + 1)) for (a, b), n in zip(region, (h, w), strict=True))
        where = region_slices(box)
        core = tuple(slice(a - c, b - c) for (a, b), (c, _) in zip(region, box, strict=True))
        pixels = np.asarray(source[(..., *where)], np.float32)
        intensity = pixels.mean(axis=0) if pixels.ndim == 3 else pixels
        part = ObjectSums.of(
            np.asarray(labels[where]), np.asarray(sure[where]) / 255, np.asarray(fg[where]) / 255, intensity,
            objects, offset=(box[0][0], box[1][0]), core=core, splittable=splittable(np.asarray(classes[where])),
        )  # fmt: skip
        if total is None:
            total = part
        else:
            total.add(part)
    assert total is not None
    return object_table(total, diameter)


def predict_one(
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

    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        needs_work = large or fmt in ("zarr", "ome-zarr")
        work = stack.enter_context(work_folder(out, paths["mask"].stem)) if needs_work else None
        store = zarr.open_group(str(work / "arrays.zarr"), mode="w") if large and work else None
        done = segment_source(
            predictor, source, store, probs_dtype, want_instances, object_context, progress, name=f
        )
        return write_outputs(predictor, f, source, fmt, paths, done, large, work)


def predict_volumes(
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

    if fmt in ("png", "ome-zarr"):
        raise ConfigError(
            f"a 3-D model writes volumes: use --format tiff (the default) or --format zarr, not {fmt}"
        )
    bad, failed = [], set()
    for item, _ in jobs:  # headers and channels of every input before the first result is written
        try:
            with predictor.select(open_image(item.path, volume=True)):
                pass
        except DataError as exc:
            bad.append(str(exc))
            failed.add(item)
    if bad and not skip_bad:
        raise bad_inputs(bad, len(jobs))
    jobs = [(i, paths) for i, paths in jobs if i not in failed]  # by identity, not by a path within a message
    jobs, _ = existing(jobs, overwrite, resume, lambda job: job[1])
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
        labels = table = None
        if instances:
            labels, table = predictor.objects(classes, probs, predictor.channels_first(volume, f))
        arrays = {"mask": predictor.to_mask(classes)}
        if probs_dtype:
            arrays["probs"] = encode_probs(probs[0] if len(probs) == 1 else probs, probs_dtype)
        if labels is not None:
            arrays["instances"] = labels.astype(instance_dtype(int(labels.max())))
        written: dict[str, Path] = {}
        if fmt == "zarr":
            with work_folder(out, item.name) as work:
                group = zarr.open_group(str(work / "result.zarr"), mode="w")
                for key, arr in arrays.items():
                    group.create_array(
                        key, data=arr, chunks=(*arr.shape[:-3], *(min(64, n) for n in arr.shape[-3:]))
                    )
                publish_group(work / "result.zarr", paths["mask"])
            written = dict.fromkeys(arrays, paths["mask"])
        else:
            for key, arr in arrays.items():
                written[key] = write_volume(paths[key], arr, overwrite=True)
        if table is not None:
            written["objects"] = write_objects_csv(paths["objects"], table)
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
                shape=tuple(classes.shape),
                instances=written.get("instances"),
                overlay=written.get("overlay"),
                objects=int(labels.max()) if labels is not None else None,
                table=written.get("objects"),
            )
        )
    return results
