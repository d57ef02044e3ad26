"""Self-configuration: the fingerprint measures the data, the plan follows it, `unetkit train` uses the plan."""

import pytest

from unetkit import plan_training, synthesize_dataset
from unetkit.errors import ConfigError
from unetkit.planning import parse_duration


def quick_plan(data):
    return plan_training(data, device="cpu", calibrate=False)


def test_durations_are_parsed_with_units():
    assert parse_duration("5m") == 300 and parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert parse_duration("1.5h") == 5400 and parse_duration(None) is None
    for bad in ("5", "abc", "0m", "m"):
        with pytest.raises(ConfigError, match="--time-budget"):
            parse_duration(bad)


def test_spacing_in_dataset_yaml_is_read(tmp_path):
    data = synthesize_dataset(tmp_path / "v", n=2, size=48, depth=16, seed=2)
    descriptor = data / "dataset.yaml"
    descriptor.write_text(descriptor.read_text() + "spacing: [4.0, 1.0, 1.0]\n")
    plan = quick_plan(data)
    assert plan.fingerprint.spacing == [4.0, 1.0, 1.0] and plan.fingerprint.spacing_source == "dataset.yaml"
    assert plan.config.model.anisotropic_levels == 2  # 4 → 2 → 1: two in-plane-only poolings
    descriptor.write_text(descriptor.read_text().replace("[4.0, 1.0, 1.0]", "[4.0, 1.0]"))
    with pytest.raises(Exception, match="spacing must be a list of 3 numbers"):
        quick_plan(data)
