"""Evaluation results: per-image scores and their means, written as JSON, CSV or a plain-text table."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..config import MODES
from ..safety import head_text

__all__ = ["COLUMNS", "DEFINITIONS", "MODES", "Evaluation", "ImageResult", "fmt"]


class Described(Protocol):
    """Anything that says in lines how the data behind a result was read."""

    def describe(self) -> list[str]: ...


OUTPUT_SUFFIXES = ("_probs", "_instances", "_overlay", "_errors")


DEFINITIONS = {
    "dice": "2|P∩T| / (|P|+|T|) per class (foreground = non-zero for binary masks), mean over foreground "
    "classes; 1.0 when both are empty",
    "iou": "|P∩T| / |P∪T| (Jaccard), as dice; 1.0 when both are empty",
    "precision": "TP / (TP + FP) (pixels, or objects in instance mode at IoU > 0.5)",
    "recall": "TP / (TP + FN) (pixels, or objects in instance mode at IoU > 0.5)",
    "pixel_accuracy": "correctly classified pixels / all pixels",
    "hausdorff": "max of the two directed maximal boundary distances (pixels); NaN when one mask is empty",
    "hd95": "max of the two directed 95th-percentile boundary distances (pixels), as MONAI",
    "mean_surface_distance": "mean of all boundary distances in both directions (pixels)",
    "n_true": "true objects (the labels of the truth)",
    "n_pred": "predicted objects",
    "tp": "true positives: predicted objects matched one-to-one to a true object at IoU > 0.5",
    "fp": "false positives: predicted objects matching no true object at IoU > 0.5",
    "fn": "false negatives (misses): true objects matched by no prediction at IoU > 0.5",
    "f1": "2 TP / (2 TP + FP + FN) of objects matched one-to-one at IoU > 0.5",
    "pq": "panoptic quality: sum of matched IoU / (TP + FP/2 + FN/2), Kirillov et al. 2019",
    "sq": "mean IoU of the matched objects",
    "dsb_score": "Data Science Bowl 2018: mean over IoU 0.50:0.05:0.95 of TP / (TP + FP + FN)",
    "aji": "aggregated Jaccard index, Kumar et al. 2017 (as published)",
    "splits": "true objects unmatched and covered >= 10% each by two or more predictions (instance mode), or "
    "split errors of the warping error (isbi mode)",
    "merges": "predictions unmatched and covering >= 10% of each of two or more true objects (instance mode)",
    "pixel_error": "ISBI 2012: fraction of pixels with the wrong label, at its best threshold",
    "v_rand": "ISBI 2012 foreground-restricted Rand score, at its best threshold",
    "v_info": "ISBI 2012 foreground-restricted information-theoretic score, at its best threshold",
    "warping_error": "Jain et al. 2010: pixels still wrong after topology-preserving warping / all pixels",
    "rand_error": "ISBI 2012: 1 - V_Rand (scikit-image's adapted_rand_error), at its best threshold",
    "mergers": "merge errors of the warping error: groups of wrong pixels that join true objects (isbi mode)",
    "added_objects": "warping-error groups that are objects the truth does not have (isbi mode)",
    "missed_objects": "warping-error groups that are true objects the prediction does not have (isbi mode)",
    "holes": "the other warping-error groups: holes in or between objects (isbi mode)",
    **{
        f"best_threshold_{key}": f"the probability threshold at which {key} is best (isbi mode; 0.5 for masks)"
        for key in ("pixel_error", "rand_error", "warping_error", "v_rand", "v_info")
    },
}


COLUMNS = {
    "semantic": ("dice", "iou", "precision", "recall", "pixel_accuracy", "hd95"),
    "instance": ("tp", "fp", "fn", "f1", "pq", "dsb_score", "aji", "splits", "merges", "dice"),
    "isbi": ("pixel_error", "v_rand", "v_info", "warping_error", "splits", "mergers"),
}


#: scores that count things: summed over images (an integer), not averaged, where people read them
COUNTS = frozenset({"tp", "fp", "fn", "splits", "merges", "mergers", "n_true", "n_pred"})


@dataclass
class ImageResult:
    """Scores of one image: ``scores`` (numbers, one column each), ``details`` (per class, IoU lists)."""

    name: str
    scores: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> float:  # result.dice, result.f1, ...
        scores = self.__dict__.get("scores", {})
        if key in scores:
            return scores[key]
        raise AttributeError(key)


@dataclass
class Evaluation:
    """Per-image scores and their means over images (NaN-aware) for one mode; ``reading`` says how truth and
    predictions were read."""

    mode: str
    images: list[ImageResult] = field(default_factory=list)
    reading: Described | None = None  # how truth and predictions were read (workflows.evaluate.Reading)
    #: the arrays behind one image's scores, for pictures (set by :func:`evaluate`)
    arrays: Callable[[str], dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    #: what was scored against what: predictions, ground truth, the model and its sha256 (set by the workflows)
    provenance: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def notes(self) -> list[str]:
        return self.reading.describe() if self.reading else []

    @property
    def mean(self) -> dict[str, float]:
        keys = [k for k in self.images[0].scores] if self.images else []
        out = {}
        for k in keys:
            vals = np.array([s.scores.get(k, np.nan) for s in self.images], float)
            out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        return out

    @property
    def mean_dice(self) -> float:
        return self.mean["dice"]

    @property
    def mean_iou(self) -> float:
        return self.mean["iou"]

    def to_dict(self) -> dict[str, object]:
        return _jsonable(
            {
                "mode": self.mode,
                "reading": self.notes,
                "metric_definitions": {k: v for k, v in DEFINITIONS.items() if k in self.mean},
                "mean": {**self.mean, "images": len(self.images)},
                "images": [{"name": s.name, **s.scores, **s.details} for s in self.images],
            }
        )

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))
        return path

    def write_csv(self, path: str | Path) -> Path:
        """One row per image and a last row ``mean``; every score a column. Image names that a spreadsheet would
        run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return) are written behind a
        ``'``, as OWASP advises against CSV injection."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.mean)
        with atomic_path(path, ".tmp") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", *keys])
            for s in self.images:
                w.writerow([_cell(s.name), *(fmt(s.scores.get(k)) for k in keys)])
            w.writerow(["mean", *(fmt(self.mean[k]) for k in keys)])
        return path

    def table(self) -> str:
        cols = [c for c in COLUMNS[self.mode] if c in self.mean]
        cols += [c for c in self.mean if c.startswith("dice[")]
        width = max([len(s.name) for s in self.images] + [5])
        widths = [max(9, len(c)) for c in cols]
        lines = [f"{'image':<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True))]
        for s in self.images:
            lines.append(
                f"{s.name:<{width}}  "
                + "  ".join(f"{fmt(s.scores[c]):>{w}}" for c, w in zip(cols, widths, strict=True))
            )
        lines.append(
            f"{'mean':<{width}}  "
            + "  ".join(f"{self.summary(c):>{w}}" for c, w in zip(cols, widths, strict=True))
        )
        counted = [c for c in cols if c in COUNTS]
        note = f"\n({', '.join(counted)}: totals over the images; the rest: means)" if counted else ""
        return "\n".join(lines) + note

    def summary(self, column: str) -> str:
        """A column's summary over images, as people read it: a count's total (an integer), else the mean."""
        if column in COUNTS:
            return str(int(np.nansum([s.scores.get(column, np.nan) for s in self.images])))
        return fmt(self.mean[column])


def _cell(text: str) -> str:
    """A text cell no spreadsheet evaluates."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def is_evaluation_csv(path: Path) -> bool:
    """Whether ``path`` is a table :meth:`Evaluation.write_csv` wrote (its header and its last row, ``mean``)."""
    head = head_text(path)
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return False
    last = tail.rstrip().splitlines()[-1:]
    return head.startswith("image,") and bool(last) and last[0].startswith("mean,")


def is_evaluation_json(path: Path) -> bool:
    """Whether ``path`` is a record :meth:`Evaluation.write_json` wrote."""
    head = head_text(path, 1 << 16)
    return head.lstrip().startswith("{") and '"metric_definitions"' in head


def fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return str(int(v)) if float(v).is_integer() else f"{v:.4f}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, float | np.floating):
        return None if not math.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
