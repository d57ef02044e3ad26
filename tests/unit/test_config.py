import dataclasses
import re

import pytest

from unetkit import ConfigError, RunConfig, load_config
from unetkit.config import replace


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig()
    cfg.model.level_dropout = [0.1, 0.1, 0.2, 0.2, 0.3]
    cfg.model.norm = None
    cfg.to_yaml(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_partial_config_keeps_defaults_and_coerces_numbers(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  lr: 1\nmodel:\n  padding: valid\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.model.padding == "valid" and cfg.train.epochs == RunConfig().train.epochs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  epoch: 3\n", r"train: unknown key\(s\) \['epoch'\]; valid keys are .*'epochs'"),
        ("training:\n  epochs: 3\n", "unknown section"),
        ("train:\n  epochs: three\n", "train.epochs: expected an integer"),
        ("data:\n  augment: 1\n", "data.augment: expected true or false"),
        ("train: [1, 2\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_key_and_the_fix(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.yaml")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_replace_ignores_unset_flags():
    cfg = RunConfig().train
    assert replace(cfg, epochs=None, lr=0.5).epochs == cfg.epochs
    assert replace(cfg, epochs=None, lr=0.5).lr == 0.5


def test_dense_unet_options_reach_only_dense_unet(tmp_path):
    from unetkit.config import check_config
    from unetkit.models import create_model

    (tmp_path / "d.yaml").write_text(
        "model:\n  arch: dense-unet\n  growth_rate: 6\n  dense_layers: [2, 3, 4, 5, 6]\n  memory_efficient: true\n"
    )
    cfg = load_config(tmp_path / "d.yaml")
    check_config(cfg)
    net = create_model(cfg.model.arch, **{**cfg.model.kwargs(), "in_channels": 1, "num_classes": 1})
    assert net.hparams["dense_layers"] == [2, 3, 4, 5, 6] and net.hparams["growth_rate"] == 6
    plain = RunConfig()
    assert "growth_rate" not in plain.model.kwargs()  # a U-Net is built without them
    plain.model.memory_efficient = True
    with pytest.raises(ConfigError, match="--memory-efficient\\) is a dense-unet option.*--arch dense-unet"):
        check_config(plain)


@pytest.mark.parametrize(
    ("section", "name", "value", "said"),
    [
        ("data", "noise", float("nan"), r"data.noise \(--noise\) must be a finite number, got nan"),
        ("train", "lr", float("inf"), r"train.lr \(--lr\) must be a finite number, got inf"),
        ("data", "w0", float("nan"), r"data.w0 \(--w0\) must be a finite number"),
        ("train", "weight_decay", -1.0, r"train.weight_decay \(--weight-decay\) must be >= 0, got -1.0"),
        ("data", "w0", -5.0, r"data.w0 \(--w0\) must be >= 0, got -5.0"),
        ("data", "sigma", 0.0, r"data.sigma \(--sigma\) must be > 0, got 0.0"),
    ],
)
def test_non_finite_and_out_of_range_numbers_are_refused_by_name(section, name, value, said):
    """Before: --noise nan failed inside NumPy ('high - low range exceeds valid bounds'), --weight-decay -1 was
    an internal error from the optimiser, --w0 -5 and --sigma 0 made weight maps without a word, and
    `unetkit weights --w0 nan` crashed."""
    import dataclasses

    from unetkit.config import RunConfig, check_config

    cfg = RunConfig()
    setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **{name: value}))
    with pytest.raises(ConfigError, match=said):
        check_config(cfg)


def test_the_weights_command_checks_its_numbers_before_reading_a_mask(tmp_path, capsys):
    from unetkit.cli.main import main

    assert main(["weights", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "w"), "--w0", "nan"]) == 2
    assert "data.w0 (--w0) must be a finite number" in capsys.readouterr().err


def _ranged():
    from unetkit.cli.options import SECTIONS

    return [
        (section, f)
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if f.metadata.get("valid") is not None
    ]


def _outside(valid):
    """A value just outside ``valid`` (an int where the bound is whole), or None where there is none."""
    if valid.low is not None:
        return valid.low if valid.low_open else valid.low - (1 if float(valid.low).is_integer() else 1e-3)
    return valid.high if valid.high_open else valid.high + 1


def test_every_ranged_option_has_one_definition_that_the_check_and_the_help_both_follow():
    """Issue 33: an option's valid range is part of its one definition (config.option(valid=...)): the check
    refuses a value just outside it by name and flag, accepts its bounds where they are included, and the
    command's --help says the range. Before, the ranges lived in check_config, the executor and the prediction
    workflow as separate hand-written conditions (and the napari tile box stopped at 8192, the CLI at 16384)."""
    from unetkit.cli.main import build_parser
    from unetkit.cli.options import SECTIONS
    from unetkit.config import check_values

    ranged, offered = _ranged(), 0
    assert len(ranged) >= 45
    helps = {
        name: p.format_help() for name, p in build_parser()._subparsers._group_actions[0].choices.items()
    }
    for section, f in ranged:
        valid, flag = f.metadata["valid"], "--" + f.name.replace("_", "-")
        bad = _outside(valid)
        with pytest.raises(
            ConfigError, match=rf"{section}.{f.name} \({flag}\) must be {re.escape(str(valid))}"
        ):
            check_values(section, {f.name: bad}, SECTIONS[section])
        for bound, open_ in ((valid.low, valid.low_open), (valid.high, valid.high_open)):
            if bound is not None and not open_:
                check_values(section, {f.name: bound}, SECTIONS[section])  # an included bound is valid
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert default in valid, (section, f.name)  # the defaults themselves are valid
        entries = [
            m
            for h in helps.values()
            if (m := re.search(rf"\n  +{re.escape(flag)}\b(?!-)(.|\n)*?(?=\n  -|\n\n|\Z)", h))
        ]
        # every command that offers the flag (from this definition: its help text) says its range in its help
        entries = [e for e in entries if f.metadata["help"][:25] in " ".join(e.group(0).split())]
        for entry in entries:
            assert str(valid) in " ".join(entry.group(0).split()), (section, f.name, entry.group(0))
        offered += bool(entries)
    assert offered >= 30  # the check above ran on the flags the commands offer
