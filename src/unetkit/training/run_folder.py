"""A run folder: ``best.pt``, ``last.pt``, ``config.yaml``, ``metrics.csv``, ``tb/`` (TensorBoard) and
``curves.png``, every file written atomically; ``--overwrite`` removes only these."""

from __future__ import annotations

import csv
import fcntl
import math
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, temporary_of
from ..checkpoint import StoredModel, load_checkpoint
from ..config import RunConfig
from ..errors import DataError
from ..viz import save_curves

__all__ = ["CSV_FIELDS", "RUN_FILES", "RunFolder"]

RUN_FILES = ("best.pt", "last.pt", "config.yaml", "metrics.csv", "curves.png")
#: held by the process writing the run (hidden; removed when it ends)
LOCK_FILE = ".unetkit.lock"
CSV_FIELDS = (
    "epoch",
    "train_loss",
    "val_ce",
    "val_dice",
    "val_iou",
    "val_pq",
    "lr",
    "seconds",
    "val_seconds",
    "data_wait",
    "elapsed",
)
#: TensorBoard tags of the epoch rows
TB_TAGS = (
    ("train_loss", "loss/train"),
    ("val_ce", "loss/val_ce"),
    ("val_dice", "dice/val"),
    ("val_iou", "iou/val"),
    ("val_pq", "pq/val"),
    ("lr", "lr"),
    ("data_wait", "time/data_wait_fraction"),
)


class RunFolder:
    """The files of one training run in ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.best = self.path / "best.pt"
        self.last = self.path / "last.pt"
        self._writer: Any = None
        self._lock: int | None = None

    @property
    def files(self) -> list[Path]:
        return [self.path / name for name in RUN_FILES]

    def existing(self, overwrite: bool) -> list[str]:
        """The run files already here; an error if there are some and ``overwrite`` is off."""
        if self.path.exists() and not self.path.is_dir():
            raise DataError(f"--out {self.path}: exists and is not a folder")
        existing = [name for name in RUN_FILES if (self.path / name).exists()]
        if existing and not overwrite:
            raise DataError(
                f"--out {self.path}: already holds a run ({', '.join(existing)}); pass --overwrite to replace it "
                "or choose another folder"
            )
        return existing

    def prepare(self, overwrite: bool) -> None:
        """Create the folder; with ``overwrite`` remove the run files and TensorBoard events (nothing else)."""
        existing = self.existing(overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in existing:
                (self.path / name).unlink()
            tb = self.path / "tb"
            if tb.is_dir():
                for f in tb.iterdir():
                    if f.is_file() and f.name.startswith("events.out.tfevents"):
                        f.unlink()

    def load_resume(self) -> dict[str, Any]:
        """``last.pt``'s payload for ``--resume`` (temporaries of run files whose write a kill cut short are
        removed; nothing else)."""
        for stale in self.path.glob(".*"):
            if stale.is_file() and temporary_of(stale) in RUN_FILES:
                stale.unlink()
        if not self.last.is_file():
            raise DataError(
                f"--resume {self.path}: no {self.last.name} there; give the folder of an earlier `unetkit train` run"
            )
        payload = load_checkpoint(self.last)
        if "torch_rng" not in StoredModel.of(payload, self.last).state:
            raise DataError(f"--resume {self.last}: holds no training state to resume from")
        return payload

    def write_config(self, cfg: RunConfig) -> None:
        cfg.to_yaml(self.path / "config.yaml")

    def open_log(self, purge_after: int | None) -> None:
        """TensorBoard events in ``tb/``; on resume, events logged after the checkpoint (before a kill) are
        purged."""
        from torch.utils.tensorboard import SummaryWriter  # imported here: it is slow to import

        self._writer = SummaryWriter(log_dir=str(self.path / "tb"), purge_step=purge_after)

    def log_epoch(self, history: list[dict[str, float]], best: int | None = None) -> None:
        """The last epoch's row to TensorBoard; metrics.csv and curves.png (``best``: best.pt's epoch) rewritten
        from the history."""
        self.write_csv(history)
        if self._writer is not None and history:
            row = history[-1]
            # epoch 0 (the starting model) has no training loss; val_pq is there for instance masks only
            for key, tag in TB_TAGS:
                if key in row and not math.isnan(row[key]):
                    self._writer.add_scalar(tag, row[key], int(row["epoch"]))
            self._writer.flush()
        save_curves(history, self.path / "curves.png", best)

    def write_csv(self, history: list[dict[str, float]]) -> None:
        """metrics.csv rewritten whole from the history, atomically."""
        with atomic_path(self.path / "metrics.csv", ".tmp") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            w.writeheader()
            for row in history:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def lock(self) -> None:
        """Hold ``RUN/.unetkit.lock`` (an exclusive ``flock``, released by the system if the process dies) while
        this process writes the run: a second ``train`` into the same folder is refused instead of both writing
        one mixed run. Released by :meth:`close`."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise DataError(
                f"--out {self.path}: another unetkit process (pid {holder}) is writing a run there; wait for it "
                "to end, or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock = fd

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._lock is not None:  # the file goes first: whoever opens it next locks a fresh one
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            os.close(self._lock)  # closing releases the lock
            self._lock = None
