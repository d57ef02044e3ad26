"""Reader contribution: a result folder ``NAME.zarr`` of ``unetkit predict --format zarr`` (arrays ``mask``,
``instances``, ``probs``) opens as layers: the objects and the mask as Labels layers, the probabilities as an Image
layer per class, all read lazily from the store (never loaded whole); the objects carry ``NAME_objects.csv``
(beside the store) as their features, so Review steps through them least confident first. Other ``.zarr`` stores are left to other
readers (``NAME.ome.zarr``: napari-ome-zarr)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..workflows.review import features_beside, result_arrays

__all__ = ["RESULT_ARRAYS", "get_reader"]

#: the arrays of a result group, and the layer each becomes
RESULT_ARRAYS = {
    "instances": ("objects", "labels"),
    "mask": ("mask", "labels"),
    "probs": ("probabilities", "image"),
}


def get_reader(path: str | list[str]) -> Any:
    if not isinstance(path, str) or not path.rstrip("/").endswith(".zarr") or path.endswith(".ome.zarr"):
        return None
    names = result_arrays(Path(path), RESULT_ARRAYS)
    return (lambda p: _read(Path(p), names)) if names else None


def _read(path: Path, names: list[str]) -> list[tuple[Any, dict[str, Any], str]]:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    stem = path.name[: -len(".zarr")]
    layers = []
    for key in names:
        suffix, kind = RESULT_ARRAYS[key]
        data: Any = group[key]  # an array: result_arrays checked
        meta: dict[str, Any] = {"name": f"{stem} {suffix}"}
        if kind == "image":  # (C, H, W): one layer per class, 0..1
            classes = range(data.shape[0])
            meta.update(channel_axis=0, contrast_limits=(0.0, 1.0), visible=False)
            meta["name"] = [f"{stem} probabilities (class {c})" for c in classes]
        elif key == "instances" and (features := features_beside(path)) is not None:
            meta["features"] = features  # every object's confidence, area ...: Review steps through them
        elif key == "mask" and "instances" in names:
            meta["visible"] = False  # the objects show; the mask is one click away
        layers.append((data, meta, kind))
    return layers
