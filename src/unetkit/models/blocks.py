"""Small building blocks shared by every U-Net variant.

Layers are chosen by string through tiny maps (``NORMS``, ``ACTIVATIONS``), never by if-ladders, so a
config value such as ``norm="batch"`` maps to exactly one constructor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "BLOCKS",
    "NORMS",
    "AttentionGate",
    "ConvNormAct",
    "DoubleConv",
    "Down",
    "ResidualConv",
    "Up",
    "center_crop",
    "fold_batch_norms",
    "he_init_",
    "make_activation",
    "make_norm",
    "pad_to_multiple",
    "upsampler",
]


def _group_norm(channels: int, dims: int = 2) -> nn.Module:
    # 8 groups (or fewer for narrow layers) as in Wu & He 2018; must divide the channel count.
    groups = math.gcd(channels, 8)
    return nn.GroupNorm(groups, channels)


def _nd(layers: dict[int, Any], dims: int) -> Any:
    try:
        return layers[dims]
    except KeyError:
        raise ValueError(f"spatial_dims must be 2 or 3, got {dims!r}") from None


CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}

BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _batch_norm(c: int, dims: int = 2) -> nn.Module:
    return _nd(BATCH_NORM, dims)(c)


def _instance_norm(c: int, dims: int = 2) -> nn.Module:
    return _nd({2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}, dims)(c, affine=True)


NORMS: dict[str, Callable[[int, int], nn.Module]] = {
    "batch": _batch_norm,
    "instance": _instance_norm,
    "group": _group_norm,
}

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "gelu": nn.GELU,
}


def make_norm(name: str | None, channels: int, dims: int = 2) -> nn.Module:
    """Return the normalisation layer called ``name`` (``None`` gives an identity)."""
    if name is None:
        return nn.Identity()
    try:
        return NORMS[name](channels, dims)
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; choose one of {sorted(NORMS)} or None") from None


def make_activation(name: str) -> nn.Module:
    """Return the activation called ``name``."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class ConvNormAct(nn.Sequential):
    """3x3 (or 3x3x3) convolution → optional normalisation → activation.

    ``padding=0`` is the paper's unpadded ("valid") convolution, which shrinks each side by one pixel.
    The convolution has a bias only when there is no normalisation after it (a norm's shift replaces it).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        padding: int,
        norm: str | None,
        act: str | None,
        kernel_size: int = 3,
        dims: int = 2,
    ) -> None:
        super().__init__(
            _nd(CONV, dims)(in_ch, out_ch, kernel_size, padding=padding, bias=norm is None),
            make_norm(norm, out_ch, dims),
            make_activation(act) if act else nn.Identity(),
        )


class DoubleConv(nn.Sequential):
    """Two ``ConvNormAct`` layers: the unit at every level of the U (paper Fig. 1, blue arrows).

    ``dropout`` > 0 puts a dropout layer between the two convolutions, as the Keras tutorial does.
    ``last_act=False`` leaves the second convolution without its activation (the body of a residual unit).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        padding: int,
        norm: str | None,
        act: str,
        dropout: float = 0.0,
        dims: int = 2,
        last_act: bool = True,
    ) -> None:
        kw = {"padding": padding, "norm": norm, "dims": dims}
        layers: list[nn.Module] = [ConvNormAct(in_ch, out_ch, act=act, **kw)]  # type: ignore[arg-type]
        if dropout > 0:
            layers.append(_nd(DROPOUT, dims)(dropout))
        layers.append(ConvNormAct(out_ch, out_ch, act=act if last_act else None, **kw))  # type: ignore[arg-type]
        super().__init__(*layers)


class ResidualConv(nn.Module):
    """A residual unit (He et al. 2016, as in residual U-Nets): two convolutions whose output is added to
    the input (projected by a 1x1 convolution when the width changes; centre-cropped when unpadded), then
    the activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        padding: int,
        norm: str | None,
        act: str,
        dropout: float = 0.0,
        dims: int = 2,
    ) -> None:
        super().__init__()
        self.body = DoubleConv(
            in_ch, out_ch, padding=padding, norm=norm, act=act, dropout=dropout, dims=dims, last_act=False
        )
        self.project = (
            nn.Identity()
            if in_ch == out_ch
            else nn.Sequential(
                _nd(CONV, dims)(in_ch, out_ch, 1, bias=norm is None), make_norm(norm, out_ch, dims)
            )
        )
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.act(y + center_crop(self.project(x), y.shape[2:]))


BLOCKS: dict[str, type[nn.Module]] = {"double": DoubleConv, "residual": ResidualConv}


class Down(nn.Sequential):
    """Max-pooling (2x2, or ``pool`` per axis, e.g. (1, 2, 2) to keep a coarse z), then a conv block
    (paper Fig. 1, red then blue arrows)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        pool: int | tuple[int, ...] = 2,
        block: str = "double",
        **conv_kw: object,
    ) -> None:
        dims = int(conv_kw.get("dims", 2))  # type: ignore[call-overload]
        super().__init__(_nd(MAX_POOL, dims)(pool), BLOCKS[block](in_ch, out_ch, **conv_kw))


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the centre of the trailing spatial axes of ``x`` to ``size`` (the paper's skip cropping)."""
    if tuple(x.shape[x.ndim - len(size) :]) == tuple(size):
        return x  # padded networks: nothing to crop (and exportable with dynamic sizes)
    index = [slice(None)] * (x.ndim - len(size))
    for have, want in zip(x.shape[-len(size) :], size, strict=True):
        start = (have - want) // 2
        index.append(slice(start, start + want))
    return x[tuple(index)]


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): weights each skip pixel by
    sigmoid(psi(relu(W_x x + W_g g))), where ``g`` is the decoder feature at the skip's resolution."""

    def __init__(self, skip_ch: int, gate_ch: int, inter_ch: int, *, norm: str | None, dims: int = 2) -> None:
        super().__init__()
        conv = _nd(CONV, dims)
        self.w_x = nn.Sequential(
            conv(skip_ch, inter_ch, 1, bias=norm is None), make_norm(norm, inter_ch, dims)
        )
        self.w_g = nn.Sequential(
            conv(gate_ch, inter_ch, 1, bias=norm is None), make_norm(norm, inter_ch, dims)
        )
        self.psi = nn.Sequential(conv(inter_ch, 1, 1), nn.Sigmoid())

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        alpha = self.psi(torch.relu(self.w_x(skip) + self.w_g(gate)))
        return skip * alpha


