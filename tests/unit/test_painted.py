"""A dataset from one painted image (what the napari Train widget writes): unpainted pixels background or
ignored, read back by unetkit's own dataset reader with nothing guessed; labels that cannot train refused."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from unetkit import synth_nuclei
from unetkit.config import DataConfig
from unetkit.data.checks import check_dataset
from unetkit.data.layouts import load_layout, read_sample_mask
from unetkit.errors import DataError
from unetkit.workflows.painted import CONTEXT, IGNORED, write_painted_dataset


def _painted(every=6):
    """A few of the true objects painted (labels + 1), background painted as label 1 on a grid of strokes."""
    image, truth = synth_nuclei((256, 256), seed=7)
    ids = np.unique(truth)[1:]
    paint = np.where(np.isin(truth, ids[::every]), truth + 1, 0).astype(np.uint16)
    strokes = np.zeros(truth.shape, bool)
    strokes[8::24, :] = strokes[:, 8::24] = True
    paint[strokes & (truth == 0)] = 1
    return image, truth, paint


def test_unpainted_pixels_are_ignored_and_the_dataset_is_read_as_painted(tmp_path):
    image, _, paint = _painted()
    out = write_painted_dataset(image, paint, tmp_path / "data", name="cells", unpainted="ignored")
    report = check_dataset(out, DataConfig())
    assert report.encoding.name == "instances" and report.encoding.ignore_value == IGNORED
    (sample,) = load_layout(out).samples
    mask = read_sample_mask(sample)
    rows, cols = np.nonzero(paint)
    r0, c0 = max(0, rows.min() - CONTEXT), max(0, cols.min() - CONTEXT)
    crop = paint[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]]
    assert ((mask == IGNORED) == (crop == 0)).all()  # unpainted: ignored, never background
    assert (mask[crop == 1] == 0).all()  # the background label: background
    objects = crop > 1
    assert (mask[objects] == crop[objects]).all()  # objects keep their labels
    target = report.encoding.encode(mask)
    assert (target[crop == 0] == 255).all() and (target[objects] > 0).all()


def test_unpainted_pixels_as_background_keep_the_whole_image(tmp_path):
    image, truth, _ = _painted()
    out = write_painted_dataset(image, truth, tmp_path / "data")
    (sample,) = load_layout(out).samples
    np.testing.assert_array_equal(read_sample_mask(sample), truth)
    assert check_dataset(out, DataConfig()).encoding.ignore_value is None


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("other shape", "paint labels of the image's own size"),
        ("floats", "non-negative integers"),
        ("no background", "paint some background with label 1"),
        ("nothing", "no object is painted"),
        ("one object", "one object is painted, only above row .*: paint another object apart from it"),
        ("exists", "nothing is overwritten"),
    ],
)
def test_labels_that_cannot_train_are_refused_with_the_fix(tmp_path, case, message):
    image, truth, paint = _painted()
    unpainted = "ignored"
    if case == "other shape":
        paint = paint[:-1]
    elif case == "floats":
        paint = paint.astype(np.float32)
    elif case == "no background":
        paint[paint == 1] = 0
    elif case == "nothing":
        paint[paint > 1] = 0
    elif case == "one object":  # none to hold out whole: the bottom rows validate, and hold none
        top = np.where(np.arange(256)[:, None] < 128, truth, 0)
        paint, unpainted = np.where(top == np.unique(top[top > 0])[0], top, 0), "background"
    elif case == "exists":
        (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match=message):
        write_painted_dataset(image, paint, tmp_path / "data", unpainted=unpainted)
    assert not (tmp_path / "data" / "images").exists()  # refused before anything is written


def test_enough_objects_anywhere_validate_on_objects_held_out(tmp_path):
    """Objects painted only in the top half once had to be refused (the bottom rows validated); with enough of
    them training holds whole objects out instead, so a review's few corrected regions can train."""
    image, truth, _ = _painted()
    top = np.where(np.arange(256)[:, None] < 128, truth, 0)
    assert len(np.unique(top)) - 1 >= 5
    out = write_painted_dataset(image, top, tmp_path / "data")
    assert (out / "dataset.yaml").is_file()


@pytest.mark.parametrize("count", [2, 3, 4])
def test_a_few_objects_anywhere_validate_on_one_held_out_whole(tmp_path, count):
    """A review of a few objects once met a refusal when they all lay above the painted area's validation rows
    (fewer than 5 objects validated on the bottom rows): two objects apart are enough to hold one out whole."""
    from unetkit.data.dataset import SampleStore, split_views
    from unetkit.data.masks import IGNORE
    from unetkit.data.normalize import Normalizer

    image, truth, _ = _painted()
    top = np.where(np.arange(256)[:, None] < 128, truth, 0)
    apart = [i for i in np.unique(top[top > 0]) if not _touches_another(truth, i)][:count]
    paint = np.where(np.isin(top, apart), top + 1, 0).astype(np.uint16)
    paint[(paint == 0) & (np.arange(256)[:, None] < 128) & (truth == 0)] = 1  # the background of the top half
    out = write_painted_dataset(image, paint, tmp_path / "data", unpainted="ignored")
    report = check_dataset(out, DataConfig())
    store = SampleStore(load_layout(out).samples, report.encoding, Normalizer("percentile"), 1)
    (train,), (val,), note = split_views(store, [store[0][1].shape[0]], 0.2, seed=0)
    assert "whole objects" in note
    target = store[0][1]
    held = val.read(store)[1]
    objects, n = ndi.label((target > 0) & (target != IGNORE))
    validating = {int(k) for k in np.unique(objects[(held != IGNORE) & (objects > 0)])}
    training = {int(k) for k in np.unique(objects[(train.read(store)[1] != IGNORE) & (objects > 0)])}
    assert (
        n == count and validating and training and not validating & training
    )  # whole objects, each on one side
    for k in validating:
        assert (held[objects == k] != IGNORE).all()  # held out whole


def test_a_large_object_is_passed_over_for_validation():
    """Two objects, one taking most of the labelled pixels: the small one validates (the large one's region
    alone was over half the labelled pixels, and the split fell back to rows)."""
    from unetkit.data.dataset import held_out_region

    labels = np.zeros((200, 200), np.int32)
    labels[20:120, 20:120] = 1
    labels[160:170, 160:170] = 2
    for seed in range(6):  # whichever comes first
        region = held_out_region(labels, np.ones(labels.shape, bool), 0.2, np.random.default_rng(seed))
        assert region is not None and region[labels == 2].all() and not region[labels == 1].any()


def _touches_another(truth, i):
    grown = ndi.binary_dilation(truth == i, iterations=12)
    return bool(np.isin(truth[grown], [0, i], invert=True).any())
