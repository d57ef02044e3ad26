"""Truth and predictions found and read for evaluation: every ground-truth sample paired with the prediction
of the same name, the truth's encoding decided once (never by counting labels), and each file read as an
array of class indices or object labels. :mod:`.evaluate` scores what this module reads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..config import FINDING_KEYS, PRED_ENCODINGS, DataConfig
from ..data.checks import naming_of, resolve_encoding
from ..data.io import IMAGE_SUFFIXES, count_planes, read_image, read_volume, refuse_lossy_mask
from ..data.layouts import (
    MASK_DIRS,
    Sample,
    find_images,
    load_layout,
    mask_stem,
    read_sample_mask,
)
from ..data.masks import IGNORE, MaskEncoding, encode_mask, instance_evidence
from ..data.spec import DatasetSpec
from ..errors import DataError
from ..metrics.results import OUTPUT_SUFFIXES

__all__ = [
    "PRED_ENCODINGS",
    "Pair",
    "Reading",
    "find_pairs",
    "pair_masks",
    "pred_classes",
    "pred_labels",
    "read_array",
    "truth_arrays",
    "truth_reading",
    "truth_samples",
    "with_stored_naming",
]


@dataclass
class Pair:
    """One ground-truth sample and the prediction files found for it."""

    name: str
    truth: Sample
    mask: Path
    mask_page: int | None = None
    instances: Path | None = None
    probs: Path | None = None
    image: Path | None = None

    def files(self) -> dict[str, str]:
        out = {"mask": str(self.mask), "truth": self.truth.mask_label}
        out.update(
            {k: str(v) for k in ("instances", "probs", "image") if (v := getattr(self, k)) is not None}
        )
        return out


def truth_samples(
    truth: str | Path, data: DataConfig | None = None
) -> tuple[list[Sample], dict[str, Any], bool]:
    """The ground-truth samples of ``truth``: a dataset in any layout (its images are shown in the report), or
    a plain folder of mask files. Returns ``(samples, layout defaults, images known)``."""
    truth = Path(truth)
    data = data or DataConfig()
    if not truth.exists():
        raise DataError(f"GT {truth}: no such folder or list")
    try:
        layout = load_layout(truth, data.layout, naming=naming_of(data))
    except DataError:
        folder = (
            next((truth / n for n in MASK_DIRS if (truth / n).is_dir()), truth) if truth.is_dir() else truth
        )
        if data.layout != "auto" or not truth.is_dir() or not find_images(folder):
            raise
        masks = find_images(folder)  # a plain folder of masks, named like the predictions
        names = [mask_stem(m.stem) for m in masks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"GT {truth}: several masks for the name(s) {dupes[:3]}") from None
        return [Sample(n, m, m) for n, m in zip(names, masks, strict=True)], {}, False
    if layout.problems:
        raise DataError(
            f"GT {truth}: {len(layout.problems)} problem(s):\n  " + "\n  ".join(layout.problems[:10])
        )
    return layout.samples, layout.defaults, True


def _prediction_files(pred: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Prediction masks by name (``NAME.png``, or a known mask suffix: ``NAME_mask``, ``NAME_cp_masks``...)
    and the extra outputs of ``predict`` by their stem (``NAME_instances``, ``NAME_probs``)."""
    files = find_images(pred) + sorted(p for p in pred.glob("*.zarr") if p.is_dir())
    masks: dict[str, Path] = {}
    extra: dict[str, Path] = {}
    for f in files:
        if f.stem.endswith(OUTPUT_SUFFIXES):
            extra[f.stem] = f
            continue
        name = f.stem if f.suffix == ".zarr" else mask_stem(f.stem)
        if name in masks:
            raise DataError(
                f"PRED {pred}: two predictions for '{name}' ({masks[name].name}, {f.name}); keep one"
            )
        masks[name] = f
    return masks, extra


def pair_masks(pred: str | Path, truth: str | Path, data: DataConfig | None = None) -> list[Pair]:
    """Pair every ground-truth sample of ``truth`` with its prediction in ``pred`` by name. A truth sample
    without a prediction, or a prediction without truth, is an error (nothing is skipped silently). A stack
    sample (ISBI page ``k``) pairs with ``NAME`` or with page ``k`` of a prediction stack named like the
    image stack."""
    return find_pairs(pred, truth, data)[0]


