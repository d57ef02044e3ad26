"""Overlap-tile inference at scale: blend geometry, the streaming engine, lazy input, on-disk output,
instances consistent across tiles and blocks, output formats, and the CLI."""

import itertools
import os
import subprocess

import numpy as np
import pytest
import tifffile
import torch
import zarr
from torch import nn

from unetkit import (
    ConfigError,
    DataError,
    Predictor,
    UNet,
    predict_files,
    read_image,
    synth_nuclei,
    write_image,
)
from unetkit.data.lazy import open_image
from unetkit.inference.blending import importance_map
from unetkit.inference.postprocess import instances_blockwise, instances_from_classes, watershed_instances
from unetkit.inference.tiling import plan_blend_axis, plan_blend_tiles, read_window
from unetkit.metrics.instance import match_instances

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


def test_stream_emits_each_row_once_in_order_in_bands_of_at_most_a_tile():
    predictor = Predictor(
        PointwiseNet(), {**PREP, "normalization": {"method": "none"}}, device="cpu", tile=32
    )
    image = np.random.default_rng(2).random((1, 300, 70)).astype(np.float32)
    calls = []
    predictor.stream(image, lambda y0, y1, rows: calls.append((y0, y1, rows.shape)))
    assert calls[0][0] == 0 and calls[-1][1] == 300
    assert all(a[1] == b[0] for a, b in itertools.pairwise(calls))  # contiguous, in order, once
    assert all(shape == (1, y1 - y0, 70) and 0 < y1 - y0 <= 32 for y0, y1, shape in calls)
    assert len(calls) > 5  # streamed, not one block at the end


@pytest.fixture(scope="module")
def trained(tiny_run):
    return Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu", tile=64, batch_size=3)


def test_padded_net_blended_tiles_match_a_full_image_pass_within_tolerance(tiny_run):
    """Stated tolerance: away from the image border (where the tiles see mirrored context and the full
    pass sees zero padding), Gaussian-blended 64-pixel tiles differ from one full-image forward pass by
    less than 0.01 on average and 0.1 at most in probability."""
    image, _ = synth_nuclei((192, 256), seed=4)
    predictor = Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu", tile=64)
    assert len(predictor.plan(image.shape)) > 12
    tiled = predictor.predict_proba(image)[0]
    with torch.inference_mode():
        full = torch.sigmoid(predictor.model(torch.from_numpy(predictor.prepare(image))[None]))[0, 0].numpy()
    inner = np.abs(tiled - full)[32:-32, 32:-32]
    assert inner.mean() < 0.01 and inner.max() < 0.1, (inner.mean(), inner.max())


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


def _inputs(tmp_path):
    image, _ = synth_nuclei((150, 230), seed=7)
    paths = {"png": write_image(tmp_path / "src" / "a.png", image)}
    tifffile.imwrite(tmp_path / "tiled.tif", image, tile=(64, 64), compression="zlib")  # read tile by tile
    tifffile.imwrite(tmp_path / "plain.tif", image)  # memory-mapped
    z = zarr.create_array(str(tmp_path / "img.zarr"), shape=image.shape, chunks=(64, 64), dtype=image.dtype)
    z[:] = image
    np.save(tmp_path / "arr.npy", image)
    paths.update(tiled=tmp_path / "tiled.tif", plain=tmp_path / "plain.tif", zarr=tmp_path / "img.zarr")
    paths["npy"] = tmp_path / "arr.npy"
    return image, paths


def test_lazy_sources_read_the_same_windows_as_the_array(tmp_path):
    image, paths = _inputs(tmp_path)
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


def test_large_path_on_disk_equals_in_memory_path(tiny_run, tmp_path):
    """Forcing the on-disk path (zarr work store, tiled TIFF output, blockwise instances) changes nothing."""
    _, paths = _inputs(tmp_path)
    ckpt = tiny_run.best_checkpoint
    kw = dict(save_probs="float32", instances=True, progress=False, tile=64, device="cpu", min_size=4)
    (small,) = predict_files(ckpt, [paths["png"]], tmp_path / "mem", **kw)
    for key in ("tiled", "zarr", "npy"):
        (big,) = predict_files(
            ckpt, [paths[key]], tmp_path / f"disk-{key}", max_pixels_in_memory=1000, object_context=40, **kw
        )
        assert big.mask.suffix == ".tif"
        np.testing.assert_array_equal(tifffile.imread(big.mask), read_image(small.mask))
        np.testing.assert_array_equal(tifffile.imread(big.probs), tifffile.imread(small.probs))
        a, b = tifffile.imread(small.instances), tifffile.imread(big.instances)
        assert big.objects == small.objects == a.max() > 3
        scores = match_instances(a, b)  # the same objects, possibly numbered differently
        assert scores.f1(0.99) == 1.0
    assert not list((tmp_path / "disk-tiled").glob(".*"))  # the work store is gone


