"""The domain-randomised generator family and its held-out styles."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit import read_image, synthesize_dataset
from unetkit.data.synthetic import random_style, style_of, synth_nuclei
from unetkit.errors import DataError


def _centre(low_high: tuple[float, float], spread: float) -> float:
    return low_high[0] / spread


def test_the_training_family_spans_sizes_noise_haze_and_bit_depths():
    rng = np.random.default_rng(0)
    styles = [random_style(rng) for _ in range(300)]
    radii = [_centre(s.radius, 0.7) for s in styles]
    photons = [_centre(s.photons, 0.8) for s in styles]
    assert min(radii) < 4 and max(radii) > 17  # nuclei from ~6 to ~40 px across, and more per object
    assert min(photons) < 30 and max(photons) > 300  # noisy wide-field to clean confocal
    assert {s.bits for s in styles} == {8, 12, 16}
    assert any(s.haze[1] > 0.3 for s in styles) and any(s.haze[1] == 0 for s in styles)
    assert any(s.brightness[1] > 1.2 for s in styles) and any(s.brightness[0] < 0.15 for s in styles)


def test_held_out_styles_sit_where_the_training_family_never_draws():
    train = [random_style(np.random.default_rng(i)) for i in range(300)]
    held = [random_style(np.random.default_rng(i), held_out=True) for i in range(300)]
    max_radius = max(_centre(s.radius, 0.7) for s in train)
    min_photons = min(s.photons[0] for s in train)
    max_haze = max(s.haze[1] for s in train)
    for s in held:  # every held-out style is outside the training ranges in at least one way
        assert _centre(s.radius, 0.7) > max_radius or s.photons[1] < min_photons or s.haze[0] >= max_haze


def test_styled_images_are_deterministic_and_keep_their_bit_depth(tmp_path):
    params = style_of("random", 5)
    a, la = synth_nuclei(96, 3, params)
    b, lb = synth_nuclei(96, 3, style_of("random", 5))
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert a.dtype == (np.uint8 if params.bits == 8 else np.uint16) and a.max() <= 2**params.bits - 1
    data = synthesize_dataset(tmp_path / "d", n=6, size=96, seed=2, style="held-out")
    dtypes = {read_image(p).dtype for p in sorted((data / "images").iterdir())}
    assert dtypes <= {np.dtype(np.uint8), np.dtype(np.uint16)}
    with pytest.raises(DataError, match="--style"):
        style_of("pretty", 0)


def _solidity(labels):
    from skimage.measure import regionprops

    return float(np.median([r.solidity for r in regionprops(labels) if r.area >= 30]))


def test_version_2_features_are_off_by_default_and_each_does_what_it_says():
    from unetkit.data.synthetic import SynthParams

    plain = SynthParams(radius=(10.0, 14.0), nuclei_per_mpx=300, clusters_per_mpx=0)
    base_image, base_labels = synth_nuclei(256, 5, plain)
    # off by default: the default images are what they were before the features existed
    same = synth_nuclei(256, 5, SynthParams(**{**plain.__dict__, "irregularity": 0.0, "texture": 0.0}))
    assert np.array_equal(same[0], base_image) and np.array_equal(same[1], base_labels)
    # irregular outlines: less convex objects
    lobed = synth_nuclei(256, 5, SynthParams(**{**plain.__dict__, "irregularity": 0.35}))[1]
    assert _solidity(lobed) < _solidity(base_labels) - 0.03
    # debris: bright unlabelled specks, never objects
    debris = SynthParams(**{**plain.__dict__, "debris_per_mpx": 3000.0})
    image, labels = synth_nuclei(256, 5, debris)
    outside = labels == 0
    assert (image[outside] > np.percentile(base_image[outside], 99.9)).sum() > 50
    # dividing nuclei: more (and smaller) objects than the same image without them
    dividing = synth_nuclei(256, 5, SynthParams(**{**plain.__dict__, "dividing_per_mpx": 200.0}))[1]
    assert dividing.max() >= base_labels.max() + 6
    # chromatin texture: more variation inside the nuclei
    textured = synth_nuclei(256, 5, SynthParams(**{**plain.__dict__, "texture": 0.8}))[0]
    inside = base_labels > 0
    assert textured[inside].astype(float).std() > 1.2 * base_image[inside].astype(float).std()
