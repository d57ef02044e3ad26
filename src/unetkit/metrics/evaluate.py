"""Score predictions against ground truth, file by file: semantic, instance or ISBI 2012 metrics.

Files are paired by stem (``NAME``, ``NAME_mask``, ... all match). For each ``NAME`` the prediction folder
may hold the mask ``NAME.png|tif``, ``NAME_instances.tif`` and ``NAME_probs.tif`` (as ``unetkit predict``
writes them); instance metrics use the instance labels when present (else the connected components of the
mask), ISBI metrics the probabilities when present (else the mask).

Mode ``auto``: ``instance`` when the ground truth holds instance labels (its ``dataset.yaml`` says
``mask_encoding: instances``, or a mask has more than two labels and more than 255 or 20 distinct
values), else ``semantic``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..data.io import count_planes, read_image, read_volume
from ..data.layouts import find_images, mask_stem, read_descriptor
from ..errors import ConfigError, DataError
from .boundary import boundary_scores
from .instance import DSB_THRESHOLDS, match_instances
from .isbi import isbi_scores
from .semantic import SemanticScores, confusion_matrix

__all__ = ["MODES", "Evaluation", "ImageResult", "evaluate", "evaluate_model", "pair_masks"]

MODES = ("auto", "semantic", "instance", "isbi")
OUTPUT_SUFFIXES = ("_probs", "_instances", "_overlay", "_errors")

DEFINITIONS = {
    "dice": "2|P∩T| / (|P|+|T|) per class (foreground = non-zero for binary masks), mean over foreground "
    "classes; 1.0 when both are empty",
    "iou": "|P∩T| / |P∪T| (Jaccard), as dice; 1.0 when both are empty",
    "precision": "TP / (TP + FP) (pixels, or objects in instance mode at IoU >= 0.5)",
    "recall": "TP / (TP + FN) (pixels, or objects in instance mode at IoU >= 0.5)",
    "pixel_accuracy": "correctly classified pixels / all pixels",
    "hausdorff": "max of the two directed maximal boundary distances (pixels); NaN when one mask is empty",
    "hd95": "max of the two directed 95th-percentile boundary distances (pixels), as MONAI",
    "mean_surface_distance": "mean of all boundary distances in both directions (pixels)",
    "f1": "2 TP / (2 TP + FP + FN) of objects matched one-to-one at IoU >= 0.5 (Hungarian)",
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
}

COLUMNS = {
    "semantic": ("dice", "iou", "precision", "recall", "pixel_accuracy", "hd95"),
    "instance": ("tp", "fp", "fn", "f1", "pq", "dsb_score", "aji", "splits", "merges", "dice"),
    "isbi": ("pixel_error", "v_rand", "v_info", "warping_error", "splits", "mergers"),
}


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
    """Per-image scores and their means over images (NaN-aware) for one mode."""

    mode: str
    images: list[ImageResult] = field(default_factory=list)

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
                "metric_definitions": {k: v for k, v in DEFINITIONS.items() if k in self.mean},
                "mean": {**self.mean, "images": len(self.images)},
                "images": [{"name": s.name, **s.scores, **s.details} for s in self.images],
            }
        )

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def write_csv(self, path: str | Path) -> Path:
        """One row per image and a last row ``mean``; every score a column."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.mean)
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", *keys])
            for s in self.images:
                w.writerow([s.name, *(_fmt(s.scores.get(k)) for k in keys)])
            w.writerow(["mean", *(_fmt(self.mean[k]) for k in keys)])
        return path

    def table(self) -> str:
        cols = [c for c in COLUMNS[self.mode] if c in self.mean]
        width = max([len(s.name) for s in self.images] + [5])
        lines = [f"{'image':<{width}}  " + "  ".join(f"{c:>9}" for c in cols)]
        for s in self.images:
            lines.append(f"{s.name:<{width}}  " + "  ".join(f"{_fmt(s.scores[c]):>9}" for c in cols))
        lines.append(f"{'mean':<{width}}  " + "  ".join(f"{_fmt(self.mean[c]):>9}" for c in cols))
        return "\n".join(lines)


def _fmt(v: float | None) -> str:
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


