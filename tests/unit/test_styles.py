"""The domain-randomised generator family and its held-out styles."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit import read_image, synthesize_dataset
from unetkit.data.synthetic import random_style, style_of, synth_nuclei
from unetkit.errors import DataError


def _centre(low_high: tuple[float, float], spread: float) -> float:
    return low_high[0] / spread


def test_version_2_of_the_family_spans_sizes_noise_haze_and_bit_depths():
    rng = np.random.default_rng(0)
    styles = [random_style(rng, version=2) for _ in range(300)]
    radii = [_centre(s.radius, 0.7) for s in styles]
    photons = [_centre(s.photons, 0.8) for s in styles]
    assert min(radii) < 4 and max(radii) > 17  # nuclei from ~6 to ~40 px across, and more per object
    assert min(photons) < 30 and max(photons) > 300  # noisy wide-field to clean confocal
    assert {s.bits for s in styles} == {8, 12, 16}
    assert any(s.haze[1] > 0.3 for s in styles) and any(s.haze[1] == 0 for s in styles)
    assert any(s.brightness[1] > 1.2 for s in styles) and any(s.brightness[0] < 0.15 for s in styles)


def test_version_3_widens_the_family_and_each_feature_can_be_left_out_alone():
    styles = [random_style(np.random.default_rng(i)) for i in range(400)]
    diameters = [2 * np.mean(s.radius) * np.sqrt((s.aspect[0] + 1) / 2) for s in styles]
    assert min(diameters) < 6 and max(diameters) > 70  # 5-80 px across
    assert min(s.photons[1] for s in styles) < 6  # down to a few photons
    # large nuclei: no empty fields
    assert all(s.nuclei_per_mpx + 3.5 * s.clusters_per_mpx >= 99.9 for s in styles)
    for name in ("sheet", "mitotic_per_mpx", "apoptotic_per_mpx", "chromocenters", "depth_blur", "vignetting",
                 "illumination", "offset", "full_scale", "hot_pixels_per_mpx"):  # fmt: skip
        on = [getattr(s, name) > 0 for s in styles]
        assert 0.1 < np.mean(on) < 0.8, name  # each feature in some styles, not all
    groups = {"sheets": ("sheet",), "focus": ("depth_blur",), "chromatin": ("chromocenters",),
              "illumination": ("vignetting", "illumination"), "mitosis": ("mitotic_per_mpx", "apoptotic_per_mpx"),
              "camera": ("offset", "full_scale", "hot_pixels_per_mpx")}  # fmt: skip
    whole = random_style(np.random.default_rng(7))
    for feature, fields in groups.items():
        without = random_style(np.random.default_rng(7), without=(feature,))
        changed = {f for f in whole.__dict__ if getattr(whole, f) != getattr(without, f)}
        assert changed <= {*fields, "photons"}, feature  # only its own values change
        assert all(getattr(without, f) == 0 for f in fields), feature
    with pytest.raises(DataError, match="unknown generator features"):
        random_style(np.random.default_rng(0), without=("glitter",))


def test_earlier_styles_images_stay_bit_for_bit():
    """nuclei@1 was trained on version 2: its recipe must still generate the very same images (the hash of these
    four images was taken with the generator before version 3 existed)."""
    import hashlib

    digest = hashlib.sha256()
    for i in range(4):
        image, labels = synth_nuclei(
            96, np.random.SeedSequence([0, i]), style_of("random@2", np.random.SeedSequence([0, i, 1]))
        )
        digest.update(image.tobytes())
        digest.update(labels.tobytes())
    assert digest.hexdigest() == "51b48b8686096f4c8b3ab507e8501cc1271388c5d8189950ba8262e07ccf7547"


def test_held_out_styles_sit_where_version_2_never_draws():
    train = [random_style(np.random.default_rng(i), version=2) for i in range(300)]
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


def _base(**kw):
    from unetkit.data.synthetic import SynthParams

    return SynthParams(**{"radius": (8.0, 11.0), "nuclei_per_mpx": 400, "clusters_per_mpx": 0, **kw})


def test_version_3_features_are_off_by_default_and_each_does_what_it_says():
    base_image, base_labels = synth_nuclei(256, 5, _base())
    inside = base_labels > 0
    # confluent sheets: many more nuclei, most of them touching a neighbour
    from unetkit.data.synthetic import count_touching_pairs

    sheet = synth_nuclei(256, 5, _base(sheet=0.8))[1]
    assert sheet.max() > 3 * base_labels.max() and count_touching_pairs(sheet) > sheet.max() / 2
    # condensed chromatin: extra small objects, brighter than the interphase nuclei
    image, labels = synth_nuclei(256, 5, _base(mitotic_per_mpx=150.0, apoptotic_per_mpx=150.0))
    assert labels.max() >= base_labels.max() + 10
    extra = labels > base_labels.max()
    assert np.median(image[extra]) > np.median(image[labels.astype(bool) & ~extra])
    # chromocenters: bright spots inside nuclei, not outside
    dim = synth_nuclei(256, 5, _base(brightness=(0.3, 0.4)))[0].astype(float)
    spotted = synth_nuclei(256, 5, _base(brightness=(0.3, 0.4), chromocenters=1.5))[0].astype(float)
    assert np.percentile(spotted[inside], 99) > np.percentile(dim[inside], 99) + 20
    assert abs(np.median(spotted[~inside]) - np.median(dim[~inside])) <= 2
    # depth: some nuclei blurred more (their edges softer), the labels the same
    deep, deep_labels = synth_nuclei(256, 5, _base(depth_blur=5.0))
    assert np.array_equal(deep_labels, base_labels)
    from scipy import ndimage as ndi

    ring_in = inside & ~ndi.binary_erosion(inside, iterations=2)
    ring_out = ndi.binary_dilation(inside, iterations=2) & ~inside

    def edge_contrast(img):
        return img[ring_in].astype(float).mean() - img[ring_out].astype(float).mean()

    assert edge_contrast(deep) < 0.9 * edge_contrast(base_image)
    # vignetting: the corners darker than the centre, relative to the even image
    lit = synth_nuclei(256, 5, _base(vignetting=0.9))[0].astype(float)

    def corners(img):
        return np.r_[
            img[:20, :20].ravel(), img[-20:, -20:].ravel(), img[:20, -20:].ravel(), img[-20:, :20].ravel()
        ].mean()

    assert corners(lit) < 0.7 * corners(base_image.astype(float))
    # a 16-bit camera: dark offset, dim nuclei far below full scale, hot pixels that are not objects
    cam, cam_labels = synth_nuclei(
        256, 5, _base(bits=16, offset=0.002, full_scale=0.02, hot_pixels_per_mpx=300)
    )
    assert (
        cam.dtype == np.uint16
        and np.percentile(cam, 1) >= 0.002 * 65535 * 0.8
        and np.percentile(cam, 99) < 0.05 * 65535
    )
    assert (cam[cam_labels == 0] > 0.15 * 65535).sum() >= 5


def test_the_suite_domains_are_fixed_settings_with_pools_and_test_sets(tmp_path):
    from unetkit.data.domains import DOMAINS, POOL, TEST, synthesize_domain

    assert len(DOMAINS) >= 6 and all(d.what for d in DOMAINS.values())
    assert len({d.seed for d in DOMAINS.values()}) == len(DOMAINS)
    one = synthesize_domain("few-photons", tmp_path / "one", "pool", 1)
    five = synthesize_domain("few-photons", tmp_path / "five", "pool")
    test = synthesize_domain("few-photons", tmp_path / "test", "test")
    files = lambda d: sorted((d / "images").iterdir())  # noqa: E731
    assert len(files(five)) == POOL and len(files(test)) == TEST
    assert read_image(files(one)[0]).tobytes() == read_image(files(five)[0]).tobytes()  # the same first image
    assert read_image(files(test)[0]).tobytes() != read_image(files(five)[0]).tobytes()  # other seeds
    assert style_of("few-photons", 0) == DOMAINS["few-photons"].params  # a domain is a --style too
    with pytest.raises(DataError, match="unknown"):
        synthesize_domain("mars", tmp_path / "x")
