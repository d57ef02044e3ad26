"""OME-Zarr results (``unetkit predict --format ome-zarr``), written through the ``ome-zarr`` library.

One ``NAME.ome.zarr`` per input: an OME-Zarr image (the input as the model saw it, its channels and pixel
size, as a multiscale pyramid) whose ``labels`` group holds the results as multiscale label images (nearest
neighbour downsampling: no label value is invented): ``mask`` (in the user's mask encoding, as every other
format) and, with ``--instances``, ``instances``. napari (with the napari-ome-zarr plugin), ``ome_zarr
view``, the OME-Zarr validator and any NGFF 0.4/0.5 reader open it as an image with its label layers.

Arrays are handed to the library as Dask arrays that read the results block by block, so a large image's
pyramid is written without holding it in memory. Needs the ``[ome-zarr]`` extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..data.lazy import ImageSource, ome_placement
from ..extras import require_extra
from .writers import CHUNK, Plane

__all__ = ["pyramid_factors", "write_ome_zarr"]

log = logging.getLogger(__name__)

#: the pyramid stops before a level's shorter side falls under this many pixels
SMALLEST = 256


def pyramid_factors(shape: tuple[int, int], smallest: int = SMALLEST) -> list[int]:
    """Downsampling factors 2, 4, 8 ... while the level's shorter side keeps ``smallest`` pixels."""
    factors, f = [], 2
    while min(shape) // f >= smallest:
        factors.append(f)
        f *= 2
    return factors


class _PlaneArray:
    """A 2-D result (:data:`~unetkit.inference.writers.Plane`) as an array Dask can read blocks of."""

    def __init__(self, plane: Plane) -> None:
        self.read, self.shape, self.dtype = plane
        self.ndim = 2

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        return np.asarray(self.read(*key), self.dtype)


class _SourceArray:
    """An input image (:class:`~unetkit.data.lazy.ImageSource`) as a ``(C, Y, X)`` or ``(Y, X)`` array."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source
        c, h, w = source.shape
        self.shape = (h, w) if c == 1 else (c, h, w)
        self.dtype, self.ndim = source.dtype, len(self.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        block = self.source[..., key[-2], key[-1]]
        return block[0] if self.ndim == 2 else block[key[0]]


#: the most objects whose properties go into a label image's metadata (JSON read whole by every viewer; the
#: CSV beside holds every object anyway)
PROPERTIES_MAX = 100_000


def write_ome_zarr(
    dest: Path,
    source: ImageSource,
    labels: dict[str, Plane],
    properties: dict[str, dict[str, np.ndarray]] | None = None,
) -> Path:
    """Write the image ``source`` and its ``labels`` (name → plane) as one OME-Zarr group ``dest``;
    ``properties``: per label image, a table whose ``label`` column names the objects (the objects table), kept
    as the OME-NGFF ``image-label`` ``properties`` (one entry per object: ``label-value`` and the columns)."""
    require_extra(("ome_zarr", "dask"), "ome-zarr", "predict --format ome-zarr")
    import dask.array as da
    import zarr
    from ome_zarr.writer import write_image, write_multiscale_labels

    h, w = source.spatial_shape
    factors = pyramid_factors((h, w))
    place = ome_placement(Path(source.name)) or {}
    (sy, sx), (ty, tx) = place.get("scale", (1.0, 1.0)), place.get("translation", (0.0, 0.0))
    units = place.get("units") or (None, None)
    axis_units = {"y": units[0], "x": units[1]} if all(units) else None
    image = _SourceArray(source)
    group = zarr.open_group(str(dest), mode="w")
    lead = [1.0] * (image.ndim - 2)  # the channel axis: not scaled, not moved
    chunks = (*image.shape[:-2], CHUNK, CHUNK)
    # every chunk of the image goes to disk (an all-dark one too): a missing chunk then means an incomplete
    # copy, which unetkit refuses as an input, never "equal to the fill value"
    with zarr.config.set({"array.write_empty_chunks": True}):
        write_image(
            da.from_array(image, chunks=chunks, asarray=False),
            group,
            scale_factors=factors,
            axes="yx" if image.ndim == 2 else "cyx",
            scale={"y": sy, "x": sx},
            axes_units=axis_units,
            storage_options={"chunks": chunks},
        )
    # where each level lies: where the input (an OME-Zarr level) lay; the library's resize averages f x f
    # pixels (centred (f - 1) / 2 further on), labels keep every f-th pixel (nearest neighbour: every value
    # is a real label, on the full-resolution pixel f*i)
    still = [0.0] * len(lead)
    _place(group, [([*lead, sy * f, sx * f], [*still, ty + sy * (f - 1) / 2, tx + sx * (f - 1) / 2])
                   for f in (1, *factors)])  # fmt: skip
    placed = [([sy * f, sx * f], [ty, tx]) for f in (1, *factors)]
    for name, plane in labels.items():
        full = da.from_array(_PlaneArray(plane), chunks=(CHUNK, CHUNK), asarray=False)
        write_multiscale_labels(
            [full] + [full[::f, ::f] for f in factors],
            group,
            name=name,
            axes="yx",
            scale={"y": sy, "x": sx},
            axes_units=axis_units,
            storage_options={"chunks": (CHUNK, CHUNK)},
            label_metadata={"source": {"image": "../../"}, **_properties((properties or {}).get(name))},
        )
        _place(zarr.open_group(str(dest / "labels" / name), mode="r+"), placed)
    return dest


def _place(group: Any, levels: list[tuple[list[float], list[float]]]) -> None:
    """Set the scale and translation of every level of ``group``'s multiscale image (OME-Zarr 0.4 or 0.5)."""
    attrs = group.attrs.asdict()
    node = attrs.get("ome", attrs)
    for dataset, (scale, shift) in zip(node["multiscales"][0]["datasets"], levels, strict=True):
        dataset["coordinateTransformations"] = [
            {"type": "scale", "scale": scale},
            {"type": "translation", "translation": shift},
        ]
    group.attrs.update(attrs)


def _properties(table: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """The OME-NGFF ``properties`` of a label image from an objects table (none past :data:`PROPERTIES_MAX`)."""
    if table is None:
        return {}
    if len(table["label"]) > PROPERTIES_MAX:
        log.info("%d objects: their properties are in the CSV only (at most %d in the OME-Zarr metadata)",
                 len(table["label"]), PROPERTIES_MAX)  # fmt: skip
        return {}
    columns = [k for k in table if k != "label"]
    return {
        "properties": [
            {"label-value": int(value), **{k: table[k][i].item() for k in columns}}
            for i, value in enumerate(table["label"])
        ]
    }
