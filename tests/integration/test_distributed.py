"""Distributed training: real torch.distributed process groups (gloo, 2 CPU processes)."""

from __future__ import annotations

import csv
import functools
import os
import subprocess

import pytest

from tests.conftest import tiny_config
from unetkit import ConfigError, UnetkitError, load_checkpoint, train
from unetkit.training.distributed import spawn


def ddp_config(epochs: int = 2):
    # group norm and a per-pixel loss: a step's gradient does not depend on how its batch is split;
    # a constant learning rate: extending the run on resume leaves the schedule as it was; float32 (amp off):
    # in bfloat16 a half batch rounds differently from the whole one (losses agree to ~0.3%, not to 1e-4)
    cfg = tiny_config(
        epochs=epochs,
        batch_size=4,
        steps_per_epoch=3,
        loss="bce",
        device="cpu",
        schedule="constant",
        amp=False,
    )
    cfg.model.norm, cfg.model.dropout = "group", 0.0
    return cfg


def test_two_gloo_processes_reproduce_the_single_process_run_and_resume(tiny_data, tmp_path, unetkit_exe):
    single = train(tiny_data, tmp_path / "single", ddp_config(), progress=False)
    ddp_config(epochs=1).to_yaml(tmp_path / "cfg.yaml")
    run = tmp_path / "ddp"
    base = [unetkit_exe, "train", str(tiny_data), "--nproc", "2", "--no-progress"]
    first = subprocess.run(
        [*base, "--out", str(run), "--config", str(tmp_path / "cfg.yaml")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("training finished") == 1  # rank 0 reports
    # rank 0 alone writes: one TensorBoard event file, one set of checkpoints, no leftovers
    assert len(list((run / "tb").glob("events.out.tfevents*"))) == 1
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["best.pt", "last.pt", "config.yaml", "metrics.csv", "curves.png", "tb"]
    )
    # a distributed run resumes (here: extended to the second epoch)
    resumed = subprocess.run(
        [*base, "--resume", str(run), "--epochs", "2"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # the same global batch, split between two ranks: the same loss curve and validation scores
    for row, ref in zip(rows, single.history, strict=True):
        assert float(row["train_loss"]) == pytest.approx(ref["train_loss"], rel=1e-4)
        assert float(row["val_dice"]) == pytest.approx(ref["val_dice"], abs=1e-4)
    assert load_checkpoint(run / "last.pt")["training"]["epoch"] == 2


def test_distributed_settings_are_checked_before_any_process_starts(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="split evenly between 3 processes"):
        train(tiny_data, tmp_path / "a", ddp_config(), progress=False, nproc=3)
    cfg = ddp_config()
    cfg.train.sync_bn = True
    with pytest.raises(ConfigError, match="--sync-bn needs CUDA"):
        train(tiny_data, tmp_path / "b", cfg, progress=False, nproc=2)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_process_that_dies_is_reported_in_one_line():
    # os.abort: a process killed by a signal, as a crashed backend leaves it
    with pytest.raises(UnetkitError, match=r"distributed training failed in process \d: .*SIGABRT"):
        spawn(2, os.abort)


def test_a_result_larger_than_a_pipe_buffer_comes_back():
    # a long run's history is larger than a pipe's 64 KiB: read while joining, or the processes never exit
    assert spawn(2, functools.partial(bytes, 300_000)) == bytes(300_000)
