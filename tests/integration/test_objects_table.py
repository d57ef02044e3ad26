"""The objects table beside instance masks (issue 34): written by every in-process path alike, through the CLI,
and its confidence means something on images the model never saw."""

from __future__ import annotations

import csv
import subprocess

import numpy as np
import tifffile

from unetkit import Predictor, predict_files, read_image, synth_nuclei, write_image
from unetkit.metrics.instance import match_instances


def test_predict_writes_the_objects_table_the_same_in_memory_and_streamed(tmp_path, unetkit_exe):
    image = synth_nuclei((300, 260), seed=5)[0]
    write_image(tmp_path / "in" / "a.png", image)
    (mem,) = predict_files(
        "nuclei", [tmp_path / "in" / "a.png"], tmp_path / "mem", instances=True, progress=False
    )
    (disk,) = predict_files(
        "nuclei", [tmp_path / "in" / "a.png"], tmp_path / "disk", instances=True, progress=False,
        max_pixels_in_memory=1000,
    )  # fmt: skip
    assert mem.table == tmp_path / "mem" / "a_objects.csv" and disk.table.read_text() == mem.table.read_text()
    rows = list(csv.DictReader(open(mem.table, encoding="utf-8")))
    labels = tifffile.imread(mem.instances)
    assert (
        sorted(int(r["label"]) for r in rows) == list(range(1, labels.max() + 1)) and len(rows) == mem.objects
    )
    for r in rows[:5]:
        k = int(r["label"])
        assert int(r["area"]) == (labels == k).sum() and 0 <= float(r["confidence"]) <= 1
        ys, xs = np.nonzero(labels == k)
        assert abs(float(r["centroid_y"]) - ys.mean()) < 0.06 and int(r["bbox_x0"]) == xs.min()
    done = subprocess.run(
        [unetkit_exe, "predict", "nuclei", str(tmp_path / "in"), "--out", str(tmp_path / "cli"), "--instances",
         "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli" / "a_objects.csv").read_text() == mem.table.read_text()


def test_the_least_confident_objects_are_the_ones_most_often_wrong(tmp_path):
    """On a style the model never saw (few photons), objects in the lowest quarter of confidence match a true
    object less often than those in the highest quarter, and the mean confidence is near the matched share."""
    from unetkit.data.domains import synthesize_domain

    data = synthesize_domain("few-photons", tmp_path / "d", "test")
    predictor = Predictor.from_pretrained("nuclei")
    conf, good = [], []
    for path in sorted((data / "images").glob("*.png")):
        labels, table = predictor.predict_instances(read_image(path), return_table=True)
        truth = read_image(data / "masks" / path.name)
        ov = match_instances(truth, labels).overlaps
        matched = set(np.asarray(ov.pred_ids)[np.asarray(ov.pair_pred)[ov.iou > 0.5]].tolist())
        conf += table["confidence"].tolist()
        good += [int(k) in matched for k in table["label"]]
    conf, good = np.array(conf), np.array(good)
    low, high = conf <= np.quantile(conf, 0.25), conf >= np.quantile(conf, 0.75)
    assert good[low].mean() < good[high].mean() - 0.05, (good[low].mean(), good[high].mean())
    assert abs(conf.mean() - good.mean()) < 0.1, (conf.mean(), good.mean())


def test_the_report_shows_how_far_the_confidences_held_on_the_users_own_truth(tmp_path, caplog):
    """evaluate MODEL DATA --report: the objects' confidences (from predict's tables) against the truth:
    histogram, reliability table and the least confident objects as crops; a table of other labels is refused,
    never matched onto these."""
    import re
    import shutil

    from unetkit.data.domains import synthesize_domain
    from unetkit.workflows.evaluate import evaluate, evaluate_model
    from unetkit.workflows.report import DOUBTFUL, write_report

    data = synthesize_domain("nucleoli", tmp_path / "d", "test")
    ev = evaluate_model("nuclei", data, tmp_path / "pred", progress=False)
    tables = sorted((tmp_path / "pred").glob("*_objects.csv"))
    assert len(tables) == len(ev.images) == 8
    rows = sum(len(t.read_text().splitlines()) - 1 for t in tables)
    objects = [o for r in ev.images for o in [r.details["objects"]]]
    assert sum(len(o["confidence"]) for o in objects) == rows
    matched = sum(sum(o["matched"]) for o in objects)
    assert matched == sum(int(r.scores["tp"]) for r in ev.images)  # the same matching as the scores
    page = write_report(ev, tmp_path / "report").read_text()
    assert (
        f"{rows} objects with a confidence" in page
        and (tmp_path / "report" / "object_confidence.png").is_file()
    )
    assert len(re.findall(r"<figure><img src='data:image/png;base64,", page)) == min(DOUBTFUL, rows)
    # a table that describes other objects (another prediction's) is left out with a warning
    shutil.copy(tables[1], tables[0])
    caplog.set_level("WARNING")
    again = evaluate(tmp_path / "pred", data)
    assert "objects" not in again.images[0].details and "objects" in again.images[2].details
    assert "its objects are not those of" in caplog.text


def test_every_output_format_has_one_row_per_object_and_no_other(tmp_path):
    """Issue 34: the table and the labels agree (every label one row, no row without a label) in every format,
    images and a multi-page stack alike."""
    import zarr

    image = synth_nuclei((200, 230), seed=8)[0]
    write_image(tmp_path / "in" / "a.png", image)
    (tmp_path / "stack").mkdir()
    pages = np.stack([synth_nuclei((96, 120), seed=k)[0] for k in range(3)])
    tifffile.imwrite(tmp_path / "stack" / "s.tif", pages, metadata={"axes": "ZYX"})  # pages: images
    for fmt in ("png", "tiff", "zarr", "ome-zarr"):
        (result,) = predict_files(
            "nuclei", [tmp_path / "in" / "a.png"], tmp_path / fmt, format=fmt, instances=True, progress=False
        )
        if fmt in ("png", "tiff"):
            labels = tifffile.imread(result.instances)
        elif fmt == "zarr":
            labels = np.asarray(zarr.open_group(str(result.mask), mode="r")["instances"])
        else:
            labels = np.asarray(zarr.open_group(str(result.mask), mode="r")["labels/instances/s0"])
        rows = list(csv.DictReader(open(tmp_path / fmt / "a_objects.csv", encoding="utf-8")))
        assert sorted(int(r["label"]) for r in rows) == sorted(set(np.unique(labels).tolist()) - {0}), fmt
    (stack,) = predict_files(
        "nuclei",
        [tmp_path / "stack" / "s.tif"],
        tmp_path / "pages",
        instances=True,
        progress=False,
        layout="isbi",
    )
    pages = tifffile.imread(stack.instances)
    rows = list(csv.DictReader(open(stack.table, encoding="utf-8")))
    for k in range(3):  # per page: its own objects, numbered from 1
        mine = sorted(int(r["label"]) for r in rows if int(r["page"]) == k)
        assert mine == sorted(set(np.unique(pages[k]).tolist()) - {0}) and mine, k
