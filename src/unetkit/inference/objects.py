"""Every predicted object with a confidence: the objects table written beside instance masks.

A biologist who segments new images wants to know *which* objects to check. Each object gets a confidence in
[0, 1] from the network's own outputs, a logistic function of five measurements:

- how sure the network is inside the object: the mean of its largest class probability over the object;
- how much it calls the object foreground: the mean foreground probability over the object;
- how sharp its edge is: the mean foreground probability on the ring of background pixels just outside it
  (high: the object may continue, or lost a piece);
- how plausible its size is: its equivalent diameter against the typical one of the image (the diameter the
  instance split measured, :class:`~unetkit.inference.postprocess.Split`), ``exp(-|log(d / typical)|)``;
- how much of it was cut from a neighbour by the labelling rather than by the network: the pixel edges it
  shares with another object where the network saw no border between them (a border model's interior on both
  sides; a binary model's foreground), per pixel of its equivalent diameter
  (:func:`~unetkit.inference.postprocess.split_by_labelling`). A textured nucleus the watershed cut in pieces is
  such an object: on the `nucleoli` domain 77% of the objects with a cut match a true object, 97% of the others.

The weights were fitted (logistic regression) on 48 unseen images of the built-in model's training family
(seed 5000, 7,707 objects of version 3, 80% of which match a true one at IoU 0.5) and checked on the seven held-out
domains of the style-shift suite: see :data:`WEIGHTS` for the figures. They are the built-in model's; for a
model of your own the confidence still orders objects from doubtful to sure, but 0.8 need not mean 80%.

Sums per object are accumulated block by block (:class:`ObjectSums`), so the table of an image labelled on disk
is the one of the same image labelled whole.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..atomic import atomic_path
from ..errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "COLUMNS",
    "WEIGHTS",
    "ObjectSums",
    "confidence_maps",
    "features",
    "object_table",
    "read_objects_csv",
    "read_table_beside",
    "write_objects_csv",
]

#: the table's columns (per object); centroid and bounding box in pixels of the image, the box half-open
COLUMNS = (
    "label",
    "confidence",
    "area",
    "centroid_y",
    "centroid_x",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
    "mean_intensity",
)
#: intercept, then the weights of logit(mean largest probability), logit(mean foreground probability),
#: logit(mean foreground probability on the outer ring), log(size plausibility), the labelling's cut per pixel of
#: equivalent diameter. Fitted on the built-in model's family (seed 5000; version 3, 7,707 objects); on the
#: style-shift suite's 8,675 objects AUC 0.89, ECE 0.025 (per domain 0.004-0.036, `nucleoli` 0.067: over-confident
#: on split textured nuclei; 0.094 without the cut);
#: ``make bench-confidence`` measures them, ``python bench/confidence.py --fit`` refits them
WEIGHTS = (0.72, 2.19, -0.56, -0.32, 4.02, -1.97)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def confidence_maps(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``(C, *spatial)`` (one sigmoid channel, or softmax channels with background first) → the
    largest class probability and the foreground probability per pixel (float32), in steps of 1/255: what a
    streamed image keeps of them on disk (uint8), so every path gives the same table."""
    probs = np.asarray(probs, np.float32)
    if probs.shape[0] == 1:
        sure, fg = np.maximum(probs[0], 1 - probs[0]), probs[0]
    else:
        sure, fg = probs.max(axis=0), 1 - probs[0]
    return np.rint(sure * 255) / np.float32(255), np.rint(fg * 255) / np.float32(255)


