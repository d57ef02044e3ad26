"""Overlap-tile inference at scale: blend geometry, the streaming engine, lazy input, on-disk output,
instances consistent across tiles and blocks, output formats, and the CLI."""

import itertools
import math

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from tests.builders import image_in_every_format
from unetkit import (
    DataError,
    Predictor,
    UNet,
    synth_nuclei,
)
from unetkit.data.lazy import open_image
from unetkit.inference.blending import importance_map
from unetkit.inference.postprocess import Split, instances_from_classes, watershed_instances
from unetkit.inference.tiling import plan_blend_axis, plan_blend_tiles, read_window

PREP = {"in_channels": 1, "normalization": {"method": "percentile", "low": 1.0, "high": 99.8}}

BLEND_CASES = [
    (size, overlap, context, align)
    for size, overlap, context, align in itertools.product([16, 48, 64], [0.0, 0.25, 0.5], [0, 8], [1, 8, 16])
    if size % align == 0 and context % align == 0
]


@pytest.mark.parametrize(("size", "overlap", "context", "align"), BLEND_CASES)
def test_blend_plan_covers_every_pixel_evenly_and_ends_flush(size, overlap, context, align):
    for length in [1, 2, 5, 16, 17, 63, 64, 65, 100, 257]:
        tiles = plan_blend_axis(length, size, overlap, context, align)
        covered = np.zeros(length, int)
        for t in tiles:
            assert t.read_stop - t.read_start == size
            assert (t.read_start + context) % align == 0  # on the pooling grid
            assert 0 <= t.write_start < t.write_stop <= length  # writes stay inside the image
            assert 0 <= t.crop_start and t.crop_start + t.write_stop - t.write_start <= size
            assert t.write_start - t.read_start == t.crop_start
            covered[t.write_start : t.write_stop] += 1
        assert (covered >= 1).all(), (length, size, overlap, context, align)
        c = -tiles[0].read_start  # mirrored context actually used at the borders
        assert 0 <= c <= context and c % align == 0
        assert len(tiles) == len(plan_blend_axis(length, size, overlap, 0, align))  # context never adds tiles
        if len(tiles) > 1:  # the last ends flush (within the grid step)
            assert length + c <= tiles[-1].read_stop < length + c + align
            gaps = [b.read_start - a.read_start for a, b in itertools.pairwise(tiles)]
            assert max(gaps) <= max(align, int(size * (1 - overlap)) // align * align)  # overlap kept
            assert max(gaps) - min(gaps) <= align  # evenly spaced
        else:
            assert tiles[0].read_stop >= length


@pytest.mark.parametrize("fn", [lambda x: x, lambda x: 2 * x + 1], ids=["identity", "2x+1"])
@pytest.mark.parametrize("mode", ["gaussian", "taper", "constant"])
def test_blended_stitching_reproduces_pointwise_predictor(fn, mode):
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 90), (17, 5), (64, 100), (129, 31)]:
        image = rng.random((2, *shape)).astype(np.float32)
        acc = np.zeros_like(image, np.float64)
        wsum = np.zeros(shape)
        tiles = plan_blend_tiles(shape, (32, 32), 0.25, (8, 8), 8)
        for tile in tiles:
            pred = fn(read_window(image, tile.read))
            weight = importance_map(pred.shape[-2:], mode)[tile.crop]
            acc[(slice(None), *tile.write)] += pred[(slice(None), *tile.crop)] * weight
            wsum[tile.write] += weight
        assert (wsum > 0).all()
        np.testing.assert_allclose(acc / wsum, fn(image), rtol=1e-6, atol=1e-6)


def test_importance_maps_are_positive_peaked_and_cached():
    g = importance_map((32, 48), "gaussian")
    assert g.max() == pytest.approx(1.0) and g.min() > 0 and g[16, 24] > g[0, 0]
    assert importance_map((32, 48), "gaussian") is g and not g.flags.writeable
    t = importance_map((16, 16), "taper", ramp=4)
    assert t[8, 8] == 1 and t[0, 0] < t[1, 1] < t[4, 4]
    with pytest.raises(ValueError, match="unknown"):
        importance_map((4, 4), "median")


class PointwiseNet(nn.Module):
    """A stand-in 'network' that is exactly pointwise: logits = 3 * x - 1 (binary model)."""

    num_classes, depth, margin, padding = 1, 2, 0, "same"

    def forward(self, x):
        return 3 * x - 1


@pytest.mark.parametrize("blend", ["gaussian", "taper", "crop"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 77), (45, 1), (130, 200)])
def test_streamed_prediction_of_a_pointwise_net_is_exact(shape, blend):
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    predictor = Predictor(
        PointwiseNet(), {**PREP, "normalization": {"method": "none"}}, device="cpu", tile=32, blend=blend
    )
    expected = 1 / (1 + np.exp(-(3 * image - 1)))
    np.testing.assert_allclose(predictor.predict_proba(image)[0], expected, atol=1e-6)


