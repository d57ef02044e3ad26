"""--diameter on the same images at 0.5x, 1x and 2x zoom, with a model trained at 1x (through the CLI)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from unetkit import (
    RunConfig,
    load_checkpoint,
    read_image,
    synth_nuclei,
    synthesize_dataset,
    train,
    write_image,
)
from unetkit.cli.main import main
from unetkit.config import DataConfig, ModelConfig, TrainConfig
from unetkit.metrics import match_instances

ZOOMS = (1 / 3, 0.5, 1.0, 2.0)


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    data = synthesize_dataset(root / "data", n=16, size=128, seed=3)
    cfg = RunConfig(
        model=ModelConfig(base_channels=8, depth=3),
        data=DataConfig(patch_size=96, target="border"),
        train=TrainConfig(epochs=8, steps_per_epoch=20, batch_size=8, device="cpu", lr=2e-3, patience=20),
    )
    return train(data, root / "run", cfg, progress=False)


def _zoomed(tmp_path, zoom):
    image, labels = synth_nuclei(256, seed=77)
    image = ndi.zoom(image.astype(np.float32), zoom, order=1).clip(0, 255).astype(np.uint8)
    labels = ndi.zoom(labels, zoom, order=0)
    path = write_image(tmp_path / f"x{zoom:g}" / "img.png", image)
    return path, labels


def _f1(run, path, truth, out, *extra):
    args = ["predict", str(run.best_checkpoint), str(path), "--out", str(out), "--instances", "--no-progress"]
    assert main([*args, "--device", "cpu", "--precision", "float32", *extra]) == 0
    return match_instances(truth, read_image(out / "img_instances.tif")).f1(0.5)


def test_diameter_keeps_instance_f1_across_zooms(scale_run, tmp_path):
    trained = load_checkpoint(scale_run.best_checkpoint)["preprocessing"]["object_diameter"]
    assert 8 < trained < 30  # the median object of the training masks, recorded
    plain, scaled, auto = {}, {}, {}
    for zoom in ZOOMS:
        path, truth = _zoomed(tmp_path, zoom)
        plain[zoom] = _f1(scale_run, path, truth, tmp_path / f"plain{zoom:g}")
        scaled[zoom] = _f1(
            scale_run, path, truth, tmp_path / f"d{zoom:g}", "--diameter", f"{trained * zoom:g}"
        )
        auto[zoom] = _f1(scale_run, path, truth, tmp_path / f"a{zoom:g}", "--diameter", "auto")
    print("F1@0.5 by zoom: plain", plain, "--diameter", scaled, "auto", auto)
    assert plain[1.0] > 0.7
    # the stated band: with the true diameter (or auto), F1 at 0.5x and 2x within 0.1 of 1x
    assert all(abs(scaled[z] - scaled[1.0]) <= 0.1 for z in (0.5, 2.0)), scaled
    assert all(abs(auto[z] - scaled[1.0]) <= 0.1 for z in (0.5, 2.0)), auto
    assert min(scaled[0.5], scaled[2.0]) >= min(plain[0.5], plain[2.0])  # never worse than without
    assert scaled[1 / 3] > plain[1 / 3] + 0.05 and auto[1 / 3] > plain[1 / 3] + 0.05  # far from 1x it pays
