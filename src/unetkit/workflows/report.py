"""An HTML report people read: one self-contained file (every picture embedded) that works offline, worst
images first, each with a full-size view of its errors, the score table, a histogram of object IoU, and where
the numbers came from (model and its sha256, data, date, unetkit version, matching rule, how masks were read).

Error pictures: the image (or the mask, when no image is found) in gray, with false-positive pixels red,
false-negative pixels blue, and in instance mode the true objects that were split orange and the predicted
objects that merge several true ones purple. Each picture is also written beside the report
(``NAME_errors.png``) for other tools.
"""

from __future__ import annotations

import html
import itertools
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_text
from ..data.io import read_image, read_volume
from ..data.masks import IGNORE
from ..metrics.results import COLUMNS, DEFINITIONS, Evaluation, fmt
from ..safety import head_text
from ..viz import gray_rgb, outline, outlined_crop, tint

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


def _histogram(ious: list[float]) -> bytes:
    """The histogram of object IoU as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.hist(ious, bins=np.linspace(0, 1, 21).tolist(), color="#4a7fb0", edgecolor="white")
    ax.axvline(0.5, color="k", lw=1, ls="--")
    ax.set_xlabel("best IoU of each true object (0 = missed)")
    ax.set_ylabel("objects")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


#: confidence bins of the report's reliability table
CONFIDENCE_BINS = (0.0, 0.5, 0.7, 0.8, 0.9, 1.0)
#: the least confident objects shown as crops
DOUBTFUL = 12


def _confidence_plot(conf: np.ndarray, good: np.ndarray) -> bytes:
    """Histogram of the predicted objects' confidence, matched and unmatched stacked, as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    bins = np.linspace(0, 1, 21).tolist()
    ax.hist([conf[good], conf[~good]], bins=bins, stacked=True, color=["#4a7fb0", "#d9534f"],
            edgecolor="white", label=["matches a true object", "matches none (IoU 0.5)"])  # fmt: skip
    ax.set_xlabel("confidence of each predicted object")
    ax.set_ylabel("objects")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _crop(evaluation: Evaluation, name: str, label: int, side: int = 96) -> np.ndarray | None:
    """The predicted object ``label`` of image ``name`` on its image, outlined, in a square crop (2-D only)."""
    assert evaluation.arrays is not None
    a = evaluation.arrays(name)
    pred = a.get("pred_labels")
    if pred is None or pred.ndim != 2 or a["image"] is None:
        return None
    return outlined_crop(read_image(Path(a["image"]), a.get("image_page")), pred, label, side)


def _confidence_section(evaluation: Evaluation, out: Path) -> str:
    """The predicted objects' confidence against the truth: histogram, reliability table, the least confident
    objects; empty when no image has an objects table (predictions made without ``--instances``)."""
    found = [(r.name, o) for r in evaluation.images if (o := r.details.get("objects"))]
    if not found:
        return ""
    conf = np.array([c for _, o in found for c in o["confidence"]], float)
    good = np.array([m for _, o in found for m in o["matched"]], bool)
    plot = _confidence_plot(conf, good)
    atomic_write_bytes(out / "object_confidence.png", plot)
    rows = []
    ece = 0.0
    for lo, hi in itertools.pairwise(CONFIDENCE_BINS):
        m = (conf >= lo) & ((conf < hi) if hi < 1 else (conf <= hi))
        if m.any():
            ece += m.mean() * abs(conf[m].mean() - good[m].mean())
            rows.append(f"<tr><td>{lo:.1f}-{hi:.1f}</td><td>{int(m.sum())}</td><td>{conf[m].mean():.3f}</td>"
                        f"<td>{good[m].mean():.3f}</td></tr>")  # fmt: skip
    objects = sorted(
        (
            (c, name, k, g)
            for name, o in found
            for k, c, g in zip(o["label"], o["confidence"], o["matched"], strict=True)
        ),
    )[:DOUBTFUL]
    crops = []
    for c, name, k, g in objects:
        picture = _crop(evaluation, name, k)
        if picture is not None:
            caption = html.escape(f"{name} #{k}: {c:.2f}, {'matches' if g else 'no match'}")
            crops.append(f"<figure><img src='{_data_uri(_png(picture))}' alt='{caption}'>"
                         f"<figcaption>{caption}</figcaption></figure>")  # fmt: skip
    return (
        f"<h2>Confidence of the predicted objects</h2><p>{len(conf)} objects with a confidence "
        f"(<code>NAME_objects.csv</code>), {good.mean():.1%} of them matching a true object at IoU 0.5; "
        f"expected calibration error {ece:.3f} over the bins below (0: a confidence of 0.8 means 80% match).</p>"
        f"<img src='{_data_uri(plot)}' alt='object_confidence.png'>"
        "<table><tr><th>confidence</th><th>objects</th><th>mean confidence</th><th>matched</th></tr>"
        f"{''.join(rows)}</table>"
        f"<h3>The {len(crops)} least confident objects</h3><div class='crops'>{''.join(crops)}</div>"
    )


