"""The fit loop's own state (everything ``last.pt`` must hold for an exact resume) and what training returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrainResult", "TrainState"]


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls)})

    def end_epoch(self, row: dict[str, float]) -> bool:
        """Record a finished epoch's row; whether it is the best so far."""
        self.history.append(row)
        self.epoch, self.step_in_epoch, self.epoch_losses = int(row["epoch"]), 0, []
        if row["val_dice"] > self.best_score:
            self.best_score, self.best_epoch = row["val_dice"], self.epoch
        return self.best_epoch == self.epoch


@dataclass
class TrainResult:
    """What :func:`~unetkit.workflows.train` produced."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_score: float  # best validation Dice
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