@pytest.mark.parametrize("overlap", [0.25, None])
def test_stream_emits_each_row_once_in_order_in_bands_of_at_most_a_tile(overlap):
    predictor = Predictor(
        PointwiseNet(), {**PREP, "normalization": {"method": "none"}}, device="cpu", tile=32, overlap=overlap
    )
    image = np.random.default_rng(2).random((1, 300, 70)).astype(np.float32)
    calls = []
    predictor.stream(image, lambda y0, y1, rows: calls.append((y0, y1, rows.shape)))
    assert calls[0][0] == 0 and calls[-1][1] == 300
    assert all(a[1] == b[0] for a, b in itertools.pairwise(calls))  # contiguous, in order, once
    # None: tiles sized per image, at most the pixels of one batch of 32² tiles (4 of them: 64 a side)
    side = 32 if overlap else predictor.executor.max_side
    assert all(shape == (1, y1 - y0, 70) and 0 < y1 - y0 <= side for y0, y1, shape in calls)
    assert len(calls) > 3  # streamed, not one block at the end


def test_valid_net_tta_is_exact_average_of_transformed_images():
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4, padding="valid", norm="batch").eval()
    predictor = Predictor(net, PREP, device="cpu", tile=net.valid_input_size(20))
    image = np.random.default_rng(3).random((20, 20)).astype(np.float32)  # one output tile, symmetric context
    x = predictor.prepare(image)
    manual = np.zeros((1, 20, 20))
    for k in range(4):
        for flip in (False, True):
            view = np.ascontiguousarray(np.rot90(x[..., ::-1] if flip else x, k, axes=(-2, -1)))
            p = np.rot90(predictor.predict_proba(view, prepared=True), -k, axes=(-2, -1))
            manual += (p[..., ::-1] if flip else p) / 8
    np.testing.assert_allclose(predictor.predict_proba(image, tta=True), manual, atol=1e-6)


def test_multichannel_and_thin_inputs():
    torch.manual_seed(0)
    net = UNet(in_channels=3, depth=2, base_channels=4).eval()
    predictor = Predictor(net, {**PREP, "in_channels": 3}, device="cpu", tile=32)
    for shape in [(1, 1, 3), (1, 50, 3), (70, 2, 3), (40, 90, 3)]:
        image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
        assert predictor.predict_proba(image).shape == (1, *shape[:2])


# -- lazy input and on-disk output -------------------------------------------------------------------


def test_lazy_sources_read_the_same_windows_as_the_array(tmp_path):
    image, paths = image_in_every_format(tmp_path)
    for key, path in paths.items():
        with open_image(path) as src:
            assert src.shape == (1, 150, 230), key
            np.testing.assert_array_equal(
                read_window(src, [(-5, 40), (200, 240)])[0],
                read_window(image[None], [(-5, 40), (200, 240)])[0],
            )
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 20, 20, 2), np.uint8), photometric="minisblack")
    with pytest.raises(DataError, match="stack"):
        open_image(tmp_path / "stack.tif")


def test_watershed_splits_touching_disks_and_interior_components_regrow_their_border():
    yy, xx = np.mgrid[:40, :70]
    two = ((yy - 20) ** 2 + (xx - 22) ** 2 < 100) | ((yy - 20) ** 2 + (xx - 39) ** 2 < 100)
    labels = watershed_instances(two)
    assert labels.max() == 2 and (labels > 0).sum() == two.sum()
    one = (yy - 20) ** 2 + (xx - 30) ** 2 < 144
    assert watershed_instances(one).max() == 1
    classes = np.zeros((20, 40), np.uint8)
    classes[5:15, 5:15] = 2
    classes[6:14, 6:14] = 1
    classes[5:15, 20:30] = 2
    classes[6:14, 21:29] = 1
    objects = instances_from_classes(classes, "interior", split=Split(min_size=4))
    assert objects.max() == 2 and (objects > 0).sum() == 200  # border pixels given back


# -- formats, overlay, CLI -------------------------------------------------------------------------------


# -- one memory rule, one format rule (issue 32 item 5) -----------------------------------------------------


@pytest.mark.parametrize("instances", [False, True])
def test_memory_never_rises_as_an_image_shrinks(instances):
    """The in-memory path is taken only while it costs at most the allowance more than streaming: the estimated
    bytes of the path chosen never fall by more than the allowance as the image grows (a fixed 64-megapixel switch held an 8000² image with
    instances whole at 3.2 GB, while 8200² streamed at 1.3 GB)."""
    from unetkit.inference.pipeline import IN_MEMORY_ALLOWANCE, streams, whole_bytes

    predictor = Predictor.from_pretrained("nuclei")
    assert streams(predictor, (8000, 8000), instances)  # the image of the report, streamed now
    assert not streams(predictor, (2048, 2048), instances)  # an ordinary image stays whole (faster)
    chosen = []
    for side in range(256, 12000, 64):
        shape = (side, side)
        big = streams(predictor, shape, instances)
        need = predictor.streamed_bytes(shape) if big else whole_bytes(predictor, shape, instances)
        chosen.append(need + (IN_MEMORY_ALLOWANCE if big else 0))
    assert all(b >= a for a, b in itertools.pairwise(chosen))
    old = [whole_bytes(predictor, (s, s), instances) for s in (8000, 8192)]  # the old switch: 1.9 GB fell
    assert old[0] - predictor.streamed_bytes((8200, 8200)) > IN_MEMORY_ALLOWANCE or not instances
    assert streams(predictor, (100, 100), instances, max_pixels=99)  # the explicit pixel switch still decides