def test_blockwise_instances_equal_global_ones_for_objects_crossing_blocks():
    _, truth = synth_nuclei((300, 280), seed=11)
    classes = (truth > 0).astype(np.uint8)
    expected = instances_from_classes(classes, "watershed")
    out = np.zeros(classes.shape, np.int32)

    def write(r, c, v):
        out[r, c] = v

    n = instances_blockwise(
        lambda r, c: classes[r, c],
        classes.shape,
        write,
        lambda cl: instances_from_classes(cl, "watershed"),
        block=64,
        context=40,
        out_read=lambda r, c: out[r, c],
    )
    crossing = sum(
        1
        for i in range(1, expected.max() + 1)
        if len({(y // 64, x // 64) for y, x in zip(*np.nonzero(expected == i), strict=True)}) > 1
    )
    assert crossing > 10  # many objects cross block borders
    assert n == expected.max() == out.max()
    assert match_instances(expected, out).f1(0.99) == 1.0  # same partition: no object split or merged


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
    objects = instances_from_classes(classes, "interior", min_size=4)
    assert objects.max() == 2 and (objects > 0).sum() == 200  # border pixels given back


# -- formats, overlay, CLI -------------------------------------------------------------------------------


def test_zarr_output_and_overlay(tiny_run, tmp_path):
    _, paths = _inputs(tmp_path)
    (res,) = predict_files(
        tiny_run.best_checkpoint,
        [paths["zarr"]],
        tmp_path / "o",
        format="zarr",
        save_probs="uint8",
        instances=True,
        overlay=True,
        progress=False,
        device="cpu",
        tile=64,
    )
    group = zarr.open_group(str(res.mask), mode="r")
    assert group["mask"].shape == (150, 230) and group["probs"].shape == (150, 230)
    assert group["probs"].dtype == np.uint8 and group["instances"].shape == (150, 230)
    overlay = read_image(res.overlay)
    assert overlay.shape == (150, 230, 3)
    assert (overlay[..., 0] != overlay[..., 1]).any()  # coloured contours on a gray image


def test_bad_options_fail_before_any_compute(tiny_run, tmp_path):
    _, paths = _inputs(tmp_path)
    with pytest.raises(DataError, match="too large to write as PNG"):
        predict_files(
            tiny_run.best_checkpoint,
            [paths["tiled"]],
            tmp_path / "x",
            format="png",
            max_pixels_in_memory=100,
            progress=False,
        )
    with pytest.raises(ConfigError, match="overlap"):
        predict_files(tiny_run.best_checkpoint, [paths["png"]], tmp_path / "x", overlap=1.5, progress=False)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_default_tile_comes_from_the_checkpoint(tiny_run):
    predictor = Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu")
    assert predictor.tile_in == 256  # trained on 48-pixel patches: at least 256


def test_cli_predict_instances_overlay_tiff(tiny_run, tmp_path, unetkit_exe):
    _, paths = _inputs(tmp_path)
    out = tmp_path / "cli"
    cmd = [unetkit_exe, "predict", str(tiny_run.best_checkpoint), str(paths["tiled"]), "--out", str(out)]
    cmd += ["--instances", "--overlay", "--format", "tiff", "--tile", "64", "--overlap", "0.5", "--tta"]
    cmd += ["--save-probs", "--device", "cpu", "--no-progress", "--min-size", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "object(s)" in done.stdout
    assert tifffile.imread(out / "tiled.tif").shape == (150, 230)
    assert tifffile.imread(out / "tiled_probs.tif").dtype == np.float16
    assert tifffile.imread(out / "tiled_instances.tif").max() >= 1
    assert (out / "tiled_overlay.png").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = subprocess.run([*cmd[:6], "--overlap", "2"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--overlap" in bad.stderr and "Traceback" not in bad.stderr


def test_overlay_of_a_large_image_adds_a_full_resolution_detail_and_files_are_world_readable(
    tiny_run, tmp_path
):
    image, _ = synth_nuclei((300, 500), seed=9)
    src = write_image(tmp_path / "wide.png", image)
    (res,) = predict_files(
        tiny_run.best_checkpoint, [src], tmp_path / "o", overlay=True, progress=False, device="cpu"
    )
    assert read_image(res.overlay).shape == (300, 500, 3)  # small: one panel, full resolution
    from unetkit.inference.outputs import overlay_picture as _overlay

    with open_image(src) as source:
        picture = _overlay(source, np.zeros((300, 500), np.int32), side=100, detail=64)
    assert picture.shape == (64, 100 + 8 + 64, 3)  # overview (stride 5) | 64-pixel detail
    umask = os.umask(0)
    os.umask(umask)
    assert res.mask.stat().st_mode & 0o777 == 0o666 & ~umask  # as any file the user writes, not owner-only


def test_bfloat16_fast_path_agrees_with_float32_and_auto_follows_the_cpu(tiny_run):
    from unetkit.inference.predictor import resolve_precision
    from unetkit.metrics import dice

    image, _ = synth_nuclei((96, 128), seed=12)
    fp32 = Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu", tile=64, precision="float32")
    bf16 = Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu", tile=64, precision="bfloat16")
    a, b = fp32.predict_proba(image), bf16.predict_proba(image)
    assert np.abs(a - b).max() < 0.05 and not np.array_equal(a, b)  # really computed in bfloat16
    assert dice(a[0] >= 0.5, b[0] >= 0.5) > 0.99
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto", torch.device("cpu")) == ("bfloat16" if native else "float32")
    with pytest.raises(ConfigError, match="precision"):
        Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu", precision="fp8")
