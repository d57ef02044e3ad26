"""Score predicted masks against ground truth, file by file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.io import read_image
from ..data.layouts import find_images, mask_stem
from ..errors import DataError
from .semantic import dice_iou

__all__ = ["Evaluation", "ImageScore", "evaluate", "pair_masks"]


@dataclass
class ImageScore:
    name: str
    dice: float
    iou: float


@dataclass
class Evaluation:
    """Per-image and mean foreground Dice and IoU (non-zero = foreground in both masks)."""

    images: list[ImageScore] = field(default_factory=list)

    @property
    def mean_dice(self) -> float:
        return float(np.mean([s.dice for s in self.images]))

    @property
    def mean_iou(self) -> float:
        return float(np.mean([s.iou for s in self.images]))

    def to_dict(self) -> dict[str, object]:
        return {
            "metric_definitions": {
                "dice": "2|P∩T| / (|P|+|T|) of foreground (non-zero) pixels; 1.0 when both are empty",
                "iou": "|P∩T| / |P∪T| of foreground (non-zero) pixels; 1.0 when both are empty",
            },
            "mean": {"dice": self.mean_dice, "iou": self.mean_iou, "images": len(self.images)},
            "images": [asdict(s) for s in self.images],
        }

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def table(self) -> str:
        width = max([len(s.name) for s in self.images] + [5])
        lines = [f"{'image':<{width}}  {'dice':>6}  {'iou':>6}"]
        lines += [f"{s.name:<{width}}  {s.dice:6.4f}  {s.iou:6.4f}" for s in self.images]
        lines.append(f"{'mean':<{width}}  {self.mean_dice:6.4f}  {self.mean_iou:6.4f}")
        return "\n".join(lines)


def _mask_folder(path: Path) -> Path:
    for sub in ("masks", "labels"):
        if (path / sub).is_dir():
            return path / sub
    return path


def pair_masks(pred: str | Path, truth: str | Path) -> list[tuple[str, Path, Path]]:
    """Pair prediction and ground-truth mask files by stem (``NAME``, ``NAME_mask``, ... all match).

    ``truth`` may be a dataset folder (its ``masks/`` or ``labels/`` are used).
    """
    pred, truth = Path(pred), Path(truth)
    for p, opt in ((pred, "PRED"), (truth, "GT")):
        if not p.is_dir():
            raise DataError(f"{opt} {p}: no such folder")
    truth_dir = _mask_folder(truth)
    gts = {mask_stem(p.stem): p for p in find_images(truth_dir)}
    preds = {mask_stem(p.stem): p for p in find_images(pred) if not p.stem.endswith("_probs")}
    if not preds:
        raise DataError(f"PRED {pred}: no mask files")
    missing = sorted(set(preds) - set(gts))
    if missing:
        raise DataError(
            f"GT {truth_dir}: no ground truth for {len(missing)} prediction(s), e.g. {missing[:3]}; "
            "files are paired by name"
        )
    return [(name, preds[name], gts[name]) for name in sorted(preds)]


def evaluate(pred: str | Path, truth: str | Path) -> Evaluation:
    """Foreground Dice and IoU of every predicted mask in ``pred`` against its match in ``truth``.

    Example:
        >>> ev = evaluate("pred/", "data/test/")
        >>> ev.mean_dice
    """
    result = Evaluation()
    for name, p, t in pair_masks(pred, truth):
        # foreground = non-zero; in a colour mask, any non-black pixel
        pm, tm = (m.any(axis=-1) if m.ndim == 3 else m for m in (read_image(p), read_image(t)))
        if pm.shape != tm.shape:
            raise DataError(
                f"{p}: prediction is {pm.shape[0]}x{pm.shape[1]} but {t} is {tm.shape[0]}x{tm.shape[1]}"
            )
        d, i = dice_iou(pm != 0, tm != 0)
        result.images.append(ImageScore(name, d, i))
    return result
