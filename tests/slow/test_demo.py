"""The acceptance check of the demo: slow (about two minutes), run by `make test` after the fast suite."""

import json
import subprocess

import pytest


@pytest.mark.slow
def test_demo_reaches_dice_090_on_held_out_images(unetkit_exe, tmp_path):
    proc = subprocess.run(
        [unetkit_exe, "demo", "--out", tmp_path / "demo", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    scores = json.loads((tmp_path / "demo" / "scores.json").read_text())
    assert scores["mean"]["dice"] >= 0.90, scores["mean"]
    assert len(scores["images"]) == 8
    assert len(list((tmp_path / "demo" / "overlays").glob("*.png"))) == 8
    assert (tmp_path / "demo" / "run" / "curves.png").is_file()
    assert "mean Dice" in proc.stdout
