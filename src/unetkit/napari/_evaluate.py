"""The Evaluate widget: a prediction Labels layer against a ground-truth Labels layer, scored by the function
``unetkit evaluate`` uses per image (:func:`unetkit.metrics.scoring.score_instances`): the scores as a table,
and the errors as layers: misses (true objects unmatched at IoU 0.5), false positives, splits and merges."""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import PushButton, Table, create_widget

from ..workflows.evaluate import DEFINITIONS, compare_objects
from ._worker import Scrolling, is_result, message, painted_labels, result_labels

__all__ = ["ROWS", "EvaluateWidget"]

#: the scores shown, in order (those of ``unetkit evaluate --mode instance``'s summary, and more)
ROWS = ("n_true", "n_pred", "tp", "fp", "fn", "precision", "recall", "f1", "pq", "dsb_score", "aji", "splits",
        "merges", "dice")  # fmt: skip


class EvaluateWidget(Scrolling):
    """Score a prediction layer against a ground-truth layer (see the module docstring)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        import napari.layers

        self.viewer = napari_viewer
        self.prediction: Any = create_widget(annotation=napari.layers.Labels, label="prediction")
        self.truth: Any = create_widget(annotation=napari.layers.Labels, label="ground truth")
        self.run_button = PushButton(text="Evaluate")
        self.table = Table(value={"score": [], "value": []})
        self.status = message()
        self.extend([self.prediction, self.truth, self.run_button, self.table, self.status])
        self.run_button.changed.connect(self.evaluate)
        self.scores: dict[str, float] = {}
        self._choose_layers()
        self.viewer.layers.events.inserted.connect(self._choose_layers)

    def _choose_layers(self, *_: Any) -> None:
        """Prediction: the newest Segment result; ground truth: a layer a person made, one named as truth first
        (both defaulted to the first Labels layer, the same layer)."""
        self.prediction.reset_choices()
        self.truth.reset_choices()
        made = result_labels(self.viewer)
        if made is not None:  # a new result is what one evaluates next
            self.prediction.value = made
        truth, current = painted_labels(self.viewer, truth_first=True), self.truth.value
        if truth is not None and (current is None or current is self.prediction.value or is_result(current)):
            self.truth.value = truth  # a person's own choice of truth is kept

    def _show_scores(self) -> None:
        """One row per score, every row shown (the table grows; the dock scrolls), each score's definition as
        the tooltip of its name and value: a "meaning" column was clipped to a few letters in a docked widget."""
        self.table.value = {
            "data": [[f"{self.scores[k]:.4g}"] for k in ROWS],
            "index": list(ROWS),
            "columns": ["value"],
        }
        table = self.table.native
        for row, key in enumerate(ROWS):
            for item in (table.verticalHeaderItem(row), table.item(row, 0)):
                if item is not None:
                    item.setToolTip(f"{key}: {DEFINITIONS.get(key, '')}")
        table.horizontalHeader().setStretchLastSection(True)
        table.resizeRowsToContents()
        rows = sum(table.rowHeight(r) for r in range(table.rowCount()))
        table.setMinimumHeight(rows + table.horizontalHeader().height() + 2 * table.frameWidth())

    def evaluate(self, *_: Any) -> dict[str, float]:
        pred, truth = self.prediction.value, self.truth.value
        if pred is None or truth is None or pred is truth:
            self.status.value = "choose a prediction layer and a different ground-truth layer"
            return {}
        p, t = np.asarray(pred.data), np.asarray(truth.data)
        if p.shape != t.shape:
            self.status.value = f"the layers differ in shape: {p.shape} and {t.shape}"
            return {}
        found = compare_objects(p, t)
        self.scores = {k: found.scores[k] for k in ROWS}
        self._show_scores()
        place = {"scale": truth.scale, "translate": truth.translate}
        for name, errors in found.errors.items():
            layer_name = f"{pred.name}: {name}"
            if layer_name in self.viewer.layers:
                self.viewer.layers[layer_name].data = errors
            else:
                self.viewer.add_labels(errors, name=layer_name, **place)
        count = {name: len(np.unique(errors)) - 1 for name, errors in found.errors.items()}
        self.status.value = (
            f"F1@0.5 {self.scores['f1']:.3f}: {count['misses']} missed, {count['false positives']} false, "
            f"{count['splits']} split, {count['merges']} merged"
        )
        return self.scores
