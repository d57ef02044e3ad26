"""Fine-tuning never ends worse than its start, and a time budget is one clock: through the real CLI and API.

- ``--init``: the starting model is validated before the first step (epoch 0 in metrics.csv, TensorBoard, the
  log); ``best.pt`` is the starting model, bitwise, when no epoch beats it; a resumed fine-tuning run keeps it.
- ``--time-budget``: planned for an ``--init`` run from a probe of a few steps (no measured run), counted from
  the command's start; the log's last line splits the time and adds up to the wall time.
"""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
import threading
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY_CLI, tiny_config
from unetkit import load_checkpoint, synthesize_dataset, train
from unetkit.checkpoint import build_model
from unetkit.cli.main import main
from unetkit.pretrained import pretrained_path
from unetkit.training.loop import TrainHooks, TrainingInterrupted

#: the line that ends a training log: "time: T s = planning a + preparation b + ..."
SPLIT = re.compile(
    r"time: (\d+) s = planning (\d+) \+ preparation (\d+) \+ training (\d+) \+ validation (\d+) \+ saving (\d+)"
)


def rows(run) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def nuclei_data(tmp_path_factory):
    """Four default-style synthetic images (instance masks): the built-in model segments them well already."""
    return synthesize_dataset(tmp_path_factory.mktemp("ft") / "data", n=4, size=96, seed=77)


def test_a_fine_tune_whose_every_epoch_is_worse_ends_with_the_starting_model(nuclei_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", str(nuclei_data), "--init", "nuclei", "--target", "border", "--out", str(out)]
    # a learning rate that wrecks the weights in a step: every epoch validates worse than the start
    args += [*TINY_CLI, "--epochs", "2", "--patch", "64", "--lr", "0.05", "--optimizer", "adam"]
    assert main(args) == 0
    captured = capsys.readouterr()
    table = rows(out)
    assert [int(r["epoch"]) for r in table] == [0, 1, 2]
    assert math.isnan(float(table[0]["train_loss"]))  # epoch 0: validated, not trained
    assert all(float(r["val_dice"]) < float(table[0]["val_dice"]) for r in table[1:])
    # best.pt follows the held-out objects' panoptic quality (instance masks), worse too
    assert all(float(r["val_pq"]) < float(table[0]["val_pq"]) for r in table[1:])
    assert "no epoch clearly beat the starting model (validation PQ (objects)" in captured.err
    assert "best validation PQ (objects)" in captured.out
    assert "at epoch 0 (the starting model)" in captured.out
    # best.pt holds the starting model's weights bitwise (float32, as loaded), with this run's preprocessing
    best = load_checkpoint(out / "best.pt")
    start = build_model(load_checkpoint(pretrained_path("nuclei"))).state_dict()
    assert set(best["state_dict"]) == set(start)
    for key, value in start.items():
        assert torch.equal(best["state_dict"][key], value), key
    assert best["training"]["epoch"] == 0 and best["training"]["data"] == str(nuclei_data)
    assert best["preprocessing"]["encoding"]["target"] == "border"
    # TensorBoard: epoch 0's validation is there, its (absent) training loss is not
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("dice/val")] == [0, 1, 2]
    assert [e.step for e in acc.Scalars("pq/val")] == [0, 1, 2]
    assert [e.step for e in acc.Scalars("loss/train")] == [1, 2]
    assert (out / "curves.png").stat().st_size > 0


def test_a_resumed_fine_tuning_run_keeps_epoch_0_and_ends_as_an_uninterrupted_one(
    tiny_data, tiny_run, tmp_path
):
    cfg = tiny_config(epochs=3, init=str(tiny_run.run_dir), lr=2e-4)
    whole = train(tiny_data, tmp_path / "whole", cfg, progress=False)
    stop = threading.Event()

    def after(row):
        if row["epoch"] == 1:
            stop.set()

    with pytest.raises(TrainingInterrupted):
        train(tiny_data, tmp_path / "cut", cfg, progress=False, hooks=TrainHooks(stop=stop, on_epoch=after))
    assert [int(r["epoch"]) for r in rows(tmp_path / "cut")] == [0, 1]
    resumed = train(tiny_data, tmp_path / "cut", resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [h["epoch"] for h in whole.history] == [0, 1, 2, 3]
    assert resumed.best_epoch == whole.best_epoch
    for name in ("best.pt", "last.pt"):
        a = load_checkpoint(tmp_path / "whole" / name)["state_dict"]
        b = load_checkpoint(tmp_path / "cut" / name)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_small_budget_plans_from_a_probe_not_a_measured_run(
    tiny_data, tiny_run, tmp_path, monkeypatch, caplog
):
    import unetkit.workflows.plan as plan

    calls = []
    real = plan._calibrate
    monkeypatch.setattr(plan, "_calibrate", lambda *a, **k: calls.append(a) or real(*a, **k))
    data = tmp_path / "data"  # a copy: the plan of a fine-tuning run must not land in the dataset
    synthesize_dataset(data, n=3, size=64, seed=5)
    caplog.set_level("INFO")
    out = tmp_path / "run"
    args = ["train", str(data), "--init", str(tiny_run.run_dir), "--time-budget", "20s", "--out", str(out)]
    assert main([*args, "--no-progress", "--device", "cpu"]) == 0
    assert calls == []  # no separate measured run
    assert "a probe of 3 steps of the starting model" in caplog.text
    planned = (out / "plan.yaml").read_text()
    assert "timing: a probe of 3 real steps" in planned and "the starting model's (--init" in planned
    assert not (data / "plan.yaml").exists()
    assert int(rows(out)[0]["epoch"]) == 0  # epoch 0: the starting model
    # a longer budget, or no starting model, is planned from the measured run (on the network that trains)
    fine = plan.plan_training(data, time_budget="20m", config=tiny_config(init=str(tiny_run.run_dir)))
    assert len(calls) == 1 and calls[0][1].model.depth == fine.config.model.depth == 2  # the tiny run's
    assert fine.measured["timing"].startswith("a measured run")
    scratch = plan.plan_training(data, time_budget="1m", config=tiny_config())  # a short budget: a probe too
    assert len(calls) == 1 and scratch.measured["timing"].startswith("a probe")


def test_the_logged_time_split_adds_up_to_the_wall_time(tiny_data, tmp_path, unetkit_exe):
    t0 = time.perf_counter()
    done = subprocess.run(
        [unetkit_exe, "train", str(tiny_data), "--out", str(tmp_path / "run"), *TINY_CLI, "--epochs", "3"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    found = SPLIT.search(done.stderr)
    assert found, done.stderr
    total, *parts = (int(v) for v in found.groups())
    assert abs(sum(parts) - total) <= 3  # five parts, each rounded
    assert parts[2] > 0 or parts[3] >= 0
    assert abs(total - wall) <= 3, (total, wall)  # from the process's start, imports included


def test_fine_tuning_through_the_api_validates_the_start_too(tiny_data, tiny_run, tmp_path):
    result = train(
        tiny_data, tmp_path / "t", tiny_config(epochs=1, init=str(tiny_run.best_checkpoint)), progress=False
    )
    assert [h["epoch"] for h in result.history] == [0, 1] and result.trained_epochs == 1
    assert sys.float_info.max > result.history[0]["val_dice"] >= 0
