"""A training dataset from one painted image: an image and its labels (e.g. napari layers, or arrays in a
notebook) written as a dataset folder ``unetkit train`` reads, with nothing guessed.

Painted labels mean objects: every non-zero label is one object (touching objects need different labels). What
the *unpainted* pixels mean is the painter's to say:

- ``"background"``: everything was painted; unpainted pixels are background (a fully annotated image or crop);
- ``"ignored"``: only painted pixels teach the model: objects are painted with their labels, background with
  ``background_label``, and unpainted pixels are left out of the loss and the scores (``ignore_index`` in
  ``dataset.yaml``). The dataset is cropped to the painted area (plus context), so a few objects painted on a
  whole slide make a small dataset.

Validation holds out whole objects of a single image (see :func:`unetkit.data.dataset.split_views`) when it
can (two objects apart from each other are enough: one validates), else its bottom rows, which must then hold
objects; this is checked here, before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..atomic import atomic_write_text
from ..config import DataConfig, TrainConfig
from ..data.dataset import MIN_OBJECTS_TO_HOLD_OUT, held_out_region
from ..data.io import write_image
from ..data.spec import DESCRIPTOR
from ..errors import DataError

__all__ = ["CONTEXT", "UNPAINTED", "write_painted_dataset"]

UNPAINTED = ("background", "ignored")
#: pixels of image context kept around the painted area when unpainted pixels are ignored
CONTEXT = 32
#: the mask value of unpainted pixels in ``ignored`` mode (uint32 masks)
IGNORED = np.iinfo(np.uint32).max


def write_painted_dataset(
    image: np.ndarray,
    labels: np.ndarray,
    out: str | Path,
    *,
    name: str = "painted",
    unpainted: str = "background",
    background_label: int = 1,
    val_fraction: float | None = None,
    channels: bool = False,
) -> Path:
    """Write ``out/images/NAME.tif``, ``out/masks/NAME.tif`` and ``out/dataset.yaml`` (instance masks; the
    ignore value in ``ignored`` mode) from ``image`` (``(H, W)``, ``(H, W, 3|4)`` colour, or with ``channels``
    ``(H, W, C)``: the channels of one image, any count) and ``labels`` (``(H, W)`` integers). ``out`` must not
    exist yet (nothing is overwritten). Returns ``out``.

    Raises :class:`DataError` (one line, with the fix) for labels that cannot train a model: another shape,
    not integers, no object, no painted background in ``ignored`` mode, or objects only on one side of the
    validation split.
    """
    out = Path(out)
    if unpainted not in UNPAINTED:
        raise DataError(f"unpainted={unpainted!r}: choose one of {', '.join(UNPAINTED)}")
    image, labels = np.asarray(image), np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(
            f"{name}: labels of shape {labels.shape}: paint a 2-D labels layer (stacks and volumes train from a "
            "dataset folder: unetkit train DATA)"
        )
    colour = image.ndim == 3 and (channels or image.shape[-1] in (3, 4))
    if image.shape[:2] != labels.shape or not (image.ndim == 2 or colour):
        raise DataError(
            f"{name}: the image is {image.shape} and the labels {labels.shape}: paint labels of the image's own "
            "size on a 2-D (or colour) image"
            + (
                "; if an axis holds its channels, say which (napari: the channel axis)"
                if image.ndim > 2
                else ""
            )
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool) or (labels < 0).any():
        raise DataError(
            f"{name}: labels of type {labels.dtype}: labels are non-negative integers (0: unpainted)"
        )
    painted = labels != 0
    if unpainted == "ignored":
        background = labels == background_label
        objects = painted & ~background
        if not background.any():
            raise DataError(
                f"{name}: unpainted pixels are ignored, so paint some background with label {background_label} "
                "(or say unpainted pixels are background)"
            )
        mask = np.where(painted, labels, 0).astype(np.uint32)
        mask[background] = 0
        mask[~painted] = IGNORED
        rows, cols = np.nonzero(painted)
        r0, r1 = max(0, rows.min() - CONTEXT), min(labels.shape[0], rows.max() + 1 + CONTEXT)
        c0, c1 = max(0, cols.min() - CONTEXT), min(labels.shape[1], cols.max() + 1 + CONTEXT)
        image, mask, objects = image[r0:r1, c0:c1], mask[r0:r1, c0:c1], objects[r0:r1, c0:c1]
        known = painted[r0:r1, c0:c1]
    else:
        objects = painted
        mask = labels.astype(np.uint32)
        known = np.ones(mask.shape, bool)
    if not objects.any():
        raise DataError(f"{name}: no object is painted: paint a few objects with labels 1, 2, 3 ...")
    h = mask.shape[0]
    share = DataConfig().val_fraction if val_fraction is None else val_fraction
    cut = h - max(1, round(h * share))
    # training validates on whole objects held out, wherever they are, when it can hold some out
    # (data.dataset.split_views, with training's default seed); else on the bottom rows, which must hold some
    rng = np.random.default_rng([TrainConfig().seed, 0])
    components, count = ndi.label(objects)
    on_rows = held_out_region(components, known, share, rng) is None
    if on_rows and (not objects[:cut].any() or not objects[cut:].any()):
        one = count < MIN_OBJECTS_TO_HOLD_OUT
        raise DataError(
            f"{name}: {'one object is' if one else 'objects are'} painted, only "
            f"{'above' if objects[:cut].any() else 'below'} row {cut} of the "
            f"{'painted area' if unpainted == 'ignored' else 'image'}, and validation needs objects the training "
            f"does not see: paint {'another object apart from it' if one else 'objects apart from each other'} "
            f"(one is held out whole), or objects below and above row {cut} (rows {cut}-{h} validate the model)"
        )
    if out.exists():
        raise DataError(f"{out} exists: choose a new folder (nothing is overwritten)")
    write_image(out / "images" / f"{name}.tif", np.ascontiguousarray(image), axes="YXC" if channels else None)
    write_image(out / "masks" / f"{name}.tif", np.ascontiguousarray(mask))
    ignore = f"ignore_index: {IGNORED}\n" if unpainted == "ignored" else ""
    atomic_write_text(
        out / DESCRIPTOR,
        f"# written by unetkit from painted labels: masks hold instance labels (0 = background"
        f"{', ' + str(IGNORED) + ' = unpainted, ignored' if ignore else ''})\n"
        f"layout: paired\nmask_encoding: instances\n{ignore}",
    )
    return out
