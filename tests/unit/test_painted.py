"""A dataset from one painted image (what the napari Train widget writes): unpainted pixels background or
ignored, read back by unetkit's own dataset reader with nothing guessed; labels that cannot train refused."""

import numpy as np
import pytest

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
        ("top only", "paint objects in both parts"),
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
    elif (
        case == "top only"
    ):  # too few objects to hold some out whole: the bottom rows validate, and hold none
        top = np.where(np.arange(256)[:, None] < 128, truth, 0)
        few = np.unique(top[top > 0])[:3]
        paint, unpainted = np.where(np.isin(top, few), top, 0), "background"
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
