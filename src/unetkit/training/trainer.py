"""The fit loop over epochs: steps, validation, best/last checkpoints, logs, early stopping, the time budget,
and Ctrl-C at an exact, resumable position. Built by :func:`~unetkit.training.setup.build_training`; run by the
``train`` workflow (:func:`unetkit.workflows.train`)."""

from __future__ import annotations

import logging
import time

from tqdm.auto import tqdm

from .distributed import DistContext
from .loop import StopRequest, TrainHooks, TrainingInterrupted, train_epoch, validate
from .run_folder import RunFolder
from .setup import TrainingSetup
from .state import TrainResult, TrainState

__all__ = ["fit"]

log = logging.getLogger(__name__)


def _budget_spent(st: TrainState, budget: float | None, epochs: int) -> bool:
    """Whether another epoch would overrun the time budget (measured from the epochs so far)."""
    spent = sum(h["seconds"] for h in st.history)
    if budget and st.epoch < epochs and spent + spent / len(st.history) > budget:
        log.info(
            "time budget: %.0f s of training spent of %.0f s; another epoch would overrun it", spent, budget
        )
        return True
    return False


def _validated_row(
    setup: TrainingSetup, st: TrainState, ctx: DistContext, epoch: int, t0: float, data_wait: float, tile: int
) -> dict[str, float]:
    """Validate after an epoch; the epoch's row of metrics.csv (losses averaged over every rank's steps)."""
    step = setup.step
    t_val = time.perf_counter()
    val = validate(
        step.model,
        setup.preprocessing,
        setup.store,
        setup.val_views,
        step.device,
        setup.cfg.train.amp,
        tile,
        ctx,
    )
    loss_sum, loss_n = ctx.sum([float(sum(st.epoch_losses)), len(st.epoch_losses)])
    return {
        "epoch": epoch,
        "train_loss": loss_sum / loss_n,
        **val,
        "lr": step.optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - t0,
        "val_seconds": time.perf_counter() - t_val,
        "data_wait": data_wait,
    }


def fit(
    setup: TrainingSetup,
    folder: RunFolder,
    st: TrainState,
    ctx: DistContext,
    *,
    progress: bool,
    resume_hint: str,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Train from ``st`` to the end (epochs, early stopping or the budget); rank 0 writes the run folder."""
    cfg = setup.cfg
    step = setup.step
    total = cfg.train.epochs * cfg.train.steps_per_epoch
    bar = tqdm(
        total=total,
        initial=st.epoch * cfg.train.steps_per_epoch + st.step_in_epoch,
        disable=not (progress and ctx.is_main),
        unit="step",
        dynamic_ncols=True,
    )
    stopped_early = False
    last_val = "-" if not st.history else f"{st.history[-1]['val_dice']:.3f}"
    stop = StopRequest(hooks.stop if hooks is not None else None)
    tile = max(setup.patch_in) if setup.volumes else 512
    try:
        for epoch in range(st.epoch + 1, cfg.train.epochs + 1):
            bar.set_description(f"epoch {epoch}/{cfg.train.epochs}")
            t0 = time.perf_counter()
            seconds, wait = train_epoch(step, setup.dataset, st, cfg, epoch, ctx, bar, stop, last_val, hooks)
            row = _validated_row(setup, st, ctx, epoch, t0, wait / max(seconds, 1e-9), tile)
            best = st.end_epoch(row)
            if ctx.is_main:
                if best:
                    setup.save(folder.best, st, last=False)
                setup.save(folder.last, st, last=True)
                folder.log_epoch(st.history)
                if hooks is not None and hooks.on_epoch is not None:
                    hooks.on_epoch(dict(row, best_epoch=st.best_epoch, best_score=st.best_score))
            last_val = f"{row['val_dice']:.3f} (best {st.best_score:.3f} @ {st.best_epoch})"
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_dice=last_val)
            log.debug("epoch %d: %s", epoch, row)
            if stop.requested:
                raise KeyboardInterrupt
            if epoch - st.best_epoch >= cfg.train.patience:
                stopped_early = True
                log.info("early stopping: no better validation Dice for %d epochs", cfg.train.patience)
                break
            if _budget_spent(st, cfg.train.time_budget, cfg.train.epochs):
                stopped_early = True
                break
    except KeyboardInterrupt:
        bar.close()
        if ctx.is_main:
            setup.save(folder.last, st, last=True)  # the exact position, mid-epoch included
        raise TrainingInterrupted(
            f"interrupted during epoch {st.epoch + 1} at step {st.step_in_epoch}; {folder.last} holds "
            f"this point. Continue with: {resume_hint}"
        ) from None
    except FloatingPointError as exc:
        raise FloatingPointError(
            f"{exc}; {folder.path} keeps config.yaml and metrics.csv of this attempt (train again with --overwrite)"
        ) from None
    finally:
        stop.restore()
        bar.close()
        folder.close()
        ctx.close()
    return TrainResult(
        folder.path, folder.best, folder.last, st.best_score, st.best_epoch, st.history, stopped_early
    )
