"""The Segment widget: a model (a built-in name, a checkpoint, a run folder, an ONNX file or a bioimage.io
package) applied to an image layer, in a worker thread with a progress bar and Cancel; the result arrives as a
Labels layer (objects, or classes) and, on request, the probabilities as an Image layer.

The work is :func:`unetkit.workflows.segment.segment_array`, what ``unetkit predict`` runs per image: the
layer's data is read window by window (NumPy, Dask or zarr arrays alike), so a large layer is never loaded whole;
when holding the results whole would need more memory than streaming (the rule of ``unetkit predict``,
:func:`~unetkit.inference.pipeline.streams`) they are held in a zarr store on disk (objects labelled block by block) and
shown lazily.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSpinBox,
    PushButton,
    SpinBox,
    create_widget,
)
from qtpy.QtCore import QObject, Signal

from ..config import SURFACE_DEFAULTS, PredictConfig
from ..errors import UnetkitError
from ..workflows.segment import (
    Declared,
    builtin_models,
    declared,
    model_card,
    segment_array,
    segment_planes,
)
from ._models import TRAINED
from ._worker import (
    SEGMENTED_KEY,
    WorkerWidget,
    channel_axis_choices,
    channels_last,
    chosen_axis,
    full_resolution,
    message,
    placed,
    shown_index,
)

__all__ = ["SegmentWidget"]

log = logging.getLogger(__name__)

#: the definitions of the options the widget offers (config.PredictConfig): what tile 0 means, the ranges
_PREDICT = {f.name: f.metadata for f in dataclasses.fields(PredictConfig)}
_TILE_DEFAULT = _PREDICT["tile"]["default_text"]


#: what a stack's or time-lapse's Segment covers
PLANES = ("this plane", "every plane")


class Cancelled(Exception):
    """Raised in the worker when the user pressed Cancel."""


class _Tiles(QObject):
    """Progress from the worker thread to the widget (a queued Qt signal: safe across threads)."""

    done = Signal(int, int)


class SegmentWidget(WorkerWidget):
    """Segment an image layer with a U-Net (see the module docstring)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.models: dict[str, str] = {m: m for m in builtin_models()}
        self.models.update(TRAINED.models)  # trained in this session by the Train widget
        # choices from a callable: napari resets every widget's choices when layers change, and a static list
        # would drop the models trained since the widget was made (the next Segment then used `nuclei`)
        self.model = ComboBox(
            label="model", choices=lambda _widget: list(self.models), tooltip="a built-in or trained model"
        )
        if TRAINED.models:  # opened after training: the model just trained
            self.model.value = list(TRAINED.models)[-1]
        self.model_file = FileEdit(
            label="or file",
            mode=FileDialogMode.EXISTING_FILE,
            value=None,
            tooltip="a checkpoint (best.pt), ONNX file or bioimage.io .zip",
        )
        import napari.layers

        self.image: Any = create_widget(annotation=napari.layers.Image, label="image")
        # a layer of stains (C, H, W) opens as a stack: which axis holds channels is the user's to say, never
        # guessed from its length (2 planes and 2 stains look alike)
        self.channel_axis = ComboBox(
            label="channel axis", choices=lambda _widget: channel_axis_choices(self.image.value),
            tooltip="the axis of this layer that holds its channels (stains), if any: a model reading several "
            "channels reads them all; a one-channel model reads the one it learnt, else the one shown",
        )  # fmt: skip
        # the defaults are unetkit predict's (config.PredictConfig), except where SURFACE_DEFAULTS says why not
        self.tile = SpinBox(
            label="tile (0: the model's)", value=0, min=0, max=int(_PREDICT["tile"]["valid"].high), step=64,
            tooltip=f"network input size per tile; 0: {_TILE_DEFAULT}",
        )  # fmt: skip
        self.tta = CheckBox(text="average over the 8 rotations and flips (TTA)", value=PredictConfig().tta)
        self.invert = CheckBox(
            text="dark objects on a bright background (invert)",
            value=PredictConfig().invert,
            tooltip="bright-field or a stained section, for a model of bright objects on dark (the built-in "
            "nuclei model: fluorescence): the image is read with its intensities reversed",
        )
        self.threshold = FloatSpinBox(
            label="threshold", value=PredictConfig().threshold, min=0.01, max=0.99, step=0.05
        )
        self.instances = CheckBox(
            text="separate touching objects (instances)", value=SURFACE_DEFAULTS["napari"]["instances"][0]
        )
        self.diameter = FloatSpinBox(
            label="object diameter", value=0.0, min=0.0, max=10000.0, tooltip="pixels; 0: as the model learnt"
        )
        self.min_size = SpinBox(
            label="min size (px; 0: auto)", value=PredictConfig().min_size or 0, min=0, max=10**6,
            tooltip="objects under this many pixels are dropped; auto (0): a tenth of the typical object's area",
        )  # fmt: skip
        self.min_size.native.setSpecialValueText("auto")  # 0 shows as "auto"
        self.estimate = CheckBox(
            text="estimate the diameter from the image",
            value=False,
            tooltip="a first pass measures the objects; the image is rescaled to the sizes the model learnt",
        )
        self.estimate.changed.connect(lambda on: setattr(self.diameter, "enabled", not on))
        self.probabilities = CheckBox(text="also the probabilities", value=False)
        self.planes = ComboBox(
            label="planes", choices=list(PLANES), value=PLANES[0],
            tooltip="a stack or time-lapse: the plane shown, or every plane of its first axis, one after another (a 3-D model: the volume shown, or every volume of a series)",
        )  # fmt: skip
        self.card = message(tooltip="the model's card: what it learnt from, its sizes, scores and limits")
        self.card_button = PushButton(text="About this model")
        self.card_button.changed.connect(self._toggle_card)
        self.extend(
            [
                self.model,
                self.model_file,
                self.card_button,
                self.card,
                self.image,
                self.channel_axis,
                self.tile,
                self.tta,
                self.invert,
                self.threshold,
                self.instances,
                self.min_size,
                self.diameter,
                self.estimate,
                self.probabilities,
                self.planes,
                *self._controls("Segment", "Cancel", "tiles", self.start),
            ]
        )
        self._tiles = _Tiles()
        self._tiles.done.connect(self._on_tiles)
        self._keep: list[Any] = []  # on-disk results shown lazily live as long as the widget
        self.model.changed.connect(self._sync_model)
        self.model_file.changed.connect(self._sync_model)
        self._sync_model()
        self.image.changed.connect(self._sync_planes)  # type: ignore[attr-defined]
        self.channel_axis.changed.connect(self._sync_planes)
        self._sync_planes()
        self.card.visible = False  # one click away: the form stays short
        for chooser in (self.model, self.model_file):
            chooser.changed.connect(lambda *_: None if self.card.native.isHidden() else self._show_card())
        TRAINED.added.connect(self.add_model)  # a model trained from now on is offered (and chosen) ...
        self.native.destroyed.connect(lambda *_: TRAINED.added.disconnect(self.add_model))  # ... while shown

    def _toggle_card(self, *_: Any) -> None:
        """Show (or hide) the chosen model's card."""
        self.card.visible = self.card.native.isHidden()  # (visible is False while the window is not shown)
        if not self.card.native.isHidden():
            self._show_card()

    def _show_card(self, *_: Any) -> None:
        try:
            self.card.value = model_card(self.chosen_model())
        except UnetkitError as exc:
            self.card.value = str(exc)

    def _sync_planes(self, *_: Any) -> None:
        """The channel-axis choice shows for layers with axes before the image's two (not RGB), the planes choice
        for images with more than two axes besides the channels (stacks, time-lapses)."""
        layer = self.image.value
        self.channel_axis.reset_choices()
        self.channel_axis.visible = len(self.channel_axis.choices) > 1
        spatial = 0 if layer is None else layer.ndim - (chosen_axis(self.channel_axis.value) is not None)
        self.planes.visible = spatial > 2  # (a 3-D model: the volume shown)

    def _sync_model(self, *_: Any) -> None:
        """What the chosen model declares, read once per choice: its image dimensions (a 3-D model segments
        volumes) and its classes (the threshold acts on a binary model's one probability; a model of several
        classes takes each pixel's most probable class, so its threshold is disabled and says why: it changed
        nothing with `nuclei`)."""
        try:
            self._declared = declared(self.chosen_model())
        except UnetkitError:  # a file that is not a model: Segment says so when pressed
            self._declared = Declared(None, 2)
        classes, self._dims = self._declared.classes, self._declared.dims
        binary = classes in (None, 1)
        self.threshold.enabled = binary
        self.threshold.tooltip = (
            "foreground probability threshold of a binary model"
            if binary
            else f"not used by this model: it predicts {classes} classes, and each pixel takes the most probable"
        )

    def add_model(self, label: str, path: str | Path) -> None:
        """Offer a model (e.g. one just trained) in the model list, and select it."""
        self.models[label] = str(path)
        self.model.reset_choices()
        self.model.value = label

    def chosen_model(self) -> str:
        file = str(self.model_file.value or "")
        if file not in ("", "."):
            return file
        if self.model.value is None:
            raise UnetkitError("choose a model, or a model file")
        return self.models[self.model.value]

    def start(self, *_: Any) -> Any:
        """Segment the chosen layer in a worker thread; returns the worker."""
        layer = self.image.value
        if layer is None:
            self.status.value = "add or choose an image layer first"
            return None
        try:
            model = self.chosen_model()
        except UnetkitError as exc:
            self.status.value = str(exc)
            return None
        options: dict[str, Any] = {"tile": int(self.tile.value) or None, "tta": bool(self.tta.value)}
        if self.invert.value:
            options["invert"] = True
        options["threshold"] = float(self.threshold.value)
        options["min_size"] = int(self.min_size.value) or None  # 0: auto
        if self.estimate.value:
            options["diameter"] = "auto"
        elif self.diameter.value > 0:
            options["diameter"] = float(self.diameter.value)
        data = full_resolution(layer)
        ndim, axis = layer.ndim, chosen_axis(self.channel_axis.value)
        what = ""
        if axis is not None:  # the layer's stains, moved last (read lazily); the result has no such axis
            picked = self._channel(layer, axis)
            if isinstance(picked, str):
                self.status.value = picked
                return None
            if picked is not None:
                options["channel"] = picked
                what = f" (channel {picked} of axis {axis})"
            data, ndim = channels_last(data, axis), ndim - 1
        dims = self._dims  # a 3-D model segments the last three axes as one volume
        if ndim < dims:
            self.status.value = (
                f"{Path(model).name} is a 3-D model: choose an image layer of three axes or more"
            )
            return None
        lead = ndim - dims  # axes before the plane (volume): a stack's, a time-lapse's
        plane: tuple[int, ...] = ()
        if lead and self.planes.value == PLANES[0]:  # the plane (volume) shown
            where = np.asarray(layer.world_to_data(self.viewer.dims.point[-layer.ndim :]))
            where = (np.delete(where, axis) if axis is not None else where)[:lead]
            plane = tuple(
                int(np.clip(round(float(v)), 0, n - 1)) for v, n in zip(where, data.shape, strict=False)
            )
            data = data[plane]
        elif lead > 1:
            self.status.value = f"{layer.name}: every plane segments one axis of planes; choose 'this plane'"
            return None
        what += f" (plane {', '.join(map(str, plane))})" if plane else " (every plane)" if lead else ""
        what += " as a volume" if dims == 3 else ""
        self.status.value = f"segmenting {layer.name}{what} with {Path(model).name} ..."
        every = bool(lead and not plane)
        return self._launch(
            _segment,
            model,
            data,
            bool(layer.rgb),
            layer.name,
            options,
            bool(self.instances.value),
            bool(self.probabilities.value) and not every,
            self._cancel,
            self._tiles.done.emit,
            every,
            axis is not None,
            returned=lambda result: self._show(layer, result, plane, every=every, channel_axis=axis),
        )

    def _channel(self, layer: Any, axis: int) -> int | str | None:
        """The channel a one-channel model reads of ``layer``'s channel ``axis`` (None: the model reads them
        all), or what is wrong, in one line."""
        count = int(full_resolution(layer).shape[axis])
        reads, learnt = self._declared.channels, self._declared.channel
        if reads not in (None, 1):
            if reads != count:
                return (
                    f"the model reads {reads} channels and axis {axis} of {layer.name} holds {count}: choose the "
                    "axis of its channels, or a model trained on such images"
                )
            return None
        if reads is None:  # not known cheaply (ONNX, a package): the channels as they are
            return None
        if learnt is not None:  # trained with --channel: the stain it learnt
            if learnt >= count:
                return (
                    f"the model learnt channel {learnt} and axis {axis} of {layer.name} holds {count}: choose the "
                    "axis of its channels"
                )
            return learnt
        return shown_index(self.viewer, layer, axis)

    def stop(self, *_: Any) -> None:
        super().stop()
        self.status.value = "cancelling after the current tiles ..."

    def _on_tiles(self, done: int, total: int) -> None:
        self.progress.max = max(1, total)
        self.progress.value = done

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.status.value = "cancelled: nothing was added"
            return
        super()._failed(exc)

    def _show(
        self,
        layer: Any,
        result: dict[str, Any],
        plane: tuple[int, ...] = (),
        every: bool = False,
        channel_axis: int | None = None,
    ) -> None:
        data, place = placed(layer, result["labels"], plane, every, channel_axis)
        if result.get("keep") is not None:
            self._keep.append(result["keep"])
        name = f"{layer.name} {'objects' if result['objects'] is not None else 'classes'}"
        name += f" (plane {', '.join(map(str, plane))})" if plane else " (every plane)" if every else ""
        labels = self.viewer.add_labels(data, name=name, **place)
        # how it was made: a Review's Retrain fine-tunes this model on this image (plane) and segments it again
        labels.metadata[SEGMENTED_KEY] = {
            "model": result["model"],
            "image": layer.name,
            "options": result["options"],
            "plane": list(plane),
            "every": every,
            "channel_axis": channel_axis,
        }
        table = result.get("table")
        if (
            table is not None
        ):  # every object's confidence, area ... as the layer's features (hover shows them)
            labels.features = {"index": table["label"], **{k: v for k, v in table.items() if k != "label"}}
        if result["probs"] is not None:
            probs = result["probs"]
            if plane:  # (C, H, W) → C layers of one plane each, at the plane's place
                probs = np.asarray(probs)[(slice(None), *((None,) * len(plane)))]
                self.viewer.add_image(probs, name=f"{layer.name} probabilities", channel_axis=0, **place)
            else:
                self.viewer.add_image(probs, name=f"{layer.name} probabilities", **place)
        found = f"{result['objects']} objects" if result["objects"] is not None else "classes"
        doubt = ""
        if table is not None and len(table["label"]):
            doubt = f" ({int((table['confidence'] < 0.5).sum())} doubtful: confidence under 0.5)"
        said = f"; {result['sizes']}" if result.get("sizes") else ""
        said = said.replace("pass --invert", "tick 'invert' above")  # the widget's field, not the flag
        read = result["options"].get("channel") if channel_axis is not None else None
        stain = f" (channel {read} of axis {channel_axis})" if read is not None else ""
        self.status.value = f"{layer.name}{stain}: {found} in {result['seconds']:.1f} s{doubt}{said}"


def _segment(
    model: str,
    data: Any,
    rgb: bool,
    name: str,
    options: dict[str, Any],
    instances: bool,
    probabilities: bool,
    cancel: threading.Event,
    report: Any,
    every: bool = False,
    channels: bool = False,
) -> dict[str, Any]:
    """The worker: :func:`~unetkit.workflows.segment.segment_array` (an image, or a 3-D model's volume;
    ``every``: each plane or volume of a stack, :func:`~unetkit.workflows.segment.segment_planes`), stopped between
    tiles on Cancel."""

    def on_tiles(done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled
        report(done, total)

    if every:  # every plane of a stack, one model load
        result = segment_planes(
            model, data, rgb=rgb, name=name, options=options, instances=instances, on_tiles=on_tiles,
            channels_last=channels,
        )  # fmt: skip
    else:
        result = segment_array(
            model, data, rgb=rgb, name=name, options=options, instances=instances, probabilities=probabilities,
            on_tiles=on_tiles, channels_last=channels,
        )  # fmt: skip
    return {**result, "model": model, "options": options}
