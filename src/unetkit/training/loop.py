"""One epoch of the fit loop, validation by tiled prediction, the optimiser and learning-rate schedule, and the
deferred Ctrl-C that keeps the saved position exact."""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import OPTIMIZERS, SCHEDULES, RunConfig
from ..data.dataset import PatchDataset, SampleStore, View
from ..data.weights import IGNORE
from ..device import autocast
from ..errors import TrainingInterrupted
from ..inference.predictor import Predictor
from ..metrics import dice_iou
from .distributed import DistContext
from .state import TrainState

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Schedule",
    "Step",
    "StopRequest",
    "TrainHooks",
    "TrainingInterrupted",
    "make_optimizer",
    "make_schedule",
    "object_sums",
    "rank_indices",
    "train_epoch",
    "validate",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainHooks:
    """How a caller in the same process (a GUI, a notebook) follows and stops a run: ``stop`` set from any
    thread stops it after the current step, exactly as Ctrl-C does (``last.pt`` at that position, ``best.pt``
    kept, :class:`TrainingInterrupted` raised); ``on_step(epoch, step, steps, loss)`` after every training step
    and ``on_epoch(row)`` with each epoch's ``metrics.csv`` row after it is written. Called on the training
    thread: keep them short (a GUI posts a queued signal)."""

    stop: threading.Event | None = None
    on_step: Callable[[int, int, int, float], None] | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None


def leave_sigchld_alone() -> None:
    """Keep PyTorch's DataLoader from taking over SIGCHLD for its worker processes (it installs a Python handler
    once per process and leaves it behind). With ONNX Runtime or OpenVINO loaded in the same process, a worker
    or any other child process exiting under that handler crashed the process (SIGSEGV, reproducible in the
    test suite's process). Without it a dead worker is still found: the DataLoader checks its workers whenever
    it waits for a batch."""
    from torch.utils.data._utils import signal_handling

    signal_handling._SIGCHLD_handler_set = True  # as if installed: the DataLoader installs nothing


class StopRequest:
    """Ctrl-C during training is deferred to the end of the current step, so the saved position always
    matches the saved weights; a second Ctrl-C stops at once. ``event``: a stop asked for by the caller
    (:class:`TrainHooks`), checked at the same points."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self._signalled = False
        self._event = event
        self._previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    @property
    def requested(self) -> bool:
        return self._signalled or (self._event is not None and self._event.is_set())

    def _handle(self, signum: int, frame: object) -> None:
        if self._signalled:
            raise KeyboardInterrupt
        self._signalled = True
        log.warning("stopping after this step (Ctrl-C again to stop at once)")

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@dataclass
class Step:
    """What one optimiser step needs: the model (``forward``: wrapped by DDP/compile; ``model``: its weights),
    the loss, optimiser, schedule and gradient scaler."""

    model: torch.nn.Module
    forward: torch.nn.Module
    loss_fn: Callable[..., torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool
    num_classes: int
    memory_format: torch.memory_format = torch.contiguous_format
    #: bfloat16 autocast on CPUs with native bfloat16 (2-D only: torch 2.13's CPU bfloat16 Conv3d backward
    #: returned non-finite weight gradients, intermittently, on small volume patches)
    cpu_bf16: bool = False
    #: batch-norm layers keep their running statistics and normalise with them (``train.freeze_norm``)
    frozen_norm: bool = False

    def train_mode(self) -> None:
        """The model in training mode; with ``frozen_norm`` its batch-norm layers stay in evaluation mode (their
        statistics neither change nor are replaced by each batch's; their scale and shift still learn)."""
        self.model.train()
        if self.frozen_norm:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        y = y.to(self.device, non_blocking=True)
        weight = weight.to(self.device, non_blocking=True) if weight is not None else None
        target = y[:, None] if self.num_classes == 1 else y.long()
        with autocast(self.device, self.amp, cpu=self.cpu_bf16):
            logits = self.forward(x)
        loss = self.loss_fn(logits.float(), target, weight)
        aux = getattr(self.model, "aux_logits", None)  # deep supervision (unet++): mean over all heads
        if aux:
            loss = (loss + sum(self.loss_fn(a.float(), target, weight) for a in aux)) / (len(aux) + 1)
        if torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
        return loss


def train_epoch(
    step: Step,
    dataset: PatchDataset,
    st: TrainState,
    cfg: RunConfig,
    epoch: int,
    ctx: DistContext,
    bar: tqdm,
    stop: StopRequest,
    last_val: str,
    hooks: TrainHooks | None = None,
) -> tuple[float, float]:
    """The training steps of ``epoch`` from ``st.step_in_epoch`` on; returns (seconds, data-wait seconds).

    Patches are a pure function of (seed, epoch, index): resuming mid-epoch starts at the next index.
    """
    t0 = time.perf_counter()
    batch = cfg.train.batch_size // ctx.world  # this rank's share of the global batch
    dataset.set_epoch(epoch)
    step.train_mode()
    if cfg.train.num_workers > 0:
        leave_sigchld_alone()
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=rank_indices(st.step_in_epoch, cfg.train.steps_per_epoch, batch, ctx),
        num_workers=cfg.train.num_workers,
        pin_memory=step.device.type == "cuda",
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.train.seed + epoch),  # never the global stream
    )
    # data_wait: the share of the training steps' time spent waiting for the next batch (starvation)
    wait, t_ready = 0.0, time.perf_counter()
    for x, y, *w in loader:
        wait += time.perf_counter() - t_ready
        loss = step(x, y, w[0] if w else None)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {loss.item()} at epoch {epoch}: lower --lr (now {cfg.train.lr:g})"
            )
        st.epoch_losses.append(loss.item())
        st.step_in_epoch += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(st.epoch_losses[-20:]):.3f}", val_dice=last_val)
        if hooks is not None and hooks.on_step is not None:
            hooks.on_step(epoch, st.step_in_epoch, cfg.train.steps_per_epoch, st.epoch_losses[-1])
        if stop.requested:
            raise KeyboardInterrupt
        t_ready = time.perf_counter()
    return time.perf_counter() - t0, wait


