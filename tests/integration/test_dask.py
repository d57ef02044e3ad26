"""Distributed tiled inference on a real Dask LocalCluster (2 worker processes) over real zarr stores."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import zarr

from unetkit import ConfigError, predict_files, synth_nuclei

pytest.importorskip("distributed", reason="the [dask] extra is not installed")

SETTINGS = {
    "tile": 128,
    "device": "cpu",
    "precision": "float32",
}  # the default plan: tiles up to 256, seams of 128


def test_dask_prediction_equals_the_single_process_one(tmp_path, unetkit_exe):
    # the built-in model: objects of nuclei's size, within the block context (a 2-epoch model predicts blobs)
    image = synth_nuclei((300, 260), seed=5)[0]
    src = tmp_path / "big.zarr"
    zarr.save_array(str(src), image)
    chunk = 96  # 4 x 3 chunks: many objects cross chunk borders
    common = {"format": "zarr", "instances": True, "save_probs": "float32", "progress": False, **SETTINGS}
    single = predict_files("nuclei", [src], tmp_path / "single", **common)[0]
    ref = zarr.open_group(str(single.mask), mode="r")

    # the CLI, on a LocalCluster of 2 worker processes
    done = subprocess.run(
        [
            unetkit_exe,
            "predict",
            "nuclei",
            str(src),
            "--out",
            str(tmp_path / "dask"),
            "--dask",
            "--dask-workers",
            "2",
            "--chunk",
            str(chunk),
            "--instances",
            "--save-probs",
            "float32",
            "--tile",
            str(SETTINGS["tile"]),
            "--device",
            "cpu",
            "--precision",
            "float32",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    got = zarr.open_group(str(tmp_path / "dask" / "big.zarr"), mode="r")
    assert got["mask"].chunks == (chunk, chunk)  # written chunk by chunk
    np.testing.assert_array_equal(got["mask"][:], ref["mask"][:])  # the semantic result, exactly
    np.testing.assert_allclose(got["probs"][:], ref["probs"][:], atol=1e-5)
    labels, ref_labels = got["instances"][:], ref["instances"][:]
    assert int(labels.max()) == int(ref_labels.max()) == single.objects > 20
    assert f"{single.objects} object(s)" in done.stdout
    np.testing.assert_array_equal(labels, ref_labels)  # one algorithm: identical IDs with and without Dask
    # the objects table too (summed chunk by chunk); probabilities agree to 1e-5, so confidences nearly exactly
    import csv

    def table(path):
        return {int(r["label"]): r for r in csv.DictReader(open(path, encoding="utf-8"))}

    mine, theirs = (
        table(tmp_path / "dask" / "big_objects.csv"),
        table(tmp_path / "single" / "big_objects.csv"),
    )
    assert set(mine) == set(theirs) and len(mine) == single.objects
    for k, row in theirs.items():
        assert (mine[k]["area"], mine[k]["bbox_y0"], mine[k]["bbox_x1"]) == (
            row["area"],
            row["bbox_y0"],
            row["bbox_x1"],
        )
        assert abs(float(mine[k]["confidence"]) - float(row["confidence"])) < 2e-3, k
    crossing = [
        set(np.unique(labels[y - 1])) & set(np.unique(labels[y])) - {0} for y in range(chunk, 300, chunk)
    ]
    assert all(crossing)  # objects on both sides of every horizontal chunk border keep one ID


def test_dask_settings_are_checked_before_a_cluster_starts(tiny_run, tmp_path):
    src = tmp_path / "x.zarr"
    zarr.save_array(str(src), synth_nuclei(64, 0)[0])
    with pytest.raises(ConfigError, match="--dask writes zarr"):
        predict_files(tiny_run.best_checkpoint, [src], tmp_path / "o", dask=True, format="png", **SETTINGS)
    with pytest.raises(ConfigError, match="--chunk"):
        predict_files(tiny_run.best_checkpoint, [src], tmp_path / "o", dask=True, chunk=8, **SETTINGS)
    with pytest.raises(ConfigError, match="no Dask scheduler"):
        predict_files(tiny_run.best_checkpoint, [src], tmp_path / "o", dask="tcp://127.0.0.1:9", **SETTINGS)


def test_dask_predicts_volumes_chunk_by_chunk_like_one_process(tmp_path):
    from unetkit import (
        DataConfig,
        ModelConfig,
        RunConfig,
        TrainConfig,
        synth_nuclei_3d,
        synthesize_dataset,
        train,
    )

    data = synthesize_dataset(tmp_path / "vols", n=3, size=40, depth=12, seed=2)
    cfg = RunConfig(
        model=ModelConfig(base_channels=4, depth=2, spatial_dims=3),
        data=DataConfig(patch_size=24, patch_depth=8),
        train=TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, device="cpu"),
    )
    ckpt = train(data, tmp_path / "run", cfg, progress=False).best_checkpoint
    volume = synth_nuclei_3d((40, 64, 64), seed=7)[0]
    src = tmp_path / "vol.zarr"
    zarr.save_array(str(src), volume)
    common = {"format": "zarr", "instances": True, "progress": False, "tile": 32, "device": "cpu"}
    single = predict_files(ckpt, [src], tmp_path / "single", precision="float32", **common)[0]
    dask = predict_files(
        ckpt, [src], tmp_path / "dask", dask=True, dask_workers=2, chunk=32, precision="float32", **common
    )[0]
    ref = zarr.open_group(str(single.mask), mode="r")
    got = zarr.open_group(str(dask.mask), mode="r")
    assert got["mask"].shape == volume.shape and got["mask"].chunks == (32, 32, 32)  # 2 x 2 x 2 chunk tasks
    np.testing.assert_array_equal(got["mask"][:], ref["mask"][:])
    assert dask.objects == len(np.unique(ref["instances"][:])) - 1
    np.testing.assert_array_equal(got["instances"][:], ref["instances"][:])
