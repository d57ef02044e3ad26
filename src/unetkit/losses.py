"""Segmentation losses, selected by name (``LOSSES``).

Binary models (1 output channel) take targets ``(N, 1, H, W)`` in {0, 1}; multi-class models (C >= 2
channels, softmax) take integer targets ``(N, H, W)``. Target value 255 (``IGNORE``) marks unlabelled pixels,
which no loss counts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .config import LOSS_NAMES
from .data.weights import IGNORE
from .errors import ConfigError

__all__ = ["LOSSES", "get_loss", "soft_dice_loss"]

LossFn = Callable[..., torch.Tensor]


def _valid(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target with ignored pixels set to 0, valid mask)``; ``IGNORE`` (255) marks unlabelled pixels."""
    valid = target != IGNORE
    return torch.where(valid, target, torch.zeros_like(target)), valid


def _multilabel(logits: torch.Tensor, target: torch.Tensor) -> bool:
    """Multilabel mode: C > 1 independent sigmoid channels with a target of the same shape."""
    return logits.shape[1] > 1 and target.shape == logits.shape


def _probs_and_onehot(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    target, valid = _valid(target)
    if _multilabel(logits, target):
        return torch.sigmoid(logits) * valid, target.float() * valid
    if logits.shape[1] == 1:
        return torch.sigmoid(logits) * valid, target.float() * valid
    probs = torch.softmax(logits, dim=1) * valid[:, None]
    onehot = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).float() * valid[:, None]
    return probs, onehot


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, computed over the whole batch per class and averaged over classes.

    For softmax outputs the background class is left out (it dominates and says little); multilabel
    outputs keep every channel. Pixels whose target is ``IGNORE`` (255) do not count.
    """
    probs, onehot = _probs_and_onehot(logits, target)
    if probs.shape[1] > 1 and not _multilabel(logits, target):
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    dims = (0, *range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def _pixel_ce(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel cross-entropy ``(N, H, W)`` (sigmoid for one channel, softmax otherwise), the target as
    class indices ``(N, H, W)`` with ignored pixels set to 0, and the mask of labelled pixels."""
    t, valid = _valid(target)
    if logits.shape[1] == 1:
        t, valid = (
            t.reshape(logits.shape[0], *logits.shape[2:]),
            valid.reshape(logits.shape[0], *logits.shape[2:]),
        )
        ce = F.binary_cross_entropy_with_logits(logits[:, 0], t.float(), reduction="none")
    else:
        ce = F.cross_entropy(logits, t.long(), reduction="none")
    return ce, t.long(), valid


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    class_weights: torch.Tensor | None = None,
    gamma: float = 0.0,
) -> torch.Tensor:
    """Mean over labelled pixels of ``w(x) * c(class) * (1 - p_t)^gamma * CE(x)``.

    ``weight``: per-pixel weights ``(N, H, W)`` (the paper's weight maps); ``class_weights``: one per class;
    ``gamma > 0``: focal loss (Lin et al. 2017), ``gamma = 0``: plain (weighted) cross-entropy.
    """
    if _multilabel(logits, target):
        t, valid = _valid(target)
        ce = F.binary_cross_entropy_with_logits(logits, t.float(), reduction="none")
        if gamma:
            ce = (1 - torch.exp(-ce)).pow(gamma) * ce
        w = valid.float()
        if weight is not None:
            w = w * weight.reshape(w.shape[0], 1, *w.shape[2:])
        if class_weights is not None:
            w = w * class_weights.to(ce.device).view(1, -1, *([1] * (ce.ndim - 2)))
        return (ce * w).sum() / valid.sum().clamp(min=1)
    ce, t, valid = _pixel_ce(logits, target)
    if gamma:
        ce = (1 - torch.exp(-ce)).pow(gamma) * ce
    w = valid.float()
    if weight is not None:
        w = w * weight.reshape(w.shape)
    if class_weights is not None:
        w = w * class_weights.to(ce.device)[t]
    return (ce * w).sum() / valid.sum().clamp(min=1)


def _make(gamma: float | None, dice: bool, class_weights: torch.Tensor | None = None) -> LossFn:
    def loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        total = logits.new_zeros(())
        if gamma is not None:
            total = total + cross_entropy(logits, target, weight, class_weights=class_weights, gamma=gamma)
        if dice:
            total = total + soft_dice_loss(logits, target)
        return total

    return loss


_SPEC: dict[str, tuple[float | None, bool]] = {
    "bce": (0.0, False),
    "ce": (0.0, False),
    "dice": (None, True),
    "bce_dice": (0.0, True),
    "ce_dice": (0.0, True),
    "focal": (2.0, False),
    "focal_dice": (2.0, True),
}
LOSSES: dict[str, LossFn] = {name: _make(*spec) for name, spec in _SPEC.items()}
assert tuple(LOSSES) == LOSS_NAMES, "config.LOSS_NAMES lists the losses defined here"
"""Each loss is ``loss(logits, target, weight=None)``; ``weight`` ``(N, H, W)`` weights the cross-entropy
term per pixel (the paper's weight maps: mean of ``w(x) * CE(x)`` over labelled pixels). Modes, by shapes:
binary: one sigmoid channel, target ``(N, 1, H, W)``; multiclass: C softmax channels, target ``(N, H, W)``;
multilabel: C independent sigmoid channels, target ``(N, C, H, W)`` (use the ``bce*`` or ``focal*`` names)."""


def get_loss(
    name: str, num_classes: int, class_weights: list[float] | None = None, *, multilabel: bool = False
) -> LossFn:
    """The loss called ``name``; ``"auto"`` is bce_dice for one output channel (or multilabel) and ce_dice
    otherwise.

    ``class_weights``: one weight per class (2 for a one-channel binary model: background, foreground; one per
    channel in multilabel mode).
    """
    sigmoid = num_classes == 1 or multilabel
    if name == "auto":
        name = "bce_dice" if sigmoid else "ce_dice"
    if name not in LOSSES:
        raise ConfigError(f"train.loss {name!r} is unknown; choose auto or one of {', '.join(LOSSES)}")
    if sigmoid and name.startswith("ce"):
        raise ConfigError(f"train.loss {name!r} is a softmax loss; use bce_dice for sigmoid outputs")
    if not sigmoid and name.startswith("bce"):
        raise ConfigError(
            f"train.loss {name!r} needs num_classes == 1; use ce_dice for {num_classes} classes"
        )
    if class_weights is None:
        return LOSSES[name]
    expected = num_classes if multilabel else max(num_classes, 2)
    if len(class_weights) != expected or min(class_weights) < 0:
        raise ConfigError(
            f"train.class_weights needs {expected} non-negative values (one per class), got {class_weights}"
        )
    if name == "dice":
        raise ConfigError("train.class_weights weight the cross-entropy term; the dice loss has none")
    return _make(*_SPEC[name], class_weights=torch.tensor(class_weights, dtype=torch.float32))
