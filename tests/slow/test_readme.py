"""The docs' Python examples run verbatim, in an empty folder, through the installed package."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_example() -> str:
    text = (DOCS / "python.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


@pytest.mark.slow
def test_readme_python_example_runs_verbatim(tmp_path):
    code = python_example()
    assert "unetkit.train(" in code and "unetkit.evaluate(" in code  # the example a user would copy
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "truth read as 'instances' masks" in proc.stdout  # evaluate says how it read the truth
    assert re.search(r"F1 \d\.\d{3}, DSB score \d\.\d{3}", proc.stdout)
    for path in (
        "run/best.pt",
        "run/last.pt",
        "pred/synth_000.png",
        "pred/synth_000_instances.tif",
        "pred-2",
    ):
        assert (tmp_path / path).exists(), path


@pytest.mark.slow
def test_readme_predict_block_runs_verbatim_as_a_script(tmp_path):
    """Issue 32 item 7: the predict section's block had no import and no image, wrote pred/big.zarr twice (the
    second call stopped) and used dask=True without the __main__ guard a script needs; run as a user would."""
    text = (DOCS / "predict.md").read_text()
    start = text.index("The same is a `Predictor` on NumPy arrays")
    code = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    assert "dask=True" in code and 'if __name__ == "__main__":' in code
    (tmp_path / "block.py").write_text(code)
    proc = subprocess.run(
        [sys.executable, "block.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "objects; wrote pred/big.zarr and pred-dask/big.zarr" in proc.stdout
    for path in ("pred/big.zarr", "pred/big_overlay.png", "pred-dask/big.zarr"):
        assert (tmp_path / path).exists(), path


def test_readme_model_block_runs_verbatim_and_its_comments_are_true():
    """The third Python block (the paper's network) as pasted into a session: it runs, and the numbers its
    comments state are the network's (the 31M-parameter model is built: about a second)."""
    text = (DOCS / "python.md").read_text()
    start = text.index("\n## The model\n")
    code = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md: The model", "exec"), namespace)
    net = namespace["net"]
    params = sum(p.numel() for p in net.parameters())
    assert f"{params:,} parameters" in code
    sizes = (net.output_size(572), net.valid_input_size(388), net.margin)
    assert f"# {', '.join(map(str, sizes))}" in code
