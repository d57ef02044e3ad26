"""The field's metrics against hand-computed cases, brute-force references and scikit-image."""

import csv
import itertools
import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.metrics import adapted_rand_error, variation_of_information

from tests.builders import instance_dataset_with_errors
from unetkit import evaluate
from unetkit.metrics import (
    SemanticScores,
    boundary_scores,
    confusion_matrix,
    isbi_scores,
    match_instances,
    pixel_error,
    rand_info_scores,
    warping_error,
)
from unetkit.workflows.report import write_report

# -- semantic ----------------------------------------------------------------------------------------------


def test_confusion_matrix_and_per_class_scores_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 0]])
    m = confusion_matrix(truth, pred, 3)
    np.testing.assert_array_equal(m, [[2, 1, 0], [0, 2, 0], [1, 0, 2]])
    s = SemanticScores(m)
    per = s.per_class()
    np.testing.assert_allclose(per["iou"], [2 / 4, 2 / 3, 2 / 3])
    np.testing.assert_allclose(per["dice"], [4 / 6, 4 / 5, 4 / 5])
    np.testing.assert_allclose(per["precision"], [2 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(per["recall"], [2 / 3, 1.0, 2 / 3])
    assert s.pixel_accuracy == pytest.approx(6 / 8)
    assert s.means()["iou"] == pytest.approx(2 / 3)  # mean over foreground classes 1 and 2
    assert confusion_matrix(truth, pred, 3, ignore=2).sum() == 5


def test_empty_vs_empty_is_agreement_and_one_empty_is_zero():
    empty = np.zeros((4, 4), int)
    full = np.ones((4, 4), int)
    both = SemanticScores(confusion_matrix(empty, empty, 2)).per_class()
    assert both["iou"][1] == both["dice"][1] == both["precision"][1] == both["recall"][1] == 1.0
    missed = SemanticScores(confusion_matrix(full, empty, 2)).per_class()
    assert missed["iou"][1] == missed["dice"][1] == missed["recall"][1] == missed["precision"][1] == 0.0


# -- instance ----------------------------------------------------------------------------------------------


def _objects():
    true = np.zeros((12, 24), int)
    true[0:6, 0:6], true[0:6, 8:14], true[6:12, 16:22] = 1, 2, 3  # 36 px each
    return true


def test_instance_hand_cases_empty_split_merge_and_perfect():
    true = _objects()
    empty = np.zeros_like(true)
    none = match_instances(empty, empty)
    assert none.counts() == (0, 0, 0) and none.f1() == none.pq() == none.aji() == none.mean_ap() == 1.0
    missed = match_instances(true, empty)
    assert missed.counts() == (0, 0, 3) and missed.precision() == 0 and missed.recall() == 0
    assert missed.aji() == 0.0 and missed.pq() == 0.0
    spurious = match_instances(empty, true)
    assert spurious.counts() == (0, 3, 0) and spurious.aji() == 0.0

    split = true.copy()
    split[0:6, 2:4], split[0:6, 4:6] = 7, 8  # object 1 cut in three 12-px parts (IoU 1/3 each)
    s = match_instances(true, split)
    assert s.counts(0.5) == (2, 3, 1)
    assert s.f1(0.5) == pytest.approx(4 / 8) and s.ap(0.5) == pytest.approx(2 / 6)
    assert s.pq(0.5) == pytest.approx(2 / (2 + 1.5 + 0.5))
    assert s.split_merge(0.5)[0].tolist() == [1] and s.split_merge(0.5)[1].size == 0
    # AJI: object 1 takes one 12-px part (C 12, U 36), 2 and 3 are perfect (36/36 each), 2 parts unused (+24)
    assert s.aji() == pytest.approx((12 + 36 + 36) / (36 + 36 + 36 + 24))

    merged = true.copy()
    merged[0:6, 0:14] = 5  # objects 1 and 2 (and the gap between them) predicted as one
    m = match_instances(true, merged)
    assert m.counts(0.5) == (1, 1, 2)
    assert m.split_merge(0.5)[1].tolist() == [5]

    perfect = match_instances(true, true * 10)
    assert (
        perfect.f1()
        == perfect.pq()
        == perfect.aji()
        == perfect.mean_ap()
        == perfect.mean_matched_iou()
        == 1.0
    )


def test_pq_and_dsb_score_by_hand():
    true = np.zeros((10, 20), int)
    true[:, :5], true[:, 10:15] = 1, 2
    pred = np.zeros_like(true)
    pred[:, :4] = 1  # IoU 0.8 with object 1; object 2 missed
    pred[0:2, 17:20] = 2  # a false positive
    s = match_instances(true, pred)
    assert s.counts(0.5) == (1, 1, 1)
    assert s.pq(0.5) == pytest.approx(0.8 / (1 + 0.5 + 0.5))
    assert s.mean_matched_iou(0.5) == pytest.approx(0.8)
    # DSB: IoU 0.8 is above thresholds 0.5..0.75 (6 of them): 1/3; at 0.8..0.95 (not above): 0/4
    assert s.mean_ap() == pytest.approx(6 * (1 / 3) / 10)


def _brute_matches(true, pred, t):
    """Maximum number of one-to-one pairs with IoU > t, by trying every assignment (tiny inputs)."""
    ti, pi = [i for i in np.unique(true) if i], [j for j in np.unique(pred) if j]
    iou = np.array(
        [[((true == i) & (pred == j)).sum() / ((true == i) | (pred == j)).sum() for j in pi] for i in ti]
    )
    best = 0
    if len(ti) <= len(pi):
        for perm in itertools.permutations(range(len(pi)), len(ti)):
            best = max(best, sum(iou[r, c] > t for r, c in enumerate(perm)))
    else:
        for perm in itertools.permutations(range(len(ti)), len(pi)):
            best = max(best, sum(iou[r, c] > t for c, r in enumerate(perm)))
    return best, iou


def _brute_aji(true, pred):
    used, c, u = set(), 0, 0
    pi = [j for j in np.unique(pred) if j]
    for i in [i for i in np.unique(true) if i]:
        g = true == i
        ious = [((g & (pred == j)).sum() / (g | (pred == j)).sum(), j) for j in pi]
        best = max(ious, default=(0, None))
        if best[0] > 0:
            j = best[1]
            c += (g & (pred == j)).sum()
            u += (g | (pred == j)).sum()
            used.add(j)
        else:
            u += g.sum()
    u += sum((pred == j).sum() for j in pi if j not in used)
    return c / u


@pytest.mark.parametrize("seed", range(6))
def test_matching_and_aji_equal_brute_force_on_random_overlapping_objects(seed):
    rng = np.random.default_rng(seed)
    true = np.zeros((30, 30), int)
    pred = np.zeros((30, 30), int)
    for labels, n in ((true, 5), (pred, 6)):
        for k in range(1, n + 1):
            y, x = rng.integers(0, 24, 2)
            h, w = rng.integers(3, 8, 2)
            labels[y : y + h, x : x + w] = k
    s = match_instances(true, pred)
    for t in (0.1, 0.3, 0.5, 0.7):
        best, iou = _brute_matches(true, pred, t)
        assert s.counts(t)[0] == best, (seed, t)
    np.testing.assert_allclose(np.sort(s.overlaps.iou), np.sort(iou[iou > 0]))
    assert s.aji() == pytest.approx(_brute_aji(true, pred))


# -- boundary ----------------------------------------------------------------------------------------------


def test_boundary_distances_by_hand():
    a = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b = np.roll(a, 3, axis=1)  # shifted right by 3 px
    d = boundary_scores(b, a)
    assert d["hausdorff"] == pytest.approx(3.0) and d["hd95"] == pytest.approx(3.0)
    assert 0 < d["mean_surface_distance"] < 3
    assert boundary_scores(a, a) == {"hausdorff": 0.0, "hd95": 0.0, "mean_surface_distance": 0.0}
    empty = np.zeros_like(a)
    assert boundary_scores(empty, empty)["hausdorff"] == 0.0
    assert np.isnan(boundary_scores(empty, a)["hausdorff"])


# -- ISBI 2012 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_rand_and_information_scores_agree_with_scikit_image(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 7, (40, 50))  # 0 = boundary, ignored (foreground-restricted)
    pred = rng.integers(0, 5, (40, 50))
    ours = rand_info_scores(pred, truth)
    assert ours["rand_error"] == pytest.approx(adapted_rand_error(truth, pred)[0], abs=1e-12)
    h_pred_given_truth, h_truth_given_pred = variation_of_information(truth, pred, ignore_labels=[0])
    assert ours["h_truth_given_pred"] == pytest.approx(h_truth_given_pred, abs=1e-9)
    assert ours["h_pred_given_truth"] == pytest.approx(h_pred_given_truth, abs=1e-9)
    perfect = rand_info_scores(truth, truth)
    assert perfect["v_rand"] == pytest.approx(1.0) and perfect["v_info"] == pytest.approx(1.0)


def test_warping_error_ignores_topology_preserving_changes_and_counts_splits_and_mergers():
    truth = np.zeros((30, 40), bool)
    truth[5:25, 5:15] = True
    truth[5:25, 22:32] = True
    assert warping_error(truth, truth)["warping_error"] == 0.0
    grown = ndi.binary_dilation(truth)  # same topology: every differing pixel can be warped away
    assert pixel_error(grown, truth) > 0
    assert warping_error(grown, truth)["warping_error"] == 0.0
    cut = truth.copy()
    cut[15, 5:15] = False  # the left object split in two by a one-pixel line
    w = warping_error(cut, truth)
    assert w["splits"] == 1 and w["mergers"] == 0
    assert w["warping_error"] == pytest.approx(1 / truth.size)  # one pixel of the line cannot be warped
    bridge = truth.copy()
    bridge[14:16, 15:22] = True  # the two objects joined
    w = warping_error(bridge, truth)
    assert w["mergers"] == 1 and w["splits"] == 0 and w["warping_error"] > 0


def test_isbi_scores_pick_the_best_threshold():
    truth = np.zeros((30, 40), np.uint8)
    truth[5:25, 5:15] = 255
    truth[5:25, 22:32] = 255
    prob = np.where(truth > 0, 0.65, 0.2) + np.random.default_rng(0).normal(0, 0.02, truth.shape)
    s = isbi_scores(prob, truth)
    assert s["pixel_error"] == 0.0 and s["v_rand"] == pytest.approx(1.0) and s["warping_error"] == 0.0
    assert 0.2 < s["best_threshold_pixel_error"] <= 0.6


# -- evaluate, CSV, JSON, report, CLI ------------------------------------------------------------------------


def test_evaluate_instance_mode_csv_json_and_report(tmp_path):
    gt, pred = instance_dataset_with_errors(tmp_path)
    ev = evaluate(pred, gt)
    assert ev.mode == "instance"
    for r in ev.images:
        assert r.fn == 1 and r.fp == 0 and r.tp == r.n_true - 1 and r.aji < 1
    data = json.loads(ev.write_json(tmp_path / "s.json").read_text())
    assert "Data Science Bowl" in data["metric_definitions"]["dsb_score"]
    assert data["images"][0]["ap_per_threshold"]["0.50"] == pytest.approx(data["images"][0]["dsb_score"])
    rows = list(csv.reader(open(ev.write_csv(tmp_path / "s.csv"))))
    assert rows[0][0] == "image" and rows[-1][0] == "mean" and len(rows) == 4
    assert float(rows[-1][rows[0].index("f1")]) == pytest.approx(ev.mean["f1"], abs=1e-4)
    index = write_report(ev, tmp_path / "report")
    text = index.read_text()
    assert "im0_errors.png" in text and "object_iou.png" in text and "aggregated Jaccard" in text
    assert (tmp_path / "report" / "object_iou.png").stat().st_size > 1000
    semantic = evaluate(pred, gt, mode="semantic")
    assert semantic.mode == "semantic" and 0.5 < semantic.mean["dice"] < 1 and semantic.mean["hd95"] >= 0


def test_the_report_is_one_offline_file_worst_first_with_where_its_numbers_came_from(tmp_path):
    """Issue 35: rows were in file order with nothing marking the worst images, 96-px thumbnails linked to files
    beside the page, no provenance, and mean counts such as 99.2500."""
    import re
    from html.parser import HTMLParser

    from unetkit import __version__

    gt, pred = instance_dataset_with_errors(tmp_path)
    labels = tifffile.imread(pred / "im1_instances.tif")
    labels[np.isin(labels, [2, 3, 4, 5, 6])] = 0  # im1 misses six objects: worse than im0, listed first
    tifffile.imwrite(pred / "im1_instances.tif", labels)
    ev = evaluate(pred, gt, mode="instance")
    worst_first = [r.name for r in sorted(ev.images, key=lambda r: r.scores["f1"])]
    assert worst_first != [r.name for r in ev.images]  # not file order (im0 has few objects: a lower F1)
    text = write_report(ev, tmp_path / "report").read_text()

    class Images(HTMLParser):
        def __init__(self):
            super().__init__()
            self.sources: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.sources.append(dict(attrs)["src"])

    parser = Images()
    parser.feed(text)
    assert parser.sources and all(s.startswith("data:image/png;base64,") for s in parser.sources)  # offline
    order = re.findall(r"<tr(?: class='worst')?><td><a href='#img\d'>(im\d)</a>", text)
    assert order == worst_first  # worst (lowest F1) first
    assert "The 2 worst images (lowest f1 first)" in text
    for value in (__version__, str(pred.resolve()), str(gt.resolve()), "IoU &gt; 0.5", " UTC"):
        assert value in text, value
    total_fn = int(sum(r.scores["fn"] for r in ev.images))
    assert f"<td><b>{total_fn}</b></td>" in text  # counts summed as integers, not a mean like 1.5000
    table = ev.table().splitlines()  # the CLI's table alike, with a line that says so
    header, mean = table[0].split(), next(line for line in table if line.startswith("mean")).split()
    assert mean[header.index("fn")] == str(total_fn) and "totals over the images" in table[-1]
    assert "rgb(255,60,40)" in text  # the legend shows the colours used
