"""Shared fixtures: tiny synthetic datasets and one tiny trained run, built once per session."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from unetkit import DataConfig, ModelConfig, RunConfig, TrainConfig, synthesize_dataset, train

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory) -> None:
    """The tests' engine measurements and ONNX exports (``--engine auto``/``onnxruntime``) in a folder of their
    own, never the user's ``~/.cache/unetkit`` (the CLI's subprocesses inherit it)."""
    import os

    os.environ["UNETKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


#: the tiers, by folder: unit (in-process, about a minute), integration (real CLI, DDP, Dask, kills), slow
TIERS = ("unit", "integration", "slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets its folder's tier as a marker (``pytest -m unit``), so a test cannot sit in no tier."""
    for item in items:
        tier = next((t for t in TIERS if f"/tests/{t}/" in str(item.path)), None)
        assert tier is not None, f"{item.nodeid}: put the test in tests/unit, tests/integration or tests/slow"
        item.add_marker(getattr(pytest.mark, tier))


#: CLI flags for a U-Net small enough to train one or two steps in about a second.
TINY_CLI = [
    "--no-plan",
    "--epochs",
    "1",
    "--steps-per-epoch",
    "2",
    "--batch",
    "2",
    "--patch",
    "32",
    "--base-channels",
    "2",
    "--depth",
    "1",
    "--no-progress",
    "--device",
    "cpu",
]


def tiny_config(**train_kw) -> RunConfig:
    """A U-Net small enough to train for a few steps in about a second."""
    return RunConfig(
        model=ModelConfig(base_channels=4, depth=2),
        data=DataConfig(patch_size=48),
        train=TrainConfig(**{"epochs": 2, "batch_size": 2, "steps_per_epoch": 3, **train_kw}),
    )


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Six 64x64 synthetic images in the paired-folder layout."""
    return synthesize_dataset(tmp_path_factory.mktemp("data") / "tiny", n=6, size=64, seed=1)


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """A two-epoch training run on ``tiny_data``."""
    return train(tiny_data, tmp_path_factory.mktemp("runs") / "tiny", tiny_config(), progress=False)


@pytest.fixture(scope="session")
def unetkit_exe() -> str:
    """The installed console script (the real entry point), next to this interpreter."""
    exe = Path(sys.executable).with_name("unetkit")
    found = str(exe) if exe.exists() else shutil.which("unetkit")
    assert found, "the unetkit console script is not installed; run `make test`"
    return found
