"""The Review widget: the objects of a Segment result, least confident first, one at a time.

Segment leaves every object's confidence on its layer (the layer's ``features``, the objects table of
``NAME_objects.csv``). Review steps through them from the most doubtful: the view centres on the object and
selects its label, and the object is kept (**Keep**, key ``k``) or removed (**Delete**, key ``d``); **Next**
(key ``n``) moves on without a verdict. Verdicts stay on the layer as the feature ``reviewed`` (``kept``,
``deleted``, or empty), so a person can stop and come back; painting over an object with napari's own tools is
the correction for an object that is wrong in shape.

**Make training labels** turns the verdicts into labels the Train widget learns from, with unreviewed pixels
ignored: kept objects are objects, deleted ones and a ring of :data:`RING` pixels around kept objects (off every
other object) are painted background (label 1), the rest is unpainted. The layer says so in its metadata, and
Train preselects it with "unpainted pixels: ignored", so fine-tuning the model that segmented learns from the
corrections only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import Container, Label, PushButton, create_widget
from scipy import ndimage as ndi

from ._worker import REVIEWED_KEY

__all__ = ["RING", "ReviewWidget"]

#: pixels around a kept object taken as background in the training labels (its accepted edge)
RING = 3
#: where a layer under review keeps the pixels of the objects deleted from it
DELETED_KEY = "unetkit_deleted_pixels"


class ReviewWidget(Container):
    """Step through a result layer's objects, least confident first (see the module docstring)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(labels=True)
        import napari.layers

        self.viewer = napari_viewer
        self.objects: Any = create_widget(annotation=napari.layers.Labels, label="objects")
        self.next_button = PushButton(text="Next doubtful (n)")
        self.keep_button = PushButton(text="Keep (k)")
        self.delete_button = PushButton(text="Delete (d)")
        self.labels_button = PushButton(text="Make training labels")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend(
            [
                self.objects,
                self.next_button,
                self.keep_button,
                self.delete_button,
                self.labels_button,
                self.status,
            ]
        )
        self.labels_button.changed.connect(self.training_labels)
        self.next_button.changed.connect(self.next)
        self.keep_button.changed.connect(self.keep)
        self.delete_button.changed.connect(self.delete)
        #: the label under review (None: none yet)
        self.current: int | None = None
        self.viewer.layers.events.inserted.connect(self._choose)
        self.objects.changed.connect(self._bind_keys)  # type: ignore[attr-defined]
        self._choose()

    def _choose(self, *_: Any) -> None:
        """The newest layer that carries confidences (a Segment result)."""
        self.objects.reset_choices()
        for layer in reversed(list(self.viewer.layers)):
            if _has_confidence(layer):
                self.objects.value = layer
                self._bind_keys()
                return

    def _bind_keys(self, *_: Any) -> None:
        """n, k, d on the layer under review (a layer's keys come before the viewer's while it is selected)."""
        layer = self.objects.value
        if layer is not None:
            for key, action in (("n", self.next), ("k", self.keep), ("d", self.delete)):
                layer.bind_key(key, lambda _layer, act=action: act(), overwrite=True)

    def _table(self) -> Any:
        layer = self.objects.value
        if layer is None or not _has_confidence(layer):
            self.status.value = "choose a layer segmented here (it carries each object's confidence)"
            return None
        features = layer.features
        if "reviewed" not in features:
            features = features.assign(reviewed="")
            layer.features = features
        return layer.features

    def next(self, *_: Any) -> int | None:
        """Go to the least confident object without a verdict; returns its label (None: all reviewed)."""
        features = self._table()
        if features is None:
            return None
        layer = self.objects.value
        todo = features[(features["reviewed"] == "") & (features["index"] != self.current)]
        present = set(np.unique(np.asarray(layer.data)).tolist())
        todo = todo[todo["index"].isin(present)]  # painted away by hand: nothing left to review
        if todo.empty:
            self.current = None
            self.status.value = f"every object of {layer.name} has a verdict ({_counts(features)})"
            return None
        row = todo.sort_values("confidence", kind="stable").iloc[0]
        self.current = int(row["index"])
        centre = [float(row["centroid_y"]), float(row["centroid_x"])]
        self.viewer.camera.center = tuple(np.asarray(layer.data_to_world(centre), float))
        layer.selected_label = self.current
        layer.show_selected_label = True
        done = int((features["reviewed"] != "").sum())
        self.status.value = (
            f"object {self.current}: confidence {float(row['confidence']):.2f}, {int(row['area'])} px "
            f"({done} of {len(features)} reviewed: {_counts(features)})"
        )
        return self.current

    def keep(self, *_: Any) -> None:
        self._verdict("kept")

    def delete(self, *_: Any) -> None:
        layer = self.objects.value
        if self.current is not None and layer is not None:
            data = np.asarray(layer.data)
            gone = data == self.current
            deleted = layer.metadata.get(DELETED_KEY)
            layer.metadata[DELETED_KEY] = gone if deleted is None else deleted | gone
            data[gone] = 0
            layer.data = data
        self._verdict("deleted")

    def _verdict(self, verdict: str) -> None:
        features = self._table()
        if features is None:
            return
        if self.current is None:
            self.next()
            return
        features.loc[features["index"] == self.current, "reviewed"] = verdict
        self.objects.value.features = features
        self.next()

    def training_labels(self, *_: Any) -> Any:
        """A new Labels layer from the verdicts (see the module docstring); None when nothing is reviewed."""
        features = self._table()
        if features is None:
            return None
        layer = self.objects.value
        data = np.asarray(layer.data)
        kept = features.loc[features["reviewed"] == "kept", "index"].to_numpy()
        deleted = layer.metadata.get(DELETED_KEY)
        if not len(kept):
            self.status.value = "keep at least one object first (k): training needs an object to learn from"
            return None
        objects = np.isin(data, kept)
        labels = np.zeros(data.shape, np.int32)
        labels[ndi.binary_dilation(objects, iterations=RING) & (data == 0)] = 1  # the accepted edges' outside
        if deleted is not None:
            labels[deleted & (data == 0)] = 1  # what was called an object and is not one
        labels[objects] = data[objects].astype(np.int32) + 1  # objects: 2.. (1 is background)
        name = f"{layer.name.removesuffix(' objects')} reviewed"
        made = self.viewer.add_labels(
            labels, name=name, scale=layer.scale, translate=layer.translate,
            metadata={REVIEWED_KEY: {"unpainted": "ignored", "background_label": 1}},
        )  # fmt: skip
        n_deleted = int((features["reviewed"] == "deleted").sum())
        self.status.value = (
            f"{name}: {len(kept)} kept and {n_deleted} deleted objects as training labels, the rest ignored; "
            "Train (preselected: unpainted pixels ignored, background 1), starting from the model you segmented with"
        )
        return made


def _has_confidence(layer: Any) -> bool:
    import napari.layers

    return isinstance(layer, napari.layers.Labels) and "confidence" in getattr(layer, "features", {})


def _counts(features: Any) -> str:
    kept, deleted = (
        int((features["reviewed"] == "kept").sum()),
        int((features["reviewed"] == "deleted").sum()),
    )
    return f"{kept} kept, {deleted} deleted"
