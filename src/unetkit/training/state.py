"""The fit loop's own state (everything ``last.pt`` must hold for an exact resume) and what training returns."""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PHASES", "SCORES", "BudgetClock", "TrainResult", "TrainState"]

#: where a training command's time goes, in the order the log states it
PHASES = ("planning", "preparation", "training", "validation", "saving")


@dataclass
class BudgetClock:
    """One clock for a training command's ``--time-budget``: from the command's start (``started``, a
    ``time.perf_counter()`` reading) to the last validation, planning included. ``before``: seconds on the
    clock from earlier processes of the same run (``--resume``); ``phases``: seconds per :data:`PHASES`, this
    process's and the earlier ones' together."""

    started: float = field(default_factory=time.perf_counter)
    before: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    def elapsed(self) -> float:
        """Seconds on the clock: earlier processes' and this one's since its start."""
        return self.before + time.perf_counter() - self.started

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def split(self) -> str:
        """``total = planning + preparation + ...`` in seconds; what no phase claims is saving and logging."""
        total = self.elapsed()
        parts = dict(self.phases)
        parts["saving"] = max(0.0, total - sum(v for k, v in parts.items() if k != "saving"))
        named = " + ".join(f"{k} {parts.get(k, 0.0):.0f}" for k in PHASES)
        return f"{total:.0f} s = {named} (s; saving: checkpoints, logs and curves)"


#: validation Dice by which a fine-tuned epoch must beat the starting model (epoch 0) to replace it as best.pt: on
#: the few held-out objects of one or two images smaller gains are noise (on the suite's `large` domain, +0.0015
#: came with F1@0.5 0.002 lower on its test images)
START_MARGIN = 0.002

#: what best.pt is chosen by (a metrics.csv column), in words
SCORES = {"val_dice": "validation Dice", "val_pq": "validation PQ (objects)"}


@dataclass
class TrainState:
    """Where the loop is: the last finished epoch, steps done in the next one and their losses, the history
    of finished epochs, and the best validation Dice so far (early stopping)."""

    epoch: int = 0
    step_in_epoch: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -1.0
    best_epoch: int = 0
    #: the metrics.csv column best.pt and early stopping follow (:data:`SCORES`)
    score: str = "val_dice"
    #: seconds on the budget clock and per phase when the state was saved (``--resume`` continues them)
    clock: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        # ``clock`` is absent from checkpoints written before it existed
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})

    def epoch_seconds(self) -> float | None:
        """The expected seconds of the next epoch on the budget clock: the median gap between consecutive
        trained epochs' clock readings (steps, validation, and the checkpoints and logs saved between them,
        which dominate small epochs; the first epoch, which warms up kernels and caches, is not a gap's end);
        without clock readings, the epochs' own seconds. None before any."""
        trained = [h for h in self.history if h["epoch"] >= 1]
        gaps = [
            b["elapsed"] - a["elapsed"]
            for a, b in itertools.pairwise(trained)
            if "elapsed" in a and "elapsed" in b
        ]
        if gaps:
            return float(statistics.median(gaps))
        seconds = [h["seconds"] for h in trained[1:] or trained]  # the first warms up kernels and caches
        return float(statistics.median(seconds)) if seconds else None

    def end_epoch(self, row: dict[str, float]) -> bool:
        """Record a finished epoch's row (epoch 0: the starting model, validated before any step); whether it
        is the best so far."""
        self.history.append(row)
        self.epoch, self.step_in_epoch, self.epoch_losses = int(row["epoch"]), 0, []
        beating_start = self.best_epoch == 0 and self.history[0]["epoch"] == 0 and self.epoch > 0
        margin = START_MARGIN if beating_start else 0.0
        if row[self.score] > self.best_score + margin:
            self.best_score, self.best_epoch = row[self.score], self.epoch
        return self.best_epoch == self.epoch


@dataclass
class TrainResult:
    """What :func:`~unetkit.workflows.train` produced."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_score: float  # the best validation score (``score``)
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    #: what ``best_score`` measures (a metrics.csv column, :data:`SCORES`)
    score: str = "val_dice"

    @property
    def score_name(self) -> str:
        """``best_score``'s measure in words ("validation Dice", "validation PQ (objects)")."""
        return SCORES[self.score]

    @property
    def trained_epochs(self) -> int:
        """Finished epochs of training (epoch 0, the starting model's validation, is none)."""
        return sum(1 for row in self.history if row["epoch"] >= 1)
