"""Small building blocks shared by every U-Net variant.

Layers are chosen by string through tiny maps (``NORMS``, ``ACTIVATIONS``), never by if-ladders, so a
config value such as ``norm="batch"`` maps to exactly one constructor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "ConvNormAct",
    "DoubleConv",
    "Down",
    "Up",
    "center_crop",
    "he_init_",
    "make_activation",
    "make_norm",
]


def _group_norm(channels: int) -> nn.Module:
    # 8 groups (or fewer for narrow layers) as in Wu & He 2018; must divide the channel count.
    groups = math.gcd(channels, 8)
    return nn.GroupNorm(groups, channels)


NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
    "group": _group_norm,
}

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "gelu": nn.GELU,
}


def make_norm(name: str | None, channels: int) -> nn.Module:
    """Return the normalisation layer called ``name`` (``None`` gives an identity)."""
    if name is None:
        return nn.Identity()
    try:
        return NORMS[name](channels)
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; choose one of {sorted(NORMS)} or None") from None


def make_activation(name: str) -> nn.Module:
    """Return the activation called ``name``."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class ConvNormAct(nn.Sequential):
    """3x3 convolution → optional normalisation → activation.

    ``padding=0`` is the paper's unpadded ("valid") convolution, which shrinks each side by one pixel.
    The convolution has a bias only when there is no normalisation after it (a norm's shift replaces it).
    """

    def __init__(
        self, in_ch: int, out_ch: int, *, padding: int, norm: str | None, act: str, kernel_size: int = 3
    ) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=norm is None),
            make_norm(norm, out_ch),
            make_activation(act),
        )


class DoubleConv(nn.Sequential):
    """Two ``ConvNormAct`` layers: the unit at every level of the U (paper Fig. 1, blue arrows).

    ``dropout`` > 0 puts a dropout layer between the two convolutions, as the Keras tutorial does.
    """

    def __init__(
        self, in_ch: int, out_ch: int, *, padding: int, norm: str | None, act: str, dropout: float = 0.0
    ) -> None:
        layers: list[nn.Module] = [ConvNormAct(in_ch, out_ch, padding=padding, norm=norm, act=act)]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        layers.append(ConvNormAct(out_ch, out_ch, padding=padding, norm=norm, act=act))
        super().__init__(*layers)


class Down(nn.Sequential):
    """2x2 max-pooling with stride 2, then a ``DoubleConv`` (paper Fig. 1, red then blue arrows)."""

    def __init__(self, in_ch: int, out_ch: int, **conv_kw: object) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch, **conv_kw))  # type: ignore[arg-type]


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop the centre ``height`` x ``width`` of a ``(N, C, H, W)`` tensor (the paper's skip cropping)."""
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class Up(nn.Module):
    """Up-sample by 2, merge with the skip connection, then a ``DoubleConv`` (paper Fig. 1, green/grey).

    ``mode="transpose"`` is the paper's 2x2 up-convolution that halves the channels; ``mode="bilinear"``
    up-samples bilinearly and halves the channels with a 1x1 convolution. The skip is centre-cropped to
    the up-sampled size ("valid" networks) and concatenated in front of it.
    """

    def __init__(self, in_ch: int, out_ch: int, *, mode: str, **conv_kw: object) -> None:
        super().__init__()
        if mode == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_ch, in_ch // 2, kernel_size=2, stride=2)
        elif mode == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_ch, in_ch // 2, kernel_size=1),
            )
        else:
            raise ValueError(f"unknown up-sampling mode {mode!r}; choose 'transpose' or 'bilinear'")
        self.conv = DoubleConv(in_ch // 2 + out_ch, out_ch, **conv_kw)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        skip = center_crop(skip, x.shape[-2], x.shape[-1])
        return self.conv(torch.cat([skip, x], dim=1))


def he_init_(module: nn.Module) -> None:
    """He initialisation as in the paper: Gaussian weights with std sqrt(2 / N), biases zero.

    N is the number of incoming nodes of one neuron: ``in_channels * k * k`` for a convolution, and
    ``in_channels`` for the 2x2 stride-2 up-convolution (each output pixel sees one input pixel per
    channel). Normalisation layers keep their unit scale and zero shift.
    """
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d):
            fan_in = m.in_channels * (m.kernel_size[0] // m.stride[0]) * (m.kernel_size[1] // m.stride[1])
        elif isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            continue
        nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the last two dims of ``x`` up to a multiple of ``multiple`` (reflect where possible).

    Returns the padded tensor and the original ``(H, W)`` so the caller can crop back.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    mode = "reflect" if max(pad[0], pad[1]) < w and max(pad[2], pad[3]) < h else "replicate"
    return F.pad(x, pad, mode=mode), (h, w)
