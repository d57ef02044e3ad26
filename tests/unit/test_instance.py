import numpy as np
import pytest

from unetkit.inference.postprocess import expand_labels, instances_from_classes, label_instances
from unetkit.metrics import iou_matrix, match_instances


def test_iou_matrix_from_one_contingency_table():
    true = np.zeros((6, 6), int)
    true[:3, :3], true[3:, 3:] = 5, 9  # non-consecutive ids
    pred = np.zeros((6, 6), int)
    pred[:3, :2] = 1  # 6 of 9 px of object 5
    np.testing.assert_allclose(iou_matrix(true, pred), [[6 / 9], [0.0]])


def test_matching_split_merge_and_empty_cases():
    true = np.zeros((10, 20), int)
    true[2:8, 2:8], true[2:8, 8:14], true[2:8, 14:20] = 1, 2, 3  # three touching objects
    merged = (true > 0).astype(int)  # predicted as one: IoU 1/3 with each
    m = match_instances(true, merged)
    assert m.counts(0.5) == (0, 1, 3) and m.f1(0.5) == 0.0
    split = np.where(true == 1, np.where(np.arange(20) < 5, 1, 4), true)  # object 1 cut in two halves
    s = match_instances(true, split)
    # each half has IoU exactly 0.5: not above the threshold (DSB 2018 and PQ count IoU > t), so object 1 is
    # missed and both halves are false positives
    assert s.counts(0.5) == (2, 2, 1)
    assert s.f1(0.5) == pytest.approx(4 / 7)
    assert s.counts(0.45) == (3, 1, 0)  # below 0.5 one half matches (one-to-one)
    perfect = match_instances(true, true)
    assert perfect.f1() == 1.0 and perfect.mean_ap() == 1.0
    empty = np.zeros_like(true)
    assert match_instances(empty, empty).mean_ap() == 1.0
    assert match_instances(true, empty).counts() == (0, 0, 3)
    assert match_instances(empty, true).counts() == (0, 3, 0)


def test_dsb_average_precision_over_thresholds():
    true = np.zeros((10, 10), int)
    true[:, :5] = 1
    pred = np.zeros((10, 10), int)
    pred[:, :4] = 1  # IoU 0.8 -> a match above 0.5..0.75, a miss (1 FP + 1 FN) at 0.8 and above (IoU > t)
    scores = match_instances(true, pred)
    assert scores.mean_ap() == pytest.approx((6 * 1.0 + 4 * 0.0) / 10)


def test_connected_components_and_growing_back_the_gap():
    classes = np.zeros((10, 12), np.uint8)
    classes[2:8, 1:5], classes[2:8, 7:11] = 1, 1  # two objects, a 2-pixel gap between them
    classes[0, 11] = 1  # a speck
    labels = label_instances(classes, min_size=4, grow=1)
    assert labels.max() == 2 and labels[0, 11] == 0
    assert (labels[2:8, 5] == 1).all() and (labels[2:8, 6] == 2).all()  # each grew one pixel into the gap
    assert expand_labels(labels, 0) is labels


def test_border_model_interiors_joined_by_a_thin_bridge_are_split():
    # two discs whose predicted interiors still touch through a 3-pixel bridge, each ringed by border pixels
    yy, xx = np.mgrid[:40, :60]
    discs = [((yy - 20) ** 2 + (xx - c) ** 2) for c in (18, 40)]
    classes = np.zeros((40, 60), np.uint8)
    for d in discs:
        classes[d <= 11**2] = 2
    for d in discs:
        classes[d <= 9**2] = 1
    classes[19:22, 25:34] = 1  # the bridge
    labels = instances_from_classes(classes, "interior")
    assert len(np.unique(labels[labels > 0])) == 2
    assert labels[20, 18] != labels[20, 40] and labels[20, 18] > 0 and labels[20, 40] > 0
    assert ((labels > 0) == (classes > 0)).mean() > 0.97  # grown back over the border, never into background
    assert len(np.unique(label_instances(classes, (1,)))) - 1 == 1  # plain components would merge them
