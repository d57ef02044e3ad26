"""Issue 34, the CLI side of the loop: ``unetkit review`` lists the doubtful objects of a prediction, draws them,
and writes regions to correct that training reads as sparse labels. Real files throughout: instance labels and
objects tables written by the library's own writers, read back by the workflow."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from unetkit import read_image, synth_nuclei, write_image
from unetkit.data.dataset import SampleStore, split_views
from unetkit.data.layouts import paired_folders
from unetkit.data.masks import IGNORE, MaskEncoding
from unetkit.data.normalize import Normalizer
from unetkit.errors import DataError
from unetkit.inference.objects import read_objects_csv, write_objects_csv
from unetkit.viz import outline
from unetkit.workflows.painted import IGNORED
from unetkit.workflows.review import all_objects, correction_region, review, write_corrections


def _prediction(folder, images, n=2, size=(160, 200)):
    """A prediction folder as ``predict --instances`` writes it (NAME_instances.tif, NAME_objects.csv), made from
    generated images, with a known confidence per object (label k: k / (count + 1))."""
    truths = {}
    for k in range(n):
        image, labels = synth_nuclei(size, seed=10 + k)
        name = f"img{k}"
        write_image(images / f"{name}.png", image)
        write_image(folder / f"{name}_instances.tif", labels.astype(np.uint16))
        ids = np.unique(labels[labels > 0])
        boxes = ndi.find_objects(labels)
        table = {
            "label": ids.astype(np.int64),
            "confidence": (ids / (ids.max() + 1)).astype(np.float64),
            "area": np.array([(labels == i).sum() for i in ids], np.int64),
            "centroid_y": np.zeros(len(ids)),
            "centroid_x": np.zeros(len(ids)),
            "bbox_y0": np.array([boxes[i - 1][0].start for i in ids], np.int64),
            "bbox_x0": np.array([boxes[i - 1][1].start for i in ids], np.int64),
            "bbox_y1": np.array([boxes[i - 1][0].stop for i in ids], np.int64),
            "bbox_x1": np.array([boxes[i - 1][1].stop for i in ids], np.int64),
            "mean_intensity": np.zeros(len(ids)),
        }
        write_objects_csv(folder / f"{name}_objects.csv", table)
        truths[name] = labels
    return truths


def test_the_objects_table_reads_back_and_anything_else_is_refused(tmp_path):
    pred, images = tmp_path / "pred", tmp_path / "images"
    _prediction(pred, images, n=1)
    table = read_objects_csv(pred / "img0_objects.csv")
    assert (
        table["label"].dtype == np.int64 and (np.diff(table["confidence"]) >= 0).all()
    )  # least confident first
    bad = {
        "foreign.csv": "name,score\na,1\n",
        "nan.csv": "label,confidence\n1,nan\n",
        "twice.csv": "label,confidence\n1,0.5\n1,0.6\n",
        "range.csv": "label,confidence\n1,1.5\n",
        "ragged.csv": "label,confidence\n1,0.5,3\n",
        "zero.csv": "label,confidence\n0,0.5\n",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=name):
            read_objects_csv(tmp_path / name)


def test_review_lists_the_least_confident_first_and_refuses_a_folder_without_tables(tmp_path):
    pred, images = tmp_path / "pred", tmp_path / "images"
    _prediction(pred, images)
    found = review(pred, below=0.3)
    everything = all_objects(pred)
    assert found.objects == len(everything) and found.images == 2
    assert found.doubtful == [d for d in everything if d.confidence < 0.3]
    assert [d.confidence for d in found.doubtful] == sorted(d.confidence for d in found.doubtful)
    assert len(review(pred, below=None, most=5).doubtful) == 5
    with pytest.raises(DataError, match="--instances"):
        review(images)  # no NAME_objects.csv there
    with pytest.raises(DataError, match="--images"):
        review(pred, corrections=tmp_path / "c")


def test_corrections_are_regions_of_labels_and_everything_else_is_ignored(tmp_path):
    pred, images = tmp_path / "pred", tmp_path / "images"
    truths = _prediction(pred, images)
    folder = tmp_path / "corrected"
    found = review(pred, below=None, most=4, images=images, corrections=folder, sheet=tmp_path / "sheet.png")
    assert found.round == 1 and found.files
    described = (folder / "dataset.yaml").read_text()
    assert f"ignore_index: {IGNORED}" in described and "mask_encoding: instances" in described
    listing = (folder / "review.csv").read_text().splitlines()
    assert len(listing) == 1 + 4
    for row in listing[1:]:
        _, file, image, y0, x0, label, _, *box = row.split(",")
        mask = read_image(folder / "masks" / file)
        assert mask.dtype == np.uint32  # a 16-bit mask would have turned the ignored value into an object
        counted = mask != IGNORED
        y0, x0 = int(y0), int(x0)
        labels = truths[image][y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        np.testing.assert_array_equal(mask[counted], labels[counted])  # the predicted labels, to correct
        b0, b1, b2, b3 = map(int, box)
        assert counted[b0:b2, b1:b3][labels[b0:b2, b1:b3] == int(label)].all()  # the object is in its region
        for k in np.unique(mask[counted]):  # every object in a region is there whole
            if k:
                assert counted[labels == k].all(), k
        image_crop = read_image(folder / "images" / file)
        assert image_crop.shape == mask.shape
    sheet = read_image(tmp_path / "sheet.png")
    assert sheet.shape[-1] == 3 and (np.abs(sheet.astype(int) - [255, 220, 0]).sum(-1) == 0).sum() > 50


def test_corrections_of_images_of_two_stains_keep_both_stains(tmp_path):
    """An (H, W, 2) crop was written as 2-row pages (a stack) that the correction's training then refused to
    read: the crops keep the image's channels, read back as they were."""
    pred, images = tmp_path / "pred", tmp_path / "images"
    _prediction(pred, images, n=1)
    stains = np.stack([read_image(images / "img0.png"), 255 - read_image(images / "img0.png")], -1)
    (images / "img0.png").unlink()
    tifffile.imwrite(images / "img0.tif", np.moveaxis(stains, -1, 0), metadata={"axes": "CYX"})  # a user's
    folder = tmp_path / "corrected"
    review(pred, below=None, most=2, images=images, corrections=folder)
    listing = (folder / "review.csv").read_text().splitlines()[1:]
    _, file, _, y0, x0, *_ = listing[0].split(",")
    crop = read_image(folder / "images" / file)
    mask = read_image(folder / "masks" / file)
    y0, x0 = int(y0), int(x0)
    assert crop.shape == (*mask.shape, 2)
    np.testing.assert_array_equal(crop, stains[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]])


