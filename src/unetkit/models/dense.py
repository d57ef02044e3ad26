"""Dense U-Net: the U of densely connected blocks (FC-DenseNet, "The One Hundred Layers Tiramisu", Jégou et al.
2017; DenseNet, Huang et al. 2017).

Each level's block is a *dense block*: layer ``l`` reads the concatenation of the block's input and the outputs
of layers ``1..l-1`` and adds ``growth_rate`` new feature maps. A layer is pre-activated as in DenseNet
(norm → activation → [1x1 convolution to 4 x growth → norm → activation] → 3x3 convolution; the bracket is the
DenseNet-BC *bottleneck*). Down the U, the block's whole output (input and new maps) is the skip and, through a
*transition down* (norm → activation → 1x1 convolution keeping ``compression`` of the channels → 2x2 max-pool),
the next level's input. Up the U, only the new maps of the block below are up-sampled (2x2 up-convolution, as
the family's; FC-DenseNet's remedy for the channel explosion), concatenated with the skip and passed through
the level's dense block; the top block's whole output goes through a final norm → activation to the 1x1 head.

Dense blocks keep every map of a block alive for the backward pass and allocate a new concatenation per layer,
so training memory grows with the square of the layers per block. ``memory_efficient=True`` recomputes each
layer's concatenation, normalisation, activation and first convolution in the backward pass instead of storing
them (gradient checkpointing, as the memory-efficient DenseNet of Pleiss et al. 2017 and torchvision's
``memory_efficient``): the same gradients and running statistics, less memory, more time.

``deep_supervision=True`` adds a 1x1 head on each decoder level below the top; its logits are up-sampled to the
output size and training averages the losses of all heads (the trainer reads ``aux_logits``); inference uses
the top head alone (coarse side outputs would blur the result).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import CONV, DROPOUT, MAX_POOL, he_init_, make_activation, make_norm, upsampler
from .registry import register_model
from .unet import DeepSupervision, UNetBase

__all__ = ["DenseBlock", "DenseLayer", "DenseUNet"]

#: layers per dense block when none are given (FC-DenseNet56 uses 4; 103 uses 4, 5, 7, 10, 12, 15)
DEFAULT_LAYERS = 4

VALID_REFUSED = (
    "dense-unet supports padding='same' only: every layer of a dense block concatenates its output with all "
    "earlier maps of the block, and an unpadded 3x3 convolution shrinks its output by 2 px, so each earlier map "
    "would be cropped again at every layer and the margin would grow with the layers per block, which the "
    "paper's valid-size geometry (two convolutions per level) does not describe; use padding='same' (any size "
    "in, the same size out, tiled with overlap)"
)


def _activation(name: str, inplace: bool) -> nn.Module:
    act = make_activation(name)
    if hasattr(act, "inplace"):
        act.inplace = inplace  # type: ignore[assignment]
    return act


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Batch-norm running statistics of ``module`` as they were before the block: the recomputation of a
    checkpointed layer in the backward pass must not count the batch a second time."""
    norms: list[Any] = [
        m
        for m in module.modules()
        if getattr(m, "running_mean", None) is not None
        and getattr(m, "num_batches_tracked", None) is not None
    ]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved, strict=True):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


