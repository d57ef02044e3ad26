"""Score predictions against ground truth: semantic, instance or ISBI 2012 metrics, exact in every encoding.

The truth is a dataset in any layout (or a folder of masks); every ground-truth sample is paired with the
prediction of the same name (``NAME.png|tif``, ``NAME_mask.png``, ``NAME_cp_masks.png`` ..., with
``NAME_instances.tif`` and ``NAME_probs.tif`` as ``unetkit predict`` writes them). A sample without a
prediction, or a prediction without truth, is an error.

How the truth is read is decided once, with one precedence: flags > ``DATA/dataset.yaml`` > the model's
training masks (``evaluate MODEL DATA``) > the layout (DSB and CTC hold instances) > masks with one value
besides 0 (binary). Anything else is refused with the flag to pass; labels are never classified by
counting them. Class and colour masks are scored per class (by name); instance truth by its IDs.

Mode ``auto``: ``instance`` for instance masks, else ``semantic``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..config import DataConfig
from ..data.io import IMAGE_SUFFIXES, read_image
from ..data.masks import IGNORE, MaskEncoding
from ..errors import ConfigError, DataError
from ..inference.objects import read_table_beside
from ..metrics.instance import InstanceScores, match_instances
from ..metrics.isbi import isbi_scores
from ..metrics.results import DEFINITIONS, MODES, Evaluation, ImageResult
from ..metrics.scoring import score_instances, score_semantic
from .pairing import (
    PRED_ENCODINGS,
    Pair,
    Reading,
    find_pairs,
    is_volume,
    pair_masks,
    pred_classes,
    pred_labels,
    read_array,
    truth_arrays,
    truth_reading,
    truth_samples,
    with_stored_naming,
)
from .predict import predict_files, samples_as_inputs

log = logging.getLogger(__name__)

__all__ = [
    "DEFINITIONS",
    "MODES",
    "PRED_ENCODINGS",
    "Evaluation",
    "ImageResult",
    "ObjectComparison",
    "Reading",
    "compare_objects",
    "evaluate",
    "evaluate_model",
    "guard_evaluation_outputs",
    "pair_masks",
    "truth_reading",
    "truth_samples",
]


# -- pairing and reading ---------------------------------------------------------------------------------


def evaluate(
    pred: str | Path,
    truth: str | Path,
    mode: str = "auto",
    *,
    data_config: DataConfig | None = None,
    model_encoding: MaskEncoding | None = None,
    pred_encoding: str = "auto",
    data: DataConfig | None = None,
) -> Evaluation:
    """Score every ground-truth sample of ``truth`` against its prediction in ``pred``.

    ``truth``: a dataset in any layout (``data_config`` holds its reading flags: layout, folders, naming, mask
    encoding, class map, ignore value; as :func:`evaluate_model`'s) or a folder of masks. ``data``: the earlier
    name of ``data_config`` (deprecated: in :func:`evaluate_model` ``data`` is the dataset folder). How the truth is read is decided once (see
    :func:`truth_reading`) and reported in ``Evaluation.notes``; an undecidable encoding is refused.
    ``mode``: ``auto`` (instance for instance masks, else semantic), ``semantic``, ``instance`` or ``isbi``.
    ``pred_encoding``: how a prediction mask gives objects in instance mode: ``auto`` (a ``NAME_instances``
    file or a label image by its IDs; a mask with one value besides 0 by connected components), ``instances``
    or ``binary``.

    Example:
        >>> ev = evaluate("pred/", "data/test/", mode="instance")
        >>> ev.mean["dsb_score"], ev.table()
    """
    if data is not None:
        if data_config is not None:
            raise ConfigError("evaluate: give data_config only (data is its earlier name)")
        warnings.warn(
            "evaluate(data=...) is now evaluate(data_config=...), as in evaluate_model",
            FutureWarning,
            stacklevel=2,
        )
        data_config = data
    data = data_config
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r} is unknown; choose one of {', '.join(MODES)}")
    if pred_encoding not in PRED_ENCODINGS:
        raise ConfigError(
            f"--pred-encoding {pred_encoding!r} is unknown; choose one of {', '.join(PRED_ENCODINGS)}"
        )
    pairs, defaults = find_pairs(pred, truth, data)
    volumes = any(
        not isinstance(pr.truth.mask, tuple) and pr.truth.mask_page is None and is_volume(pr.truth.mask)  # type: ignore[arg-type]
        for pr in pairs[:1]
    )
    said = "--mode instance (object labels asked for)" if mode == "instance" else None
    reading = truth_reading(truth, [pr.truth for pr in pairs], defaults, data, model_encoding, volumes, said)
    enc = reading.encoding
    if mode == "auto":
        mode = "instance" if enc.name == "instances" else "semantic"
    truths = {pr.name: truth_arrays(pr.truth, enc, volumes) for pr in pairs}
    for pr in pairs:  # every shape checked before any score is computed
        want = truths[pr.name][0].shape
        have = read_array(pr.mask, pr.mask_page).shape[: len(want)]
        if tuple(have) != tuple(want):
            raise DataError(
                f"{pr.mask}: prediction is {'x'.join(map(str, have))} but its truth {pr.truth.mask_label} is "
                f"{'x'.join(map(str, want))}"
            )
    result = Evaluation(mode, reading=reading, provenance={"predictions": str(Path(pred).resolve()),
                                                          "ground truth": str(Path(truth).resolve())})  # fmt: skip
    how_pred: set[str] = set()
    for pr in pairs:
        classes, labels = truths[pr.name]
        if mode == "semantic":
            p = pred_classes(read_array(pr.mask, pr.mask_page), enc, str(pr.mask), volumes)
            scores, details = score_semantic(p, classes, enc.names)
        elif mode == "instance":
            if labels is None:
                labels = ndi.label(classes == 1)[0]
                how_truth = (
                    "truth objects: connected components of the foreground (the masks are not instances)"
                )
                if how_truth not in reading.notes:
                    reading.notes.append(how_truth)
            pl, how = pred_labels(pr, pred_encoding, volumes)
            if pl.shape != labels.shape:  # a NAME_instances file left from another prediction, or damaged
                source = pr.instances if pr.instances is not None else pr.mask
                raise DataError(
                    f"{source}: objects of {'x'.join(map(str, pl.shape))} pixels for a truth of "
                    f"{'x'.join(map(str, labels.shape))}: not the prediction of this image; predict it again"
                )
            how_pred.add(how)
            written = pl  # the labels as predict wrote them (its objects table describes these)
            ignored = classes == IGNORE
            if ignored.any():
                pl = np.where(ignored, 0, pl)
            matched = match_instances(labels, pl)
            scores, details = score_instances(pl, labels, matched)
            details["objects_from"] = how
            confident = _confidences(pr, written, matched) if how == "ids" else None
            if confident is not None:
                details["objects"] = confident
        else:
            prediction = read_image(pr.probs) if pr.probs else read_array(pr.mask, pr.mask_page)
            if prediction.ndim == 3:  # (C, H, W) class probabilities: foreground = 1 - background
                prediction = 1 - prediction[0]
            scores, details = isbi_scores(prediction, (classes == 1).astype(np.uint8)), {}
        result.images.append(ImageResult(pr.name, scores, {**details, "files": pr.files()}))
    if "ids" in how_pred:
        reading.notes.append("predicted objects: label images scored by their IDs")
    if "components" in how_pred:
        reading.notes.append(
            "predicted objects: connected components of binary prediction masks (touching objects merge; "
            "predict --instances writes label images)"
        )
    result.arrays = lambda name: _report_arrays(pairs, truths, name, mode, pred_encoding, enc, volumes)
    return result


def _confidences(pr: Pair, written: np.ndarray, matched: InstanceScores) -> dict[str, list] | None:
    """The predicted objects' confidences (``NAME_objects.csv`` beside ``NAME_instances``, as predict wrote it
    with the labels ``written``) and whether each matches a true object at IoU 0.5 (``matched``: the scores' own
    matching); None without a table, or with one that describes other labels (a table of another prediction is
    never guessed onto these)."""
    if pr.instances is None:
        return None
    read = read_table_beside(pr.instances, pr.name, without="its confidences are left out")
    if read is None:
        return None
    rows = list(zip(read["label"].tolist(), read["confidence"].tolist(), strict=True))
    present = set(np.unique(written).tolist()) - {0}
    if {k for k, _ in rows} != present:
        log.warning(
            "%s: its objects are not those of %s; its confidences are left out",
            Path(pr.instances).with_name(f"{pr.name}_objects.csv"),
            pr.instances,
        )
        return None
    false = set(matched.unmatched(0.5)[1].tolist())
    return {
        "label": [k for k, _ in rows],
        "confidence": [c for _, c in rows],
        "matched": [k not in false for k, _ in rows],
    }


def _report_arrays(
    pairs: list[Pair],
    truths: dict,
    name: str,
    mode: str,
    pred_encoding: str,
    enc: MaskEncoding,
    volumes: bool,
) -> dict[str, Any]:
    """What the HTML report draws for one image: foregrounds, object labels and the image file."""
    pr = next(p for p in pairs if p.name == name)
    classes, labels = truths[name]
    pred = pred_classes(read_array(pr.mask, pr.mask_page), enc, str(pr.mask), volumes)
    out = {"truth": classes, "pred": pred, "image": pr.image, "image_page": pr.truth.image_page}
    if mode == "instance":
        out["truth_labels"] = labels if labels is not None else ndi.label(classes == 1)[0]
        out["pred_labels"] = pred_labels(pr, pred_encoding, volumes)[0]
    return out


def model_or_predictions(pred: str | Path) -> str:
    """What the first argument of ``unetkit evaluate`` is: ``"builtin"`` (a built-in model's name),
    ``"model"`` (a checkpoint, an ONNX file, a bioimage.io package or a run folder) or ``"predictions"`` (a folder
    of masks, or one mask file: an image file is always a prediction)."""
    from ..inference.bioimageio import is_package
    from ..pretrained import PREFIX, get_pretrained

    path = Path(pred)
    if (str(pred).startswith(PREFIX) or not path.exists()) and get_pretrained(str(pred)) is not None:
        return "builtin"
    if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
        return "model"
    if is_package(path) or (path.is_dir() and any((path / n).is_file() for n in ("best.pt", "last.pt"))):
        return "model"
    return "predictions"


def evaluate_model(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    mode: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    data_config: DataConfig | None = None,
    **predict_kwargs: Any,
) -> Evaluation:
    """Predict the images of the dataset ``data`` (any layout) with ``model`` into ``out`` (label images and,
    for ``isbi``, probabilities), then :func:`evaluate` them, reading the truth as the model read its training
    masks unless ``data_config`` or ``DATA/dataset.yaml`` say otherwise."""
    from ..checkpoint import load_checkpoint, preprocessing_of, resolve_model_path
    from ..inference.bioimageio import is_package
    from ..pretrained import file_sha256, get_pretrained
    from ..safety import sample_files

    given = str(model)
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r} is unknown; choose one of {', '.join(MODES)}")
    model = resolve_model_path(model)
    model_encoding = None
    stored: dict[str, Any] = {}
    if Path(model).suffix.lower() != ".onnx" and not is_package(model):
        pre = preprocessing_of(load_checkpoint(model), model)
        model_encoding = pre.mask_encoding if pre.encoding else None
        stored = pre.dataset or {}
    data_config = with_stored_naming(data, data_config or DataConfig(), stored)
    samples, _, _ = truth_samples(data, data_config)
    if data_config.channel is not None:  # the stain of multi-channel images the model reads
        predict_kwargs.setdefault("channel", data_config.channel)
    predict_files(
        model,
        samples_as_inputs(samples),
        out,
        instances=mode in ("auto", "instance"),
        save_probs="float32" if mode == "isbi" else False,
        overwrite=overwrite,
        progress=progress,
        protect=[data, *sample_files(samples)],
        **predict_kwargs,
    )
    result = evaluate(out, data, mode=mode, data_config=data_config, model_encoding=model_encoding)
    path = Path(model)
    builtin = not Path(given).exists() and get_pretrained(given) is not None
    result.provenance["model"] = f"{given} (built-in)" if builtin else str(path.resolve())
    if path.is_file():
        result.provenance["model sha256"] = file_sha256(path)
    return result


@dataclass
class ObjectComparison:
    """Predicted objects against true ones in one image (arrays in memory, e.g. napari layers): the scores
    ``unetkit evaluate`` gives per image, and the objects behind each kind of error as label images (the
    objects' own IDs, 0 elsewhere): ``misses`` and ``splits`` are true objects, ``false positives`` and
    ``merges`` predicted ones."""

    scores: dict[str, float]
    errors: dict[str, np.ndarray]


def compare_objects(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> ObjectComparison:
    """Match the objects of ``pred`` and ``truth`` (label images of one shape) at IoU ``threshold``."""
    if pred.shape != truth.shape:
        raise DataError(f"the predicted and true labels differ in shape: {pred.shape} and {truth.shape}")
    s = match_instances(truth, pred)
    scores = {k: float(v) for k, v in score_instances(pred, truth, s)[0].items()}
    missed, false = s.unmatched(threshold)
    split, merged = s.split_merge(threshold)
    errors = {
        name: np.where(np.isin(labels, ids), labels, 0)
        for name, labels, ids in (
            ("misses", truth, missed),
            ("false positives", pred, false),
            ("splits", truth, split),
            ("merges", pred, merged),
        )
    }
    return ObjectComparison(scores, errors)


def guard_evaluation_outputs(
    pred: str | Path,
    gt: str | Path,
    model_file: bool,
    *,
    csv: str | Path | None = None,
    json: str | Path | None = None,
    report: str | Path | None = None,
    overwrite: bool = False,
    config: str | Path | None = None,
) -> None:
    """Before any compute: ``csv``, ``json`` and ``report`` (``unetkit evaluate``'s --csv, --json, --report)
    never replace or join the inputs (PRED and GT are read as data; a model's files are in use; ``config``, a
    settings file in use), and replace only what unetkit wrote, with ``overwrite``."""
    from ..checkpoint import resolve_model_path
    from ..inference.bioimageio import is_package
    from ..metrics.results import is_evaluation_csv, is_evaluation_json
    from ..safety import guard_file, guard_outputs
    from ..training.run_folder import RunFolder
    from .report import is_report

    pred, gt = Path(pred), Path(gt)
    data = [gt] + ([pred] if pred.is_dir() and not model_file else [])
    protect: list[Path] = [p for p in (pred, gt) if p.exists()]
    if model_file:
        protect += [resolve_model_path(pred)] if not is_package(pred) else []
        protect += RunFolder(pred).files if pred.is_dir() else []  # the run's own files are in use
    protect += [Path(config)] if config and Path(config).exists() else []
    for flag, path, ours in (("--csv", csv, is_evaluation_csv), ("--json", json, is_evaluation_json)):
        if path:
            guard_file(
                path, flag, protect=protect, overwrite=overwrite, ours=ours, data_folders=data,
                data_suffixes=IMAGE_SUFFIXES,
            )  # fmt: skip
    if report:
        folder = Path(report)
        guard_outputs([], folder, [folder / "index.html"], protect, flag="--report", data_folders=data)
        if folder.exists() and not is_report(folder):
            raise DataError(
                f"--report {folder}: holds an index.html unetkit did not write; choose another folder"
            )
        if (folder / "index.html").exists() and not overwrite:
            raise DataError(f"--report {folder}: a report is there already; pass --overwrite to replace it")
