"""Every object with a confidence (issue 34): the objects table, its sums block by block, its order."""

from __future__ import annotations

import csv

import numpy as np

from unetkit.inference.objects import COLUMNS, ObjectSums, confidence_maps, object_table, write_objects_csv
from unetkit.inference.postprocess import split_by_labelling


def _scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.zeros((90, 120), np.int32)
    yy, xx = np.mgrid[:90, :120]
    centres = [(15, 15), (15, 60), (45, 100), (70, 30), (70, 80), (40, 50)]
    for k, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (6 + k) ** 2] = k
    labels[(labels == 6) & (xx >= 50)] = 7  # object 6 cut in two by the labelling (across a block edge)
    probs = np.stack([np.where(labels > 0, 0.05, 0.95), np.where(labels > 0, 0.9, 0.03)]).astype(np.float32)
    probs = np.concatenate([probs, 1 - probs.sum(0, keepdims=True)])
    probs += rng.uniform(0, 0.02, probs.shape).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)
    image = rng.uniform(0, 255, (90, 120)).astype(np.float32)
    return labels, probs, image


def test_sums_block_by_block_equal_the_whole_image():
    labels, probs, image = _scene()
    sure, fg = confidence_maps(probs)
    n = int(labels.max())
    splittable = labels > 0  # a binary model's foreground: every contact is a cut
    whole_sums = ObjectSums.of(labels, sure, fg, image, n, splittable=splittable)
    contact = ((labels[:, 49] == 6) & (labels[:, 50] == 7)).sum()
    assert whole_sums.cut[6] == whole_sums.cut[7] == contact > 0  # the shared edge's pixel pairs, each side
    assert whole_sums.cut[[1, 2, 3, 4, 5]].sum() == 0
    whole = object_table(whole_sums, 14.0)
    total = None
    for y0 in range(0, 90, 32):
        for x0 in range(0, 120, 40):  # blocks that cut objects, with one pixel of context (the outer ring)
            box = (max(0, y0 - 1), min(90, y0 + 33)), (max(0, x0 - 1), min(120, x0 + 41))
            where = tuple(slice(a, b) for a, b in box)
            core = (
                slice(y0 - box[0][0], min(90, y0 + 32) - box[0][0]),
                slice(x0 - box[1][0], min(120, x0 + 40) - box[1][0]),
            )
            part = ObjectSums.of(
                labels[where],
                sure[where],
                fg[where],
                image[where],
                n,
                offset=(box[0][0], box[1][0]),
                core=core,
                splittable=splittable[where],
            )
            total = part if total is None else (total.add(part) or total)
    blocks = object_table(total, 14.0)
    assert list(whole) == list(COLUMNS)
    for key in COLUMNS:
        np.testing.assert_allclose(blocks[key], whole[key], rtol=1e-9, err_msg=key)
    k = 3  # the table says what the labels hold
    assert whole["area"][k - 1] == (labels == k).sum()
    ys, xs = np.nonzero(labels == k)
    assert (whole["bbox_y0"][k - 1], whole["bbox_x1"][k - 1]) == (ys.min(), xs.max() + 1)
    np.testing.assert_allclose(whole["centroid_x"][k - 1], xs.mean())
    np.testing.assert_allclose(whole["mean_intensity"][k - 1], image[labels == k].mean(), rtol=1e-6)


def test_doubtful_objects_score_lower_and_come_first(tmp_path):
    labels, probs, image = _scene()
    probs[:, labels == 2] = np.array([0.35, 0.4, 0.25])[:, None]  # the network hesitates on object 2
    sure, fg = confidence_maps(probs)
    table = object_table(ObjectSums.of(labels, sure, fg, image, int(labels.max())), 14.0)
    conf = dict(zip(table["label"].tolist(), table["confidence"].tolist(), strict=True))
    assert conf[2] < min(v for k, v in conf.items() if k != 2)
    assert all(0 <= v <= 1 for v in conf.values())
    odd = object_table(ObjectSums.of(labels, *confidence_maps(probs), image, int(labels.max())), 60.0)
    assert odd["confidence"][0] < table["confidence"][0]  # far smaller than the image's typical object
    rows = list(csv.DictReader(open(write_objects_csv(tmp_path / "a_objects.csv", table), encoding="utf-8")))
    assert rows[0]["label"] == "2" and len(rows) == labels.max()  # least confident first
    assert [float(r["confidence"]) for r in rows] == sorted(float(r["confidence"]) for r in rows)


def test_objects_the_labelling_cut_apart_score_lower_than_those_the_network_separated():
    # two pairs of touching half-discs, alike but for one thing: the network saw a border between the first pair
    yy, xx = np.mgrid[:40, :80]
    labels = np.zeros((40, 80), np.int32)
    for k, cx in ((1, 20), (3, 60)):
        disc = (yy - 20) ** 2 + (xx - cx) ** 2 <= 12**2
        labels[disc & (xx < cx)], labels[disc & (xx >= cx)] = k, k + 1
    classes = (labels > 0).astype(np.uint8)
    classes[(labels > 0) & (xx >= 19) & (xx <= 20)] = 2  # the border class between objects 1 and 2
    probs = np.stack([classes == c for c in range(3)]).astype(np.float32) * 0.9 + 0.1 / 3
    sure, fg = confidence_maps(probs)

    def confidence(method: str) -> list[float]:
        sums = ObjectSums.of(labels, sure, fg, None, 4, splittable=split_by_labelling(classes, method))
        return object_table(sums, 24.0)["confidence"].tolist()

    c = confidence("interior")  # a border model: the watershed, not the network, split objects 3 and 4
    assert c[2] < c[0] - 0.05 and c[3] < c[1] - 0.05  # each half against its like in the first pair
    c = confidence("components")  # objects the classes separate: nothing was cut
    assert c[2] == c[0] and c[3] == c[1]


def test_a_binary_model_has_confidence_maps_too():
    p = np.array([[[0.1, 0.6, 0.99]]], np.float32)
    sure, fg = confidence_maps(p)
    np.testing.assert_allclose(sure, [[0.9, 0.6, 0.99]], atol=1 / 510)  # in steps of 1/255, as stored
    np.testing.assert_allclose(fg, p[0], atol=1 / 510)
