"""--diameter: parsing, bounds, shapes that round-trip, and the diameter estimate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetkit import Predictor, UNet
from unetkit.errors import ConfigError
from unetkit.inference.scale import estimate_diameter, factor_for, parse_diameter, rescale, resize_to

PREP = {"in_channels": 1, "normalization": {"method": "percentile"}, "object_diameter": 16.0}


def test_diameter_values_are_checked_by_name():
    assert (
        parse_diameter(None) is None and parse_diameter("auto") == "auto" and parse_diameter("12.5") == 12.5
    )
    for bad in ("big", "-3", "0"):
        with pytest.raises(ConfigError, match="--diameter"):
            parse_diameter(bad)
    with pytest.raises(ConfigError, match="beyond"):
        factor_for(1.0, 16.0)


@pytest.mark.parametrize("shape", [(1, 37, 53), (2, 64, 31), (1, 9, 11, 13)])
@pytest.mark.parametrize("factor", [0.5, 1.7, 2.0])
def test_rescaled_probabilities_come_back_on_the_images_grid(shape, factor):
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    back = resize_to(rescale(x, factor), shape[1:])
    assert back.shape == shape and back.dtype == np.float32
    assert np.abs(back - x).mean() < 0.3  # the same content, blurred by two linear resamplings


@pytest.mark.parametrize("diameter", ["8", "31", "auto"])
def test_predictions_with_a_diameter_have_the_images_shape(diameter):
    torch.manual_seed(0)
    predictor = Predictor(UNet(depth=2, base_channels=4), PREP, device="cpu", tile=64, diameter=diameter)
    image = np.random.default_rng(1).integers(0, 255, (45, 70)).astype(np.uint8)
    assert predictor.predict_proba(image).shape == (1, 45, 70)
    assert predictor.predict_instances(image).shape == (45, 70)


def test_a_model_that_does_not_know_its_scale_refuses_a_diameter():
    prep = {k: v for k, v in PREP.items() if k != "object_diameter"}
    with pytest.raises(ConfigError, match="does not record the size"):
        Predictor(UNet(depth=1, base_channels=2), prep, device="cpu", diameter="20")


def test_the_estimate_is_the_median_object_diameter():
    yy, xx = np.mgrid[:200, :200]
    labels = np.zeros((200, 200), np.int32)
    for i, (cy, cx) in enumerate([(30, 30), (30, 120), (120, 60), (150, 150)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 10**2] = i  # discs of diameter ~20
    assert estimate_diameter(labels) == pytest.approx(20.0, abs=0.5)
    assert estimate_diameter(np.zeros((9, 9), np.int32)) is None
