"""The command line end to end, through the installed `unetkit` entry point."""

import json
import subprocess

import numpy as np
import pytest
import tifffile

from unetkit import read_image, synth_nuclei, write_image


def run(exe, *args, ok=True):
    proc = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_version_answers_before_heavy_imports(unetkit_exe):
    """`unetkit --version` (and `import unetkit`) import neither torch nor NumPy (issue 32: it took ~6 s)."""
    import sys

    from unetkit import __version__

    assert run(unetkit_exe, "--version").stdout.strip() == f"unetkit {__version__}"
    assert run(unetkit_exe, "-v", "--version").stdout.strip() == f"unetkit {__version__}"
    probe = (
        "import sys, contextlib, io\n"
        "import unetkit\n"
        "from unetkit.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['--version']) == 0\n"
        "assert out.getvalue().startswith('unetkit '), out.getvalue()\n"
        "print(sorted(m for m in ('torch', 'numpy', 'scipy') if m in sys.modules))\n"
        "unetkit.UNet  # the public names still resolve, on first use\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[]", "True"], proc.stdout


@pytest.mark.parametrize("command", [None, "demo", "synth", "train", "predict", "evaluate"])
def test_help_explains_every_option(unetkit_exe, command):
    proc = run(unetkit_exe, *([command] if command else []), "--help")
    assert "usage: unetkit" in proc.stdout
    if command == "train":
        for flag in (
            "--out",
            "--epochs",
            "--patch",
            "--batch",
            "--config",
            "--device",
            "--padding",
            "--overwrite",
        ):
            assert flag in proc.stdout
    if command == "predict":
        for flag in ("--out", "--save-probs", "--tile", "--threshold", "--tta"):
            assert flag in proc.stdout


def test_synth_train_predict_evaluate(unetkit_exe, tmp_path):
    data = tmp_path / "data"
    run(unetkit_exe, "synth", data, "--n", 5, "--size", 64, "--seed", 0)
    assert len(list((data / "images").glob("*.png"))) == 5
    assert read_image(data / "masks" / "synth_000.png").dtype == np.uint16

    run_dir = tmp_path / "run"
    proc = run(
        unetkit_exe,
        "train",
        data,
        "--no-plan",
        "--out",
        run_dir,
        "--epochs",
        2,
        "--steps-per-epoch",
        3,
        "--batch",
        2,
        "--patch",
        48,
        "--base-channels",
        4,
        "--depth",
        2,
        "--device",
        "cpu",
    )
    assert "best validation Dice" in proc.stdout
    assert "epoch 2/2" in proc.stderr  # the progress bar
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.csv", "curves.png"):
        assert (run_dir / name).is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents*"))

    image, _ = synth_nuclei((300, 517), seed=9)
    write_image(tmp_path / "big" / "odd.png", image)
    pred = tmp_path / "pred"
    run(
        unetkit_exe,
        "predict",
        run_dir / "best.pt",
        tmp_path / "big",
        data / "images" / "synth_000.png",
        "--out",
        pred,
        "--save-probs",
        "--tile",
        64,
    )
    assert read_image(pred / "odd.png").shape == (300, 517)
    assert tifffile.imread(pred / "odd_probs.tif").shape == (300, 517)

    proc = run(unetkit_exe, "evaluate", pred, data, "--json", tmp_path / "scores.json", ok=False)
    assert (
        proc.returncode == 2 and "no ground truth for 1 prediction" in proc.stderr
    )  # odd.png has no ground truth
    (pred / "odd.png").unlink()
    (pred / "odd_probs.tif").unlink()
    proc = run(unetkit_exe, "evaluate", pred, data, ok=False)
    assert proc.returncode == 2 and "no prediction for 4 of 5" in proc.stderr  # nothing skipped silently
    proc = run(unetkit_exe, "predict", run_dir, data, "--out", pred, "--save-probs", "--tile", 64, ok=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr  # synth_000 exists
    run(unetkit_exe, "predict", run_dir, data, "--out", pred, "--save-probs", "--tile", 64, "--resume")
    proc = run(unetkit_exe, "evaluate", pred, data, "--json", tmp_path / "scores.json")
    assert "synth_000" in proc.stdout and "mean" in proc.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["images"][0]["name"] == "synth_000" and 0 <= scores["mean"]["dice"] <= 1


def test_user_mistakes_give_one_clear_line_not_a_traceback(unetkit_exe, tmp_path):
    cases = [
        (["train", tmp_path / "missing", "--out", tmp_path / "r"], "missing: no such dataset folder"),
        (["train", tmp_path, "--out", tmp_path / "r"], "no known dataset layout"),
        (["predict", tmp_path / "none.pt", tmp_path, "--out", tmp_path / "p"], "no such model file"),
        (["evaluate", tmp_path / "a", tmp_path / "b"], "PRED"),
        (["train", tmp_path, "--out", tmp_path / "r", "--device", "cuda:7"], "--device"),
    ]
    (tmp_path / "fake.pt").write_text("not a checkpoint")
    write_image(tmp_path / "x.png", np.zeros((9, 9), np.uint8))
    cases.append((["predict", tmp_path / "fake.pt", tmp_path / "x.png", "--out", tmp_path / "p"], "fake.pt"))
    for args, message in cases:
        proc = run(unetkit_exe, *args, ok=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_train_reads_a_config_file_and_flags_win(unetkit_exe, tiny_data, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "model:\n  base_channels: 4\n  depth: 2\ntrain:\n  epochs: 5\n  steps_per_epoch: 2\n"
        "  batch_size: 2\ndata:\n  patch_size: 32\n"
    )
    run(
        unetkit_exe,
        "train",
        tiny_data,
        "--out",
        tmp_path / "run",
        "--config",
        cfg,
        "--epochs",
        1,
        "--no-progress",
    )
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "epochs: 1" in saved and "base_channels: 4" in saved and "patch_size: 32" in saved
    cfg.write_text("train:\n  epoch: 1\n")
    proc = run(unetkit_exe, "train", tiny_data, "--out", tmp_path / "run2", "--config", cfg, ok=False)
    assert proc.returncode == 2 and "unknown key(s) ['epoch']" in proc.stderr


def test_an_old_plans_budget_does_not_cap_a_run_whose_length_is_given(tiny_data, tmp_path, caplog):
    """Issue 32 item 6: DATA/plan.yaml silently carried its time cap into later --epochs runs."""
    import shutil

    from unetkit.cli.main import main
    from unetkit.config import load_config

    data = shutil.copytree(tiny_data, tmp_path / "data")
    assert main(["plan", str(data), "--no-measure", "--no-progress"]) == 0
    plan = data / "plan.yaml"  # as a measured 1-minute plan records its budget
    plan.write_text(plan.read_text().replace("\ntrain:\n", "\ntrain:\n  time_budget: 60.0\n", 1))
    assert load_config(plan).train.time_budget == 60
    run = tmp_path / "run"
    args = ["train", str(data), "--out", str(run), "--epochs", "1", "--steps-per-epoch", "1", "--no-progress"]
    with caplog.at_level("INFO", logger="unetkit"):
        assert main(args) == 0
    assert load_config(run / "config.yaml").train.time_budget is None
    assert "the plan's time budget (1m) does not cap it" in caplog.text
