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
        ("train", "weight_decay", -1.0, "train.weight_decay must be >= 0, got -1.0"),
        ("data", "w0", -5.0, r"data.w0 \(--w0\) must be >= 0 and data.sigma \(--sigma\) > 0 pixels"),
        ("data", "sigma", 0.0, r"data.sigma \(--sigma\) > 0 pixels, got w0=10.0, sigma=0.0"),
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