def find_pairs(
    pred: str | Path, truth: str | Path, data: DataConfig | None
) -> tuple[list[Pair], dict[str, Any]]:
    """:func:`pair_masks`, and the truth layout's defaults. One prediction file and one truth file pair with
    each other (with the prediction's ``NAME_instances``/``NAME_probs`` beside it)."""
    pred = Path(pred)
    if pred.is_file() and pred.suffix.lower() in IMAGE_SUFFIXES:
        if not Path(truth).is_file():
            raise DataError(
                f"PRED {pred} is one file: give GT as its ground-truth mask file, or PRED as the folder of predictions"
            )
        truth = Path(truth)
        _, extra = _prediction_files(pred.parent)
        name = mask_stem(pred.stem)
        pair = Pair(name, Sample(name, truth, truth), pred, None, extra.get(f"{pred.stem}_instances"),
                    extra.get(f"{pred.stem}_probs"))  # fmt: skip
        return [pair], {}
    if not pred.is_dir():
        raise DataError(f"PRED {pred}: no such folder")
    samples, defaults, with_images = truth_samples(truth, data)
    masks, extra = _prediction_files(pred)
    if not masks:
        raise DataError(f"PRED {pred}: no prediction files ({', '.join(IMAGE_SUFFIXES)}, .zarr)")
    pairs, missing, used = [], [], set()
    for s in samples:
        stack = s.image_page is not None and s.name not in masks and s.image.stem in masks
        key = s.image.stem if stack else s.name
        if key not in masks:
            missing.append(s.name)
            continue
        used.add(key)
        pairs.append(
            Pair(
                s.name,
                s,
                masks[key],
                s.image_page if stack else None,
                None if stack else extra.get(f"{key}_instances"),
                None if stack else extra.get(f"{key}_probs"),
                s.image if with_images else None,
            )
        )
    unused = sorted(set(masks) - used)
    if unused:
        raise DataError(
            f"GT {truth}: no ground truth for {len(unused)} prediction(s), e.g. {unused[:3]}; files are paired "
            "by name"
        )
    if missing:
        raise DataError(
            f"PRED {pred}: no prediction for {len(missing)} of {len(samples)} ground-truth sample(s), e.g. "
            f"{missing[:3]}; predictions are paired with the truth by name (run predict on the same images)"
        )
    return pairs, defaults


