"""The field's metrics against hand-computed cases, brute-force references and scikit-image."""

import json
import subprocess

from tests.builders import instance_dataset_with_errors

# -- semantic ----------------------------------------------------------------------------------------------


# -- instance ----------------------------------------------------------------------------------------------


# -- boundary ----------------------------------------------------------------------------------------------


# -- ISBI 2012 -----------------------------------------------------------------------------------------------


# -- evaluate, CSV, JSON, report, CLI ------------------------------------------------------------------------


def test_cli_evaluate_files_and_model(tiny_run, tiny_data, tmp_path, unetkit_exe):
    gt, pred = instance_dataset_with_errors(tmp_path)
    done = subprocess.run(
        [
            unetkit_exe,
            "evaluate",
            str(pred),
            str(gt),
            "--csv",
            str(tmp_path / "a.csv"),
            "--report",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "mode: instance" in done.stdout and "dsb_score" in done.stdout
    assert (tmp_path / "r" / "index.html").exists() and (tmp_path / "a.csv").exists()
    model = subprocess.run(
        [
            unetkit_exe,
            "evaluate",
            str(tiny_run.best_checkpoint),
            str(tiny_data),
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "m.json"),
            "--mode",
            "instance",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert model.returncode == 0, model.stderr
    scores = json.loads((tmp_path / "m.json").read_text())
    assert scores["mode"] == "instance" and len(scores["images"]) == 6
    bad = subprocess.run(
        [unetkit_exe, "evaluate", str(pred), str(gt), "--mode", "rand"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
