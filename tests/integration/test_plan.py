"""Self-configuration: the fingerprint measures the data, the plan follows it, `unetkit train` uses the plan."""

import subprocess

import numpy as np
import pytest
import yaml

from tests.conftest import tiny_config
from unetkit import RunConfig, TrainConfig, load_config, plan_training, synthesize_dataset, train
from unetkit.data.io import read_image, write_image, write_volume
from unetkit.data.synthetic import SynthParams, synth_nuclei_3d
from unetkit.errors import ConfigError
from unetkit.planning import read_plan
from unetkit.planning.rules import receptive_field


def synth(path, n=4, size=128, seed=0, **params):
    return synthesize_dataset(path, n=n, size=size, seed=seed, params=SynthParams(**params))


def quick_plan(data):
    return plan_training(data, device="cpu", calibrate=False)


def test_larger_objects_give_a_larger_patch_and_a_deeper_net(tmp_path):
    small = quick_plan(synth(tmp_path / "small", size=256, radius=(3.0, 5.0), nuclei_per_mpx=800.0))
    large = quick_plan(
        synth(tmp_path / "large", size=256, radius=(16.0, 24.0), nuclei_per_mpx=100.0, clusters_per_mpx=20.0)
    )
    fs, fl = small.fingerprint, large.fingerprint
    assert fs.diameter_p95 < 12 < 30 < fl.diameter_p95  # measured from the masks
    assert large.config.data.patch_size > small.config.data.patch_size
    assert large.config.model.depth > small.config.model.depth
    for plan in (
        small,
        large,
    ):  # the receptive field covers 2x the large objects; the bottleneck stays >= 4 px
        f, depth = plan.fingerprint, plan.config.model.depth
        assert receptive_field(depth) >= 2 * f.diameter_p95 > receptive_field(depth - 1) or depth == 2
        assert plan.config.data.patch_size // 2**depth >= 4


def test_touching_objects_turn_on_the_border_class_and_weight_maps(tmp_path):
    sparse = quick_plan(synth(tmp_path / "sparse", nuclei_per_mpx=150.0, clusters_per_mpx=0.0))
    crowded = quick_plan(synth(tmp_path / "crowded", nuclei_per_mpx=100.0, clusters_per_mpx=400.0))
    assert sparse.fingerprint.touching_fraction < 0.05 < crowded.fingerprint.touching_fraction
    assert crowded.fingerprint.touching_pairs > 20
    assert (sparse.config.data.target, sparse.config.data.weight_map) == ("foreground", False)
    assert (crowded.config.data.target, crowded.config.data.weight_map) == ("border", True)
    assert "touch" in crowded.reasons["data.target"]


def test_bit_depth_changes_the_fingerprint_not_the_choices(tmp_path):
    eight = synth(tmp_path / "eight", seed=3)
    sixteen = synthesize_dataset(tmp_path / "sixteen", n=4, size=128, seed=3)  # the same images, as 12-bit
    for path in sorted((sixteen / "images").iterdir()):
        image = read_image(path).astype(np.uint16) * 16
        path.unlink()
        write_image(path.with_suffix(".tif"), image)
    p8, p16 = quick_plan(eight), quick_plan(sixteen)
    assert (p8.fingerprint.dtype, p8.fingerprint.bits) == ("uint8", 8)
    assert (p16.fingerprint.dtype, p16.fingerprint.bits) == ("uint16", 12)
    assert p16.fingerprint.intensity[0]["p99.5"] == pytest.approx(16 * p8.fingerprint.intensity[0]["p99.5"])
    # per-image percentile normalisation: bit depth and scale change nothing downstream
    assert p8.config.data.normalization == p16.config.data.normalization == "percentile"
    assert p8.config.to_dict() == p16.config.to_dict()


def test_volumes_get_a_3d_plan_and_coarse_z_keeps_early_poolings_in_plane(tmp_path):
    iso = synthesize_dataset(tmp_path / "iso", n=3, size=64, depth=32, seed=1)
    coarse = tmp_path / "coarse"
    for i in range(3):  # the same nuclei sampled every 3rd slice: objects 3x flatter in z
        volume, labels = synth_nuclei_3d((12, 64, 64), seed=i, z_spacing=3.0, radius=(6.0, 9.0))
        write_volume(coarse / "images" / f"v{i}.tif", volume)
        write_volume(coarse / "masks" / f"v{i}.tif", labels)
    (coarse / "dataset.yaml").write_text("layout: paired\nmask_encoding: instances\nspatial_dims: 3\n")
    flat = quick_plan(coarse)
    iso_plan = quick_plan(iso)
    two_d = quick_plan(synth(tmp_path / "twod"))
    assert iso_plan.config.model.spatial_dims == 3 and two_d.config.model.spatial_dims == 2
    assert iso_plan.config.data.patch_depth is not None
    # volumes cost more per patch: narrower and smaller batches on the CPU, then instance norm
    assert iso_plan.config.model.base_channels < two_d.config.model.base_channels
    assert iso_plan.config.train.batch_size < two_d.config.train.batch_size
    assert iso_plan.config.model.norm == "instance"
    assert flat.fingerprint.z_extent_ratio > 2 > iso_plan.fingerprint.z_extent_ratio
    assert flat.config.model.anisotropic_levels >= 1 and iso_plan.config.model.anisotropic_levels == 0
    assert flat.config.data.patch_depth < flat.config.data.patch_size