def test_default_format_is_one_rule_of_the_mask_size_not_of_the_memory_path():
    from unetkit.inference.outputs import PNG_MAX_PIXELS, default_format

    assert default_format(8000, 8000, 1) == "png"  # streamed now, and still PNG
    assert default_format(8200, 8200, 1) == "tiff"  # past what Pillow-based readers open
    assert default_format(100, 100, 5) == "tiff"  # a stack of pages
    assert 8000 * 8000 < PNG_MAX_PIXELS < 8200 * 8200


@pytest.mark.parametrize(
    "dtype, shape", [(np.uint8, (1300, 777)), (np.uint16, (1030, 513)), (np.uint8, (600, 301, 3))]
)
def test_png_written_band_by_band_reads_back_exactly(tmp_path, dtype, shape):
    """A streamed mask's PNG (written band by band, never whole) is the array, for Pillow as for unetkit."""
    from PIL import Image

    from unetkit import read_image
    from unetkit.inference.writers import save

    rng = np.random.default_rng(0)
    arr = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    arr[:300] = arr[:1]  # repeated rows, as masks have
    path = save(
        tmp_path / "m.png", [(lambda r, c: arr[r, c], arr.shape, np.dtype(dtype))], "png", in_memory=False
    )
    np.testing.assert_array_equal(read_image(path), arr)
    with Image.open(path) as im:
        assert im.size == (shape[1], shape[0])
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary left


# -- the default plan: overlap from the network's context, tiles sized per image (issue 36) -------------------


def _pixels(tiles) -> int:
    return sum(math.prod(a.read_stop - a.read_start for a in t.axes) for t in tiles)


@pytest.mark.parametrize("shape", [(4096, 4096), (520, 696), (1500, 300), (2048, 2049), (256, 256)])
def test_default_plan_overlaps_by_the_networks_context_and_never_computes_more(shape):
    from unetkit.inference.executor import BORDER_CELLS

    auto = Predictor.from_pretrained("nuclei").executor
    fixed = Predictor.from_pretrained("nuclei", overlap=0.25).executor
    assert auto.auto and not fixed.auto
    context = BORDER_CELLS * auto.align  # 64 px at depth 4
    tiles = auto.plan(shape)
    for k, n in enumerate(shape):
        axis = sorted({(t.axes[k].read_start, t.axes[k].read_stop) for t in tiles})
        assert axis[0][0] == -context and axis[-1][1] >= n + context  # the border context, mirrored
        assert all(b[0] <= a[1] - 2 * context for a, b in itertools.pairwise(axis))  # each seam: 2 x context
        assert all(start % auto.align == 0 for start, _ in axis)  # on the pooling grid
    sides = auto._tile_sides(shape)
    assert math.prod(sides) * auto.batch_for(sides) <= 512 * 512 * 4  # no more pixels per pass than before
    assert _pixels(tiles) <= _pixels(fixed.plan(shape))
    assert all(
        t.axes[k].read_stop - t.axes[k].read_start == 512 for t in fixed.plan(shape) for k in (0, 1)
    ) or (min(shape) <= 512)  # a given --overlap keeps tiles of --tile


def test_default_plan_on_a_4096_image_computes_a_quarter_fewer_pixels_with_the_same_mask():
    auto = Predictor.from_pretrained("nuclei").executor
    fixed = Predictor.from_pretrained("nuclei", overlap=0.25).executor
    assert auto.auto_sides((4096, 4096)) == [(960, 5), (960, 5)]  # 11 x 11 tiles of 512 before
    assert _pixels(auto.plan((4096, 4096))) <= 0.75 * _pixels(fixed.plan((4096, 4096)))
    image = synth_nuclei((1100, 700), 3)[0]
    new, old = Predictor.from_pretrained("nuclei"), Predictor.from_pretrained("nuclei", overlap=0.25)
    assert len(new.executor.plan(image.shape)) < len(old.executor.plan(image.shape))
    assert np.mean(new.predict(image) != old.predict(image)) < 1e-3  # seams moved, the mask did not


def test_volumes_valid_networks_and_crop_keep_the_fixed_overlap():
    for net, kw in (
        (UNet(spatial_dims=3, depth=2, base_channels=2), {}),
        (UNet(depth=2, base_channels=2, padding="valid"), {}),
        (UNet(depth=2, base_channels=2), {"blend": "crop"}),
    ):
        predictor = Predictor(net.eval(), PREP, device="cpu", tile=64, **kw)
        assert not predictor.executor.auto and predictor.executor.overlap == 0.25
