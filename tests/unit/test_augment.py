"""Augmentation keeps image, target and weight map aligned, and is reproducible for a seed."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from unetkit.data.augment import Augmenter

BLOCK = 16

CONFIGS = {
    "flips": Augmenter(),
    "elastic": Augmenter(flips=False, elastic=True),
    "rotate": Augmenter(flips=False, rotate=180),
    "scale": Augmenter(flips=False, scale=0.3),
    "all": Augmenter(elastic=True, rotate=45, scale=0.2),
}


def grid(size):
    """A labelled grid: block (i, j) has label 1 + (i * 7 + j) % 13; the image shows 10 x the label."""
    yy, xx = np.mgrid[0:size, 0:size] // BLOCK
    labels = (1 + (yy * 7 + xx) % 13).astype(np.uint8)
    return labels


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("margin", [0, 6])
def test_labelled_grid_stays_aligned(name, margin):
    aug = CONFIGS[name]
    patch = 64
    pad = aug.context(patch + 2 * margin)
    size = patch + 2 * margin + 2 * pad
    labels = grid(size)
    image = (labels[None] * 10.0).astype(np.float32)
    weights = labels.astype(np.float32)
    for seed in range(5):
        out_image, (out_labels, out_weights) = aug(
            np.random.default_rng(seed), image, [labels, weights], margin, pad
        )
        assert out_image.shape == (1, patch + 2 * margin, patch + 2 * margin)
        assert out_labels.shape == out_weights.shape == (patch, patch) and out_labels.dtype == np.uint8
        assert set(np.unique(out_labels)) <= set(np.unique(labels))  # nearest neighbour: no new labels
        centre = out_image[0, margin : margin + patch, margin : margin + patch]
        # away from block edges, the image, the mask and the weight map agree pixel for pixel
        # (interior: the transformed label is constant over 7x7; near edges, cubic splines blend and ring)
        interior = ndi.maximum_filter(out_labels, 7) == ndi.minimum_filter(out_labels, 7)
        assert interior.mean() > 0.1
        assert (np.round(centre / 10)[interior] == out_labels[interior]).mean() > 0.97, (name, seed)
        assert (np.round(out_weights)[interior] == out_labels[interior]).mean() > 0.97, (name, seed)


def test_augmentation_is_reproducible_and_actually_varies():
    aug = CONFIGS["all"]
    pad = aug.context(48)
    labels = grid(48 + 2 * pad)
    image = labels[None].astype(np.float32)
    a = aug(np.random.default_rng(3), image, [labels], 0, pad)
    b = aug(np.random.default_rng(3), image, [labels], 0, pad)
    c = aug(np.random.default_rng(4), image, [labels], 0, pad)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][0], b[1][0])
    assert not np.array_equal(a[1][0], c[1][0])


def test_elastic_displacements_have_the_requested_size():
    aug = Augmenter(flips=False, elastic=True, elastic_sigma=10)
    base = Augmenter(flips=False).coordinates(np.random.default_rng(0), 64, 0)
    shifts = [np.abs(aug.coordinates(np.random.default_rng(s), 64, 0) - base) for s in range(40)]
    corners = np.array([s[:, 0, 0] for s in shifts])  # control points sit at the corners: N(0, 10) there
    assert 6 < np.sqrt((corners**2).mean()) < 14


def test_intensity_changes_only_the_image():
    aug = Augmenter(flips=False, intensity=0.3, noise=0.1, blur=1.0)
    labels = grid(32)
    image = labels[None].astype(np.float32)
    out, (lab,) = aug(np.random.default_rng(0), image, [labels], 0, 0)
    np.testing.assert_array_equal(lab, labels)
    assert not np.allclose(out, image)


def test_dataloader_workers_give_the_same_batches(tmp_path):
    """Patches are a pure function of (seed, epoch, index): worker processes change nothing."""
    import torch

    from unetkit import synth_nuclei, write_image
    from unetkit.data.dataset import PatchDataset, SampleStore, split_views
    from unetkit.data.layouts import paired_folders
    from unetkit.data.masks import MaskEncoding
    from unetkit.data.normalize import Normalizer

    for i in range(2):
        image, labels = synth_nuclei((60, 70), seed=i)
        write_image(tmp_path / "images" / f"a{i}.png", image)
        write_image(tmp_path / "masks" / f"a{i}.png", labels)
    store = SampleStore(
        paired_folders(tmp_path),
        MaskEncoding("instances", border_gap=2),
        Normalizer(),
        1,
        weights=(10.0, 5.0),
    )
    views, _, _ = split_views(store, [60, 60], 0.2, seed=0)
    ds = PatchDataset(store, views, [(60, 70)] * 2, 32, 32, length=8, augment=CONFIGS["all"], fg_fraction=0.5)
    ds.set_epoch(3)
    from unetkit.training.loop import leave_sigchld_alone

    leave_sigchld_alone()  # as training does: PyTorch's SIGCHLD handler can crash a process that ran ONNX Runtime
    runs = [list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=n)) for n in (0, 2)]
    for a, b in zip(*runs, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
