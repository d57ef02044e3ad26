"""Review the doubtful objects of a prediction, and turn their correction into training data (``unetkit review``).

``unetkit predict MODEL IMAGES --instances --out PRED`` writes every object with a confidence
(``PRED/NAME_objects.csv``, least confident first). :func:`review` reads those tables and

- lists the objects below a confidence (``--below``, or the ``--most`` N least confident over every image);
- draws them on a contact sheet (``--sheet FILE.png``): each object outlined in yellow on its image, its
  neighbours in grey, captioned with its image, label and confidence;
- writes a **corrections** dataset (``--corrections DIR``): around each doubtful object, a region (the object with
  a margin of half its size, at least 8 px, every object the region touches whole, and 3 px of background around
  them) holds the predicted labels to correct in any label editor; every pixel outside the regions holds
  ``4294967295``, which ``dataset.yaml`` declares ignored, so a model learns from the reviewed regions only. Each
  call adds a numbered round (``rN_NAME.tif``) to the same folder, so ``unetkit train DIR --init MODEL
  --time-budget 1m`` learns from every correction made so far; ``DIR/review.csv`` lists what each round asks
  to check, in the coordinates of its files.

Nothing here changes a prediction or an image: the corrections are new files.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..atomic import atomic_path, atomic_write_bytes, atomic_write_text
from ..data.io import IMAGE_SUFFIXES, read_image, write_image
from ..data.layouts import find_images
from ..data.lazy import check_zarr_chunks, check_zarr_metadata
from ..data.spec import DESCRIPTOR
from ..errors import DataError
from ..inference.objects import read_objects_csv, read_table_beside
from ..safety import guard_outputs
from ..viz import outlined_crop
from .painted import CONTEXT, IGNORED

__all__ = [
    "Doubtful",
    "Review",
    "Round",
    "all_objects",
    "correction_region",
    "features_beside",
    "result_arrays",
    "retrain",
    "review",
    "segment_folder",
    "unreviewed",
    "write_corrections",
]

log = logging.getLogger(__name__)

#: the first line of a corrections folder's ``dataset.yaml``: a folder review may add rounds to
MARKER = "# written by unetkit review"
#: objects drawn on one contact sheet (the least confident first)
SHEET_MAX = 60
#: the columns of a corrections folder's ``review.csv``: the round, its file, the predicted image it was cut from
#: and where (the file's top left in it), each object to check and its box in the file
LISTING = (
    "round",
    "file",
    "image",
    "y_offset",
    "x_offset",
    "label",
    "confidence",
    *("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"),
)
#: the box columns of an objects table
BOX = ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")
#: a contact sheet's tile side (pixels) and columns
TILE, COLUMNS = 160, 6


@dataclass(frozen=True)
class Doubtful:
    """One object to check: its image (the result's name), label, confidence, area and box (y0, x0, y1, x1)."""

    image: str
    label: int
    confidence: float
    area: int
    box: tuple[int, int, int, int]


@dataclass
class Review:
    """What :func:`review` found and wrote."""

    objects: int  # objects in every table read
    images: int  # tables read
    doubtful: list[Doubtful]  # least confident first
    sheet: Path | None = None
    corrections: Path | None = None
    round: int | None = None  # the corrections round written
    files: list[str] = field(default_factory=list)  # the corrections' image names this round
    corrected: int = 0  # objects left out: in regions an earlier round of the corrections folder holds

    def text(self, rows: int = 40) -> str:
        """The doubtful objects as a table, for the terminal."""
        lines = [f"{'image':<28} {'label':>6} {'confidence':>10} {'area':>7}  box (y0, x0, y1, x1)"]
        for d in self.doubtful[:rows]:
            lines.append(f"{d.image[:28]:<28} {d.label:>6} {d.confidence:>10.3f} {d.area:>7}  {d.box}")
        if len(self.doubtful) > rows:
            lines.append(f"... and {len(self.doubtful) - rows} more")
        return "\n".join(lines)


def tables_in(pred: Path) -> dict[str, Path]:
    """The objects tables of a prediction folder, by result name (``NAME`` of ``NAME_objects.csv``)."""
    if not pred.is_dir():
        raise DataError(f"{pred}: not a folder; give the --out folder of unetkit predict ... --instances")
    found = {p.name.removesuffix("_objects.csv"): p for p in sorted(pred.glob("*_objects.csv"))}
    if not found:
        raise DataError(
            f"{pred}: no NAME_objects.csv: predict with --instances (unetkit predict MODEL IMAGES --instances "
            f"--out {pred}) to give every object a confidence"
        )
    return found


def review(
    pred: str | Path,
    *,
    below: float | None = 0.5,
    most: int | None = None,
    images: str | Path | None = None,
    sheet: str | Path | None = None,
    corrections: str | Path | None = None,
    overwrite: bool = False,
) -> Review:
    """Read the objects tables of prediction folder ``pred`` and pick the doubtful objects: those under ``below``
    (a confidence in [0, 1]), or with ``most`` the N least confident over all images (both: the N least confident
    under ``below``). With ``images`` (the images that were predicted: a folder, a dataset folder or one file),
    draw them on ``sheet`` (PNG) and add them as a numbered round of regions to correct to the ``corrections``
    folder (see the module's docstring). Returns what was found and written.

    Example:
        >>> found = review("pred", below=0.5, images="data/images", corrections="corrected")
        >>> found.round, len(found.doubtful)
        (1, 14)
    """
    pred = Path(pred)
    if below is not None and not 0 <= below <= 1:
        raise DataError(f"--below {below}: give a confidence between 0 and 1, e.g. 0.5")
    if most is not None and most < 1:
        raise DataError(f"--most {most}: give a number of objects, at least 1")
    if (sheet or corrections) and images is None:
        raise DataError(
            "--sheet and --corrections draw on the images: give the images that were predicted (--images)"
        )
    tables = tables_in(pred)
    sheet_path = Path(sheet) if sheet else None
    folder = Path(corrections) if corrections else None
    sources = _image_files(Path(images), tables) if images is not None else {}
    if sheet_path is not None:
        guard_outputs(_inputs(sources, tables), sheet_path, [sheet_path], flag="--sheet", data_folders=[pred])
        if sheet_path.suffix.lower() != ".png":
            raise DataError(f"--sheet {sheet_path}: a contact sheet is a PNG: name it ....png")
        if sheet_path.exists() and not overwrite:
            raise DataError(f"--sheet {sheet_path}: exists; choose another name or pass --overwrite")
    if folder is not None:
        _guard_corrections(folder, sources, tables, pred)
    everything = all_objects(pred, tables)
    doubts = [d for d in everything if below is None or d.confidence < below]
    fresh = unreviewed(doubts, folder) if folder is not None else doubts
    result = Review(len(everything), len(tables), fresh[:most], corrected=len(doubts) - len(fresh))
    doubts = result.doubtful
    if not doubts:
        return result
    labels = {name: _instances(pred, name) for name in {d.image for d in doubts}} if sources else {}
    pixels = {name: _image_of(sources, name, labels[name]) for name in labels}
    if sheet_path is not None:
        result.sheet = _write_sheet(doubts, pixels, labels, sheet_path)
    if folder is not None:
        result.round = _next_round(folder)
        result.files = _write_corrections(doubts, pixels, labels, folder, result.round)
        result.corrections = folder
    return result


def features_beside(result: str | Path) -> dict[str, np.ndarray] | None:
    """The objects table written beside a prediction result (``NAME_objects.csv`` beside ``NAME.zarr``,
    ``NAME.ome.zarr`` or ``NAME_instances.tif``) as a viewer's layer features (``index``: the label, then every
    other column); None without one, or with one that cannot be read (said in the log)."""
    read = read_table_beside(result, without="the objects are shown without it")
    if read is None:
        return None
    return {"index": read["label"], **{k: v for k, v in read.items() if k != "label"}}


def result_arrays(path: Path, known: Collection[str]) -> list[str]:
    """The arrays of the ``unetkit predict --format zarr`` result group ``path`` (of ``known``, in its order),
    each checked (metadata bounded before zarr parses it, chunks sane), or [] when ``path`` is not such a group
    (another reader's store, or a hostile one)."""
    import zarr

    try:
        check_zarr_metadata(path)  # bounded before zarr parses it
        group = zarr.open_group(str(path), mode="r")
        keys = set(group.array_keys())
    except Exception:  # not a zarr group at all (or a hostile one): another reader's
        return []
    if "mask" not in keys or not keys <= set(known) or list(group.group_keys()):
        return []
    try:
        for k in keys:
            check_zarr_metadata(path / k)
            check_zarr_chunks(group[k], path / k)
    except DataError:
        return []
    return [k for k in known if k in keys]


def all_objects(pred: str | Path, tables: dict[str, Path] | None = None) -> list[Doubtful]:
    """Every object of the objects tables in prediction folder ``pred``, least confident first."""
    found = []
    for name, path in (tables or tables_in(Path(pred))).items():
        table = read_objects_csv(path)
        if any(k not in table for k in (*BOX, "area")) or "bbox_z0" in table:
            raise DataError(
                f"{path}: not the objects table of a 2-D image (review reads label, confidence, area, box)"
            )
        for i in range(len(table["label"])):
            y0, x0, y1, x1 = (int(table[k][i]) for k in BOX)
            label, conf, area = int(table["label"][i]), float(table["confidence"][i]), int(table["area"][i])
            found.append(Doubtful(name, label, conf, area, (y0, x0, y1, x1)))
    return sorted(found, key=lambda d: (d.confidence, d.image, d.label))


def unreviewed(objects: list[Doubtful], folder: str | Path) -> list[Doubtful]:
    """``objects`` less those whose centre lies in a region an earlier round of corrections ``folder`` holds for
    their image (corrected already: not asked again)."""
    folder = Path(folder)
    listing = folder / "review.csv"
    if not listing.is_file():
        return list(objects)
    regions: dict[str, list[tuple[int, int, np.ndarray]]] = {}
    with open(listing, encoding="utf-8", newline="") as f:
        files = {(r["image"], r["file"], int(r["y_offset"]), int(r["x_offset"])) for r in csv.DictReader(f)}
    for image, file, y0, x0 in sorted(files):
        mask = read_image(folder / "masks" / file)
        regions.setdefault(image, []).append((y0, x0, mask != IGNORED))
    kept = []
    for d in objects:
        cy, cx = (d.box[0] + d.box[2]) // 2, (d.box[1] + d.box[3]) // 2
        done = any(
            0 <= cy - y0 < m.shape[0] and 0 <= cx - x0 < m.shape[1] and m[cy - y0, cx - x0]
            for y0, x0, m in regions.get(d.image, [])
        )
        if not done:
            kept.append(d)
    return kept


def write_corrections(
    objects: list[Doubtful], pred: str | Path, images: str | Path, folder: str | Path
) -> tuple[int, list[str]]:
    """Add ``objects`` (of prediction folder ``pred``, predicted from ``images``) to the corrections ``folder``
    as its next round (see the module's docstring): the objects chosen any way (:func:`review` chooses the least
    confident). Returns the round's number and its files' names."""
    pred, folder = Path(pred), Path(folder)
    tables = tables_in(pred)
    sources = _image_files(Path(images), tables)
    _guard_corrections(folder, sources, tables, pred)
    labels = {name: _instances(pred, name) for name in {d.image for d in objects} if name in sources}
    pixels = {name: _image_of(sources, name, labels[name]) for name in labels}
    round_no = _next_round(folder)
    return round_no, _write_corrections(objects, pixels, labels, folder, round_no)


def _inputs(sources: dict[str, Path], tables: dict[str, Path]) -> list[Path]:
    return list(sources.values()) + list(tables.values())


def _guard_corrections(folder: Path, sources: dict[str, Path], tables: dict[str, Path], pred: Path) -> None:
    """Never an input, a prediction or a folder holding them; a new folder or one review wrote."""
    guard_outputs(_inputs(sources, tables), folder, [folder], flag="--corrections", data_folders=[pred])
    _next_round(folder)


def correction_region(labels: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """The pixels a correction of the objects in ``boxes`` covers: each box grown by half its size (at least
    8 px), every object of ``labels`` the grown boxes touch whole, and 3 px of background around them (objects
    that ring touches whole too: no object is cut by a region's edge)."""
    region = np.zeros(labels.shape, bool)
    for y0, x0, y1, x1 in boxes:
        m = max(8, max(y1 - y0, x1 - x0) // 2)
        region[max(0, y0 - m) : y1 + m, max(0, x0 - m) : x1 + m] = True
    for grow in (
        0,
        3,
    ):  # the objects the boxes touch, then those the background ring touches: never a cut object
        region = ndi.binary_dilation(region, iterations=grow) if grow else region
        touched = np.unique(labels[region])
        region |= np.isin(labels, touched[touched > 0])
    return region


def _image_files(images: Path, tables: dict[str, Path]) -> dict[str, Path]:
    """The image each result was predicted from, by result name."""
    if images.is_file():
        files = [images]
    elif images.is_dir():
        folder = images / "images" if (images / "images").is_dir() else images
        files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        raise DataError(f"--images {images}: no such file or folder; give the images that were predicted")
    by_stem = {p.stem: p for p in files}
    missing = [name for name in tables if name not in by_stem]
    if len(missing) == len(tables):
        raise DataError(
            f"--images {images}: none of the predicted images is there ({missing[0]}.* was looked for); give the "
            "folder that was predicted"
        )
    for name in missing:
        log.warning("%s: not in %s; its objects are listed but not drawn or written", name, images)
    return {name: by_stem[name] for name in tables if name in by_stem}


def _instances(pred: Path, name: str) -> np.ndarray:
    path = pred / f"{name}_instances.tif"
    if not path.is_file():
        zarr = next((p for p in (pred / f"{name}.zarr", pred / f"{name}.ome.zarr") if p.exists()), None)
        raise DataError(
            f"{zarr or path}: "
            + (
                "sheets and corrections are made from TIFF results: predict with --format tif"
                if zarr
                else "missing"
            )
        )
    labels = read_image(path)
    if labels.ndim != 2:
        raise DataError(f"{path}: instance labels of shape {labels.shape}: review draws 2-D images")
    return labels


def _image_of(sources: dict[str, Path], name: str, labels: np.ndarray) -> np.ndarray:
    if name not in sources:
        return np.zeros_like(labels, np.uint8)  # not given: listed, drawn on black
    image = read_image(sources[name])
    if image.shape[:2] != labels.shape:
        raise DataError(
            f"{sources[name]}: {image.shape[:2]} pixels, its result {labels.shape}: not the image that was "
            "predicted; give the folder that was"
        )
    return image


def _write_sheet(
    doubts: list[Doubtful], pixels: dict[str, np.ndarray], labels: dict[str, np.ndarray], out: Path
) -> Path:
    from PIL import Image, ImageDraw

    shown = [d for d in doubts if d.image in pixels][:SHEET_MAX]
    rows = -(-len(shown) // COLUMNS)
    caption = 14
    sheet = Image.new("RGB", (COLUMNS * TILE, max(1, rows) * (TILE + caption)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, d in enumerate(shown):
        crop = outlined_crop(pixels[d.image], labels[d.image], d.label, neighbours=True)
        if crop is None:
            continue
        tile = Image.fromarray(crop).resize((TILE, TILE), Image.Resampling.NEAREST)
        x, y = (i % COLUMNS) * TILE, (i // COLUMNS) * (TILE + caption)
        sheet.paste(tile, (x, y + caption))
        draw.text((x + 3, y + 1), f"{d.image[:16]} #{d.label}  {d.confidence:.2f}", fill=(255, 220, 0))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(out, buffer.getvalue())
    if len(doubts) > len(shown):
        log.info("%s: the %d least confident of %d doubtful objects", out, len(shown), len(doubts))
    return out


def _next_round(folder: Path) -> int:
    """1 for a new folder; the next round for a corrections folder review wrote; refused otherwise."""
    if not folder.exists():
        return 1
    described = folder / DESCRIPTOR
    first = (
        described.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        if described.is_file()
        else ""
    )
    if not first.startswith(MARKER + ":"):
        raise DataError(
            f"--corrections {folder}: exists and is not a corrections folder unetkit review wrote; choose a new folder"
        )
    rounds = [
        int(p.name[1 : p.name.index("_")])
        for p in (folder / "images").glob("r*_*")
        if p.name[1 : p.name.index("_")].isdigit()
    ]
    return max(rounds, default=0) + 1


def _write_corrections(
    doubts: list[Doubtful],
    pixels: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    folder: Path,
    round_no: int,
) -> list[str]:
    rows: list[list[object]] = []
    names = []
    for name in sorted(pixels):
        mine = [d for d in doubts if d.image == name]
        region = correction_region(labels[name], [d.box for d in mine])
        ys, xs = np.nonzero(region)
        y0, x0 = max(0, ys.min() - CONTEXT), max(0, xs.min() - CONTEXT)
        y1, x1 = ys.max() + 1 + CONTEXT, xs.max() + 1 + CONTEXT
        window = (slice(y0, y1), slice(x0, x1))
        mask = np.where(region, labels[name].astype(np.uint32), np.uint32(IGNORED))[window]
        stem = f"r{round_no}_{name}"
        crop = np.ascontiguousarray(pixels[name][window])  # (H, W[, C]) as read: channels stay channels
        write_image(folder / "images" / f"{stem}.tif", crop, axes="YXC" if crop.ndim == 3 else None)
        write_image(folder / "masks" / f"{stem}.tif", np.ascontiguousarray(mask))
        names.append(stem)
        for d in mine:
            conf = f"{d.confidence:.4g}"
            rows.append([round_no, f"{stem}.tif", name, y0, x0, d.label, conf, *_shifted(d.box, y0, x0)])
    listing = folder / "review.csv"
    old = listing.read_text(encoding="utf-8").splitlines()[1:] if listing.is_file() else []
    with atomic_path(listing) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write(",".join(LISTING) + "\n")
        f.writelines(line + "\n" for line in old)
        csv.writer(f).writerows(rows)
    if not (folder / DESCRIPTOR).is_file():
        atomic_write_text(
            folder / DESCRIPTOR,
            f"{MARKER}: regions around doubtful objects to correct in any label editor (masks/rN_NAME.tif: instance\n"
            f"# labels, 0 = background); pixels holding {IGNORED} were not reviewed and are ignored in training\n"
            f"layout: paired\nmask_encoding: instances\nignore_index: {IGNORED}\n",
        )
    return names


def _shifted(box: tuple[int, int, int, int], y0: int, x0: int) -> tuple[int, int, int, int]:
    return box[0] - y0, box[1] - x0, box[2] - y0, box[3] - x0


@dataclass
class Round:
    """One round of learning from corrections (:func:`retrain`)."""

    number: int
    data: Path  # the dataset it trained on: this round's corrections and every earlier round's
    result: Any  # the TrainResult (``best_checkpoint``: the round's model, never worse than the start)

    @property
    def start_score(self) -> float | None:
        """The starting model's validation score (``result.score``: the held-out objects' PQ for instance
        masks) on this round's held-out corrections (epoch 0)."""
        score = getattr(self.result, "score", "val_dice")
        return next((row[score] for row in self.result.history if row["epoch"] == 0), None)


def retrain(
    image: np.ndarray,
    labels: np.ndarray,
    folder: str | Path,
    model: str | Path,
    *,
    budget: float = 60.0,
    background_label: int = 1,
    say: Callable[[str], None] = log.info,
    hooks: Any = None,
    started: float | None = None,
    channels: bool = False,
) -> Round:
    """Learn from one image's corrections: ``labels`` painted on ``image`` as a Review makes them (objects 2..,
    background ``background_label``, unreviewed pixels 0: ignored) become round N of the corrections ``folder``
    (``folder/round-N``), and ``model`` is fine-tuned for ``budget`` seconds (planning included, from ``started``)
    on every round of the folder so far (``folder/train-N``) into ``folder/model-N``: validated on corrected
    objects held out, never below ``model``. ``channels``: the image's last axis holds its channels (any count).
    The napari Review widget's **Retrain**."""
    import shutil

    from .painted import write_painted_dataset
    from .plan import plan_and_train

    folder = Path(folder)
    done = sorted(int(p.name.split("-")[1]) for p in folder.glob("round-*") if p.name.split("-")[1].isdigit())
    number = (done[-1] if done else 0) + 1
    write_painted_dataset(
        image, labels, folder / f"round-{number}", name=f"r{number}", unpainted="ignored",
        background_label=background_label, channels=channels,
    )  # fmt: skip
    data = folder / f"train-{number}"
    for k in [*done, number]:  # every round so far, in one dataset
        for part in ("images", "masks"):
            for f in (folder / f"round-{k}" / part).iterdir():
                (data / part).mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, data / part / f.name)
    shutil.copy2(folder / f"round-{number}" / DESCRIPTOR, data / DESCRIPTOR)
    result = plan_and_train(
        data, folder / f"model-{number}", say=say, init=str(model), time_budget=budget, progress=False,
        started=started, hooks=hooks,
    )  # fmt: skip
    return Round(number, data, result)


def segment_folder(
    model: str | Path, image: str | Path, out: str | Path, options: dict[str, Any]
) -> tuple[list[Path], Path] | None:
    """The rest of a reviewed image's folder segmented with a round's ``model`` (instances and their objects
    tables, the predictor ``options`` Segment used) into ``out``: the images beside ``image`` (the file a viewer
    layer came from), not ``image`` itself. Returns the images and ``out``; None when there are none."""
    from .predict import predict_files

    image = Path(image)
    others = (
        [p for p in find_images(image.parent) if p.resolve() != image.resolve()] if image.is_file() else []
    )
    if not others:
        return None
    predict_files(model, others, out, instances=True, progress=False, protect=[image.parent], **options)
    return others, Path(out)
