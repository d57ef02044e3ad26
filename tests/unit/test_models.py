import math

import pytest
import torch

from unetkit.models import InvalidSizeError, UNet, ValidGeometry, create_model, list_models

SAME_SIZES = [(1, 1), (17, 33), (64, 64), (63, 65), (100, 37), (128, 9)]


@pytest.mark.parametrize("up", ["transpose", "bilinear"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("size", SAME_SIZES)
def test_same_padding_returns_input_size(size, depth, up):
    net = UNet(in_channels=2, num_classes=3, depth=depth, base_channels=4, up=up, norm="batch").eval()
    with torch.no_grad():
        y = net(torch.randn(2, 2, *size))
    assert y.shape == (2, 3, *size)


@pytest.mark.parametrize("up", ["transpose", "bilinear"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("out_hw", [(1, 1), (5, 12), (20, 33), (44, 44)])
def test_valid_padding_output_size_matches_helpers(out_hw, depth, up):
    net = UNet(num_classes=2, depth=depth, base_channels=4, padding="valid", up=up).eval()
    in_hw = tuple(net.valid_input_size(o) for o in out_hw)
    with torch.no_grad():
        y = net(torch.randn(1, 1, *in_hw))
    expected = tuple(net.output_size(s) for s in in_hw)
    assert y.shape[-2:] == expected
    assert all(e >= o for e, o in zip(expected, out_hw, strict=True))
    # the helper gives the *smallest* valid input: one grid step less no longer covers the output
    for s, o in zip(in_hw, out_hw, strict=True):
        smaller = s - 2**depth
        assert not ValidGeometry(depth).is_valid(smaller) or net.output_size(smaller) < o


def test_valid_geometry_agrees_with_forward_for_every_size():
    geom = ValidGeometry(2)
    net = UNet(depth=2, base_channels=2, padding="valid").eval()
    for size in range(10, 60):
        if geom.is_valid(size):
            with torch.no_grad():
                assert net(torch.zeros(1, 1, size, size)).shape[-1] == geom.output_size(size)
        else:
            with pytest.raises(InvalidSizeError):
                geom.output_size(size)


def test_fit_gives_the_largest_valid_size_not_above():
    geom = ValidGeometry(4)
    assert geom.fit(572) == 572 and geom.fit(587) == 572 and geom.fit(588) == 588
    assert geom.fit(10) == geom.input_size(1)  # nothing fits below: the smallest valid size


def test_invalid_size_error_names_nearest_valid_sizes():
    net = UNet(depth=4, base_channels=2, padding="valid")
    with pytest.raises(InvalidSizeError, match=r"use 556 or 572") as info:
        net(torch.zeros(1, 1, 570, 572))
    assert "padding='same'" in str(info.value)


def test_he_initialisation_std():
    net = UNet(base_channels=64, depth=1, norm=None)
    conv = net.inc[1][0]  # second 3x3 conv: 64 -> 64, fan_in = 576
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0
    up = net.ups[0].up  # 2x2 stride-2 up-convolution: one input pixel per channel -> fan_in = in_channels
    assert up.weight.std().item() == pytest.approx(math.sqrt(2 / up.in_channels), rel=0.05)


def test_level_dropout_needs_one_rate_per_level():
    UNet(depth=2, base_channels=4, level_dropout=[0.1, 0.1, 0.2])
    with pytest.raises(ValueError, match="depth \\+ 1 = 3"):
        UNet(depth=2, base_channels=4, level_dropout=[0.1])


def test_norm_bias_and_unknown_layer_names():
    assert UNet(norm="group", base_channels=8, depth=1).inc[0][0].bias is None
    assert UNet(norm=None, base_channels=8, depth=1).inc[0][0].bias is not None
    with pytest.raises(ValueError, match="unknown norm"):
        UNet(norm="layer")
    with pytest.raises(ValueError, match="unknown activation"):
        UNet(act="swishy")


def test_backward_on_odd_size():
    net = UNet(base_channels=4, depth=3, norm="instance")
    x = torch.randn(2, 1, 45, 31, requires_grad=True)
    net(x).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())


def test_registry():
    assert "unet" in list_models()
    net = create_model("unet", base_channels=4, depth=1)
    assert isinstance(net, UNet) and net.hparams["base_channels"] == 4
    with pytest.raises(
        ValueError, match="available: attention-unet, dense-unet, residual-unet, unet, unet\\+\\+"
    ):
        create_model("vnet")
