"""Segmentation losses, selected by name (``LOSSES``).

Binary models (1 output channel) take targets ``(N, 1, H, W)`` in {0, 1}; multi-class models (C >= 2
channels, softmax) take integer targets ``(N, H, W)``. Target value 255 (``IGNORE``) marks unlabelled pixels,
which no loss counts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .data.masks import IGNORE
from .errors import ConfigError

__all__ = ["LOSSES", "get_loss", "soft_dice_loss"]

LossFn = Callable[..., torch.Tensor]


def _valid(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target with ignored pixels set to 0, valid mask)``; ``IGNORE`` (255) marks unlabelled pixels."""
    valid = target != IGNORE
    return torch.where(valid, target, torch.zeros_like(target)), valid


def _probs_and_onehot(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    target, valid = _valid(target)
    if logits.shape[1] == 1:
        return torch.sigmoid(logits) * valid, target.float() * valid
    probs = torch.softmax(logits, dim=1) * valid[:, None]
    onehot = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).float() * valid[:, None]
    return probs, onehot


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, computed over the whole batch per class and averaged over classes.

    For softmax outputs the background class is left out (it dominates and says little). Pixels whose
    target is ``IGNORE`` (255) do not count.
    """
    probs, onehot = _probs_and_onehot(logits, target)
    if probs.shape[1] > 1:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    dims = (0, *range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def _weighted_mean(per_pixel: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    w = valid.float() if weight is None else weight * valid
    return (per_pixel * w).sum() / valid.sum().clamp(min=1)


def _bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    target, valid = _valid(target)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
    return _weighted_mean(per_pixel, valid, None if weight is None else weight.reshape(valid.shape))


def _ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    target, valid = _valid(target)
    per_pixel = F.cross_entropy(logits, target.long(), reduction="none")
    return _weighted_mean(per_pixel, valid, weight)


def _dice(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    return soft_dice_loss(logits, target)


LOSSES: dict[str, LossFn] = {
    "bce": _bce,
    "ce": _ce,
    "dice": _dice,
    "bce_dice": lambda lg, t, w=None: _bce(lg, t, w) + soft_dice_loss(lg, t),
    "ce_dice": lambda lg, t, w=None: _ce(lg, t, w) + soft_dice_loss(lg, t),
}
"""Each loss is ``loss(logits, target, weight=None)``; ``weight`` ``(N, H, W)`` weights the cross-entropy
term per pixel (the paper's weight maps: mean of ``w(x) * CE(x)`` over labelled pixels)."""


def get_loss(name: str, num_classes: int) -> LossFn:
    """The loss called ``name``; ``"auto"`` is bce_dice for one output channel and ce_dice otherwise."""
    if name == "auto":
        name = "bce_dice" if num_classes == 1 else "ce_dice"
    if name not in LOSSES:
        raise ConfigError(f"train.loss {name!r} is unknown; choose auto or one of {', '.join(LOSSES)}")
    if num_classes == 1 and name.startswith("ce"):
        raise ConfigError(f"train.loss {name!r} needs num_classes >= 2; use bce_dice for a binary model")
    if num_classes > 1 and name.startswith("bce"):
        raise ConfigError(
            f"train.loss {name!r} needs num_classes == 1; use ce_dice for {num_classes} classes"
        )
    return LOSSES[name]
