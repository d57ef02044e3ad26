"""Overlap-tile inference at scale: blend geometry, the streaming engine, lazy input, on-disk output,
instances consistent across tiles and blocks, output formats, and the CLI."""

import os
import subprocess

import numpy as np
import pytest
import tifffile
import torch
import zarr

from tests.builders import image_in_every_format
from unetkit import (
    ConfigError,
    DataError,
    Predictor,
    predict_files,
    read_image,
    synth_nuclei,
    write_image,
)
from unetkit.data.lazy import open_image
from unetkit.metrics.instance import match_instances


@pytest.fixture(scope="module")
def trained(tiny_run):
    return Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu", tile=64, batch_size=3)


@pytest.mark.parametrize("overlap, tiles", [(0.25, 12), (None, 4)])
def test_padded_net_blended_tiles_match_a_full_image_pass_within_tolerance(tiny_run, overlap, tiles):
    """Stated tolerance: away from the image border (where the tiles see mirrored context and the full
    pass sees zero padding), Gaussian-blended tiles (64 pixels overlapping by a quarter, or the default plan's
    within the pixels of 4 of them, overlapping by the network's context) differ from one full-image forward
    pass by less than 0.01 on average and 0.1 at most in probability."""
    image, _ = synth_nuclei((192, 256), seed=4)
    predictor = Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu", tile=64, overlap=overlap)
    assert len(predictor.plan(image.shape)) > tiles
    tiled = predictor.predict_proba(image)[0]
    with torch.inference_mode():
        full = torch.sigmoid(predictor.model(torch.from_numpy(predictor.prepare(image))[None]))[0, 0].numpy()
    inner = np.abs(tiled - full)[32:-32, 32:-32]
    assert inner.mean() < 0.01 and inner.max() < 0.1, (inner.mean(), inner.max())


# -- lazy input and on-disk output -------------------------------------------------------------------


def test_large_path_on_disk_equals_in_memory_path(tiny_run, tmp_path):
    """Forcing the on-disk path (zarr work store, tiled TIFF output, blockwise instances) changes nothing."""
    _, paths = image_in_every_format(tmp_path)
    ckpt = tiny_run.best_checkpoint
    kw = dict(save_probs="float32", instances=True, progress=False, tile=64, device="cpu", min_size=4)
    (small,) = predict_files(ckpt, [paths["png"]], tmp_path / "mem", **kw)
    for key in ("tiled", "zarr", "npy"):
        (big,) = predict_files(
            ckpt, [paths[key]], tmp_path / f"disk-{key}", max_pixels_in_memory=1000, object_context=40, **kw
        )
        assert big.mask.suffix == ".png"  # streamed, written band by band, and the same format as in memory
        np.testing.assert_array_equal(read_image(big.mask), read_image(small.mask))
        np.testing.assert_array_equal(tifffile.imread(big.probs), tifffile.imread(small.probs))
        a, b = tifffile.imread(small.instances), tifffile.imread(big.instances)
        assert big.objects == small.objects == a.max() > 1  # several objects (a 2-epoch model: blobs)
        scores = match_instances(a, b)  # the same objects, possibly numbered differently
        assert scores.f1(0.99) == 1.0
    assert not list((tmp_path / "disk-tiled").glob(".*"))  # the work store is gone


# -- formats, overlay, CLI -------------------------------------------------------------------------------


def test_zarr_output_and_overlay(tiny_run, tmp_path):
    _, paths = image_in_every_format(tmp_path)
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
    _, paths = image_in_every_format(tmp_path)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.stack([read_image(paths["png"])] * 3), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(DataError, match="a stack of 3 pages; use --format tiff"):
        predict_files(tiny_run.best_checkpoint, [stack], tmp_path / "x", format="png", progress=False)
    with pytest.raises(ConfigError, match="overlap"):
        predict_files(tiny_run.best_checkpoint, [paths["png"]], tmp_path / "x", overlap=1.5, progress=False)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_default_tile_comes_from_the_checkpoint(tiny_run):
    predictor = Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu")
    assert predictor.tile_in == 256  # trained on 48-pixel patches: at least 256


def test_cli_predict_instances_overlay_tiff(tiny_run, tmp_path, unetkit_exe):
    _, paths = image_in_every_format(tmp_path)
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
