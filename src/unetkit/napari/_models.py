"""Models trained in this napari session, shared between the Train widget (which adds them) and every Segment
widget (which offers them, including one opened later)."""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal

__all__ = ["TRAINED", "TrainedModels"]


class TrainedModels:
    """Label → checkpoint path, with a signal when one is added."""

    added = Signal(str, str)

    def __init__(self) -> None:
        self.models: dict[str, str] = {}

    def add(self, label: str, checkpoint: str | Path) -> None:
        self.models[label] = str(checkpoint)
        self.added.emit(label, str(checkpoint))


TRAINED = TrainedModels()