class DenseLayer(nn.Module):
    """One layer of a dense block: its input is the list of the block's maps so far; it returns ``growth`` new
    maps. ``memory_efficient``: the concatenation, norm, activation and first convolution are recomputed in
    the backward pass (training only)."""

    def __init__(
        self,
        in_ch: int,
        growth: int,
        *,
        bottleneck: bool,
        norm: str | None,
        act: str,
        dropout: float,
        dims: int,
        memory_efficient: bool,
    ) -> None:
        super().__init__()
        conv = CONV[dims]
        bias = norm is None  # a norm after the convolution makes its bias redundant
        self.norm1 = make_norm(norm, in_ch, dims)
        self.act1 = _activation(act, inplace=norm is not None)  # without a norm it would overwrite the input
        width = 4 * growth if bottleneck else growth
        self.conv1 = conv(in_ch, width, 1 if bottleneck else 3, padding=0 if bottleneck else 1, bias=bias)
        self.rest: nn.Module = (
            nn.Sequential(
                make_norm(norm, width, dims),
                _activation(act, inplace=True),
                conv(width, growth, 3, padding=1, bias=bias),
            )
            if bottleneck
            else nn.Identity()
        )
        self.drop = DROPOUT[dims](dropout) if dropout > 0 else nn.Identity()
        self.memory_efficient = memory_efficient

    def _first(self, *features: torch.Tensor) -> torch.Tensor:
        x = features[0] if len(features) == 1 else torch.cat(features, dim=1)
        return self.conv1(self.act1(self.norm1(x)))

    def _contexts(self) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        return contextlib.nullcontext(), _running_stats_kept(self.norm1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and self.training and torch.is_grad_enabled():
            y = checkpoint(self._first, *features, use_reentrant=False, context_fn=self._contexts)
        else:
            y = self._first(*features)
        return self.drop(self.rest(y))


class DenseBlock(nn.Module):
    """``layers`` dense layers of ``growth`` maps each on an input of ``in_ch``: returns the concatenation of
    the input and every new map (``keep_input=True``) or of the new maps only."""

    def __init__(self, in_ch: int, layers: int, growth: int, **layer_kw: Any) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_ch + i * growth, growth, **layer_kw) for i in range(layers))
        self.new_channels = layers * growth
        self.out_channels = in_ch + self.new_channels

    def forward(self, x: torch.Tensor, keep_input: bool = True) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features if keep_input else features[1:], dim=1)