def is_volume(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix == ".zarr" or (suffix in (".tif", ".tiff") and count_planes(path, stack=True) > 1)


def read_array(path: Path, page: int | None = None, key: str = "mask") -> np.ndarray:
    """A prediction or mask file as stored: a label image (``(H, W)``, or ``(H, W, 3)`` colours), page ``page``
    of a stack, array ``key`` of a ``predict`` zarr group, or a volume (TIFF z-stack, zarr array). JPEG is
    refused (lossy: its labels are not exact)."""
    refuse_lossy_mask(path)
    if path.suffix.lower() == ".zarr" and path.is_dir():
        import zarr

        node: Any = zarr.open(str(path), mode="r")
        if isinstance(node, zarr.Group):
            if key not in node:
                raise DataError(f"{path}: no '{key}' array in this zarr group")
            node = node[key]
        return np.asarray(node[page] if page is not None else node[...])
    if page is not None:
        return read_image(path, page)
    if is_volume(path):
        return read_volume(path)
    return read_image(path)


@dataclass
class Reading:
    """How truth and predictions were read: the truth's encoding and where it came from, and notes."""

    encoding: MaskEncoding
    source: str
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        enc = self.encoding
        classes = f", classes {enc.names}" if enc.name in ("classes", "rgb") else ""
        ignore = f", ignoring value {enc.ignore_value}" if enc.ignore_value is not None else ""
        return [f"truth read as '{enc.name}' masks ({self.source}){classes}{ignore}", *self.notes]


def truth_reading(
    truth: str | Path,
    samples: list[Sample],
    layout_defaults: dict[str, Any],
    data: DataConfig | None,
    model_encoding: MaskEncoding | None,
    volumes: bool,
    evidence: str | None = None,
) -> Reading:
    """The truth's encoding with one precedence: flags (``data``) > ``DATA/dataset.yaml`` > the model's (as it
    read its training masks) > the layout's > the masks themselves when they can only be binary. Anything
    else is refused with the flag to pass: labels are never classified by counting them."""
    data = data or DataConfig()
    root = Path(truth)
    spec = DatasetSpec.read(root)
    if data.mask_encoding != "auto" or data.class_values or data.class_colors:
        enc, source = resolve_encoding(data, root, {}, None), "given"
    elif spec.mask_encoding:
        enc, source = resolve_encoding(data, root, {}, None), f"{spec.path}"
    elif model_encoding is not None:
        enc, source = model_encoding, "the model's training masks"
        if data.ignore_index is not None:
            enc = dataclasses.replace(enc, ignore_value=data.ignore_index)
    elif layout_defaults.get("mask_encoding"):
        enc, source = resolve_encoding(data, root, layout_defaults, None), "the dataset's layout"
    else:
        enc, source = _binary_or_refuse(truth, samples, data, volumes, evidence)
    assert enc is not None
    # the truth is what the user annotated: no separation gaps, and the border class is part of the object
    names = enc.class_names if enc.name in ("classes", "rgb") else None
    return Reading(dataclasses.replace(enc, target="foreground", border_gap=0, class_names=names), source)


def _binary_or_refuse(
    truth: str | Path, samples: list[Sample], data: DataConfig, volumes: bool, evidence: str | None = None
) -> tuple[MaskEncoding, str]:
    """Masks with 0 and one other value are binary; more values are object labels when there is evidence
    (:func:`~unetkit.data.masks.instance_evidence`: ``--mode instance``, Cellpose's names), else refused."""
    why = instance_evidence([str(s.mask) for s in samples], "foreground", evidence)
    values: set[int] = set()
    for s in samples:
        m = read_sample_mask(s, volumes)
        if not volumes:
            m = MaskEncoding("binary").check_mask(
                m, f"GT {s.mask_label}"
            )  # colour masks refused, with the fix
        values.update(np.unique(m).tolist())
        if len(values - {0}) > 1:
            if why:
                return MaskEncoding("instances", ignore_value=data.ignore_index), why
            shown = sorted(values)[:8]
            raise DataError(
                f"GT {truth}: cannot tell what the mask values {shown} mean (object labels or classes?); pass "
                "--mask-encoding instances (one label per object) or --mask-encoding classes --num-classes N / "
                "--class-map FILE, or write it in DATA/dataset.yaml (mask_encoding: ...)"
            )
    return MaskEncoding("binary", ignore_value=data.ignore_index), "the masks hold one value besides 0"


def truth_arrays(s: Sample, enc: MaskEncoding, volumes: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Truth → (class indices with IGNORE for unlabelled pixels, object IDs for instance masks else None)."""
    raw = read_sample_mask(s, volumes)
    classes = encode_mask(enc, raw, s.mask_label, volumes)
    if enc.name != "instances":
        return classes, None
    mask = np.asarray(raw) if volumes else enc.check_mask(np.asarray(raw), s.mask_label)
    labels = np.where(classes == IGNORE, 0, mask)
    return classes, labels


def pred_classes(pred: np.ndarray, enc: MaskEncoding, name: str, volumes: bool) -> np.ndarray:
    """A prediction mask in the truth's encoding → class indices (values outside the class map are refused)."""
    plain = dataclasses.replace(enc, ignore_value=None)
    if plain.name in ("binary", "instances"):
        return (_checked_prediction(pred, name, volumes, plain) != 0).astype(np.uint8)
    try:
        return encode_mask(plain, pred, name, volumes)
    except DataError as exc:
        raise DataError(f"prediction {exc}; predictions must use the truth's encoding") from None


def _checked_prediction(pred: np.ndarray, name: str | Path, volumes: bool, enc: MaskEncoding) -> np.ndarray:
    """A prediction mask read as ``enc`` reads a mask (grey stored as RGB collapsed; colours, fractions and
    negative labels refused): a probability map scored as "non-zero is foreground" would score every pixel as
    an object."""
    try:
        if not volumes:
            return enc.check_mask(pred, name)
        return np.stack([enc.check_mask(plane, f"{name} (slice {z})") for z, plane in enumerate(pred)])
    except DataError as exc:
        raise DataError(
            f"prediction {exc}: evaluate masks (the NAME.png or NAME_instances.tif unetkit predict writes, or "
            "your probabilities thresholded), or probability maps with --mode isbi"
        ) from None


def pred_labels(pair: Pair, pred_encoding: str, volumes: bool) -> tuple[np.ndarray, str]:
    """Predicted objects: a ``NAME_instances`` file (or zarr array) or a label image by its IDs; a binary mask
    by connected components. Returns the labels and how they were obtained."""
    if pair.instances is not None:
        return read_array(pair.instances), "ids"
    if pair.mask.suffix == ".zarr":
        try:
            return read_array(pair.mask, key="instances"), "ids"
        except DataError:
            pass
    # grey stored as RGB collapsed; colours, fractions (probabilities) and negative labels refused
    arr = _checked_prediction(
        read_array(pair.mask, pair.mask_page), pair.mask, volumes, MaskEncoding("instances")
    )
    values = np.unique(arr)
    ids = pred_encoding == "instances" or (pred_encoding == "auto" and len(values[values != 0]) > 1)
    if ids:
        return arr, "ids"
    return ndi.label(arr != 0)[0], "components"


def with_stored_naming(data: str | Path, given: DataConfig, stored: dict[str, Any]) -> DataConfig:
    """``given`` with the folders and naming the model was trained with, when none were given and they fit
    ``data`` (a test set laid out like the training set); otherwise ``given`` (detection)."""
    if any(getattr(given, k) not in (None, "auto") for k in FINDING_KEYS):
        return given
    found = {k: stored[k] for k in FINDING_KEYS if stored.get(k) not in (None, "auto")}
    if not found:
        return given
    candidate = dataclasses.replace(given, **found)
    try:
        truth_samples(data, candidate)
    except DataError:
        return given
    return candidate
