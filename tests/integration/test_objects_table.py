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
