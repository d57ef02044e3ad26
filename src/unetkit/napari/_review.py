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

**Retrain** does all of it in one click: the training labels, then a fine-tune of the model that segmented the
layer on them and on every earlier round of the same image (:func:`~unetkit.workflows.review.retrain`: one minute
by default, validated on corrected objects held out, never below its start), then Segment again with the new
model: a numbered round (``NAME objects (round N)``), its model offered in Segment, its layer reviewed next;
an image opened from a file has the rest of its folder segmented with the new model too (``IMAGE-review/pred-N``:
objects and their tables, :func:`~unetkit.workflows.review.segment_folder`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, FloatSpinBox, PushButton, create_widget
from scipy import ndimage as ndi

from ..workflows.review import retrain, segment_folder
from ..workflows.segment import segment_array
from ._models import TRAINED
from ._worker import (
    REVIEWED_KEY,
    SEGMENTED_KEY,
    WorkerWidget,
    channels_last,
    full_resolution,
    placed,
    safe_name,
    save_to,
)

__all__ = ["RING", "ReviewWidget"]

#: a Segment result's name: the image's, " objects", a Retrain's round
_RESULT_NAME = re.compile(r"(.*) objects(?: \(round (\d+)\))?")
#: pixels around a kept object taken as background in the training labels (its accepted edge)
RING = 3
#: where a layer under review keeps the pixels of the objects deleted from it
DELETED_KEY = "unetkit_deleted_pixels"


class ReviewWidget(WorkerWidget):
    """Step through a result layer's objects, least confident first (see the module docstring)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        import napari.layers

        self.viewer = napari_viewer
        self.objects: Any = create_widget(annotation=napari.layers.Labels, label="objects")
        self.next_button = PushButton(text="Next doubtful (n)")
        self.keep_button = PushButton(text="Keep (k)")
        self.delete_button = PushButton(text="Delete (d)")
        self.labels_button = PushButton(text="Make training labels")
        self.budget = FloatSpinBox(
            label="minutes",
            value=1.0,
            min=0.1,
            max=60.0,
            step=0.5,
            tooltip="Retrain's time budget, planning included",
        )
        self.work = save_to(
            "a folder per reviewed image: IMAGE-review/round-N (corrections), model-N (models), pred-N (its folder)"
        )
        self.folder_too = CheckBox(
            text="then segment the rest of its folder",
            value=True,
            tooltip="an image opened from a file: the other images beside it, with the new model, into "
            "IMAGE-review/pred-N (objects and their tables)",
        )
        self.extend(
            [
                self.objects,
                self.next_button,
                self.keep_button,
                self.delete_button,
                self.labels_button,
                self.budget,
                self.work,
                self.folder_too,
                *self._controls(
                    "Retrain from the verdicts", "Cancel (keeps the best model)", "", self.retrain
                ),
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
        lead = layer.ndim - 2  # a plane of a stack (its index in "plane" when every plane was segmented)
        centre = [float(row["plane"]) if "plane" in row else 0.0] * min(lead, 1) + [0.0] * max(lead - 1, 0)
        world = np.asarray(
            layer.data_to_world([*centre, float(row["centroid_y"]), float(row["centroid_x"])]), float
        )
        if lead:  # go to the object's plane (the viewer's leading axes are the layer's)
            for axis in range(lead):
                self.viewer.dims.set_point(self.viewer.dims.ndim - layer.ndim + axis, world[axis])
        self.viewer.camera.center = tuple(world[-2:])
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
        name = _reviewed_name(layer.name)
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

    def retrain(self, *_: Any) -> Any:
        """Training labels from the verdicts, a fine-tune of the model that segmented, Segment again (see the
        module docstring), in a worker thread; returns the worker (None: nothing to learn from yet)."""
        layer = self.objects.value
        made = (layer.metadata.get(SEGMENTED_KEY) or {}) if layer is not None else {}
        image = self.viewer.layers[made["image"]] if made.get("image") in self.viewer.layers else None
        if image is None:
            self.status.value = (
                "Retrain learns from a layer Segment made here, with its image layer still open"
            )
            return None
        if made.get("every"):
            self.status.value = "Retrain learns from one plane: segment 'this plane', review it, then Retrain"
            return None
        labels = self.training_labels()
        if labels is None:
            return None
        labels.visible = False  # learnt from, not looked at: the next round's result is
        name = made["image"]
        plane = tuple(made.get("plane") or ())
        axis = made.get("channel_axis")  # Segment read this axis as the image's channels
        pixels = full_resolution(image) if axis is None else channels_last(full_resolution(image), axis)
        job = {
            "image": pixels[plane] if plane else pixels,
            "plane": plane,
            "rgb": bool(image.rgb),
            "channel_axis": axis,
            "name": name,
            "labels": np.asarray(labels.data)[(0,) * len(plane)],  # a plane's result: (1, H, W) → (H, W)
            "folder": Path(str(self.work.value)).expanduser() / f"{safe_name(name)}-review",
            "model": made["model"],
            "options": dict(made.get("options") or {}),
            "budget": float(self.budget.value) * 60,
            "started": time.perf_counter(),
            # the file the image came from: the rest of its folder is segmented with the new model too
            "source": getattr(getattr(image, "source", None), "path", None)
            if self.folder_too.value
            else None,
        }
        minutes = float(self.budget.value)
        self.status.value = (
            f"round {int(made.get('round', 0)) + 1}: fine-tuning {Path(str(made['model'])).name} on the verdicts "
            f"for {minutes:g} min (planning included), then segmenting {name} again ..."
        )
        worker = self._launch(
            _retrain_job,
            job,
            self._cancel,
            returned=lambda result: self._retrained(layer, image, result, axis),
        )
        self.progress.max = 0  # busy: the budget is the time it takes
        return worker

    def _retrained(self, layer: Any, image: Any, result: dict[str, Any], axis: int | None = None) -> None:
        done, seg, plane = result["round"], result["segmented"], tuple(result["plane"])
        data, place = placed(image, seg["labels"], plane, channel_axis=axis)
        name = f"{image.name} objects (round {done.number})"
        new = self.viewer.add_labels(data, name=name, **place)
        table = seg["table"]
        new.features = {"index": table["label"], **{k: v for k, v in table.items() if k != "label"}}
        new.metadata[SEGMENTED_KEY] = {
            "model": str(done.result.best_checkpoint), "image": image.name, "options": result["options"],
            "round": done.number, "plane": list(plane), "every": False, "channel_axis": axis,
        }  # fmt: skip
        label = f"{image.name} round {done.number}"
        TRAINED.add(label, done.result.best_checkpoint)
        layer.visible = False
        self.objects.value = new
        self.progress.max, self.progress.value = 1, 1
        start, best = done.start_score, done.result.best_score
        kept = (
            "the starting model (no epoch beat it)"
            if done.result.best_epoch == 0
            else f"epoch {done.result.best_epoch}"
        )
        self.status.value = (
            f"round {done.number}: {done.result.score_name} on held-out corrections {start:.3f} at the start, "
            f"{best:.3f} now "
            f"({kept}); {seg['objects']} objects in {name!r}; the model is offered in Segment as {label!r}"
        )
        if result.get("folder"):
            others, out = result["folder"]
            self.status.value += f"; {len(others)} other image(s) of its folder segmented into {out}"

    def _idle(self) -> None:
        super()._idle()
        if self.progress.max == 0:  # still busy-looking after a failure or Cancel
            self.progress.max = 1


def _retrain_job(job: dict[str, Any], cancel: Any) -> dict[str, Any]:
    """The worker: one round of :func:`~unetkit.workflows.review.retrain`, then Segment with its model."""
    from ..workflows.train import TrainHooks

    channels = job.get("channel_axis") is not None
    image = np.asarray(job["image"])
    picked = job["options"].get("channel")
    if channels and picked is not None:  # a one-channel model read this stain: it learns from it alone
        image, channels = image[..., picked], False
    done = retrain(
        image, job["labels"], job["folder"], job["model"], budget=job["budget"], started=job["started"],
        hooks=TrainHooks(stop=cancel), channels=channels,
    )  # fmt: skip
    best = str(done.result.best_checkpoint)
    segmented = segment_array(
        best, job["image"], rgb=job["rgb"], name=job["name"], options=job["options"], instances=True,
        probabilities=False, channels_last=job.get("channel_axis") is not None,
    )  # fmt: skip
    folder = None
    if job.get("source") and not job["plane"]:
        folder = segment_folder(best, job["source"], job["folder"] / f"pred-{done.number}", job["options"])
    return {
        "round": done,
        "segmented": segmented,
        "options": job["options"],
        "plane": job["plane"],
        "folder": folder,
    }


def _reviewed_name(result: str) -> str:
    """ "nuclei objects" → "nuclei reviewed"; "nuclei objects (round 2)" → "nuclei round 2 reviewed"."""
    m = _RESULT_NAME.fullmatch(result)
    if m is None:
        return f"{result} reviewed"
    return f"{m[1]}{f' round {m[2]}' if m[2] else ''} reviewed"


def _has_confidence(layer: Any) -> bool:
    import napari.layers

    return isinstance(layer, napari.layers.Labels) and "confidence" in getattr(layer, "features", {})


def _counts(features: Any) -> str:
    kept, deleted = (
        int((features["reviewed"] == "kept").sum()),
        int((features["reviewed"] == "deleted").sum()),
    )
    return f"{kept} kept, {deleted} deleted"
