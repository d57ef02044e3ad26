"""Fine-tuning: a new run that starts from a trained model's weights (``--init RUN/best.pt``).

The architecture and the normalisation are the model's own (its weights expect them); the data decides the
input channels and the classes. Weights are copied wherever the shapes agree. When the channels differ, the
input layer is adapted rather than thrown away (grey → colour: the weights shared out over the channels;
colour → grey: summed), as timm adapts pretrained stems; when the classes differ, the output layer starts anew.
Each such change is said in a note.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import StoredModel, load_checkpoint, preprocessing_of, resolve_model_path
from ..config import FINE_TUNE_LR, ModelConfig, RunConfig
from ..errors import CheckpointError, ConfigError

__all__ = ["FINE_TUNE_LR", "INIT_ARCH_FIELDS", "init_config", "input_scale_for", "load_initial_weights"]

#: a model without a recorded range of sizes is taken to segment objects within this factor of its median
SIZE_TOLERANCE = 1.5

#: the fields of the model configuration that come from the initial model
INIT_ARCH_FIELDS = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("in_channels", "num_classes")
)


def init_config(cfg: RunConfig) -> tuple[RunConfig, dict[str, Any], list[str]]:
    """``cfg`` with the initial model's architecture and normalisation (and the fine-tuning learning rate when
    none is set); returns the loaded checkpoint and notes saying what changed. Applying it twice changes
    nothing more."""
    assert cfg.train.init is not None
    path = resolve_model_path(cfg.train.init)
    if path.suffix.lower() in (".onnx", ".zip") or path.is_dir():
        raise ConfigError(
            f"--init {path}: an exported model (ONNX, bioimage.io package) is not a training checkpoint; give RUN, "
            "RUN/best.pt or a built-in model"
        )
    payload = load_checkpoint(path)
    stored = StoredModel.of(payload, path)
    hparams = stored.hparams
    notes = []
    model_changes: dict[str, Any] = {"arch": stored.arch}
    model_changes.update({k: hparams[k] for k in INIT_ARCH_FIELDS if k in hparams})
    changed = {k: v for k, v in model_changes.items() if getattr(cfg.model, k) != v}
    if changed:
        notes.append(
            f"--init {path}: its architecture is used ("
            + ", ".join(f"{k} {getattr(cfg.model, k)} → {v}" for k, v in changed.items())
            + ")"
        )
    cfg.model = dataclasses.replace(cfg.model, **model_changes)
    norm = stored.preprocessing.normalization or {}
    if norm.get("method"):
        fields = {
            "normalization": norm["method"],
            "norm_low": norm.get("low", cfg.data.norm_low),
            "norm_high": norm.get("high", cfg.data.norm_high),
            "norm_scale": norm.get("scale", cfg.data.norm_scale),
        }
        if any(getattr(cfg.data, k) != v for k, v in fields.items()):
            notes.append(f"--init {path}: its normalisation is used ({norm['method']})")
        cfg.data = dataclasses.replace(cfg.data, **fields)
    if cfg.train.lr is None:
        cfg.train = dataclasses.replace(cfg.train, lr=FINE_TUNE_LR)
        notes.append(f"fine-tuning: learning rate {FINE_TUNE_LR:g} (--lr to choose)")
    return cfg, payload, notes


def init_evidence(init: str | None, payload: dict[str, Any] | None = None) -> str | None:
    """Why a dataset's ambiguous masks hold object labels, when the starting model was trained on object labels
    (its stored encoding); else None (see :func:`~unetkit.data.masks.instance_evidence`)."""
    if not init:
        return None
    payload = payload if payload is not None else load_checkpoint(resolve_model_path(init))
    encoding = preprocessing_of(payload, init).encoding or {}
    if encoding.get("name") != "instances":
        return None
    return f"--init {init} (it was trained on object labels, instances)"


def load_initial_weights(model: torch.nn.Module, payload: dict[str, Any], source: str | Path) -> list[str]:
    """Copy the checkpoint's weights into ``model`` wherever shapes agree, adapting the input layer to other
    channel counts; returns notes on every layer that could not be copied as it was."""
    old = payload["state_dict"]
    old_in = int(StoredModel.of(payload, source).hparams.get("in_channels") or 1)
    new_state = model.state_dict()
    new_in = int(getattr(model, "hparams", {}).get("in_channels") or 1)
    adapted, fresh, copied = [], [], 0
    for key, target in new_state.items():
        weight = old.get(key)
        if weight is None:
            fresh.append(key)
        elif weight.shape == target.shape:
            new_state[key] = weight.to(target.dtype)
            copied += 1
        elif _input_weight(weight, target, old_in, new_in):
            new_state[key] = _adapt_channels(weight, new_in).to(target.dtype)
            adapted.append(key)
        else:
            fresh.append(key)
    if not copied:
        raise CheckpointError(
            f"--init {source}: no layer of the model fits this network; is it a unetkit model?"
        )
    model.load_state_dict(new_state)
    notes = []
    if adapted:
        notes.append(
            f"--init {source}: the input layer was adapted from {old_in} to {new_in} channel(s) ({len(adapted)} "
            "tensor(s))"
        )
    if fresh:
        layers = sorted({k.rsplit(".", 1)[0] for k in fresh})
        notes.append(
            f"--init {source}: {', '.join(layers[:4])}{' …' if len(layers) > 4 else ''} start(s) anew (the "
            "classes or the layer shapes differ); every other layer starts from the model"
        )
    return notes


def _input_weight(old: torch.Tensor, new: torch.Tensor, old_in: int, new_in: int) -> bool:
    """A convolution weight that reads the input: only its input-channel axis differs, as the channels do."""
    return (
        old.ndim == new.ndim >= 3
        and old.shape[1] == old_in
        and new.shape[1] == new_in
        and old.shape[:1] + old.shape[2:] == new.shape[:1] + new.shape[2:]
    )


def _adapt_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey → several channels: the weights shared out over them (the same response to a grey image);
    several → one: summed."""
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, channels, *([1] * (weight.ndim - 2))) * (weight.shape[1] / channels)


def input_scale_for(
    payload: dict[str, Any], diameter: float | None, source: str | Path
) -> tuple[float, str | None]:
    """The ``--input-scale`` that brings a dataset's objects (median ``diameter`` px) into the sizes the initial
    model learnt (its ``object_diameter_range``, else its median object diameter within ``SIZE_TOLERANCE``),
    and a note saying so; ``(1.0, None)`` when they already fit or nothing is known."""
    pre = preprocessing_of(payload, source)
    known, learnt = pre.object_diameter_range, pre.object_diameter
    if not diameter or not (known or learnt):
        return 1.0, None
    lo, hi = known or (learnt / SIZE_TOLERANCE, learnt * SIZE_TOLERANCE)  # type: ignore[operator]
    if lo <= diameter <= hi:
        return 1.0, None
    factor = round(min(max(diameter, lo), hi) / diameter, 3)
    return factor, (
        f"--init {source}: your objects are about {diameter:.1f} px across, the model learnt {lo:g}-{hi:g} px: "
        f"images are resampled by {factor:g} for training and for every prediction with the new model "
        "(--input-scale to choose)"
    )