def is_report(folder: Path) -> bool:
    """Whether ``folder`` holds a report :func:`write_report` wrote (or nothing yet)."""
    index = folder / "index.html"
    return not index.exists() or "<title>unetkit evaluation</title>" in head_text(index, 512)


#: per mode, the score that ranks images (worst first) and whether lower is worse
RANK = {"instance": ("f1", True), "semantic": ("dice", True), "isbi": ("pixel_error", False)}
#: pictures wider or taller than this are shown subsampled (the PNG beside the report is full size)
VIEW_SIDE = 2048
WORST = 5


def _png(picture: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _view(picture: np.ndarray) -> tuple[np.ndarray, str]:
    """A picture at full size, or subsampled to VIEW_SIDE with a note saying by how much."""
    stride = max(1, -(-max(picture.shape[:2]) // VIEW_SIDE))
    if stride == 1:
        return picture, ""
    return picture[::stride, ::stride], f" (shown at 1/{stride}; the PNG beside the report is full size)"


def _ranked(evaluation: Evaluation) -> list:
    key, low_is_worse = RANK[evaluation.mode]

    def badness(r) -> float:
        v = r.scores.get(key, np.nan)
        if v is None or np.isnan(v):
            return -np.inf  # unscored images (no objects at all) after the scored ones
        return -v if low_is_worse else v

    return sorted(evaluation.images, key=badness, reverse=True)


def _legend(mode: str) -> str:
    items = [(FP, "false positive pixels"), (FN, "missed pixels")]
    if mode == "instance":
        items += [(SPLIT, "true objects split"), (MERGE, "predictions merging true objects")]
    swatch = "<span class='sw' style='background:rgb({})'></span>{}"
    return " ".join(
        swatch.format(",".join(str(int(v)) for v in colour), html.escape(text)) for colour, text in items
    )


def _provenance(evaluation: Evaluation) -> str:
    import datetime

    from ..version import __version__

    rows = {
        **evaluation.provenance,
        "made": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "unetkit": __version__,
        "mode": evaluation.mode,
    }
    if evaluation.mode == "instance":
        rows["matching"] = "objects matched one-to-one at IoU > 0.5 (DSB score: mean over IoU 0.5-0.95)"
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items()
    )
    reading = "".join(f"<li>{html.escape(n)}</li>" for n in evaluation.notes)
    return f"<table class='prov'>{cells}</table><ul>{reading}</ul>"


def write_report(evaluation: Evaluation, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``OUT/index.html``, self-contained (with each error picture also beside it); returns its path."""
    out = Path(out)
    index = out / "index.html"
    if index.exists() and not overwrite:
        from ..errors import DataError

        raise DataError(f"{index}: already exists; pass --overwrite to replace the report")
    out.mkdir(parents=True, exist_ok=True)
    mode = evaluation.mode
    cols = [c for c in COLUMNS[mode] if c in evaluation.mean]
    head = "".join(f"<th title='{html.escape(DEFINITIONS.get(c, c))}'>{c}</th>" for c in cols)
    ranked = _ranked(evaluation)
    key = RANK[mode][0]
    rows, views = [], []
    for rank, r in enumerate(ranked):
        picture = _errors_picture(evaluation, r, mode)
        png = _png(picture)  # encoded once: the file beside the report and, at full size, the page's view
        file = atomic_write_bytes(out / f"{r.name}_errors.png", png)
        shown, note = _view(picture)
        uri, anchor, name = (
            _data_uri(png if shown is picture else _png(shown)),
            f"img{rank}",
            html.escape(r.name),
        )
        step = max(1, picture.shape[0] // 160)
        thumb = _data_uri(_png(picture[::step, ::step]))
        cells = "".join(f"<td>{fmt(r.scores[c])}</td>" for c in cols)
        worst = " class='worst'" if rank < WORST and len(ranked) > 1 else ""
        rows.append(f"<tr{worst}><td><a href='#{anchor}'>{name}</a></td>{cells}"
                    f"<td><a href='#{anchor}'><img class='thumb' src='{thumb}' alt='{name}'></a></td></tr>")  # fmt: skip
        views.append(f"<section id='{anchor}'><h3>{rank + 1}. {name}: {key} {fmt(r.scores.get(key))}</h3>"
                     f"<img src='{uri}' alt='{name}'><p class='file'>{html.escape(file.name)}{note}</p></section>")  # fmt: skip
    summary = "".join(f"<td><b>{evaluation.summary(c)}</b></td>" for c in cols)
    histogram = ""
    if mode == "instance":
        ious = [v for r in evaluation.images for v in r.details.get("object_iou", [])]
        plot = _histogram(ious)
        atomic_write_bytes(out / "object_iou.png", plot)
        histogram = f"<h2>Object IoU</h2><img src='{_data_uri(plot)}' alt='object_iou.png'>"
        histogram += _confidence_section(evaluation, out)
    definitions = "".join(
        f"<li><b>{c}</b>: {html.escape(DEFINITIONS[c])}</li>" for c in cols if c in DEFINITIONS
    )
    n_worst = min(WORST, len(ranked)) if len(ranked) > 1 else 0
    worst = "".join(views[:n_worst])
    atomic_write_text(
        index,
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>unetkit evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}"
        "td:first-child{text-align:left}tr:nth-child(even){background:#f4f4f4}tr.worst td:first-child"
        "{border-left:4px solid #d33}.thumb{height:160px;image-rendering:pixelated}section img{max-width:100%;"
        "image-rendering:pixelated}.sw{display:inline-block;width:1em;height:1em;margin:0 .3em 0 1em;"
        "vertical-align:middle}.prov th{text-align:left}.crops{display:flex;flex-wrap:wrap}figure{margin:4px;"
        "font-size:11px}figure img{width:128px;image-rendering:pixelated}</style></head><body>"
        f"<h1>unetkit evaluation ({mode}, {len(evaluation.images)} images)</h1>{_provenance(evaluation)}"
        f"<p>Legend:{_legend(mode)}</p>"
        + (
            f"<h2>The {n_worst} worst images ({'lowest' if RANK[mode][1] else 'highest'} {key} first)</h2>{worst}"
            if n_worst
            else ""
        )
        + f"<h2>Every image, worst first</h2><table><tr><th>image</th>{head}<th>errors</th></tr>{''.join(rows)}"
        f"<tr><td><b>mean (counts: total)</b></td>{summary}<td></td></tr></table>{histogram}"
        + (
            f"<h2>{'The other images' if n_worst else 'Full-size view'}</h2>{''.join(views[n_worst:])}"
            if views[n_worst:]
            else ""
        )
        + f"<h2>Definitions</h2><ul>{definitions}</ul></body></html>",
    )
    return index
