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
