"""Issue 34, the loop from the command line, as a user runs it: predict with objects tables, review the least
confident, correct them (here: with the true labels, as a careful user paints), fine-tune on the corrections, and
review again: a second round that skips what was corrected."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np

from unetkit import read_image, write_image
from unetkit.workflows.painted import IGNORED


def _cli(*args, ok=True):
    done = subprocess.run(
        [sys.executable, "-m", "unetkit", *map(str, args), "--no-progress"], capture_output=True, text=True
    )
    assert (done.returncode == 0) == ok, done.stderr[-2000:]
    return done


def test_predict_review_correct_and_fine_tune_from_the_command_line(tmp_path):
    data, pred, corr = tmp_path / "data", tmp_path / "pred", tmp_path / "corrected"
    _cli("synth", data, "--n", "2", "--size", "192", "--style", "nucleoli", "--seed", "7")
    _cli("predict", "nuclei", data / "images", "--instances", "--out", pred)
    said = _cli("review", pred, "--below", "1", "--most", "6", "--images", data, "--corrections", corr,
                "--sheet", tmp_path / "sheet.png").stdout  # fmt: skip
    assert "6 of" in said and "round 1 of corrections" in said and (tmp_path / "sheet.png").is_file()
    with open(corr / "review.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["round"] for r in rows} == {"1"}
    for r in {
        (r["file"], r["image"], int(r["y_offset"]), int(r["x_offset"])) for r in rows
    }:  # the user corrects
        file, image, y0, x0 = r
        mask = read_image(corr / "masks" / file)
        truth = read_image(data / "masks" / f"{image}.png")[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        write_image(
            corr / "masks" / file, np.where(mask != IGNORED, truth, IGNORED).astype(np.uint32), overwrite=True
        )
    checked = _cli("check-data", corr).stdout
    assert f"ignoring value {IGNORED}" in checked  # the unreviewed pixels are left out, as dataset.yaml says
    run = tmp_path / "run"
    trained = _cli(
        "train", corr, "--init", "nuclei", "--time-budget", "40s", "--out", run
    )  # 25 s: refused once (13 s of start-up + an epoch of 12 s)
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert metrics[1].startswith("0,")  # the starting model validated first: best.pt is never worse than it
    assert "best checkpoint" in trained.stdout and (run / "best.pt").is_file()
    again = _cli(
        "review", pred, "--below", "1", "--most", "6", "--images", data, "--corrections", corr
    ).stdout
    assert "round 2 of corrections" in again and "corrected in earlier rounds" in again
    with open(corr / "review.csv", encoding="utf-8", newline="") as f:
        second = [r for r in csv.DictReader(f) if r["round"] == "2"]
    assert second and not {(r["image"], r["label"]) for r in second} & {
        (r["image"], r["label"]) for r in rows
    }


def test_review_mistakes_are_one_line_with_the_fix(tmp_path):
    done = _cli("review", tmp_path, ok=False)
    assert done.returncode == 2 and "--instances" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "a_objects.csv").write_text("label,confidence\n1,2.5\n")
    done = _cli("review", tmp_path, ok=False)
    assert done.returncode == 2 and "a_objects.csv" in done.stderr and "Traceback" not in done.stderr
