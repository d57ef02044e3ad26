import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.feature import peak_local_max

from unetkit import synth_nuclei
from unetkit.inference.postprocess import (
    expand_labels,
    instances_from_classes,
    label_instances,
    object_peaks,
)
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


def _smoothed_distance(foreground, sigma):
    return ndi.gaussian_filter(ndi.distance_transform_edt(foreground).astype(np.float32), sigma) * foreground


def test_object_peaks_are_scikit_images_peaks_per_object_in_the_same_order():
    # the watershed's seeds: the same coordinates, in the same order (marker IDs), as peak_local_max(labels=)
    rng = np.random.default_rng(0)
    _, truth = synth_nuclei(192, 3)
    cases = []
    for sigma in (0.5, 1.5):  # touching nuclei: components meeting diagonally, neighbours within the window
        foreground = ndi.binary_erosion(truth > 0) | (truth > 0) & (rng.random(truth.shape) < 0.02)
        cases.append((_smoothed_distance(foreground, sigma), ndi.label(foreground)[0], 1.0))
    for k in range(60):  # quantised heights: plateaus, objects of one value, volumes, threshold 0
        shape = tuple(rng.integers(5, 30, 3 if k % 5 == 0 else 2))
        foreground = ndi.binary_opening(rng.random(shape) < 0.6) if k % 2 else rng.random(shape) < 0.5
        heights = np.round(ndi.gaussian_filter(rng.random(shape), 1) * rng.integers(1, 6))
        cases.append(((heights * foreground).astype(np.float32), ndi.label(foreground)[0], float(k % 3) / 2))
    one_valued = 0
    for image, labels, threshold in cases:
        one_valued += sum(np.ptp(image[labels == i]) == 0 for i in range(1, labels.max() + 1))
        for spacing in (1, 2, 5):
            expected = peak_local_max(
                image, min_distance=spacing, threshold_abs=threshold, exclude_border=False, labels=labels
            )
            np.testing.assert_array_equal(object_peaks(image, labels, spacing, threshold), expected)
    assert one_valued > 20  # the rule for objects of one value (isolated pixels only) was exercised


def test_growth_joins_each_pixel_to_a_nearest_object_as_a_distance_transform_does():
    _, truth = synth_nuclei(160, 4)
    shrunk = np.where(ndi.binary_erosion(truth > 0, iterations=2), truth, 0).astype(np.int32)
    within = ndi.binary_dilation(truth > 0, iterations=1)
    for distance in (1, 1.5, 2, 3, 4.5):  # up to NEAR_GROWTH the neighbours, beyond a distance transform
        for mask in (None, within):
            grown = expand_labels(shrunk, distance, within=mask)
            dist = ndi.distance_transform_edt(shrunk == 0)
            reached = (shrunk == 0) & (dist <= distance) & (True if mask is None else mask)
            assert np.array_equal(grown > 0, (shrunk > 0) | reached)
            assert np.array_equal(grown[shrunk > 0], shrunk[shrunk > 0])
            # every grown pixel joined an object at the nearest distance (ties may go either way)
            ys, xs = np.nonzero(reached)
            for y, x, label in zip(ys, xs, grown[ys, xs], strict=True):
                oy, ox = np.nonzero(shrunk == label)
                assert np.min(np.hypot(oy - y, ox - x)) == pytest.approx(dist[y, x])


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


def _nuclei(centres, radius: float, interior: float, shape) -> np.ndarray:
    """Classes of a border model: discs of ``radius`` (border class 2) with an ``interior`` disc (class 1)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    classes = np.zeros(shape, np.uint8)
    for cy, cx in centres:
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        classes[(d2 <= radius**2) & (classes == 0)] = 2
        classes[d2 <= interior**2] = 1
    return classes


def test_the_split_follows_the_objects_size_tiny_nuclei_are_kept():
    from unetkit.inference.postprocess import measured_split

    # 6-px nuclei, side by side in pairs; a map whose interiors are 5-pixel crosses (under the fixed 8 pixels)
    centres = [(y, x + dx) for y in range(6, 64, 12) for x in range(6, 60, 16) for dx in (0, 6)]
    classes = _nuclei(centres, 3.2, 1.2, (64, 64))
    assert instances_from_classes(classes, "interior").max() == 0  # the fixed split drops every one
    split = measured_split(lambda w: classes[w], classes.shape, "interior")
    assert split.min_size <= 4 and split.min_distance <= 2
    labels = instances_from_classes(classes, "interior", split=split)
    assert labels.max() == len(centres) and len({labels[c] for c in centres}) == len(centres)


def test_one_split_per_image_whichever_part_is_labelled():
    from unetkit.inference.postprocess import (
        first_pixel_order,
        instances_blockwise,
        measured_split,
        size_windows,
    )

    # larger than one measuring window: the windows are spread over the image, the same for every path
    assert len(size_windows((2500, 1100))) == 9 and len(size_windows((300, 200))) == 1
    assert size_windows((300, 200))[0] == (slice(0, 300), slice(0, 200))
    centres = [(y, x) for y in range(40, 1300, 90) for x in range(40, 1300, 90)]
    classes = _nuclei(centres, 30, 27, (1300, 1300))
    split = measured_split(lambda w: classes[w], classes.shape, "interior")
    whole = first_pixel_order(instances_from_classes(classes, "interior", split=split))
    assert whole.max() == len(centres)
    # labelled on two threads (regions and size windows): the same split and the same labels
    assert measured_split(lambda w: classes[w], classes.shape, "interior", workers=2) == split
    for workers, parked in ((1, False), (2, False), (2, True)):
        out = np.zeros_like(whole)
        instances_blockwise(
            lambda w: classes[w], classes.shape, lambda w, v: out.__setitem__(w, v),  # noqa: B023
            lambda c: instances_from_classes(c, "interior", split=split), block=512, context=96,
            out_read=(lambda w: out[w].copy()) if parked else None, workers=workers,  # noqa: B023
        )  # fmt: skip
        np.testing.assert_array_equal(out, whole)


def test_ordered_map_keeps_the_order_bounds_what_runs_and_raises_what_failed():
    import threading
    import time

    from unetkit.inference.postprocess import ordered_map

    running, most, lock = [0], [0], threading.Lock()

    def slow(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01 * (i % 3))
        with lock:
            running[0] -= 1
        if i == 7:
            raise ValueError("seven")
        return i * i

    got = ordered_map(slow, list(range(10)), workers=3)
    assert [next(got) for _ in range(7)] == [i * i for i in range(7)]
    with pytest.raises(ValueError, match="seven"):
        next(got)
    assert 2 <= most[0] <= 3  # in parallel, never more than the workers
    assert list(ordered_map(slow, [1, 2], workers=1)) == [1, 4]
