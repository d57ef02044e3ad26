"""The U-Net family, from the same blocks as :class:`~unetkit.models.unet.UNet`.

- ``residual-unet``: residual units in encoder and decoder (``UNet(block="residual")``);
- ``attention-unet``: additive attention gates on the skips (Oktay et al. 2018; ``UNet(attention=True)``);
- ``unet++``: nested, densely connected skip pathways (Zhou et al. 2018), optionally deeply supervised.

Every variant takes ``spatial_dims=3`` for volumes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .blocks import BLOCKS, CONV, center_crop, he_init_, upsampler
from .registry import register_model
from .unet import DeepSupervision, UNet

__all__ = ["UNetPlusPlus", "attention_unet", "residual_unet"]


@register_model("residual-unet")
def residual_unet(**kwargs: Any) -> UNet:
    """U-Net with residual units in every encoder and decoder block."""
    kwargs.setdefault("block", "residual")
    return UNet(**kwargs)


@register_model("attention-unet")
def attention_unet(**kwargs: Any) -> UNet:
    """U-Net whose skips pass through additive attention gates driven by the decoder (Oktay et al. 2018)."""
    kwargs.setdefault("attention", True)
    return UNet(**kwargs)


@register_model("unet++")
class UNetPlusPlus(DeepSupervision, UNet):
    """U-Net++ (Zhou et al. 2018): node X(i, j) at level i merges X(i, 0..j-1) with the up-sampled
    X(i+1, j-1), so the skips become dense, nested pathways. With ``deep_supervision`` a 1x1 head reads
    each of X(0, 1..depth): training averages their losses (the trainer reads ``aux_logits``), inference
    averages their logits (the paper's "accurate" mode). Padded (``"same"``) networks only.
    """

    def __init__(self, *args: Any, deep_supervision: bool = False, **kwargs: Any) -> None:
        if kwargs.get("padding", "same") != "same":
            raise ValueError("unet++ supports padding='same' only")
        if kwargs.get("attention"):
            raise ValueError("unet++ has no attention gates; use attention-unet")
        super().__init__(*args, **kwargs)
        self.hparams["deep_supervision"] = deep_supervision
        self.deep_supervision = deep_supervision
        depth, dims = self.depth, self.spatial_dims
        hp = self.hparams
        widths = [hp["base_channels"] * 2**i for i in range(depth + 1)]
        pools = self.pool_sizes(depth, dims, hp["anisotropic_levels"])
        kw = {"padding": 1, "norm": hp["norm"], "act": hp["act"], "dims": dims}
        block = BLOCKS[hp["block"]]
        # the encoder X(i, 0) is the parent's inc/downs; the parent's decoder is replaced by the nest
        del self.ups
        self.nest_up = nn.ModuleDict()
        self.nest = nn.ModuleDict()
        for j in range(1, depth + 1):
            for i in range(depth - j + 1):
                self.nest_up[f"{i}_{j}"] = upsampler(
                    widths[i + 1], widths[i], mode=hp["up"], scale=pools[i], dims=dims
                )
                self.nest[f"{i}_{j}"] = block(widths[i] * (j + 1), widths[i], **kw)
        heads = depth if deep_supervision else 1
        self.heads = nn.ModuleList(CONV[dims](widths[0], hp["num_classes"], 1) for _ in range(heads))
        del self.head
        self.aux_logits: list[torch.Tensor] = []
        he_init_(self)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        depth = self.depth
        nodes: dict[tuple[int, int], torch.Tensor] = {(0, 0): self.inc(x)}
        for i, down in enumerate(self.downs, start=1):
            nodes[(i, 0)] = down(nodes[(i - 1, 0)])
        nodes[(depth, 0)] = self.drop(nodes[(depth, 0)])
        for j in range(1, depth + 1):
            for i in range(depth - j + 1):
                up = self.nest_up[f"{i}_{j}"](nodes[(i + 1, j - 1)])
                same = [center_crop(nodes[(i, k)], up.shape[2:]) for k in range(j)]
                nodes[(i, j)] = self.nest[f"{i}_{j}"](torch.cat([*same, up], dim=1))
        if not self.deep_supervision:
            return self.heads[0](nodes[(0, depth)])
        outs = [head(nodes[(0, j)]) for j, head in enumerate(self.heads, start=1)]
        if self.training:
            self.aux_logits = outs[:-1]
            return outs[-1]
        return torch.stack(outs).mean(0)
