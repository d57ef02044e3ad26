"""The U-Net of Ronneberger, Fischer & Brox (2015) and its padded variant.

``UNet(padding="valid")`` is the paper's network: unpadded 3x3 convolutions, 2x2 max-pooling,
2x2 up-convolutions halving the channels, crop-and-concatenate skips, a final 1x1 convolution; a
572x572 input gives a 388x388 output. ``UNet(padding="same")`` pads every convolution and pads the
input internally to a multiple of ``2**depth``, so it accepts any size and returns the same size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .blocks import BLOCKS, CONV, DROPOUT, Down, Up, center_crop, he_init_, pad_to_multiple
from .registry import register_model

__all__ = ["DeepSupervision", "InvalidSizeError", "UNet", "UNetBase", "ValidGeometry"]


class InvalidSizeError(ValueError):
    """An input size that a ``padding='valid'`` U-Net cannot process."""


@dataclass(frozen=True)
class ValidGeometry:
    """Size arithmetic of an unpadded U-Net of a given ``depth`` (per spatial axis).

    Every level's two 3x3 convolutions remove 4 pixels; every pooling needs an even size. The valid
    input sizes are ``2**depth * b + in_offset`` for a bottleneck size ``b`` >= 1 with a positive output
    ``2**depth * b - out_offset``. For the paper (depth 4): 572 → 388, margin 92 on each side.
    """

    depth: int

    def output_size(self, size: int) -> int:
        """Output length for an input length; raises :class:`InvalidSizeError` if it does not fit."""
        s = size
        for level in range(self.depth):
            s -= 4
            if s <= 0 or s % 2:
                raise InvalidSizeError(self._message(size, f"the size before pooling {level + 1} is {s}"))
            s //= 2
        s -= 4
        if s <= 0:
            raise InvalidSizeError(self._message(size, "the bottleneck would be empty"))
        for _ in range(self.depth):
            s = s * 2 - 4
        if s <= 0:
            raise InvalidSizeError(self._message(size, "the output would be empty"))
        return s

    def input_size(self, output_size: int) -> int:
        """Smallest valid input length whose output is at least ``output_size``."""
        b = max(self._min_bottleneck, -(-(output_size + self.out_offset) // 2**self.depth))
        return self._in_of_b(b)

    def is_valid(self, size: int) -> bool:
        step = 2**self.depth
        b, rest = divmod(size - self.in_offset, step)
        return rest == 0 and b >= self._min_bottleneck

    def nearest_valid(self, size: int) -> tuple[int | None, int]:
        """The nearest valid input lengths at or below ``size`` (``None`` if none) and above it."""
        b = (size - self.in_offset) // 2**self.depth
        below = self._in_of_b(b) if b >= self._min_bottleneck else None
        above = self._in_of_b(max(b + 1, self._min_bottleneck))
        return below, above

    def fit(self, size: int) -> int:
        """The largest valid input length not above ``size``, or the smallest valid one if none is."""
        below, above = self.nearest_valid(size)
        return below if below is not None else above

    @property
    def in_offset(self) -> int:
        return self._in_of_b(0)

    @property
    def out_offset(self) -> int:
        return -self._out_of_b(0)

    @property
    def margin(self) -> int:
        """Context lost on each side: (input - output) / 2 (92 for the paper's depth 4)."""
        return (self.in_offset + self.out_offset) // 2

    @property
    def _min_bottleneck(self) -> int:
        b = 1
        while self._out_of_b(b) <= 0:
            b += 1
        return b

    def _in_of_b(self, b: int) -> int:
        s = b + 4
        for _ in range(self.depth):
            s = s * 2 + 4
        return s

    def _out_of_b(self, b: int) -> int:
        s = b
        for _ in range(self.depth):
            s = s * 2 - 4
        return s

    def _message(self, size: int, why: str) -> str:
        below, above = self.nearest_valid(size)
        options = f"{below} or {above}" if below is not None else f"{above}"
        return (
            f"input size {size} does not fit a padding='valid' U-Net of depth {self.depth} ({why}); "
            f"use {options} (valid sizes are {2**self.depth}*k + {self.in_offset}), or padding='same'"
        )


class UNetBase(nn.Module):
    """What every member of the U-Net family shares: the checked hyper-parameters common to all (recorded in
    ``hparams``, which checkpoints store and :func:`~unetkit.models.registry.create_model` takes back), the
    pooling geometry (``size_multiples``, the paper's valid sizes, ``margin``), and the forward pass around
    ``_forward``: the input shape checked, a padded network's input padded to the pooling grid and its output
    cropped back. Subclasses build their layers and define ``_forward``."""

    #: the network on an input its pooling accepts (each member defines it)
    _forward: Callable[[torch.Tensor], torch.Tensor]

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "same",
        up: str = "transpose",
        norm: str | None = None,
        act: str = "relu",
        dropout: float = 0.0,
        level_dropout: Sequence[float] | None = None,
        spatial_dims: int = 2,
        anisotropic_levels: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("base_channels", base_channels),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if level_dropout is not None and len(level_dropout) != depth + 1:
            raise ValueError(f"level_dropout needs depth + 1 = {depth + 1} values, got {len(level_dropout)}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if not 0 <= anisotropic_levels <= depth or (anisotropic_levels and spatial_dims != 3):
            raise ValueError(
                f"anisotropic_levels must be in 0..depth and needs spatial_dims=3, got {anisotropic_levels}"
            )
        if anisotropic_levels and padding == "valid":
            raise ValueError("anisotropic pooling needs padding='same'")
        self.hparams: dict[str, Any] = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "depth": depth,
            "base_channels": base_channels,
            "padding": padding,
            "up": up,
            "norm": norm,
            "act": act,
            "dropout": dropout,
            "level_dropout": list(level_dropout) if level_dropout is not None else None,
            "spatial_dims": spatial_dims,
            "anisotropic_levels": anisotropic_levels,
        }
        self.padding = padding
        self.depth = depth
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        #: per level, top to bottom: the dropout rate inside its blocks
        self.level_rates = list(level_dropout) if level_dropout is not None else [0.0] * (depth + 1)
        self.pools = self.pool_sizes(depth, spatial_dims, anisotropic_levels)

    @staticmethod
    def pool_sizes(depth: int, dims: int, anisotropic_levels: int = 0) -> list[int | tuple[int, ...]]:
        """Pooling window per level: 2, or (1, 2, 2) for the first ``anisotropic_levels`` levels of 3-D."""
        return [(1, 2, 2) if i < anisotropic_levels else 2 for i in range(depth)]

    @property
    def geometry(self) -> ValidGeometry:
        return ValidGeometry(self.depth)

    @property
    def size_multiples(self) -> tuple[int, ...]:
        """Per spatial axis: what the input is padded to a multiple of (z may pool fewer times)."""
        k = self.hparams.get("anisotropic_levels", 0)
        if self.spatial_dims == 3:
            return (2 ** (self.depth - k), 2**self.depth, 2**self.depth)
        return (2**self.depth,) * 2

    def output_size(self, size: int) -> int:
        """Output length (per axis) for an input length."""
        return size if self.padding == "same" else self.geometry.output_size(size)

    def valid_input_size(self, output_size: int) -> int:
        """Smallest input length giving at least ``output_size`` outputs (``"same"``: unchanged)."""
        return output_size if self.padding == "same" else self.geometry.input_size(output_size)

    @property
    def margin(self) -> int:
        """Pixels of context lost on each side (0 for ``"same"``; 92 for the paper's network)."""
        return 0 if self.padding == "same" else self.geometry.margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = self.spatial_dims
        if x.ndim != dims + 2 or x.shape[1] != self.in_channels:
            axes = "H, W" if dims == 2 else "D, H, W"
            raise ValueError(
                f"{type(self).__name__} expects a (N, {self.in_channels}, {axes}) tensor, got shape {tuple(x.shape)}"
            )
        if self.padding == "valid":
            for axis_size in x.shape[2:]:
                self.geometry.output_size(int(axis_size))  # raises InvalidSizeError with the fix
            return self._forward(x)
        x, shape = pad_to_multiple(x, self.size_multiples)
        return center_crop(self._forward(x), shape)


class DeepSupervision:
    """Mixin for members with deep supervision: ``_forward`` leaves the extra heads' logits in ``aux_logits`` (in
    training; the trainer averages their losses with the main one), and they are cropped as the main output."""

    aux_logits: list[torch.Tensor]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.aux_logits = []
        out = super().forward(x)  # type: ignore[misc]
        self.aux_logits = [center_crop(a, out.shape[2:]) for a in self.aux_logits]
        return out


@register_model("unet")
class UNet(UNetBase):
    """U-Net (Ronneberger et al. 2015) for 2-D images or 3-D volumes, configurable beyond the paper.

    Args:
        in_channels: image channels (1 for grayscale).
        num_classes: output channels; 1 means a binary sigmoid output, >= 2 a softmax over classes.
        depth: number of poolings (paper: 4).
        base_channels: channels at the first level, doubling per level (paper: 64; Keras tutorial: 16).
        padding: ``"valid"`` (paper, output smaller than input) or ``"same"`` (any size in, same size out).
        up: ``"transpose"`` (paper's 2x2 up-convolution) or ``"bilinear"`` (trilinear in 3-D).
        norm: ``None`` (paper), ``"batch"``, ``"instance"`` or ``"group"``.
        act: activation name (paper: ``"relu"``).
        dropout: dropout rate at the end of the contracting path (paper: 0.5 at the bottleneck).
        level_dropout: optional per-level rates (``depth + 1`` values, top to bottom), applied between the
            two convolutions of each level in encoder and decoder, as in the Keras tutorial.
        spatial_dims: 2 (images, ``(N, C, H, W)``) or 3 (volumes, ``(N, C, D, H, W)``).
        anisotropic_levels: 3-D only: the first k poolings keep z (pool 1x2x2), for stacks whose z spacing
            is coarser than x/y.
        block: ``"double"`` (two conv-norm-act, the paper) or ``"residual"`` (residual units).
        attention: additive attention gates on the skips (Oktay et al. 2018).

    Shapes: ``(N, in_channels, *S)`` → ``(N, num_classes, *S')`` with ``S' = S`` for ``"same"`` and
    ``S' = output_size(S)`` per axis for ``"valid"``.

    Example:
        >>> net = UNet(in_channels=1, num_classes=2, padding="valid")  # the paper's 31,030,658 parameters
        >>> net(torch.zeros(1, 1, 572, 572)).shape
        torch.Size([1, 2, 388, 388])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "same",
        up: str = "transpose",
        norm: str | None = None,
        act: str = "relu",
        dropout: float = 0.0,
        level_dropout: Sequence[float] | None = None,
        spatial_dims: int = 2,
        anisotropic_levels: int = 0,
        block: str = "double",
        attention: bool = False,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            depth,
            base_channels,
            padding,
            up,
            norm,
            act,
            dropout,
            level_dropout,
            spatial_dims,
            anisotropic_levels,
        )
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        if deep_supervision:
            raise ValueError(
                "deep_supervision is a U-Net++ and dense-unet option (--arch unet++, dense-unet)"
            )
        self.hparams.update(block=block, attention=attention)
        rates, pools = self.level_rates, self.pools
        pad = 1 if padding == "same" else 0
        widths = [base_channels * 2**i for i in range(depth + 1)]

        def conv_kw(level: int) -> dict[str, Any]:
            return {"padding": pad, "norm": norm, "act": act, "dropout": rates[level], "dims": spatial_dims}

        self.inc = BLOCKS[block](in_channels, widths[0], **conv_kw(0))
        self.downs = nn.ModuleList(
            Down(widths[i], widths[i + 1], pool=pools[i], block=block, **conv_kw(i + 1)) for i in range(depth)
        )
        self.drop = DROPOUT[spatial_dims](dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(
            Up(
                widths[i + 1],
                widths[i],
                mode=up,
                scale=pools[i],
                block=block,
                attention=attention,
                **conv_kw(i),
            )
            for i in reversed(range(depth))
        )
        self.head = CONV[spatial_dims](widths[0], num_classes, kernel_size=1)
        he_init_(self)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = self.drop(skips.pop())  # dropout at the end of the contracting path
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)