class Up(nn.Module):
    """Up-sample by 2 (or ``scale`` per axis), merge with the skip connection, then a conv block
    (paper Fig. 1, green/grey).

    ``mode="transpose"`` is the paper's 2x2 up-convolution that halves the channels; ``mode="bilinear"``
    up-samples by interpolation and halves the channels with a 1x1 convolution. The skip is centre-cropped
    to the up-sampled size ("valid" networks), optionally weighted by an attention gate, and concatenated in
    front of it.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        mode: str,
        scale: int | tuple[int, ...] = 2,
        block: str = "double",
        attention: bool = False,
        skip_ch: int | None = None,
        **conv_kw: object,
    ) -> None:
        super().__init__()
        dims = int(conv_kw.get("dims", 2))  # type: ignore[call-overload]
        skip_ch = out_ch if skip_ch is None else skip_ch
        self.up = upsampler(in_ch, in_ch // 2, mode=mode, scale=scale, dims=dims)
        self.gate = (
            AttentionGate(skip_ch, in_ch // 2, max(1, skip_ch // 2), norm=conv_kw.get("norm"), dims=dims)  # type: ignore[arg-type]
            if attention
            else None
        )
        self.conv = BLOCKS[block](in_ch // 2 + skip_ch, out_ch, **conv_kw)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        skip = center_crop(skip, x.shape[2:])
        if self.gate is not None:
            skip = self.gate(skip, x)
        return self.conv(torch.cat([skip, x], dim=1))


def upsampler(
    in_ch: int, out_ch: int, *, mode: str, scale: int | tuple[int, ...] = 2, dims: int = 2
) -> nn.Module:
    """``transpose``: a learned up-convolution (kernel = stride = ``scale``); ``bilinear``: interpolation
    (trilinear in 3-D) followed by a 1x1 convolution."""
    if mode == "transpose":
        return _nd(CONV_T, dims)(in_ch, out_ch, kernel_size=scale, stride=scale)
    if mode == "bilinear":
        interp = "bilinear" if dims == 2 else "trilinear"
        factor = scale if isinstance(scale, int) else tuple(float(s) for s in scale)
        return nn.Sequential(
            nn.Upsample(scale_factor=factor, mode=interp, align_corners=False),
            _nd(CONV, dims)(in_ch, out_ch, 1),
        )
    raise ValueError(f"unknown up-sampling mode {mode!r}; choose 'transpose' or 'bilinear'")


def he_init_(module: nn.Module) -> None:
    """He initialisation as in the paper: Gaussian weights with std sqrt(2 / N), biases zero.

    N is the number of incoming nodes of one neuron: ``in_channels * prod(kernel)`` for a convolution, and
    ``in_channels * prod(kernel / stride)`` for the stride-2 up-convolution (each output pixel sees one
    input pixel per channel). Normalisation layers keep their unit scale and zero shift.
    """
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d | nn.ConvTranspose3d):
            fan_in = m.in_channels * math.prod(k // s for k, s in zip(m.kernel_size, m.stride, strict=True))
        elif isinstance(m, nn.Conv2d | nn.Conv3d):
            fan_in = m.in_channels // m.groups * math.prod(m.kernel_size)
        else:
            continue
        if (
            m.weight.is_meta
        ):  # shapes only (a checkpoint's declared size, counted before building): no values,
            continue  # and PyTorch's meta normal_ imports its decompositions: 0.7 s of every model load
        nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def pad_to_multiple(x: torch.Tensor, multiple: int | Sequence[int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial axes of ``x`` (all but batch and channel) up to a multiple of ``multiple`` (per axis
    or one for all), reflecting where possible. Returns the padded tensor and the original spatial shape."""
    shape = tuple(x.shape[2:])
    mult = [multiple] * len(shape) if isinstance(multiple, int) else list(multiple)
    extra = [(-n) % m for n, m in zip(shape, mult, strict=True)]
    if not any(extra):
        return x, shape
    pad: list[int] = []
    for e in reversed(extra):  # F.pad wants the last axis first
        pad += [e // 2, e - e // 2]
    fits = all(max(e // 2, e - e // 2) < n for e, n in zip(extra, shape, strict=True))
    return F.pad(x, pad, mode="reflect" if fits else "replicate"), shape


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every batch norm that directly follows a convolution into that convolution, in place (inference
    only: the folded layer applies the norm's running statistics). Returns how many were folded.

    A folded U-Net skips one full read and write of every feature map per convolution, about a fifth of its CPU
    inference time; outputs agree with the unfolded model to float32 rounding."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("fold_batch_norms is for inference: call model.eval() first")
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv: Any = seq[i]
            norm: Any = seq[i + 1]
            if isinstance(conv, tuple(CONV.values())) and isinstance(norm, tuple(BATCH_NORM.values())):
                seq[i] = fuse_conv_bn_eval(conv, norm)  # type: ignore[type-var,assignment,arg-type]
                seq[i + 1] = nn.Identity()
                folded += 1
    return folded
