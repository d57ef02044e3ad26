"""The bench scripts stay runnable: they import and parse their options (their numbers come from `make bench`)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize(
    "script",
    [
        "run_all.py",
        "border_weights.py",
        "training_precision.py",
        "tiled_inference.py",
        "architectures.py",
        "peers.py",
        "dask_inference.py",
        "plan.py",
        "memory_rule.py",
        "newcomer.py",
        "pretrained.py",
        "generator_ablation.py",
        "tiling.py",
    ],
)
def test_bench_script_imports(script):
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
