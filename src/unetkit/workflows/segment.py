"""Segment an image held by a viewer (a napari layer's data: NumPy, Dask or zarr arrays alike), as ``unetkit
predict`` segments a file: the model opened with the same options, the layer read window by window, the same
memory rule (:func:`~unetkit.inference.pipeline.streams`) deciding whether the results are held in memory or in
a zarr store on disk (objects labelled block by block), the objects and their table by the same code.

The napari plugin's Segment widget calls :func:`segment_array` from its worker thread; what it shows is here too
(the classes a model declares, the built-in models, a warning when objects lie outside the learnt sizes).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..checkpoint import read_model, resolve_model_path
from ..data.lazy import ImageSource
from ..errors import UnetkitError
from ..inference.pipeline import segment_source, streams
from ..inference.predictor import Predictor
from ..inference.scale import estimate_diameter
from ..pretrained import get_pretrained, list_pretrained

__all__ = [
    "Declared",
    "builtin_models",
    "declared",
    "model_card",
    "outside_learnt_sizes",
    "segment_array",
    "segment_planes",
]


def builtin_models() -> list[str]:
    """The names of the built-in models whose weights are installed."""
    return [m.name for m in list_pretrained() if m.path.is_file()]


class Declared(NamedTuple):
    """What a model declares: its output ``classes``, the image dimensions it segments (2 or 3), the ``channels``
    it reads and the stored ``channel`` it was trained on (``--channel``); ``None`` where not known."""

    classes: int | None
    dims: int
    channels: int | None = None
    channel: int | None = None


def declared(model: str) -> Declared:
    """What a unetkit checkpoint (or built-in model) declares, from one read (:class:`Declared`). Nothing but
    2-D when not known cheaply (an ONNX file, a package, a file that does not load: segmenting says what is wrong
    when it runs)."""
    try:
        path = resolve_model_path(model)
        if path.suffix.lower() not in (".pt", ".pth"):
            return Declared(None, 2)
        stored = read_model(path)
    except (UnetkitError, OSError, KeyError, TypeError, ValueError):
        return Declared(None, 2)
    pre = stored.preprocessing
    return Declared(stored.num_classes, stored.spatial_dims, pre.in_channels, pre.channel)


def model_card(model: str) -> str:
    """What a model is, in a few lines for a viewer: a built-in model's card (what it is for, what it was trained
    on, the object sizes it learnt, its scores, its limits), or what a checkpoint records (its data, validation
    Dice, learnt sizes and classes); a short line for files that do not say (ONNX, packages, unreadable)."""
    entry = get_pretrained(model)
    if entry is not None:
        lines = [f"{entry.name} (built-in, version {entry.version}): {entry.summary}", f"data: {entry.modality}",
                 f"trained on: {entry.trained_on}"]  # fmt: skip
        valid = (entry.scores or {}).get("validation") or {}
        if valid:
            lines.append(
                "scores on unseen images like its training: "
                + ", ".join(f"{k} {v:.2f}" for k, v in valid.items())
            )
        if entry.suite:
            mean = sum(s["f1"] for s in entry.suite.values()) / len(entry.suite)
            lines.append(f"F1@0.5 on the style-shift suite (styles it never saw): mean {mean:.2f}, lowest "
                         f"{min(s['f1'] for s in entry.suite.values()):.2f}")  # fmt: skip
        lines += [f"limit: {limit}" for limit in entry.limits]
        return "\n".join(lines)
    try:
        path = resolve_model_path(model)
        if path.suffix.lower() not in (".pt", ".pth"):
            return f"{path.name}: an exported model ({path.suffix or 'package'}); its card is in the file it came from"
        stored = read_model(path)
    except (UnetkitError, OSError) as exc:
        return str(exc)
    pre, run = stored.preprocessing, stored.training
    lines = [
        f"{path.parent.name}/{path.name}: trained by unetkit {stored.version or '?'} on {run.get('data', '?')}"
    ]
    if isinstance(run.get("val_dice"), float):
        lines.append(
            f"validation Dice {run['val_dice']:.3f} at epoch {run.get('epoch', '?')} ({run.get('split', '')})"
        )
    if pre.object_diameter_range:
        low, high = pre.object_diameter_range
        lines.append(f"learnt object sizes: {low:g}-{high:g} px across")
    elif pre.object_diameter:
        lines.append(f"learnt object size: about {pre.object_diameter:.0f} px across (typical diameter)")
    if pre.class_names:
        lines.append("classes: " + ", ".join(pre.class_names))
    if pre.input_scale != 1:
        lines.append(f"images are resampled by {pre.input_scale:g} (trained at --input-scale)")
    return "\n".join(lines)


def segment_array(
    model: str,
    data: Any,
    *,
    rgb: bool,
    name: str,
    options: dict[str, Any],
    instances: bool,
    probabilities: bool,
    on_tiles: Callable[[int, int], None] | None = None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Segment ``data`` (``(H, W[, C])``; ``rgb``: the last axis is colour, RGB(A) as a viewer shows it;
    ``channels_last``: the last axis holds channels, any count, none of them alpha; a volume ``(D, H, W[, C])`` for
    a 3-D model, segmented whole in memory as ``unetkit predict`` segments a z-stack) with ``model`` (a built-in name, a
    checkpoint, a run folder, an ONNX file or a bioimage.io package) and the predictor ``options``. Returns
    ``labels`` (objects with ``instances``, else classes), ``probs`` (float16, with ``probabilities``), the
    ``objects`` count and ``table``, ``keep`` (the temporary folder holding an on-disk result: keep it while
    the result is shown), ``seconds`` and ``sizes`` (what ``--diameter auto`` did, or a warning about sizes).
    ``on_tiles(done, total)`` after every batch of tiles; an exception it raises stops the run there."""
    start = time.perf_counter()
    predictor = Predictor.from_checkpoint(model, **options)
    if predictor.spatial_dims == 3:
        got = _volume_with(predictor, data, name, instances, probabilities)
    else:
        got = _segment_with(predictor, data, rgb, name, instances, probabilities, on_tiles, channels_last)
    return {**got, "seconds": time.perf_counter() - start}