# -- pairing and reading ---------------------------------------------------------------------------------


def _mask_folder(path: Path) -> Path:
    for sub in ("masks", "labels"):
        if (path / sub).is_dir():
            return path / sub
    return path


@dataclass
class Pair:
    name: str
    mask: Path
    truth: Path
    instances: Path | None = None
    probs: Path | None = None
    image: Path | None = None


def pair_masks(pred: str | Path, truth: str | Path) -> list[Pair]:
    """Pair prediction and ground-truth files by stem; ``truth`` may be a dataset folder (its ``masks/``
    or ``labels/`` are used, and its ``images/`` for the report's pictures)."""
    pred, truth = Path(pred), Path(truth)
    for p, opt in ((pred, "PRED"), (truth, "GT")):
        if not p.is_dir():
            raise DataError(f"{opt} {p}: no such folder")
    truth_dir = _mask_folder(truth)
    gts = {mask_stem(p.stem): p for p in find_images(truth_dir)}
    files = find_images(pred)
    preds = {mask_stem(p.stem): p for p in files if not p.stem.endswith(OUTPUT_SUFFIXES)}
    if not preds:
        raise DataError(f"PRED {pred}: no mask files")
    missing = sorted(set(preds) - set(gts))
    if missing:
        raise DataError(
            f"GT {truth_dir}: no ground truth for {len(missing)} prediction(s), e.g. {missing[:3]}; "
            "files are paired by name"
        )
    extra = {p.stem: p for p in files if p.stem.endswith(OUTPUT_SUFFIXES)}
    images = {p.stem: p for p in find_images(truth / "images")} if (truth / "images").is_dir() else {}
    return [
        Pair(
            name,
            preds[name],
            gts[name],
            extra.get(f"{name}_instances"),
            extra.get(f"{name}_probs"),
            images.get(name),
        )
        for name in sorted(preds)
    ]


