"""Distributed tiled inference on a Dask cluster (``unetkit predict ... --dask [ADDRESS]``).

The image is split into chunks of ``chunk`` x ``chunk`` pixels, aligned with the output zarr arrays' chunks.
Each chunk is one task: the worker reads the chunk with the network's halo from the input (zarr, OME-Zarr or a
TIFF through its zarr view; the store must be readable from every worker), runs the whole image's tiles that
touch the chunk and blends them exactly as one process would (overlap-tile at chunk level,
:meth:`Predictor.predict_region`), and writes its chunk of the result. The model is loaded once per worker
process. The semantic result therefore equals the single-process one.

Instances are made globally consistent in two more passes over the chunks: each chunk labels its objects with
``object_context`` pixels of context around it, and names each object by its first pixel (raster order) in the
whole image; the driver numbers all first pixels in raster order; each chunk then writes its objects with
those numbers, so an object crossing chunk borders gets the same ID in every chunk it touches (as long as it fits
in the context, as in StarDist's ``predict_instances_big``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import resolve_model_path
from ..data.lazy import open_image
from ..errors import ConfigError
from .objects import confidence_maps, write_objects_csv
from .outputs import PredictedFile, existing, instance_dtype, prepare_out, publish_group
from .pipeline import InputImage, objects_table
from .postprocess import (
    RegionObjects,
    Split,
    block_regions,
    first_pixel_table,
    instances_from_classes,
    region_objects,
    region_slices,
)
from .predictor import Predictor
from .writers import encode_probs, work_folder

__all__ = ["DaskRun", "chunk_regions", "model_spec", "predict_chunks"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerModel:
    """What a worker needs to build the predictor once: the model file and the predictor's settings."""

    path: str
    settings: tuple[tuple[str, Any], ...]
    threads: int


_PREDICTORS: dict[WorkerModel, Predictor] = {}


def worker_predictor(spec: WorkerModel) -> Predictor:
    """The predictor of this worker process, built on first use and kept (one model load per worker)."""
    if spec not in _PREDICTORS:
        import torch

        torch.set_num_threads(spec.threads)
        _restore_malloc()
        _PREDICTORS[spec] = Predictor.from_checkpoint(spec.path, **dict(spec.settings))
    return _PREDICTORS[spec]


def _restore_malloc() -> None:
    """Undo the ``MALLOC_TRIM_THRESHOLD_`` that Dask's nanny sets for its workers.

    Setting it turns off glibc's adaptive mmap threshold, so every feature map over 128 KiB is mapped and
    page-faulted afresh: tiles ran about 30% slower in a worker than in a plain process. These are the values
    the adaptive threshold reaches on its own after the first large tensors (its 64-bit maximum, trim at twice).
    """
    if not os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 2**20)
    libc.mallopt(m_trim_threshold, 64 * 2**20)


chunk_regions = block_regions  # the regions of chunk tasks are the blocks of serial labelling


def semantic_chunk(
    spec: WorkerModel,
    image: str,
    region: tuple[tuple[int, int], ...],
    stats: tuple[np.ndarray, np.ndarray],
    arrays: dict[str, str],
    probs_dtype: str | None,
) -> int:
    """One chunk's classes, mask (and probabilities) written to the zarr arrays; returns its pixel count."""
    import zarr

    predictor = worker_predictor(spec)
    with predictor.select(open_image(image, volume=predictor.spatial_dims == 3)) as source:
        probs = predictor.predict_region(source, region, stats)
    where = region_slices(region)
    classes = predictor.to_labels(probs)
    zarr.open_array(arrays["classes"], mode="r+")[where] = classes
    zarr.open_array(arrays["mask"], mode="r+")[where] = predictor.to_mask(classes)
    if "sure" in arrays:  # for the objects table: as every path keeps them (steps of 1/255)
        for key, values in zip(("sure", "fg"), confidence_maps(probs), strict=True):
            zarr.open_array(arrays[key], mode="r+")[where] = encode_probs(values, "uint8")
    if probs_dtype is not None:
        lead = (
            () if probs.shape[0] == 1 else (slice(None),)
        )  # a binary model's foreground: (H, W), as elsewhere
        values = encode_probs(probs[0] if not lead else probs, probs_dtype)
        zarr.open_array(arrays["probs"], mode="r+")[(*lead, *where)] = values
    return int(classes.size)