def test_plan_cli_writes_reasons_and_train_uses_it_with_flags_winning(tiny_data, tmp_path, unetkit_exe):
    data = tmp_path / "data"
    synthesize_dataset(data, n=6, size=64, seed=1)
    run = [unetkit_exe, "plan", str(data), "--time-budget", "2m", "--device", "cpu", "--no-progress"]
    done = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = (data / "plan.yaml").read_text()
    assert "training" in done.stdout and "plan.yaml" in done.stdout
    # every planned value carries its reason as a comment
    raw = yaml.safe_load(text)
    lines = {ln.split(":")[0].strip(): ln for ln in text.splitlines() if ln.startswith("  ")}
    for section in ("model", "data", "train"):
        assert raw[section], section
        for key in raw[section]:
            assert "  # " in lines[key], lines[key]
    measured = raw["measured"]
    assert measured["step_seconds"] > 0 and measured["validation_seconds"] > 0
    # the measured epoch time fills the budget
    cfg, info = read_plan(data / "plan.yaml")
    used = cfg.train.epochs * info["measured"]["epoch_seconds"] + info["measured"]["startup_seconds"]
    assert 0.7 * 120 <= used <= 120 and cfg.train.time_budget == 120
    again = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--overwrite" in again.stderr

    out = tmp_path / "run"
    flags = ["--epochs", "1", "--steps-per-epoch", "2", "--patch", "32", "--no-progress", "--device", "cpu"]
    trained = subprocess.run(
        [unetkit_exe, "train", str(data), "--out", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    used_cfg = load_config(out / "config.yaml")
    assert used_cfg.model.depth == cfg.model.depth and used_cfg.data.target == cfg.data.target
    assert used_cfg.model.base_channels == cfg.model.base_channels
    assert (used_cfg.train.epochs, used_cfg.data.patch_size) == (1, 32)  # flags win
    # the plan file is a config file too
    assert load_config(data / "plan.yaml").model.depth == cfg.model.depth


def test_train_plans_on_the_fly_and_refuses_an_impossible_budget(tmp_path, unetkit_exe):
    data = synthesize_dataset(tmp_path / "fresh", n=5, size=64, seed=4)
    base = [unetkit_exe, "train", str(data), "--no-progress", "--device", "cpu"]
    short = subprocess.run([*base, "--time-budget", "1s"], capture_output=True, text=True, timeout=300)
    assert short.returncode == 2 and "give at least" in short.stderr and "Traceback" not in short.stderr
    assert not (data / "plan.yaml").exists()
    done = subprocess.run(
        [*base, "--time-budget", "1m", "--epochs", "1", "--steps-per-epoch", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (data / "plan.yaml").is_file() and "no " in done.stderr and "planning" in done.stderr
    assert (tmp_path / "runs" / "fresh" / "best.pt").is_file()  # the default run folder
    # a bad flag is refused before any planning
    bad = subprocess.run(
        [*base, "--weight-map", "--loss", "dice"], capture_output=True, text=True, cwd=tmp_path
    )
    assert bad.returncode == 2 and "weight_map" in bad.stderr


def test_a_plan_rebudgets_from_its_measurements(tmp_path):
    data = synthesize_dataset(tmp_path / "d", n=5, size=64, seed=5)
    plan = plan_training(data, device="cpu", time_budget="2m")
    longer = plan.with_budget(600)
    assert longer.config.train.epochs > 4 * plan.config.train.epochs * 0.9
    assert longer.config.train.time_budget == 600 and "10m" in longer.reasons["train.epochs"]
    quick = plan_training(data, device="cpu", time_budget="2m", calibrate=False)
    with pytest.raises(ConfigError, match="no measured epoch time"):
        quick.with_budget(600)


def test_training_stops_before_an_epoch_would_overrun_the_time_budget(tiny_data, tmp_path):
    import numpy as np

    first = train(tiny_data, tmp_path / "probe", tiny_config(epochs=2), progress=False)
    epoch, start = first.history[-1]["seconds"], first.history[0]["elapsed"] - first.history[0]["seconds"]
    cfg = tiny_config(epochs=50, time_budget=start + 3.5 * epoch, patience=100)
    result = train(tiny_data, tmp_path / "run", cfg, progress=False)
    rows, budget = result.history, cfg.train.time_budget
    n = len(rows)
    assert 1 <= n < 50

    def expected(done):  # the next epoch: the median of those trained, the first (warming up) left out
        seconds = [r["seconds"] for r in done]
        return float(np.median(seconds[1:] if len(seconds) > 1 else seconds))

    # every epoch after the first started only because the clock (the whole command's time), plus the
    # expected epoch, fitted in the budget; the run stopped when the next one would not (its saves: < 1 s)
    for k in range(1, n):
        assert rows[k - 1]["elapsed"] + expected(rows[:k]) <= budget
    assert rows[-1]["elapsed"] + expected(rows) > budget - 1.0
    with pytest.raises(ConfigError, match="time_budget"):
        train(tiny_data, tmp_path / "bad", RunConfig(train=TrainConfig(time_budget=-1.0)), progress=False)


def test_the_plan_measures_and_keeps_the_architecture_asked_for(tmp_path, unetkit_exe):
    from unetkit.checkpoint import load_checkpoint

    data = synthesize_dataset(tmp_path / "data", n=6, size=64, seed=1)
    plan = [unetkit_exe, "plan", str(data), "--no-measure", "--device", "cpu", "--no-progress"]
    refused = subprocess.run([*plan, "--growth-rate", "8"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--arch dense-unet" in refused.stderr
    assert not (data / "plan.yaml").exists()
    dense = ["--arch", "dense-unet", "--growth-rate", "8", "--memory-efficient"]
    done = subprocess.run([*plan, *dense], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "dense-unet depth" in done.stdout
    cfg, _ = read_plan(data / "plan.yaml")
    assert (cfg.model.arch, cfg.model.growth_rate, cfg.model.memory_efficient) == ("dense-unet", 8, True)
    assert "measured on it" in (data / "plan.yaml").read_text()
    out = tmp_path / "run"
    flags = ["--epochs", "1", "--steps-per-epoch", "2", "--patch", "32", "--no-progress", "--device", "cpu"]
    trained = subprocess.run(
        [unetkit_exe, "train", str(data), "--out", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    model = load_checkpoint(out / "best.pt")["model"]
    assert model["name"] == "dense-unet" and model["hparams"]["growth_rate"] == 8


def test_a_dataset_plan_that_cannot_serve_a_run_stays_and_the_run_plans_its_own(tmp_path, caplog):
    """A first run of fixed length (``--epochs``) writes ``DATA/plan.yaml`` without measured times; a later
    ``--time-budget`` run was refused ("plan again", though the user never planned), and a fine-tune read the
    plan of a network it does not train. Each now plans its own run, beside it in OUT, and says why; the
    dataset's plan is left as it was."""
    import logging

    from unetkit.cli.main import main

    data = synthesize_dataset(tmp_path / "d", n=4, size=64, seed=8)
    tiny = ["--base-channels", "4", "--depth", "2", "--patch", "48", "--batch", "2", "--no-progress"]
    assert main(["train", str(data), "--out", str(tmp_path / "fixed"), "--epochs", "1", "--steps-per-epoch", "2", *tiny]) == 0  # fmt: skip
    written = (data / "plan.yaml").read_bytes()
    with caplog.at_level(logging.INFO, logger="unetkit"):
        assert (
            main(["train", str(data), "--out", str(tmp_path / "budget"), "--time-budget", "25s", *tiny]) == 0
        )
    assert "has no measured epoch time" in caplog.text and "this run plans its own" in caplog.text
    _, info = read_plan(tmp_path / "budget" / "plan.yaml")
    assert info["measured"].get("epoch_seconds")  # measured for this run
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unetkit"):
        assert main(["train", str(data), "--out", str(tmp_path / "tuned"), "--init", "nuclei", "--epochs", "1", "--steps-per-epoch", "2", "--no-progress"]) == 0  # fmt: skip
    assert "was made for training from scratch, not a fine-tune of nuclei" in caplog.text
    cfg, _ = read_plan(tmp_path / "tuned" / "plan.yaml")  # planned for the network it fine-tunes
    from unetkit import load_checkpoint
    from unetkit.pretrained import pretrained_path

    assert (
        cfg.model.base_channels
        == load_checkpoint(pretrained_path("nuclei"))["model"]["hparams"]["base_channels"]
    )
    assert (data / "plan.yaml").read_bytes() == written  # the dataset's plan untouched