@dataclass
class ObjectSums:
    """Per-object sums over (part of) an image, indexed by label (0: background, unused); :meth:`add` merges the
    sums of another block."""

    count: np.ndarray
    sure: np.ndarray  # sum of the largest class probability
    fg: np.ndarray  # sum of the foreground probability
    ring: np.ndarray  # pixels of the outer ring
    ring_fg: np.ndarray  # sum of the foreground probability on the ring
    intensity: np.ndarray
    coords: np.ndarray  # (ndim, n) sums of the coordinates
    low: np.ndarray  # (ndim, n) smallest coordinate
    high: np.ndarray  # (ndim, n) largest coordinate + 1
    cut: np.ndarray  # pixel edges shared with another object across pixels the labelling split

    @classmethod
    def of(
        cls,
        labels: np.ndarray,
        sure: np.ndarray,
        fg: np.ndarray,
        intensity: np.ndarray | None,
        n: int,
        *,
        offset: tuple[int, ...] | None = None,
        core: tuple[slice, ...] | None = None,
        splittable: np.ndarray | None = None,
    ) -> ObjectSums:
        """Sums of the objects ``1..n`` in ``labels`` (a block at ``offset`` in the image, read with context
        around ``core``, the part this block owns: every pixel is counted by one block only); ``splittable``:
        the pixels across which touching objects were split by the labelling, not the network
        (:func:`~unetkit.inference.postprocess.split_by_labelling`; None: none)."""
        labels = np.asarray(labels)
        offset = offset or (0,) * labels.ndim
        own = np.zeros(labels.shape, bool)
        own[core or tuple(slice(None) for _ in labels.shape)] = True
        size = n + 1
        inside = own & (labels > 0)
        ids = labels[inside].astype(np.int64)

        def total(values: np.ndarray, where: np.ndarray, at: np.ndarray) -> np.ndarray:
            return np.bincount(at, weights=values[where].astype(np.float64), minlength=size)[:size]

        grown = ndi.grey_dilation(labels, size=(3,) * labels.ndim)
        ring = own & (labels == 0) & (grown > 0)
        ring_ids = grown[ring].astype(np.int64)
        coords = np.zeros((labels.ndim, size))
        low = np.full((labels.ndim, size), np.iinfo(np.int64).max, np.int64)
        high = np.full((labels.ndim, size), -1, np.int64)
        for axis, where in enumerate(np.nonzero(inside)):
            at = where + offset[axis]
            coords[axis] = np.bincount(ids, weights=at, minlength=size)[:size]
            np.minimum.at(low[axis], ids, at)
            np.maximum.at(high[axis], ids, at + 1)
        cut = np.zeros(size)
        if splittable is not None:
            owned = inside & splittable
            # each owned pixel against its neighbour on either side along every axis
            for axis in range(labels.ndim):
                for mine, theirs in ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))):
                    a = (slice(None),) * axis + (mine,)
                    b = (slice(None),) * axis + (theirs,)
                    hit = owned[a] & splittable[b] & (labels[b] > 0) & (labels[b] != labels[a])
                    cut += np.bincount(labels[a][hit].astype(np.int64), minlength=size)[:size]
        return cls(
            count=np.bincount(ids, minlength=size)[:size].astype(np.float64),
            sure=total(sure, inside, ids),
            fg=total(fg, inside, ids),
            ring=np.bincount(ring_ids, minlength=size)[:size].astype(np.float64),
            ring_fg=total(fg, ring, ring_ids),
            intensity=total(intensity, inside, ids) if intensity is not None else np.zeros(size),
            coords=coords,
            low=low,
            high=high,
            cut=cut,
        )

    def add(self, other: ObjectSums) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "low":
                np.minimum(mine, theirs, out=mine)
            elif f.name == "high":
                np.maximum(mine, theirs, out=mine)
            else:
                mine += theirs