def test_an_image_of_any_channel_count_reads_back_as_written(tmp_path):
    rng = np.random.default_rng(0)
    for count in (2, 3, 4, 5):
        image = rng.integers(0, 4096, (24, 40, count)).astype(np.uint16)
        write_image(tmp_path / f"c{count}.tif", image, axes="YXC")
        np.testing.assert_array_equal(read_image(tmp_path / f"c{count}.tif"), image)
    with pytest.raises(ValueError, match="axes"):
        write_image(tmp_path / "x.tif", image, axes="CYX")


def test_each_review_adds_a_round_and_skips_what_was_corrected(tmp_path):
    pred, images = tmp_path / "pred", tmp_path / "images"
    _prediction(pred, images)
    folder = tmp_path / "corrected"
    first = review(pred, below=None, most=3, images=images, corrections=folder)
    second = review(pred, below=None, most=3, images=images, corrections=folder)
    assert (first.round, second.round) == (1, 2)
    assert not {(d.image, d.label) for d in first.doubtful} & {(d.image, d.label) for d in second.doubtful}
    assert second.corrected >= 3  # the first round's objects are not asked again
    assert {p.name.split("_")[0] for p in (folder / "images").iterdir()} == {"r1", "r2"}
    rounds = write_corrections(all_objects(pred)[-2:], pred, images, folder)[0]  # chosen another way
    assert rounds == 3
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "dataset.yaml").write_text("layout: paired\n")
    with pytest.raises(DataError, match="not a corrections folder"):
        review(pred, below=None, most=1, images=images, corrections=foreign)
    with pytest.raises(DataError, match="--corrections"):
        review(pred, below=None, most=1, images=images, corrections=pred / "sub")  # among the results
    with pytest.raises(DataError, match="--sheet"):
        review(pred, below=None, most=1, images=images, sheet=images / "img0.png")  # an input


def test_a_region_takes_the_objects_it_touches_whole():
    labels = np.zeros((60, 60), np.int32)
    labels[10:20, 10:20] = 1
    labels[10:20, 22:40] = 2  # touched by the margin around 1
    labels[45:55, 45:55] = 3
    region = correction_region(labels, [(10, 10, 20, 20)])
    assert region[labels == 1].all() and region[labels == 2].all() and not region[labels == 3].any()
    assert region[7, 15] and region[22, 15]  # background around them too


def test_held_out_objects_are_a_share_of_the_labelled_pixels(tmp_path):
    """Sparse labels (a few corrected regions): the held-out objects were a share of the whole image's pixels
    and took nearly every labelled object from training."""
    image, labels = synth_nuclei((256, 256), seed=3)  # 10 whole objects in the labelled corner
    mask = np.full(labels.shape, IGNORED, np.uint32)
    mask[:128, :128] = labels[:128, :128]
    cut = np.unique(np.concatenate([labels[127, :128], labels[:128, 127]]))
    mask[np.isin(mask, cut[cut > 0])] = IGNORED  # objects the region's edge cut are left out
    write_image(tmp_path / "images" / "a.png", image)
    write_image(tmp_path / "masks" / "a.tif", mask)
    encoding = MaskEncoding("instances", ignore_value=int(IGNORED))
    store = SampleStore(paired_folders(tmp_path), encoding, Normalizer("percentile"), 1)
    (train,), (val,), note = split_views(store, [256], 0.2, seed=0)
    assert "whole objects" in note
    t, v = train.read(store)[1], val.read(store)[1]
    labelled = store[0][1] != IGNORE
    held = (v != IGNORE) & labelled
    assert 0.05 < held.sum() / labelled.sum() < 0.5  # a share of the labelled pixels, not of the image
    assert ((t != IGNORE) & labelled).sum() > held.sum()


def test_outlines_are_drawn_on_every_side():
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    edge = outline(mask)
    assert edge[2, 2:7].all() and edge[6, 2:7].all() and edge[2:7, 2].all() and edge[2:7, 6].all()
    assert not edge[3:6, 3:6].any() and not edge[~mask].any()
