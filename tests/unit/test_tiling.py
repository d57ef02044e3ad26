import itertools

import numpy as np
import pytest

from unetkit.inference.tiling import plan_axis, plan_tiles, read_window, reflect_indices

LENGTHS = [1, 5, 16, 17, 31, 64, 100, 129]
CASES = [
    (core, halo, margin, align)
    for core, halo, margin, align in itertools.product([16, 24, 48], [0, 4], [0, 6], [1, 8, 16])
    if core >= align
]


@pytest.mark.parametrize(("core", "halo", "margin", "align"), CASES)
def test_write_windows_partition_the_axis_from_inside_valid_regions(core, halo, margin, align):
    for length in LENGTHS:
        tiles = plan_axis(length, core, halo, margin, align)
        written = np.zeros(length, int)
        for t in tiles:
            assert t.read_stop - t.read_start == core + 2 * (halo + margin)
            assert (t.read_start + halo + margin) % align == 0  # tiles sit on the pooling grid
            written[t.write_start : t.write_stop] += 1
            # written pixels come from the tile's kept core, never from its halo
            assert halo <= t.crop_start and t.crop_start + (t.write_stop - t.write_start) <= halo + core
        assert (written == 1).all(), (length, core, halo, margin, align)


@pytest.mark.parametrize("fn", [lambda x: x, lambda x: 2 * x + 1], ids=["identity", "2x+1"])
@pytest.mark.parametrize(("core", "halo", "margin", "align"), CASES[::3])
def test_stitching_reproduces_pointwise_predictor_exactly(fn, core, halo, margin, align):
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (17, 5), (64, 100), (129, 31)]:
        image = rng.random((2, *shape)).astype(np.float32)
        out = np.full_like(image, np.nan)
        for tile in plan_tiles(shape, (core, core), halo, margin, align):
            window = read_window(image, tile.read)
            # a "valid" network loses `margin` on each side; what remains is the halo + core window
            pred = fn(window[:, margin : window.shape[1] - margin, margin : window.shape[2] - margin])
            out[(slice(None), *tile.write)] = pred[(slice(None), *tile.crop)]
        np.testing.assert_array_equal(out, fn(image))


@pytest.mark.parametrize("length", [1, 2, 3, 7])
def test_reflect_matches_numpy_pad_even_far_outside(length):
    a = np.arange(length) * 10
    for before, after in [(0, 0), (3, 2), (15, 20)]:
        got = a[reflect_indices(-before, length + after, length)]
        np.testing.assert_array_equal(
            got, np.pad(a, (before, after), mode="reflect" if length > 1 else "edge")
        )


def test_read_window_inside_is_a_plain_slice_and_outside_mirrors():
    img = np.arange(3 * 7 * 11, dtype=float).reshape(3, 7, 11)
    np.testing.assert_array_equal(read_window(img, [(2, 5), (1, 9)]), img[:, 2:5, 1:9])
    got = read_window(img, [(-5, 12), (-2, 20)])
    np.testing.assert_array_equal(got, np.pad(img, ((0, 0), (5, 5), (2, 9)), mode="reflect"))


def test_bad_plan_raises():
    with pytest.raises(ValueError):
        plan_axis(10, 8, align=16)
    with pytest.raises(ValueError):
        plan_axis(0, 8)


def test_an_image_one_tile_covers_gets_the_same_mirrored_border_context_at_every_tile_size():
    """A model fine-tuned on 128² patches segments with 256² tiles, the built-in model it started from with
    512² ones: on 256² images the first saw no mirrored context at the border (its tile was the image), the
    second 64 px, so the same weights scored F1 0.904 against 0.924 on `uneven` and fine-tuning looked like it
    hurt. The border context no longer depends on the tile: same plan, same probabilities."""
    import torch

    from unetkit.inference import Predictor
    from unetkit.inference.executor import BORDER_CELLS
    from unetkit.models import UNet

    torch.manual_seed(0)
    net = UNet(depth=3, base_channels=4, num_classes=3).eval()
    prep = {"in_channels": 1, "normalization": {"method": "percentile", "low": 1.0, "high": 99.8}}
    image = np.random.default_rng(0).random((96, 80)).astype(np.float32)
    small, large = Predictor(net, prep, tile=96, tta=False), Predictor(net, prep, tile=512, tta=False)
    context = BORDER_CELLS * 2**3
    for predictor in (small, large):
        (tile,) = predictor.executor.plan(image.shape)  # one tile, the image and the context around it
        for axis, n in zip(tile.axes, image.shape, strict=True):
            assert axis.read_start == -context and axis.read_stop >= n + context
    np.testing.assert_array_equal(small.predict_proba(image), large.predict_proba(image))