def _objects(
    classes_path: str, region: tuple[tuple[int, int], ...], context: int, method: str, split: Split
) -> RegionObjects:
    """This chunk's objects, labelled with ``context`` around it from the zarr array of classes."""
    import zarr

    classes = zarr.open_array(classes_path, mode="r")

    def label(c: np.ndarray) -> np.ndarray:
        return instances_from_classes(c, method, split=split)

    return region_objects(
        lambda where: np.asarray(classes[where]), tuple(classes.shape), region, context, label
    )


def instance_candidates(
    classes_path: str, region: tuple[tuple[int, int], ...], context: int, method: str, split: Split
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pass 1 of :func:`~unetkit.inference.postprocess.instances_blockwise`, as a task: this chunk's objects'
    first pixels, which of them it owns, and how many owned objects reach the context's edge."""
    return _objects(classes_path, region, context, method, split).candidates()


def instance_chunk(
    classes_path: str,
    out_path: str,
    region: tuple[tuple[int, int], ...],
    context: int,
    method: str,
    split: Split,
    table: np.ndarray,
) -> None:
    """Pass 2, as a task: this chunk's objects written with their global IDs (the rank of their first pixel in
    ``table``)."""
    import zarr

    out = zarr.open_array(out_path, mode="r+")
    ids = _objects(classes_path, region, context, method, split).global_ids(table)
    out[region_slices(region)] = ids.astype(out.dtype)


@dataclass
class DaskRun:
    """A Dask client for one prediction call: connected to ``address``, or a ``LocalCluster`` of ``workers``
    single-threaded worker processes started (and closed) here."""

    address: str | None = None
    workers: int = 2
    client: Any = field(init=False, default=None)
    _cluster: Any = field(init=False, default=None)

    def __enter__(self) -> DaskRun:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError(
                "--dask needs Dask's distributed scheduler: pip install 'unetkit[dask]'"
            ) from None
        if self.address:
            try:
                self.client = Client(self.address, timeout="30s")
            except OSError as exc:
                raise ConfigError(f"--dask {self.address}: no Dask scheduler answers there ({exc})") from None
        else:
            if self.workers < 1:
                raise ConfigError(f"--dask-workers must be >= 1, got {self.workers}")
            self._cluster = LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self.client = Client(self._cluster)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info()["workers"])

    def threads_per_task(self) -> int:
        """Torch threads per worker: this machine's cores shared by its workers (local cluster), else all."""
        if self._cluster is None:
            return 0
        return max(1, (os.cpu_count() or 1) // self.workers)

    def run(self, fn: Any, calls: list[tuple], *, desc: str, progress: bool) -> Iterator[Any]:
        """``fn(*args)`` for every ``args`` in ``calls`` on the cluster; results in completion order."""
        from distributed import as_completed
        from tqdm.auto import tqdm

        futures = [self.client.submit(fn, *args, pure=False) for args in calls]
        with tqdm(total=len(futures), desc=desc, unit="chunk", disable=not progress, leave=False) as bar:
            for fut in as_completed(futures):
                yield fut.result()
                bar.update(1)


def predict_chunks(
    dask: DaskRun,
    spec: WorkerModel,
    predictor: Predictor,
    image: Path,
    group: Path,
    scratch: Path,
    *,
    chunk: int,
    probs_dtype: str | None,
    instances: bool,
    object_context: int,
    progress: bool,
) -> int | None:
    """Predict ``image`` on the cluster into the zarr group ``group`` (``mask``, ``probs``, ``instances``),
    with ``scratch`` (a folder every worker can write) for the classes. Returns the number of objects."""
    import zarr

    with predictor.select(open_image(image, volume=predictor.spatial_dims == 3)) as source:
        shape = tuple(source.spatial_shape)
        stats = predictor.statistics(source.subsample(), image)  # the whole image's, for every chunk
    chunks = tuple(min(chunk, n) for n in shape)
    mask_sample = predictor.to_mask(np.zeros((1,) * len(shape), np.uint8))
    arrays = {"classes": str(scratch / "classes.zarr"), "mask": str(group / "mask")}
    zarr.create_array(arrays["classes"], shape=shape, chunks=chunks, dtype=np.uint8)
    tabled = instances and len(shape) == 2  # the objects table (2-D images)
    if tabled:
        for key in ("sure", "fg"):
            arrays[key] = str(scratch / f"{key}.zarr")
            zarr.create_array(arrays[key], shape=shape, chunks=chunks, dtype=np.uint8)
    out = zarr.open_group(str(group), mode="w")
    out.create_array(
        "mask",
        shape=shape + mask_sample.shape[len(shape) :],
        dtype=mask_sample.dtype,
        chunks=chunks + mask_sample.shape[len(shape) :],
    )
    if probs_dtype is not None:
        arrays["probs"] = str(group / "probs")
        lead = () if predictor.num_classes == 1 else (predictor.num_classes,)
        dtype = np.dtype(np.uint8 if probs_dtype == "uint8" else probs_dtype)
        out.create_array("probs", shape=(*lead, *shape), dtype=dtype, chunks=(*lead, *chunks))
    regions = chunk_regions(shape, chunk)
    calls: list[tuple[Any, ...]] = [(spec, str(image), r, stats, arrays, probs_dtype) for r in regions]
    for _ in dask.run(semantic_chunk, calls, desc=f"predict {image.name}", progress=progress):
        pass
    if not instances:
        return None
    classes = zarr.open_array(arrays["classes"], mode="r")  # one split for the image, as every path
    method, split = predictor.instance_method, predictor.split(lambda w: np.asarray(classes[w]), shape)
    calls = [(arrays["classes"], r, object_context, method, split) for r in regions]
    candidates = dask.run(instance_candidates, calls, desc="objects", progress=progress)
    table = first_pixel_table(candidates, object_context)
    dtype = instance_dtype(len(table))
    out.create_array("instances", shape=shape, dtype=dtype, chunks=chunks)
    table_future = dask.client.scatter(table, broadcast=True)
    calls = [
        (arrays["classes"], str(group / "instances"), r, object_context, method, split, table_future)
        for r in regions
    ]
    for _ in dask.run(instance_chunk, calls, desc="instances", progress=progress):
        pass
    if tabled:  # summed chunk by chunk here, reading what the workers wrote (bounded memory)
        with predictor.select(open_image(image)) as source:
            found = objects_table(
                source, zarr.open_array(str(group / "instances"), mode="r"),
                zarr.open_array(arrays["sure"], mode="r"), zarr.open_array(arrays["fg"], mode="r"),
                len(table), split.diameter, block=max(chunks), classes=classes,
                splittable=predictor.labelling.splittable,
            )  # fmt: skip
        write_objects_csv(scratch / "objects.csv", found)
    return len(table)


def model_spec(model: str | Path, threads: int, settings: dict[str, Any]) -> WorkerModel:
    """The predictor recipe sent to workers (a checkpoint or ``.onnx`` path, resolved, and its settings)."""
    keep = {k: v for k, v in settings.items() if v is not None}
    path = resolve_model_path(model)  # a built-in name too ("nuclei" is no path in the workers' folder)
    return WorkerModel(
        str(Path(path).resolve()), tuple(sorted(keep.items())), threads or (os.cpu_count() or 1)
    )


def predict_dask_files(
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
    """Every input on a Dask cluster (``address``, or a local one of ``workers`` processes), chunk by chunk,
    into ``OUT/NAME.zarr``; inputs are checked (headers) before the cluster starts."""
    files = [i.path for i in items]
    finals = [out / f"{i.name}.zarr" for i in items]
    volumes = predictor.spatial_dims == 3
    shapes = {}
    for f in files:  # headers only: every input is checked before the cluster starts
        with open_image(f, volume=volumes) as source:
            shapes[f] = tuple(source.spatial_shape)
    tabled = instances and not volumes

    def paths(job: tuple[Path, Path]) -> dict[str, Path]:
        final = job[1]
        return {"mask": final, **({"objects": _table_path(final)} if tabled else {})}

    todo, _ = existing(list(zip(files, finals, strict=True)), overwrite, resume, paths)
    files, finals = [f for f, _ in todo], [final for _, final in todo]
    prepare_out(out)
    results = []
    with DaskRun(address, workers) as cluster:
        spec = model_spec(model, cluster.threads_per_task(), settings)
        log.info("Dask: %d worker(s) at %s", cluster.n_workers, cluster.client.scheduler.address)
        for f, final in zip(files, finals, strict=True):
            with work_folder(out, final.stem) as work:  # where every worker can write
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
                publish_group(group, final)
                if tabled:
                    os.replace(work / "objects.csv", _table_path(final))
            results.append(
                PredictedFile(
                    source=f,
                    mask=final,
                    probs=final if probs_dtype else None,
                    shape=shapes[f],
                    instances=final if instances else None,
                    objects=objects,
                    table=_table_path(final) if tabled else None,
                )
            )
    return results


def _table_path(final: Path) -> Path:
    """``OUT/NAME_objects.csv`` beside ``OUT/NAME.zarr``."""
    return final.with_name(f"{final.name.removesuffix('.zarr')}_objects.csv")
