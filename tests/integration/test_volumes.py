"""3-D throughout: volume files, 3-D patches and augmentation, training, prediction and evaluation."""

import json
import subprocess

import tifffile

from tests.conftest import TINY_CLI
from unetkit.checkpoint import load_checkpoint


def test_train_predict_evaluate_volumes_through_the_cli(tmp_path, unetkit_exe):
    data = tmp_path / "vol"

    def run(*args):
        done = subprocess.run([unetkit_exe, *map(str, args)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done

    run("synth", data, "--n", "5", "--size", "40", "--depth", "12", "--seed", "3")
    assert (data / "images" / "synth_000.tif").exists()
    tiny = [a for a in TINY_CLI]
    tiny[tiny.index("--patch") + 1] = "24"
    run(
        "train",
        data,
        "--out",
        tmp_path / "run",
        *tiny,
        "--patch-depth",
        "8",
        "--elastic",
        "--arch",
        "residual-unet",
    )
    payload = load_checkpoint(tmp_path / "run" / "best.pt")
    assert payload["model"]["hparams"]["spatial_dims"] == 3  # from DATA/dataset.yaml
    run(
        "predict",
        tmp_path / "run" / "best.pt",
        data / "images",
        "--out",
        tmp_path / "pred",
        "--instances",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert tifffile.imread(tmp_path / "pred" / "synth_000.tif").shape == (12, 40, 40)
    run("evaluate", tmp_path / "pred", data, "--json", tmp_path / "s.json", "--report", tmp_path / "r")
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["mode"] == "instance" and len(scores["images"]) == 5
    assert all(0 <= img["dice"] <= 1 and img["n_true"] > 0 for img in scores["images"])
    assert (tmp_path / "r" / "synth_000_errors.png").exists()
