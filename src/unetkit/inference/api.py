"""Prediction entry points for Python users and the CLI."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.io import IMAGE_SUFFIXES, read_image, write_image
from ..data.layouts import find_images
from ..errors import DataError
from .predictor import Predictor

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
    source: Path
    mask: Path
    probs: Path | None
    shape: tuple[int, int]


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (their image files, sorted) into a list of images; error on anything else."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
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


def predict_files(
    model: str | Path | Predictor,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    save_probs: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **kwargs: object,
) -> list[PredictedFile]:
    """Segment image files (or folders of them) and write one mask per input to ``out``.

    Masks are ``OUT/NAME.png`` with the input's height and width: 0/255 for a binary model, otherwise in the
    training masks' encoding (class values, colours, or background/interior/border indices 0/1/2). ``save_probs`` also writes ``OUT/NAME_probs.tif`` (float32; ``(H, W)`` foreground
    probability for a binary model, ``(C, H, W)`` otherwise). Existing files are kept unless ``overwrite``.
    """
    files = collect_inputs(inputs)
    out = Path(out)
    if not overwrite:
        clash = [out / f"{f.stem}.png" for f in files if (out / f"{f.stem}.png").exists()]
        if clash:
            raise DataError(f"{clash[0]}: already exists ({len(clash)} in all); pass --overwrite to replace")
    predictor = model if isinstance(model, Predictor) else Predictor.from_checkpoint(model, **kwargs)  # type: ignore[arg-type]
    results = []
    for f in tqdm(files, desc="predict", unit="image", disable=not progress):
        image = read_image(f)
        probs = predictor.predict_proba(image, f)
        labels = predictor.to_labels(probs)
        mask = predictor.to_mask(labels)
        mask_path = write_image(out / f"{f.stem}.png", mask, overwrite=True)
        probs_path = None
        if save_probs:
            probs_path = write_image(
                out / f"{f.stem}_probs.tif", probs[0] if probs.shape[0] == 1 else probs, overwrite=True
            )
        results.append(PredictedFile(f, mask_path, probs_path, labels.shape))
    return results