def features(sums: ObjectSums, diameter: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The labels present and their measurements, one row each: 1 (the intercept), then the five of
    :data:`WEIGHTS` (see the module docstring); what the confidence is computed from and fitted on."""
    present = np.nonzero(sums.count)[0]
    present = present[present > 0]
    n = sums.count[present]
    ring = sums.ring[present]
    ring_fg = np.where(ring > 0, sums.ring_fg[present] / np.maximum(ring, 1), 0.0)
    ndim = sums.coords.shape[0]
    equivalent = (6 * n / np.pi) ** (1 / 3) if ndim == 3 else 2 * np.sqrt(n / np.pi)
    plausible = np.exp(-np.abs(np.log(equivalent / diameter))) if diameter else np.ones_like(n)
    rows = np.stack(
        [
            np.ones_like(n),
            _logit(sums.sure[present] / n),
            _logit(sums.fg[present] / n),
            _logit(ring_fg),
            np.log(np.clip(plausible, 1e-3, 1)),
            sums.cut[present] / equivalent ** (ndim - 1),
        ],
        axis=1,
    )
    return present, rows


def object_table(sums: ObjectSums, diameter: float | None) -> dict[str, np.ndarray]:
    """The objects table (:data:`COLUMNS`, one array each; 2-D images; volumes add ``centroid_z`` and the z
    bounds) from the sums of every block; ``diameter``: the image's typical object diameter (None: unknown,
    every size plausible)."""
    present, rows = features(sums, diameter)
    n = sums.count[present]
    ndim = sums.coords.shape[0]
    z = rows @ np.asarray(WEIGHTS)
    axes = "zyx"[3 - ndim :]
    table: dict[str, np.ndarray] = {
        "label": present.astype(np.int64),
        "confidence": 1 / (1 + np.exp(-z)),
        "area": n.astype(np.int64),
    }
    for k, a in enumerate(axes):
        table[f"centroid_{a}"] = sums.coords[k][present] / n
    for k, a in enumerate(axes):
        table[f"bbox_{a}0"] = sums.low[k][present]
    for k, a in enumerate(axes):
        table[f"bbox_{a}1"] = sums.high[k][present]
    table["mean_intensity"] = sums.intensity[present] / n
    return table


def write_objects_csv(path: str | Path, table: dict[str, np.ndarray]) -> Path:
    """The table as CSV (one row per object, least confident first: the ones to check), written atomically."""
    path = Path(path)
    order = np.argsort(table["confidence"], kind="stable")
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(list(table))
        for i in order:
            out.writerow([_cell(table[k][i]) for k in table])
    return path


def _cell(value: np.generic) -> str:
    if np.issubdtype(type(value), np.integer):
        return str(int(value))
    return f"{float(value):.4g}"


#: the largest objects table read back (a table of a gigapixel slide holds about a million objects)
MAX_TABLE_BYTES = 512 * 2**20


def read_objects_csv(path: str | Path) -> dict[str, np.ndarray]:
    """An objects table as :func:`write_objects_csv` wrote it (one array per column, in the file's order), checked:
    a ``label`` column of distinct positive integers, a ``confidence`` column in [0, 1], finite numbers. Raises
    :class:`~unetkit.errors.DataError` (one line, the file and what is wrong) for anything else."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TABLE_BYTES:
            raise DataError(f"{path}: {size / 2**20:.0f} MiB, larger than any objects table unetkit writes")
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as an objects table ({str(exc)[:120]})") from None
    if not rows or rows[0][:2] != ["label", "confidence"]:
        raise DataError(
            f"{path}: not an objects table unetkit wrote (its first columns are label, confidence)"
        )
    head, body = rows[0], rows[1:]
    if any(len(r) != len(head) for r in body):
        raise DataError(f"{path}: rows of different lengths: not an objects table unetkit wrote")
    try:
        cols = {k: np.array([float(r[i]) for r in body], np.float64) for i, k in enumerate(head)}
    except ValueError as exc:
        raise DataError(f"{path}: {str(exc)[:80]}: not an objects table unetkit wrote") from None
    label, conf = cols["label"], cols["confidence"]
    finite = all(np.isfinite(v).all() for v in cols.values())
    if (
        not finite
        or (label < 1).any()
        or (label != np.round(label)).any()
        or len(np.unique(label)) != len(label)
    ):
        raise DataError(f"{path}: labels must be distinct positive integers and every number finite")
    if ((conf < 0) | (conf > 1)).any():
        raise DataError(f"{path}: confidences outside [0, 1]: not an objects table unetkit wrote")
    integral = ("label", "area", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "bbox_z0", "bbox_z1")
    return {k: v.astype(np.int64) if k in integral else v for k, v in cols.items()}


def read_table_beside(
    result: str | Path, stem: str | None = None, *, without: str
) -> dict[str, np.ndarray] | None:
    """The objects table ``predict --instances`` wrote beside ``result`` (``NAME_objects.csv`` beside
    ``NAME_instances.tif``, ``NAME.zarr`` or ``NAME.ome.zarr``; ``stem``: ``NAME`` when the file's name does not say
    it), read and checked; None when there is none, or when it cannot be read (logged: ``without`` says what goes
    on without it)."""
    result = Path(result)
    if stem is None:
        stem = result.name
        for suffix in (".ome.zarr", ".zarr", "_instances.tif"):
            stem = stem.removesuffix(suffix)
    table = result.with_name(f"{stem}_objects.csv")
    if not table.is_file():
        return None
    try:
        return read_objects_csv(table)
    except DataError as exc:
        log.warning("%s; %s", exc, without)
        return None