def validate(
    model: torch.nn.Module,
    preprocessing: dict[str, Any],
    store: SampleStore,
    views: list[View],
    device: torch.device,
    amp: bool,
    tile: int = 512,
    ctx: DistContext | None = None,
) -> dict[str, float]:
    """Tiled prediction of each validation image; mean Dice, IoU and cross-entropy over images, and with
    instance masks (2-D) the panoptic quality of the objects (``val_pq``, :func:`object_sums`).

    Unlabelled (ignored) pixels are left out; with several classes, Dice and IoU are averaged over the
    foreground classes. Distributed: each rank predicts its share of the images; the means are over all.
    """
    ctx = ctx or DistContext()
    predictor = Predictor(model, preprocessing, device=device, amp=amp, tile=tile, precision="float32")
    dices, ious, losses = [], [], []
    objects = np.zeros(4)
    by_objects = False
    for view in views[ctx.rank :: ctx.world]:
        image, target, *_ = view.read(store)
        probs = predictor.predict_proba(image, view.name, prepared=True)
        labels = predictor.to_labels(probs)
        valid = target != IGNORE
        truth = view.objects(store)
        if truth is not None and truth.shape == labels.shape:
            by_objects = True
            objects += object_sums(truth, predictor.instances(labels), valid)
        t = np.where(valid, target, 0)
        if probs.shape[0] == 1:
            p_true = np.where(t == 1, probs[0], 1 - probs[0])
            d, i = dice_iou(labels[valid], t[valid])
        else:
            p_true = np.take_along_axis(probs, t[None].astype(np.int64), 0)[0]
            scores = [dice_iou(labels[valid] == c, t[valid] == c) for c in range(1, probs.shape[0])]
            d, i = float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))
        losses.append(float(-np.log(np.clip(p_true[valid], 1e-7, 1)).mean()) if valid.any() else 0.0)
        dices.append(d)
        ious.append(i)
    model.train()
    ce, dice, iou, n, found, iou_sum, tp, fp, fn = ctx.sum(
        [sum(losses), sum(dices), sum(ious), len(dices), float(by_objects), *objects.tolist()]
    )
    row = {"val_ce": ce / n, "val_dice": dice / n, "val_iou": iou / n}
    if found:
        row["val_pq"] = iou_sum / (tp + 0.5 * fp + 0.5 * fn) if tp + fp + fn else 1.0
    return row


def object_sums(truth: np.ndarray, pred: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """``[sum of matched IoUs, TP, FP, FN]`` of the objects in the ``counted`` pixels (held-out objects with
    their surroundings, or rows), matched one to one at IoU 0.5: true objects cut to those pixels, and predicted
    objects with at least half of their pixels there, cut alike. Panoptic quality is ``IoUs / (TP + FP/2 +
    FN/2)`` over every validation image's sums (Kirillov et al. 2019)."""
    from ..metrics.instance import match_instances

    pred = np.asarray(pred)
    size = int(pred.max()) + 1
    inside = np.bincount(pred[counted].ravel(), minlength=size)
    kept = 2 * inside >= np.bincount(pred.ravel(), minlength=size)
    kept[0] = False
    scores = match_instances(np.where(counted, truth, 0), np.where(counted & kept[pred], pred, 0))
    tp, fp, fn = scores.counts(0.5)
    return np.array([float(scores.matched_ious(0.5).sum()), tp, fp, fn], float)


def rank_indices(step: int, steps: int, batch: int, ctx: DistContext) -> list[int] | range:
    """Patch indices this rank draws from ``step`` on: rank r takes the r-th ``batch``-sized slice of every global
    batch of ``batch x world`` patches, so together the ranks see what one process would."""
    if not ctx.enabled:
        return range(step * batch, steps * batch)
    size = batch * ctx.world
    return [s * size + ctx.rank * batch + i for s in range(step, steps) for i in range(batch)]


def make_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    t = cfg.train
    assert t.lr is not None, "the train workflow resolves the learning rate before the optimiser is made"
    params = model.parameters()
    if t.optimizer == "sgd":  # the paper: SGD with momentum 0.99
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)


class Schedule:
    """Learning-rate factor per step: linear warm-up, then cosine or poly (0.9) decay to 1% at step ``total``,
    or constant. An object, not a closure, so ``total`` can follow a budgeted run's length and ``LambdaLR``
    saves and restores it with the scheduler's state (an exact resume)."""

    def __init__(self, name: str, warmup: int, total: int) -> None:
        self.name, self.warmup, self.total = name, warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.name == "cosine":
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))
        if self.name == "poly":
            return max(0.01, (1 - progress) ** 0.9)
        return 1.0


def make_schedule(name: str, warmup: int, total: int) -> Schedule:
    """The learning-rate factor per step (:class:`Schedule`)."""
    return Schedule(name, warmup, total)
