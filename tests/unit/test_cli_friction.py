"""Issue 32 item 8: command-line friction a newcomer met (each test failed on the code before it)."""

from __future__ import annotations

import argparse

import pytest

from unetkit.cli.main import build_parser, main


def _commands():
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", list(_commands()))
def test_every_command_takes_no_progress(command):
    flags = {f for action in _commands()[command]._actions for f in action.option_strings}
    assert {"--progress", "--no-progress"} <= flags  # scripts pass it to every command; evaluate refused it


def test_an_unknown_flag_gets_the_commands_usage_and_the_nearest_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "nuclei", "x.tif", "--out", "y", "--instnces"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("usage: unetkit predict")  # the command's usage, not the top level's
    assert "--instnces (did you mean --instances?)" in err


@pytest.mark.parametrize("command", list(_commands()))
def test_the_help_cites_only_flags_that_exist(command):
    import re

    sub = _commands()[command]
    texts = [sub.description or "", sub.epilog or ""] + [str(a.help or "") for a in sub._actions]
    cited = {m for t in texts for m in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", t)}
    every = {f for c in _commands().values() for a in c._actions for f in a.option_strings}
    # a command's help may name another command's flag (e.g. `train --init` in predict's): it must exist somewhere
    assert cited <= every, sorted(
        cited - every
    )  # train's help cited --norm-low/--norm-high, which did not exist


def test_evaluate_takes_a_prediction_file_and_its_truth_file(tmp_path, capsys):
    """Issue 32 item 8: `evaluate PREDFILE GT` on two files said "not a model"."""
    import numpy as np

    from unetkit import read_image, synth_nuclei, write_image

    truth = synth_nuclei((64, 64), 0)[1]
    gt = write_image(tmp_path / "gt" / "a.png", ((truth > 0) * 255).astype(np.uint8))
    pred_mask = read_image(gt).copy()
    pred_mask[:, :8] = 0  # a prediction that misses a strip
    pred = write_image(tmp_path / "pred" / "a.png", pred_mask)
    assert main(["evaluate", str(pred), str(gt), "--no-progress"]) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("a "))
    inter = ((pred_mask > 0) & (truth > 0)).sum()
    dice = 2 * inter / ((pred_mask > 0).sum() + (truth > 0).sum())
    assert float(row[1]) == pytest.approx(dice, abs=1e-3) and dice < 1  # this pair's Dice, not an error
    assert main(["evaluate", str(pred), str(gt.parent), "--no-progress"]) == 2
    assert "is one file: give GT as its ground-truth mask file" in capsys.readouterr().err


def test_out_of_memory_names_the_options_of_the_command_that_ran_out():
    from unetkit.cli.main import describe_fault

    assert "--patch-size, --batch-size" in describe_fault(MemoryError(), "train")
    assert "--tile" not in describe_fault(MemoryError(), "train")  # prediction's options, not training's
    assert "--tile, --batch" in describe_fault(MemoryError(), "predict")
    assert "--size" in describe_fault(MemoryError(), "synth")