class TransitionDown(nn.Sequential):
    """Norm → activation → 1x1 convolution to ``out_ch`` (the compression) → dropout → max-pool."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        pool: int | tuple[int, ...],
        norm: str | None,
        act: str,
        dropout: float,
        dims: int,
    ) -> None:
        super().__init__(
            make_norm(norm, in_ch, dims),
            _activation(act, inplace=norm is not None),
            CONV[dims](in_ch, out_ch, 1, bias=norm is None),
            DROPOUT[dims](dropout) if dropout > 0 else nn.Identity(),
            MAX_POOL[dims](pool),
        )


@register_model("dense-unet")
class DenseUNet(DeepSupervision, UNetBase):
    """Dense U-Net: densely connected blocks at every level, transitions between them (Jégou et al. 2017).

    Args (beyond :class:`~unetkit.models.unet.UNet`'s, which keep their meaning):
        base_channels: channels of the first 3x3 convolution (FC-DenseNet: 48).
        growth_rate: maps each dense layer adds (FC-DenseNet: 12 or 16); default ``base_channels // 2``, the
            DenseNet-BC convention (a stem of twice the growth rate), which gives about the FLOPs of a U-Net of
            the same ``base_channels`` and depth.
        dense_layers: layers per dense block, one value for every level or ``depth + 1`` values from the top
            level down to the bottleneck (FC-DenseNet103: 4, 5, 7, 10, 12, 15); default 4 each.
        compression: share of the channels a transition down keeps (DenseNet-BC: 0.5; FC-DenseNet: 1).
        bottleneck: a 1x1 convolution to ``4 * growth_rate`` maps before each 3x3 (DenseNet-BC).
        memory_efficient: gradient checkpointing of each layer's concatenation (less training memory).
        deep_supervision: a head per decoder level (training only; see the module).
        dropout: after the bottleneck block; ``level_dropout``: in every dense layer and transition of a level.

    Padded (``"same"``) networks only: see :data:`VALID_REFUSED`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        depth: int = 4,
        base_channels: int = 16,
        padding: str = "same",
        up: str = "transpose",
        norm: str | None = None,
        act: str = "relu",
        dropout: float = 0.0,
        level_dropout: Sequence[float] | None = None,
        spatial_dims: int = 2,
        anisotropic_levels: int = 0,
        growth_rate: int | None = None,
        dense_layers: int | Sequence[int] | None = None,
        compression: float = 0.5,
        bottleneck: bool = True,
        memory_efficient: bool = False,
        deep_supervision: bool = False,
    ) -> None:
        if padding != "same":
            raise ValueError(VALID_REFUSED)
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
        growth = max(1, base_channels // 2) if growth_rate is None else growth_rate
        if not isinstance(growth, int) or growth < 1:
            raise ValueError(f"growth_rate must be a positive integer, got {growth_rate!r}")
        layers = self._layers(dense_layers, depth)
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression!r}")
        self.hparams.update(
            growth_rate=growth,
            dense_layers=layers,
            compression=compression,
            bottleneck=bottleneck,
            memory_efficient=memory_efficient,
            deep_supervision=deep_supervision,
        )
        dims, rates, pools = spatial_dims, self.level_rates, self.pools

        def kw(level: int) -> dict[str, Any]:
            return {
                "bottleneck": bottleneck,
                "norm": norm,
                "act": act,
                "dropout": rates[level],
                "dims": dims,
                "memory_efficient": memory_efficient,
            }

        self.stem = CONV[dims](in_channels, base_channels, 3, padding=1)
        self.encoder = nn.ModuleList()
        self.downs = nn.ModuleList()
        skips: list[int] = []
        ch = base_channels
        for i in range(depth):
            block = DenseBlock(ch, layers[i], growth, **kw(i))
            self.encoder.append(block)
            skips.append(block.out_channels)
            out = max(1, int(compression * block.out_channels))
            self.downs.append(
                TransitionDown(
                    block.out_channels, out, pool=pools[i], norm=norm, act=act, dropout=rates[i], dims=dims
                )
            )
            ch = out
        self.bottom = DenseBlock(ch, layers[depth], growth, **kw(depth))
        self.drop = DROPOUT[dims](dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        rising, top, levels = self.bottom.new_channels, 0, []
        for i in reversed(range(depth)):
            self.ups.append(upsampler(rising, rising, mode=up, scale=pools[i], dims=dims))
            block = DenseBlock(skips[i] + rising, layers[i], growth, **kw(i))
            self.decoder.append(block)
            levels.append(block.new_channels)
            rising, top = block.new_channels, block.out_channels
        self.final = nn.Sequential(make_norm(norm, top, dims), _activation(act, inplace=norm is not None))
        self.head = CONV[dims](top, num_classes, 1)
        self.side_heads = nn.ModuleList(
            CONV[dims](channels, num_classes, 1) for channels in (levels[:-1] if deep_supervision else [])
        )
        self.aux_logits: list[torch.Tensor] = []
        he_init_(self)

    @staticmethod
    def _layers(dense_layers: int | Sequence[int] | None, depth: int) -> list[int]:
        if dense_layers is None:
            return [DEFAULT_LAYERS] * (depth + 1)
        values = [dense_layers] if isinstance(dense_layers, int) else list(dense_layers)
        if len(values) == 1:
            values = values * (depth + 1)
        if len(values) != depth + 1 or not all(isinstance(v, int) and v >= 1 for v in values):
            raise ValueError(
                f"dense_layers needs one positive integer or depth + 1 = {depth + 1} of them (top level to the "
                f"bottleneck), got {dense_layers!r}"
            )
        return values

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for block, down in zip(self.encoder, self.downs, strict=True):
            skip = block(x)
            skips.append(skip)
            x = down(skip)
        x = self.drop(self.bottom(x, keep_input=False))
        side: list[torch.Tensor] = []
        last = len(self.decoder) - 1
        for i, (up, block) in enumerate(zip(self.ups, self.decoder, strict=True)):
            x = block(torch.cat([skips.pop(), up(x)], dim=1), keep_input=i == last)
            if self.training and i < last and self.side_heads:
                side.append(self.side_heads[i](x))
        out = self.head(self.final(x))
        if side:
            mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
            self.aux_logits = [
                F.interpolate(s, size=out.shape[2:], mode=mode, align_corners=False) for s in side
            ]
        return out
