"""The fit loop over epochs: steps, validation, best/last checkpoints, logs, early stopping, the time budget,
and Ctrl-C at an exact, resumable position. Built by :func:`~unetkit.training.setup.build_training`; run by the
``train`` workflow (:func:`unetkit.workflows.train`)."""

from __future__ import annotations

import dataclasses
import logging
import math
import time

from tqdm.auto import tqdm

from ..config import DEFAULT_TILE
from .distributed import DistContext
from .loop import StopRequest, TrainHooks, TrainingInterrupted, train_epoch, validate
from .run_folder import RunFolder
from .setup import TrainingSetup
from .state import SCORES, BudgetClock, TrainResult, TrainState

__all__ = ["REFIT_SHARE", "fit"]

log = logging.getLogger(__name__)

#: a budgeted run's epochs are re-fitted to end by this share of the budget (the rest: noise, the last saves)
REFIT_SHARE = 0.97


def _budget_spent(st: TrainState, clock: BudgetClock, budget: float | None, epochs: int) -> bool:
    """Whether another epoch would overrun the time budget: the clock (from the command's start, planning
    included) plus the next epoch's expected seconds."""
    expected = st.epoch_seconds()
    if not budget or st.epoch >= epochs or expected is None:
        return False
    spent = clock.elapsed()
    if spent + expected > budget:
        log.info(
            "time budget: %.0f s of %.0f s spent (planning included); another epoch would overrun it",
            spent,
            budget,
        )
        return True
    return False


