"""Self-configuration: the fingerprint measures the data, the plan follows it, `unetkit train` uses the plan."""

import pytest

from unetkit import plan_training, synthesize_dataset
from unetkit.errors import ConfigError, DataError
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
    with pytest.raises(DataError, match=r"dataset.yaml: spacing: expected a list of 3 positive numbers"):
        quick_plan(data)


def test_the_plan_says_what_the_network_learns_and_where_volumes_came_from(tmp_path):
    """Issue 32 item 9: a 3-class run's plan line said `targets foreground`; plan.yaml credited spatial_dims 3 to
    dataset.yaml when it came from the flag."""
    import numpy as np

    from unetkit import RunConfig, read_image, write_image

    data = synthesize_dataset(tmp_path / "c", n=3, size=64, seed=1)
    for mask in (data / "masks").iterdir():
        m = read_image(mask)
        write_image(
            mask, np.where(m > 0, 1 + (np.arange(m.shape[1]) >= 32), 0).astype(np.uint8), overwrite=True
        )
    cfg = RunConfig()
    cfg.data.mask_encoding, cfg.model.num_classes = "classes", 3
    plan = plan_training(data, device="cpu", calibrate=False, config=cfg)
    lines = {line.split()[0]: line for line in plan.summary().splitlines()}
    assert "the masks' 3 classes" in lines["targets"] and "foreground" not in lines["targets"]

    volumes = synthesize_dataset(tmp_path / "v", n=2, size=48, depth=16, seed=2)
    assert "dataset.yaml: spatial_dims 3" in quick_plan(volumes).reasons["model.spatial_dims"]
    (volumes / "dataset.yaml").unlink()
    given = RunConfig()
    given.model.spatial_dims, given.data.mask_encoding = 3, "instances"  # what the description said besides
    reason = plan_training(volumes, device="cpu", calibrate=False, config=given).reasons["model.spatial_dims"]
    assert reason == "volumes (given: --spatial-dims 3)"
