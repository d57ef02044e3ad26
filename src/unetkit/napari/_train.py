"""The Train widget: a U-Net trained from painted layers (an image and its labels; unpainted pixels background or
ignored) or from a dataset folder, within a time budget, optionally starting from a built-in model, in a worker
thread with a live plot of the loss and the validation Dice, and Cancel that keeps the best model so far. The
trained model is offered in every Segment widget.

The work is what ``unetkit train DATA --time-budget T [--init NAME]`` runs: the configuration made by the same
function (:func:`~unetkit.workflows.plan.configure_training`: the plan, or a settings file as ``--config``, and
the initial model), the announcement, and :func:`~unetkit.workflows.train.train`
with :class:`~unetkit.training.loop.TrainHooks` for the progress and Cancel. Painted layers are first written as
a dataset folder (:func:`~unetkit.workflows.painted.write_painted_dataset`), kept with the run, so every model
can be traced to the labels it learnt from and retrained from the command line.

Each training writes ``WORK/NAME-N/`` (``data/`` for painted layers, ``run/`` with ``best.pt``, ``last.pt``,
``metrics.csv``, ``curves.png`` and TensorBoard logs); nothing is overwritten.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar

from magicgui.types import FileDialogMode
from magicgui.widgets import (
    ComboBox,
    FileEdit,
    FloatSpinBox,
    SpinBox,
    create_widget,
)
from qtpy.QtCore import QObject, Signal

from ..config import RunConfig, load_config
from ..errors import UnetkitError
from ..workflows.painted import UNPAINTED, write_painted_dataset
from ..workflows.plan import plan_and_train
from ..workflows.segment import builtin_models, declared
from ..workflows.train import SCORES, TrainHooks, TrainingInterrupted, new_folder
from ._models import TRAINED
from ._worker import (
    REVIEWED_KEY,
    WorkerWidget,
    channel_axis_choices,
    channels_last,
    chosen_axis,
    full_resolution,
    is_result,
    painted_labels,
    safe_name,
    save_to,
    shown_index,
)

__all__ = ["SCRATCH", "TrainWidget"]

log = logging.getLogger(__name__)

SOURCES = ("painted layers", "dataset folder")
#: the "start from" choice that trains from random weights
SCRATCH = "(from scratch)"
#: seconds between redraws of the plot while steps arrive
REDRAW = 0.5
#: the plot's colours: napari's dark theme
PAPER, INK = "#262930", "#d1d2d4"


class Cancelled(Exception):
    """Cancel pressed before training started (while planning): nothing was trained."""


class _Events(QObject):
    """From the worker thread to the widget (queued Qt signals: safe across threads)."""

    said = Signal(str)
    run = Signal(str)  # the run folder, once chosen
    planned = Signal(int, int)  # epochs, steps per epoch
    step = Signal(int, int, int, float)  # epoch, step, steps per epoch, loss
    epoch = Signal(dict)


class TrainWidget(WorkerWidget):
    """Train a U-Net from painted layers or a dataset folder (see the module docstring)."""

    FIELDS: ClassVar[dict[str, str]] = {
        "--time-budget": "the time budget ('minutes')",
        "--init": "'start from'",
        "--config": "'settings'",
        "--no-plan": "no plan",
    }

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        import napari.layers

        self.viewer = napari_viewer
        self.source = ComboBox(label="train from", choices=list(SOURCES), value=SOURCES[0])
        self.image: Any = create_widget(annotation=napari.layers.Image, label="image")
        self.channel_axis = ComboBox(
            label="channel axis", choices=lambda _widget: channel_axis_choices(self.image.value),
            tooltip="the axis of the image layer that holds its channels (stains), if any: a model from scratch "
            "learns from them all; a built-in model (one channel) from the one shown",
        )  # fmt: skip
        self.labels: Any = create_widget(annotation=napari.layers.Labels, label="labels")
        self.unpainted = ComboBox(
            label="unpainted pixels",
            choices=list(UNPAINTED),
            value=UNPAINTED[0],
            tooltip="background: every object is painted; ignored: only painted pixels count (paint background "
            "with the background label)",
        )
        self.background_label = SpinBox(
            label="background label", value=1, min=1, max=2**31 - 1, tooltip="the label painted on background"
        )
        self.folder = FileEdit(
            label="dataset",
            mode=FileDialogMode.EXISTING_DIRECTORY,
            value=None,
            tooltip="any layout of check-data",
        )
        builtins = builtin_models()
        self.init = ComboBox(
            label="start from",
            choices=[*builtins, SCRATCH],
            value=builtins[0] if builtins else SCRATCH,
            tooltip="fine-tune a built-in model (fewer labels needed), or train from random weights",
        )
        self.budget = FloatSpinBox(
            label="minutes",
            value=10.0,
            min=0.1,
            max=24 * 60.0,
            step=1.0,
            tooltip="time budget, planning included",
        )
        self.settings = FileEdit(
            label="settings",
            mode=FileDialogMode.EXISTING_FILE,
            value=None,
            filter="*.yaml",
            tooltip="optional: a config YAML (as unetkit train --config) instead of the plan",
        )
        self.work = save_to("a folder per training: NAME-N/data (painted layers) and NAME-N/run")
        self.extend(
            [
                self.source,
                self.image,
                self.channel_axis,
                self.labels,
                self.unpainted,
                self.background_label,
                self.folder,
                self.init,
                self.budget,
                self.settings,
                self.work,
                *self._controls("Train", "Cancel (keeps the best model)", "steps", self.start),
            ]
        )
        self.plot = _Plot()
        self.inner.layout().addWidget(self.plot.canvas)
        self._events = _Events()
        self._events.said.connect(self._say)
        self._events.run.connect(self._run)
        self._events.planned.connect(self._planned)
        self._events.step.connect(self._step)
        self._events.epoch.connect(self._epoch)
        self._t0 = time.perf_counter()
        self.run_dir: Path | None = None
        self.best: dict[str, Any] | None = None
        self.source.changed.connect(self._show_fields)
        self.unpainted.changed.connect(self._show_fields)
        self.image.changed.connect(self._show_fields)  # type: ignore[attr-defined]
        self._show_fields()
        self._labels_by_hand = self._choosing = False
        labels: Any = self.labels  # (magicgui's Container has a `labels` flag of its own: mypy sees that)
        labels.changed.connect(self._labels_changed)
        self._choose_labels()
        self.viewer.layers.events.inserted.connect(self._choose_labels)

    def _labels_changed(self, *_: Any) -> None:
        if not self._choosing:
            self._labels_by_hand = True

    def _choose_labels(self, *_: Any) -> None:
        """The labels to learn from default to the newest layer a person painted, never a Segment result (the
        first Labels layer was chosen, often the objects Segment had just added); a layer chosen by hand stays."""
        self._choosing = True
        try:
            self.labels.reset_choices()
            current, painted = self.labels.value, painted_labels(self.viewer)
            if painted is not None and (current is None or is_result(current) or not self._labels_by_hand):
                self.labels.value = painted
                how = getattr(painted, "metadata", {}).get(REVIEWED_KEY)
                if how:  # labels a Review made say how they are to be read
                    self.unpainted.value = how["unpainted"]
                    self.background_label.value = how["background_label"]
        finally:
            self._choosing = False

    def _show_fields(self, *_: Any) -> None:
        layers = self.source.value == SOURCES[0]
        for w in (self.image, self.labels, self.unpainted):
            w.visible = layers
        self.channel_axis.reset_choices()
        self.channel_axis.visible = layers and len(self.channel_axis.choices) > 1
        self.background_label.visible = layers and self.unpainted.value == "ignored"
        self.folder.visible = not layers

    def _job(self) -> dict[str, Any]:
        """What to train, read from the widgets on the GUI thread (the worker never touches them)."""
        settings = str(self.settings.value or "")
        job: dict[str, Any] = {
            "started": time.perf_counter(),  # the budget's clock: from the click, planning included
            "budget": float(self.budget.value) * 60,
            "init": None if self.init.value == SCRATCH else self.init.value,
            "settings": settings if settings not in ("", ".") else None,
            "work": Path(str(self.work.value)).expanduser(),
        }
        if self.source.value == SOURCES[0]:
            image, labels = self.image.value, self.labels.value
            if image is None or labels is None:
                raise UnetkitError("choose the image layer and the labels layer painted on it")
            pixels, channels = full_resolution(image), False
            axis = chosen_axis(self.channel_axis.value)
            if axis is not None:  # the layer's stains, moved last
                pixels = channels_last(pixels, axis)
                if job["init"] is not None and declared(job["init"]).channels == 1:
                    pixels = pixels[..., shown_index(self.viewer, image, axis)]  # the stain it fine-tunes on
                else:
                    channels = True
            job["layers"] = {
                "image": pixels,
                "labels": full_resolution(labels),
                "unpainted": self.unpainted.value,
                "background_label": int(self.background_label.value),
                "channels": channels,
            }
            job["name"] = safe_name(image.name)
        else:
            folder = str(self.folder.value or "")
            if folder in ("", "."):
                raise UnetkitError("choose the dataset folder")
            job["data"], job["name"] = Path(folder), safe_name(Path(folder).name)
        return job

    def start(self, *_: Any) -> Any:
        """Train in a worker thread; returns the worker."""
        try:
            job = self._job()
        except UnetkitError as exc:
            self.status.value = str(exc)
            return None
        self.run_dir, self.best = None, None
        self.plot.clear()
        hooks = TrainHooks(
            stop=self._cancel,
            on_step=self._events.step.emit,
            on_epoch=self._events.epoch.emit,
        )
        return self._launch(_train_job, job, hooks, self._events, returned=self._trained)

    def stop(self, *_: Any) -> None:
        super().stop()
        self.status.value = "stopping after the current step ..."

    # -- progress (GUI thread) --------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        self.status.value = text

    def _run(self, folder: str) -> None:
        self.run_dir = Path(folder)

    def _planned(self, epochs: int, steps: int) -> None:
        self.progress.max, self.progress.value = max(1, epochs * steps), 0
        self.progress.native.setFormat("%p%")
        self.plot.epochs = epochs
        self._t0 = time.perf_counter()

    def _step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        done = min(self.progress.max, (epoch - 1) * steps + step)
        self.progress.value = done
        self.plot.add_step(epoch - 1 + step / steps, loss)
        left = (time.perf_counter() - self._t0) / done * (self.progress.max - done)  # validations included
        self.progress.native.setFormat(f"%p% · about {_duration(left)} left")

    def _epoch(self, row: dict[str, Any]) -> None:
        score = row.get("score", "val_dice")
        named = SCORES[score]
        self.best = {"epoch": row["best_epoch"], "score": row["best_score"], "named": named}
        self.plot.add_epoch(row)
        if row["epoch"] == 0:
            self.status.value = f"the starting model: {named} {row[score]:.3f} (epoch 0, before any step)"
            return
        self.status.value = (
            f"epoch {int(row['epoch'])}: loss {row['train_loss']:.3f}, {named} {row[score]:.3f} "
            f"(best {row['best_score']:.3f} at epoch {int(row['best_epoch'])})"
        )

    def _idle(self) -> None:
        super()._idle()
        self.progress.native.setFormat("%p%")

    def _offer(self, checkpoint: Path, what: str) -> str:
        label = f"{checkpoint.parent.parent.name} (trained)"
        TRAINED.add(label, checkpoint)
        return f"{what}: {checkpoint} is offered in Segment as {label!r}"

    def _trained(self, result: Any) -> None:
        self.plot.draw()
        at = (
            "the starting model (no epoch beat it)"
            if result.best_epoch == 0
            else f"epoch {result.best_epoch}"
        )
        done = f"best {result.score_name} {result.best_score:.3f}: {at} of {result.trained_epochs}"
        self.status.value = self._offer(Path(result.best_checkpoint), done)

    def _failed(self, exc: BaseException) -> None:
        self.plot.draw()
        if isinstance(exc, Cancelled):
            self.status.value = "cancelled while planning: nothing was trained"
            return
        best = self.run_dir / "best.pt" if self.run_dir is not None else None
        if isinstance(exc, TrainingInterrupted):
            if best is not None and best.is_file() and self.best is not None:
                what = (
                    f"cancelled; kept the best model ({self.best['named']} {self.best['score']:.3f}, epoch "
                )
                self.status.value = self._offer(best, what + f"{int(self.best['epoch'])})")
            else:
                self.status.value = "cancelled before the first validation: no model to keep"
            return
        super()._failed(exc)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def job_settings(job: dict[str, Any]) -> dict[str, Any]:
    """The widget's settings as ``unetkit train`` gives them to
    :func:`~unetkit.workflows.plan.configure_training`: the plan, or the settings file as ``--config``; the
    model to fine-tune with the fine-tuning learning rate (the widget chooses none)."""
    return {
        "settings": load_config(job["settings"]) if job["settings"] else None,
        "init": job["init"],
        "time_budget": job["budget"],
        "progress": False,
        "started": job["started"],
    }


def _train_job(job: dict[str, Any], hooks: TrainHooks, events: _Events) -> Any:
    """The worker: the dataset (painted layers written, or the folder), then
    :func:`~unetkit.workflows.plan.plan_and_train` as ``unetkit train`` runs it."""
    import numpy as np

    say = events.said.emit
    folder = new_folder(job["work"], job["name"])
    out = folder / "run"
    if "layers" in job:
        layers = job["layers"]
        say(f"writing the painted labels to {folder / 'data'} ...")
        data = write_painted_dataset(
            np.asarray(layers["image"]),
            np.asarray(layers["labels"]),
            folder / "data",
            name=job["name"],
            unpainted=layers["unpainted"],
            background_label=layers["background_label"],
            channels=layers.get("channels", False),
        )
    else:
        data = job["data"]
    if not job["settings"]:
        say(f"planning for {job['budget'] / 60:g} min (counted in the budget) ...")

    def planned(cfg: RunConfig) -> None:
        if hooks.stop is not None and hooks.stop.is_set():
            raise Cancelled
        events.run.emit(str(out))
        events.planned.emit(cfg.train.epochs, cfg.train.steps_per_epoch)

    return plan_and_train(
        data,
        out,
        say=lambda text: say(text.replace(" on ", "\non ", 1).replace("; ", "\n")),
        planned=planned,
        hooks=hooks,
        **job_settings(job),
    )


class _Plot:
    """The loss per step, the training loss and the validation Dice per epoch, redrawn as they arrive."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.6, 2.6), dpi=100, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.loss = self.figure.add_subplot(1, 1, 1)
        self.dice = self.loss.twinx()
        self.epochs = 0
        self._last = 0.0
        self.clear()

    def clear(self) -> None:
        self.steps: list[tuple[float, float]] = []
        self.rows: list[dict[str, float]] = []
        self.draw()

    def add_step(self, x: float, loss: float) -> None:
        self.steps.append((x, loss))
        if time.perf_counter() - self._last > REDRAW:
            self.draw()

    def add_epoch(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        self.draw()

    def draw(self) -> None:
        self._last = time.perf_counter()
        ax, ax2 = self.loss, self.dice
        ax.clear()
        ax2.clear()  # which also puts its axis back on the left
        ax2.yaxis.tick_right()
        ax2.yaxis.set_label_position("right")
        if self.steps:
            xs, ys = zip(*self.steps, strict=True)
            ax.plot(xs, ys, color="tab:blue", alpha=0.35, lw=0.8, label="loss (steps)")
        if self.rows:
            epochs = [r["epoch"] for r in self.rows]
            ax.plot(epochs, [r["train_loss"] for r in self.rows], "o-", color="tab:blue", ms=3, label="loss")
            ax2.plot(
                epochs, [r["val_dice"] for r in self.rows], "s-", color="tab:orange", ms=3, label="val Dice"
            )
        ax.set_xlabel("epoch", color=INK)
        ax.set_ylabel("loss", color="tab:blue")
        ax2.set_ylabel("validation Dice", color="tab:orange")
        self.figure.set_facecolor(PAPER)
        ax.set_facecolor(PAPER)
        for a in (ax, ax2):
            a.tick_params(colors=INK)
            for spine in a.spines.values():
                spine.set_color(INK)
        ax2.set_ylim(0, 1)
        if self.epochs:
            ax.set_xlim(0, self.epochs)
        self.canvas.draw_idle()