def _is_volume(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix == ".zarr" or (suffix in (".tif", ".tiff") and count_planes(path, stack=True) > 1)


def read_array(path: Path) -> np.ndarray:
    """A label image, or a volume when the file is a TIFF z-stack (several planes) or a ``.zarr`` array; a
    colour mask becomes its foreground (any non-black pixel)."""
    if _is_volume(path):
        return read_volume(path)
    m = read_image(path)
    return m.any(axis=-1) if m.ndim == 3 else m


def _is_instances(truth: Path, masks: list[np.ndarray]) -> bool:
    root = truth if (truth / "masks").is_dir() or (truth / "labels").is_dir() else truth.parent
    if read_descriptor(root).get("mask_encoding") == "instances":
        return True
    return any(len(np.unique(m)) > 20 or m.max() > 255 for m in masks)


def _semantic_labels(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Both masks as class indices: binary (non-zero) when either has at most two values, else the union of
    their values in sorted order (predict writes masks back in the training encoding, so they agree)."""
    values = np.union1d(np.unique(pred), np.unique(truth))
    if len(np.unique(truth)) <= 2 and len(np.unique(pred)) <= 2:
        return (pred != 0).astype(np.int64), (truth != 0).astype(np.int64), 2
    return np.searchsorted(values, pred), np.searchsorted(values, truth), len(values)


def _semantic(pred: np.ndarray, truth: np.ndarray) -> tuple[dict[str, float], dict[str, Any]]:
    p, t, k = _semantic_labels(pred, truth)
    scores = SemanticScores(confusion_matrix(t, p, k))
    boundary = [boundary_scores(p == c, t == c) for c in range(1, k)]
    out = {**scores.means(), "pixel_accuracy": scores.pixel_accuracy}
    for key in ("hausdorff", "hd95", "mean_surface_distance"):
        vals = [b[key] for b in boundary]
        out[key] = float(np.mean(vals)) if vals else 0.0
    details = {"per_class": scores.to_dict()["per_class"], "confusion_matrix": scores.matrix.tolist()}
    if k > 2:
        details["boundary_per_class"] = boundary
    return out, details


def _instance(pred_labels: np.ndarray, truth_labels: np.ndarray) -> tuple[dict[str, float], dict[str, Any]]:
    s = match_instances(truth_labels, pred_labels)
    tp, fp, fn = s.counts(0.5)
    split, merged = s.split_merge(0.5)
    out = {
        "n_true": float(s.n_true),
        "n_pred": float(s.n_pred),
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(fn),
        "precision": s.precision(0.5),
        "recall": s.recall(0.5),
        "f1": s.f1(0.5),
        "pq": s.pq(0.5),
        "sq": s.mean_matched_iou(0.5),
        "dsb_score": s.mean_ap(),
        "aji": s.aji(),
        "splits": float(len(split)),
        "merges": float(len(merged)),
    }
    fg = _semantic((pred_labels > 0).astype(np.uint8), (truth_labels > 0).astype(np.uint8))[0]
    out.update({"dice": fg["dice"], "iou": fg["iou"]})
    ov = s.overlaps
    best = np.zeros(ov.n_true)
    np.maximum.at(best, ov.pair_true, ov.iou)
    details = {
        "ap_per_threshold": {f"{t:.2f}": s.ap(t) for t in DSB_THRESHOLDS},
        "object_iou": best.round(4).tolist(),  # best IoU of every true object (0: missed)
        "split_labels": split.tolist(),
        "merged_labels": merged.tolist(),
    }
    return out, details


def evaluate(pred: str | Path, truth: str | Path, mode: str = "auto") -> Evaluation:
    """Score every prediction in ``pred`` against its match in ``truth`` (see the module docstring).

    Example:
        >>> ev = evaluate("pred/", "data/test/", mode="instance")
        >>> ev.mean["dsb_score"], ev.table()
    """
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r} is unknown; choose one of {', '.join(MODES)}")
    pairs = pair_masks(pred, truth)
    truths = {pr.name: read_array(pr.truth) for pr in pairs}
    for pr in pairs:  # every shape checked before any score is computed
        truth_shape = truths[pr.name].shape
        pred_shape = read_array(pr.mask).shape
        if pred_shape != truth_shape:
            have, want = "x".join(map(str, pred_shape)), "x".join(map(str, truth_shape))
            raise DataError(f"{pr.mask}: prediction is {have} but {pr.truth} is {want}")
    instance_truth = _is_instances(Path(truth), list(truths.values()))
    if mode == "auto":
        mode = "instance" if instance_truth else "semantic"
    result = Evaluation(mode)
    for pr in pairs:
        t = truths[pr.name]
        if mode == "semantic":
            if instance_truth:  # instance labels are not classes: score the foreground
                t = (t != 0).astype(np.uint8)
            scores, details = _semantic(read_array(pr.mask), t)
        elif mode == "instance":
            labels = read_array(pr.instances) if pr.instances else ndi.label(read_array(pr.mask) != 0)[0]
            true_labels = t if len(np.unique(t)) > 2 else ndi.label(t != 0)[0]
            scores, details = _instance(labels, true_labels)
        else:
            prediction = read_image(pr.probs) if pr.probs else read_array(pr.mask)
            if prediction.ndim == 3:  # (C, H, W) class probabilities: foreground = 1 - background
                prediction = 1 - prediction[0]
            scores, details = isbi_scores(prediction, t), {}
        result.images.append(ImageResult(pr.name, scores, {**details, "files": _files(pr)}))
    return result


def _files(pr: Pair) -> dict[str, str]:
    return {k: str(v) for k, v in vars(pr).items() if isinstance(v, Path)}


def evaluate_model(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    mode: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    **predict_kwargs: Any,
) -> Evaluation:
    """Predict ``data``'s images (``DATA/images`` or the folder itself) with ``model`` into ``out``, with
    instance labels and probabilities, then :func:`evaluate` them against ``data``'s masks."""
    from ..inference.api import predict_files

    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r} is unknown; choose one of {', '.join(MODES)}")
    data = Path(data)
    images = data / "images" if (data / "images").is_dir() else data
    predict_files(
        model,
        [images],
        out,
        instances=mode in ("auto", "instance"),
        save_probs="float32" if mode == "isbi" else False,
        overwrite=overwrite,
        progress=progress,
        **predict_kwargs,
    )
    return evaluate(out, data, mode=mode)