def _refitted(setup: TrainingSetup, st: TrainState, clock: BudgetClock) -> int:
    """A planned, budgeted run's epochs re-fitted to the budget at the pace measured so far (the plan's estimate
    came from a few steps); unchanged after the first half of the run."""
    cfg, budget = setup.cfg, setup.cfg.train.time_budget
    expected = st.epoch_seconds()
    if not budget or expected is None or 2 * st.epoch > cfg.train.epochs:
        return cfg.train.epochs
    epochs = max(st.epoch, st.epoch + int((REFIT_SHARE * budget - clock.elapsed()) // expected))
    if epochs != cfg.train.epochs:
        log.info(
            "time budget: %d epochs instead of the planned %d fill it at the measured %.1f s per epoch",
            epochs,
            cfg.train.epochs,
            expected,
        )
    return epochs


def _set_epochs(setup: TrainingSetup, epochs: int, bar: tqdm) -> None:
    """The run's length (saved with its configuration) and the learning-rate schedule's, which follows it."""
    cfg = setup.cfg
    if epochs == cfg.train.epochs:
        return
    cfg.train = dataclasses.replace(cfg.train, epochs=epochs)
    total = epochs * cfg.train.steps_per_epoch
    for schedule in setup.step.scheduler.lr_lambdas:
        schedule.total = total
    bar.total = total
    bar.refresh()


def _validated_row(
    setup: TrainingSetup, st: TrainState, ctx: DistContext, epoch: int, t0: float, data_wait: float, tile: int
) -> dict[str, float]:
    """Validate after an epoch; the epoch's row of metrics.csv (losses averaged over every rank's steps; epoch
    0, the starting model before any step, has no training loss: NaN)."""
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
        "train_loss": loss_sum / loss_n if loss_n else math.nan,
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
    clock: BudgetClock | None = None,
    fill_budget: bool = False,
) -> TrainResult:
    """Train from ``st`` to the end (epochs, early stopping or the budget); rank 0 writes the run folder.

    A run that starts from a trained model (``train.init``) validates it first, as epoch 0, so ``best.pt`` is
    the starting model until an epoch beats it by ``START_MARGIN``: fine-tuning never ends worse than its start. ``clock``: the
    command's budget clock (planning included; default: started now). ``fill_budget``: the epochs are a plan's
    estimate for ``train.time_budget``, re-fitted to it after each epoch of the first half at the measured pace
    (rank 0's clock decides for every rank)."""
    cfg = setup.cfg
    step = setup.step
    clock = clock or BudgetClock()
    total = cfg.train.epochs * cfg.train.steps_per_epoch
    bar = tqdm(
        total=total,
        initial=st.epoch * cfg.train.steps_per_epoch + st.step_in_epoch,
        disable=not (progress and ctx.is_main),
        unit="step",
        dynamic_ncols=True,
    )
    stopped_early = False
    fresh = not st.history and st.epoch == 0 and st.step_in_epoch == 0
    if fresh:
        st.score = setup.score  # a resumed run keeps what it chose by
    score, named = st.score, SCORES[st.score]
    last_val = "-" if not st.history else f"{st.history[-1][score]:.3f}"
    stop = StopRequest(hooks.stop if hooks is not None else None)
    finished = False  # the loop ended the same way on every rank
    tile = max(setup.patch_in) if setup.volumes else DEFAULT_TILE

    def finish(epoch: int, t0: float, seconds: float, wait: float) -> dict[str, float]:
        """Validate, record and save the epoch; its row."""
        row = _validated_row(setup, st, ctx, epoch, t0, wait / max(seconds, 1e-9), tile)
        clock.add("training", seconds)
        clock.add("validation", row["val_seconds"])
        row["elapsed"] = clock.elapsed()  # on the budget clock: from the command's start
        best = st.end_epoch(row)
        st.clock = {"elapsed": clock.elapsed(), **clock.phases}
        if ctx.is_main:
            if best:
                setup.save(folder.best, st, last=False)
            setup.save(folder.last, st, last=True)
            folder.log_epoch(st.history, st.best_epoch)
            if hooks is not None and hooks.on_epoch is not None:
                hooks.on_epoch(dict(row, best_epoch=st.best_epoch, best_score=st.best_score, score=st.score))
        return row

    try:
        if cfg.train.init and fresh:
            bar.set_description("epoch 0: the starting model")
            row = finish(0, time.perf_counter(), 0.0, 0.0)
            last_val = f"{row[score]:.3f} (start)"
            log.info(
                "epoch 0, the starting model %s before any step: %s %.4f%s",
                cfg.train.init,
                named,
                row[score],
                f" (validation Dice {row['val_dice']:.4f}); best.pt follows the objects"
                if score != "val_dice"
                else "",
            )
        while st.epoch < cfg.train.epochs:  # cfg.train.epochs may follow the budget (fill_budget)
            epoch = st.epoch + 1
            bar.set_description(f"epoch {epoch}/{cfg.train.epochs}")
            t0 = time.perf_counter()
            seconds, wait = train_epoch(step, setup.dataset, st, cfg, epoch, ctx, bar, stop, last_val, hooks)
            row = finish(epoch, t0, seconds, wait)
            last_val = f"{row[score]:.3f} (best {st.best_score:.3f} @ {st.best_epoch})"
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", **{score: last_val})
            log.debug("epoch %d: %s", epoch, row)
            if stop.requested:
                raise KeyboardInterrupt
            if fill_budget:  # every rank runs rank 0's number of epochs
                epochs = _refitted(setup, st, clock) if ctx.is_main else 0
                _set_epochs(setup, int(ctx.sum([float(epochs)])[0]), bar)
            if epoch - st.best_epoch >= cfg.train.patience:
                stopped_early = True
                log.info("early stopping: no better %s for %d epochs", named, cfg.train.patience)
                break
            # every rank stops together: rank 0's clock decides
            spent = _budget_spent(st, clock, cfg.train.time_budget, cfg.train.epochs) and ctx.is_main
            if ctx.sum([float(spent)])[0] > 0:
                stopped_early = True
                break
        finished = True
    except KeyboardInterrupt:
        bar.close()
        if ctx.is_main:
            st.clock = {"elapsed": clock.elapsed(), **clock.phases}
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
        ctx.close(finished=finished)
    if ctx.is_main:
        if st.best_epoch == 0 and st.history and st.history[0]["epoch"] == 0:
            log.info(
                "no epoch clearly beat the starting model (%s %.4f): best.pt is the starting model, with this "
                "run's preprocessing",
                named,
                st.best_score,
            )
        log.info("time: %s", clock.split())
    return TrainResult(
        folder.path, folder.best, folder.last, st.best_score, st.best_epoch, st.history, stopped_early, score
    )
