"""The paper's weight maps (Eq. 2), separation borders, and the weighted loss."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from unetkit import synth_nuclei, write_image
from unetkit.data.dataset import PatchDataset, SampleStore, split_views
from unetkit.data.layouts import paired_folders
from unetkit.data.masks import MaskEncoding
from unetkit.data.normalize import Normalizer
from unetkit.data.weights import class_balance, separate_touching, separation_weights, weight_map
from unetkit.losses import LOSSES


def two_touching_squares():
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 10:30] = 1
    labels[10:30, 30:50] = 2  # shares the border between columns 29 and 30
    return labels


def test_separation_borders_cut_a_gap_of_one_or_two_pixels():
    labels = two_touching_squares()
    labels[35:38, 5:8] = 3  # an isolated object is never touched
    one, two = separate_touching(labels, 1), separate_touching(labels, 2)
    assert (one[10:30, 29] == 0).all() and (one[10:30, 30] == 2).all()  # one pixel, on the lower label's side
    assert (two[10:30, 29] == 0).all() and (two[10:30, 30] == 0).all()
    np.testing.assert_array_equal(one[35:38, 5:8], 3)
    np.testing.assert_array_equal(two[35:38, 5:8], 3)
    assert ndi.label(two > 0)[1] == 3  # the touching pair is now two components


def test_weight_map_peaks_on_the_gap_at_wc_plus_w0_and_decays_with_sigma():
    labels = separate_touching(two_touching_squares(), 1)  # gap: column 29
    target = (labels > 0).astype(np.uint8)
    w = weight_map(labels, target, 2, w0=10, sigma=5)
    wc = class_balance(target, 2)
    peak = np.unravel_index(np.argmax(w), w.shape)
    assert peak[1] == 29 and 10 <= peak[0] < 30  # on the gap
    assert w[peak] == pytest.approx(wc[peak] + 10 * math.exp(-((1 + 1) ** 2) / 50), rel=1e-5)  # d1 = d2 = 1
    assert w[peak] == pytest.approx(wc[peak] + 10, rel=0.1)  # ≈ w_c + w0, as in the paper
    # away from the gap the separation term decays as exp(-(d1+d2)^2 / (2 sigma^2))
    above = w[5, 29] - wc[5, 29]  # 5 px above the gap: d1 = d2 = sqrt(26)
    assert above == pytest.approx(10 * math.exp(-((2 * math.sqrt(26)) ** 2) / 50), rel=1e-4)
    narrow = weight_map(labels, target, 2, w0=10, sigma=2)
    assert narrow[5, 29] - wc[5, 29] < above  # smaller sigma, faster decay
    assert (w[labels > 0] == wc[labels > 0]).all()  # objects carry class balance only


def test_class_balance_equalises_weighted_class_frequencies():
    target = np.zeros((10, 10), np.uint8)
    target[:2] = 1
    target[9, 9] = 2
    target[5, :3] = 255  # ignored
    wc = class_balance(target, 3)
    totals = [wc[target == k].sum() for k in range(3)]
    assert totals == pytest.approx([totals[0]] * 3)
    assert (wc[target == 255] == 0).all()
    assert wc[target != 255].sum() == pytest.approx((target != 255).sum())


def test_local_windows_match_full_image_distance_transforms():
    _, labels = synth_nuclei(160, seed=2)
    ids = [i for i in np.unique(labels) if i]
    d = np.sort(np.stack([ndi.distance_transform_edt(labels != i) for i in ids]), axis=0)
    brute = np.where(labels == 0, 10 * np.exp(-((d[0] + d[1]) ** 2) / 50), 0)
    np.testing.assert_allclose(separation_weights(labels, 10, 5), brute, atol=1e-3)


def test_weighted_losses_match_hand_computed_values():
    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 1.0]]]])  # (N=1, C=2, H=1, W=2)
    target = torch.tensor([[[0, 1]]])
    weight = torch.tensor([[[1.0, 3.0]]])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce1 = -math.log(math.exp(1) / (math.exp(-1) + math.exp(1)))
    assert LOSSES["ce"](logits, target).item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    assert LOSSES["ce"](logits, target, weight).item() == pytest.approx((1 * ce0 + 3 * ce1) / 2, rel=1e-6)
    ignored = torch.tensor([[[0, 255]]])
    assert LOSSES["ce"](logits, ignored, weight).item() == pytest.approx(ce0, rel=1e-6)
    z = torch.tensor([[[[0.5, -2.0]]]])
    t = torch.tensor([[[[1, 0]]]])
    b0, b1 = math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(-2.0))
    assert LOSSES["bce"](z, t, torch.tensor([[[2.0, 1.0]]])).item() == pytest.approx(
        (2 * b0 + b1) / 2, rel=1e-6
    )


def test_weights_stay_aligned_with_target_through_patches_and_augmentation(tmp_path):
    for i in range(2):
        image, labels = synth_nuclei((70, 90), seed=i)
        write_image(tmp_path / "images" / f"a{i}.png", image)
        write_image(tmp_path / "masks" / f"a{i}.png", labels)
    encoding = MaskEncoding("instances", border_gap=2)
    store = SampleStore(paired_folders(tmp_path), encoding, Normalizer(), 1, weights=(10.0, 5.0))
    views, _, _ = split_views(store, [70, 70], 0.2, seed=0)
    ds = PatchDataset(store, views, [(70, 90), (70, 90)], 48, 48, length=12, augment=True, seed=0)
    for i in range(12):
        _, y, w = (a.numpy() for a in ds[i])
        # on objects the weight is the class-balance value of the patch's source image: one value, and only
        # if the weight map was cropped, rotated and flipped exactly like the target
        if (y == 1).any():
            assert len(np.unique(w[y == 1])) == 1
            assert (w[y == 0] != w[y == 1][0]).mean() > 0.5  # background weights differ from it


def test_class_balance_weights_follow_the_target_exactly(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(tmp_path / "images" / f"a{i}.npy", rng.random((50, 70), dtype=np.float32))
        m = np.zeros((50, 70), np.uint8)
        m[5 + 10 * i : 30, 10 : 25 + 5 * i] = 1
        write_image(tmp_path / "masks" / f"a{i}.png", m)
    store = SampleStore(
        paired_folders(tmp_path), MaskEncoding("binary"), Normalizer(), 1, weights=(10.0, 5.0)
    )
    views, _, _ = split_views(store, [50, 50], 0.2, seed=0)
    ds = PatchDataset(store, views, [(50, 70)] * 2, 32, 32, length=20, augment=True, seed=1)
    for i in range(20):
        _, y, w = (a.numpy() for a in ds[i])
        for k in (0, 1):  # w is a function of y in every augmented patch
            assert len(np.unique(w[y == k])) <= 1


def test_weight_map_without_class_balance_keeps_the_separation_term_alone():
    labels = two_touching_squares()
    target = (labels > 0).astype(np.uint8)
    balanced = weight_map(labels, target, 2, w0=10, sigma=5)
    plain = weight_map(labels, target, 2, w0=10, sigma=5, balance=False)
    np.testing.assert_allclose(plain - 1.0, separation_weights(labels, 10, 5), atol=1e-6)
    np.testing.assert_allclose(balanced - plain, class_balance(target, 2) - 1.0, atol=1e-6)
    assert plain[labels == 0].min() == pytest.approx(1.0, abs=1e-3)  # far background: plain cross-entropy


def test_contact_weights_mark_where_touching_objects_meet():
    labels = two_touching_squares()
    plain = separation_weights(labels, 10, 5)
    contacts = separation_weights(labels, 10, 5, contacts=True)
    assert plain[labels > 0].max() == 0  # the paper's term: background only (no background at the contact)
    np.testing.assert_array_equal(contacts[labels == 0], plain[labels == 0])
    # on both sides of the shared edge: d1 = 0 and d2 = 1 pixel
    assert contacts[20, 29] == pytest.approx(10 * math.exp(-1 / 50), rel=1e-4)
    assert contacts[20, 30] == pytest.approx(10 * math.exp(-1 / 50), rel=1e-4)
    assert contacts[20, 29] > 10 * contacts[20, 12]  # far from the contact: small
    # the border-target encoding uses them
    enc = MaskEncoding("instances", target="border")
    target = enc.encode(labels.astype(np.uint16))
    w = enc.weights(labels.astype(np.uint16), target, 10, 5, balance=False)
    assert w[20, 29] == pytest.approx(1 + 10 * math.exp(-1 / 50), rel=1e-4)
