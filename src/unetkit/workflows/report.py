"""An HTML report people read: the score table, an error picture per image, and a histogram of object IoU.

Error pictures: the image (or the mask, when no image is found) in gray, with false-positive pixels red,
false-negative pixels blue, and in instance mode the true objects that were split orange and the predicted
objects that merge several true ones purple.
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..data.io import read_image, read_volume, write_image
from ..data.masks import IGNORE
from ..metrics.results import COLUMNS, DEFINITIONS, Evaluation, fmt
from ..safety import head_text
from ..viz import gray_rgb, outline, tint

__all__ = ["write_report"]

FP = np.array([255, 60, 40], np.float32)
FN = np.array([50, 130, 255], np.float32)
SPLIT = np.array([255, 165, 0], np.float32)
MERGE = np.array([170, 60, 230], np.float32)


def _errors_picture(evaluation: Evaluation, result, mode: str) -> np.ndarray:
    assert evaluation.arrays is not None, "pictures need the evaluation's arrays (made by evaluate())"
    a = evaluation.arrays(result.name)
    truth, pred = a["truth"], a["pred"]
    volume = truth.ndim == 3
    mid = truth.shape[0] // 2 if volume else None

    def plane(x: np.ndarray) -> np.ndarray:  # volumes are shown by their middle slice
        return x[mid] if volume else x

    truth, pred = plane(truth), plane(pred)
    valid = truth != IGNORE
    if a["image"] is not None:
        path = Path(a["image"])
        image = read_volume(path)[mid] if volume else read_image(path, a.get("image_page"))
        base = gray_rgb(image)
    else:
        base = gray_rgb(((truth > 0) & valid).astype(np.float32))
    wrong = (pred != truth) & valid  # every class: wrong pixels, shown as missed (truth fg) or extra
    t = (truth > 0) & valid
    out = tint(tint(base, wrong & ~t, FP, 0.7), wrong & t, FN, 0.7)
    if mode == "instance":
        labels = plane(a["truth_labels"])
        split = np.isin(labels, result.details.get("split_labels", [])) & (labels > 0)
        inst = plane(a["pred_labels"])
        merged = np.isin(inst, result.details.get("merged_labels", [])) & (inst > 0)
        out = tint(tint(out, split, SPLIT, 0.6), merged, MERGE, 0.6)
        out[outline(split)] = SPLIT
        out[outline(merged)] = MERGE
    return np.clip(out, 0, 255).astype(np.uint8)


def _histogram(ious: list[float], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.hist(ious, bins=np.linspace(0, 1, 21).tolist(), color="#4a7fb0", edgecolor="white")
    ax.axvline(0.5, color="k", lw=1, ls="--")
    ax.set_xlabel("best IoU of each true object (0 = missed)")
    ax.set_ylabel("objects")
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path


def is_report(folder: Path) -> bool:
    """Whether ``folder`` holds a report :func:`write_report` wrote (or nothing yet)."""
    index = folder / "index.html"
    return not index.exists() or "<title>unetkit evaluation</title>" in head_text(index, 512)


def write_report(evaluation: Evaluation, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``OUT/index.html`` (with its pictures next to it); returns the HTML file's path."""
    out = Path(out)
    index = out / "index.html"
    if index.exists() and not overwrite:
        from ..errors import DataError

        raise DataError(f"{index}: already exists; pass --overwrite to replace the report")
    out.mkdir(parents=True, exist_ok=True)
    mode = evaluation.mode
    cols = [c for c in COLUMNS[mode] if c in evaluation.mean]
    head = "".join(f"<th title='{html.escape(DEFINITIONS.get(c, c))}'>{c}</th>" for c in cols)
    rows = []
    for r in evaluation.images:
        picture = write_image(
            out / f"{r.name}_errors.png", _errors_picture(evaluation, r, mode), overwrite=True
        )
        cells = "".join(f"<td>{fmt(r.scores[c])}</td>" for c in cols)
        rows.append(
            f"<tr><td>{html.escape(r.name)}</td>{cells}"
            f"<td><a href='{quote(picture.name)}'><img src='{quote(picture.name)}' height='96'></a></td></tr>"
        )
    mean = "".join(f"<td><b>{fmt(evaluation.mean[c])}</b></td>" for c in cols)
    histogram = ""
    if mode == "instance":
        ious = [v for r in evaluation.images for v in r.details.get("object_iou", [])]
        _histogram(ious, out / "object_iou.png")
        histogram = "<h2>Object IoU</h2><img src='object_iou.png'>"
    legend = "red: false positive pixels; blue: missed pixels" + (
        "; orange: true objects split; purple: predictions merging objects" if mode == "instance" else ""
    )
    definitions = "".join(
        f"<li><b>{c}</b>: {html.escape(DEFINITIONS[c])}</li>" for c in cols if c in DEFINITIONS
    )
    reading = "".join(f"<p class='reading'>{html.escape(n)}</p>" for n in evaluation.notes)
    atomic_write_text(
        index,
        "<!doctype html><meta charset='utf-8'><title>unetkit evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}"
        "td:first-child{text-align:left}tr:nth-child(even){background:#f4f4f4}</style>"
        f"<h1>unetkit evaluation ({mode}, {len(evaluation.images)} images)</h1>{reading}"
        f"<table><tr><th>image</th>{head}<th>errors</th></tr>{''.join(rows)}"
        f"<tr><td><b>mean</b></td>{mean}<td></td></tr></table><p>{legend}</p>{histogram}"
        f"<h2>Definitions</h2><ul>{definitions}</ul>",
    )
    return index