def segment_planes(
    model: str,
    data: Any,
    *,
    rgb: bool,
    name: str,
    options: dict[str, Any],
    instances: bool,
    on_tiles: Callable[[int, int], None] | None = None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Segment every plane of a stack or time-lapse ``data`` (``(N, H, W[, C])``: one leading axis, planes read one
    at a time) with ``model``, loaded once, as :func:`segment_array` segments one image; with a 3-D model every
    volume of a series ``(N, D, H, W)``, as :func:`segment_array` segments one. Returns ``labels`` (``(N, H, W)``
    or ``(N, D, H, W)``: objects numbered across planes, so each label is one object of one plane; without
    ``instances`` the classes), their ``table`` with a ``plane`` column, ``objects``, ``seconds`` and ``sizes``
    (of the first plane where something was said). ``on_tiles(done, total)`` counts the tiles of every plane (a
    volume counts as one)."""
    start = time.perf_counter()
    predictor = Predictor.from_checkpoint(model, **options)
    planes, tables, said, offset = [], [], None, 0
    count = int(data.shape[0])
    for k in range(count):

        def tiles(done: int, total: int, k: int = k) -> None:
            if on_tiles is not None:
                on_tiles(k * total + done, count * total)

        label = f"{name} [plane {k}]"
        if predictor.spatial_dims == 3:
            got = _volume_with(predictor, data[k], label, instances, False)
            tiles(1, 1)
        else:
            got = _segment_with(predictor, data[k], rgb, label, instances, False, tiles, channels_last)
        labels = np.asarray(got["labels"])
        if instances:
            labels = np.where(labels > 0, labels.astype(np.int64) + offset, 0)
            table = dict(got["table"])
            table["label"] = table["label"] + offset
            table["plane"] = np.full(len(table["label"]), k)
            tables.append(table)
            offset += int(got["objects"] or 0)
        planes.append(labels)
        said = said or got["sizes"]
    stacked = np.stack(planes)
    joined = {key: np.concatenate([t[key] for t in tables]) for key in tables[0]} if tables else None
    dtype = np.int32 if instances else stacked.dtype
    return {"labels": stacked.astype(dtype), "table": joined, "objects": offset if instances else None,
            "seconds": time.perf_counter() - start, "sizes": said, "probs": None, "keep": None}  # fmt: skip


def _volume_with(
    predictor: Predictor, data: Any, name: str, instances: bool, probabilities: bool
) -> dict[str, Any]:
    """One volume with a loaded 3-D predictor (see :func:`segment_array`)."""
    volume = np.asarray(data)
    probs = predictor.predict_proba(volume, name)
    classes = predictor.to_labels(probs)
    labels, table = (
        predictor.objects(classes, probs, predictor.channels_first(volume, name))
        if instances
        else (None, None)
    )
    return {
        "labels": labels if labels is not None else classes,
        "probs": probs.astype(np.float16) if probabilities else None,
        "objects": int(labels.max()) if labels is not None else None,
        "table": table,
        "keep": None,
        "sizes": predictor.scaling,
    }


def _segment_with(
    predictor: Predictor,
    data: Any,
    rgb: bool,
    name: str,
    instances: bool,
    probabilities: bool,
    on_tiles: Callable[[int, int], None] | None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """One 2-D image with a loaded predictor (see :func:`segment_array`)."""
    # a napari RGB layer of 4 channels is RGBA: the viewer says so
    source = predictor.select(
        ImageSource(data, 2 if rgb or channels_last else None, name, alpha=rgb and np.shape(data)[-1] == 4)
    )
    h, w = source.spatial_shape
    keep, store = None, None
    if streams(predictor, (h, w), instances):  # the same memory rule as unetkit predict
        import zarr

        keep = tempfile.TemporaryDirectory(prefix="unetkit-napari-")
        store = zarr.open_group(str(Path(keep.name) / "result.zarr"), mode="w")
    classes, probs, labels, objects, table = segment_source(
        predictor,
        source,
        store,
        "float16" if probabilities else None,
        instances,
        name=name,
        on_tiles=on_tiles,
    )
    return {
        "labels": labels if instances else classes,
        "probs": probs,
        "objects": objects,
        "table": table,
        "keep": keep,
        "sizes": predictor.polarity.get(name) or predictor.scaling or outside_learnt_sizes(predictor, labels),
    }


def outside_learnt_sizes(predictor: Predictor, labels: Any) -> str | None:
    """A warning when the objects found are larger or smaller than any the model learnt (a model segments
    objects of other sizes badly: nuclei three times the learnt size scored F1 0.445 against 0.878 rescaled)."""
    if not isinstance(labels, np.ndarray) or not predictor.trained_range or not labels.any():
        return None  # no objects, an on-disk result, or a model without learnt sizes
    found = estimate_diameter(labels)
    low, high = predictor.trained_range
    if found is None or low <= found <= high:
        return None
    return (
        f"objects about {found:.0f} px across, {'larger' if found > high else 'smaller'} than any the model "
        f"learnt ({predictor.learnt_sizes()}): tick 'estimate the diameter from the image'"
    )
