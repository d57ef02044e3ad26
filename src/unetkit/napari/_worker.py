"""What the Segment and Train widgets share: a run button, Cancel, a progress bar and a status line, and the work
in a napari worker thread whose mistakes arrive as one status line (never a traceback in the user's face)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from magicgui.widgets import Container, Label, ProgressBar, PushButton

from ..errors import UnetkitError

__all__ = [
    "NO_CHANNELS",
    "Scrolling",
    "WorkerWidget",
    "channel_axis_choices",
    "channels_last",
    "chosen_axis",
    "full_resolution",
    "is_result",
    "painted_labels",
    "result_labels",
    "shown_index",
]

log = logging.getLogger(__name__)


def full_resolution(layer: Any) -> Any:
    """A layer's data at full resolution (level 0 of a multiscale layer), as it is: not loaded."""
    return layer.data[0] if layer.multiscale else layer.data


#: the channel-axis choice that says the layer has none (its leading axes are planes)
NO_CHANNELS = "none: planes"


def channel_axis_choices(layer: Any) -> list[str]:
    """What a channel-axis choice offers for an image layer: none, or one of its axes before the image's two
    (``axis K (N)``: N channels). RGB layers have their colour axis already; 2-D layers have no other."""
    if layer is None or getattr(layer, "rgb", False) or layer.ndim < 3:
        return [NO_CHANNELS]
    shape = full_resolution(layer).shape
    return [NO_CHANNELS, *(f"axis {k} ({shape[k]})" for k in range(layer.ndim - 2))]


def chosen_axis(value: Any) -> int | None:
    """The axis of a channel-axis choice (None: no channels)."""
    return None if value in (None, NO_CHANNELS) else int(str(value).split()[1])


def shown_index(viewer: Any, layer: Any, axis: int) -> int:
    """The index of ``layer``'s ``axis`` that the viewer shows (its slider)."""
    where = np.asarray(layer.world_to_data(viewer.dims.point[-layer.ndim :]))
    return int(np.clip(round(float(where[axis])), 0, full_resolution(layer).shape[axis] - 1))


def channels_last(data: Any, axis: int) -> Any:
    """``data`` with its channel ``axis`` moved last, without loading it: NumPy and Dask arrays move it as a view,
    other arrays (zarr) are read window by window through :class:`_ChannelsLast`."""
    if hasattr(data, "transpose"):
        return np.moveaxis(data, axis, -1)
    return _ChannelsLast(data, axis)


class _ChannelsLast:
    """A lazily read view of an array with one axis moved last (what :func:`channels_last` gives a zarr array):
    ``shape``, ``dtype``, ``ndim`` and basic indexing (integers and slices)."""

    def __init__(self, base: Any, axis: int) -> None:
        self.base, self.axis = base, axis
        shape = list(base.shape)
        count = shape.pop(axis)
        self.shape = (*shape, count)
        self.dtype = base.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = (*key[:at], *(slice(None),) * (self.ndim - len(key) + 1), *key[at + 1 :])
        key = (*key, *(slice(None),) * (self.ndim - len(key)))
        order = list(key[:-1])
        order.insert(self.axis, key[-1])
        block = np.asarray(self.base[tuple(order)])
        if isinstance(key[-1], (int, np.integer)):
            return block
        kept = [i for i, k in enumerate(order) if not isinstance(k, (int, np.integer))]
        return np.moveaxis(block, kept.index(self.axis), -1)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[...]
        return whole if dtype is None else whole.astype(dtype)


#: names the Segment widget gives its results ("NAME objects", "NAME classes"; napari numbers duplicates "[1]")
_RESULT = re.compile(r" (objects|classes)( \[\d+\])?$")
#: names that say a layer is the ground truth (the sample's "nuclei (true labels)", "gt", "truth" ...)
_TRUTH = re.compile(r"true|truth|\bgt\b|ground", re.IGNORECASE)


def _labels_layers(viewer: Any) -> list[Any]:
    import napari.layers

    return [layer for layer in viewer.layers if isinstance(layer, napari.layers.Labels)]


#: the metadata key of training labels a Review made: how Train reads them (unpainted pixels, background label)
REVIEWED_KEY = "unetkit_training_labels"
#: the metadata key of a Segment result: how it was made (model, image layer, options; a Retrain's round)
SEGMENTED_KEY = "unetkit_segmented"


def placed(
    layer: Any, data: Any, plane: tuple[int, ...] = (), every: bool = False, channel_axis: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """A result of ``layer`` (an image or a volume, or ``plane`` of a stack) and the ``scale``/``translate`` that put
    it over the image: one plane at its index on the image's leading axes, every plane on all of them, an image (a
    volume) on its last two (three); the layer's ``channel_axis`` is not the result's (it shows over every
    channel). The arrays are copies: the image layer's own are never changed."""
    scale, translate = np.array(layer.scale, float), np.array(layer.translate, float)
    if channel_axis is not None:
        scale, translate = np.delete(scale, channel_axis), np.delete(translate, channel_axis)
    if not plane and not every:
        n = np.ndim(data)
        return data, {"scale": scale[-n:], "translate": translate[-n:]}
    translate[: len(plane)] += np.asarray(plane) * scale[: len(plane)]
    return (np.asarray(data)[(None,) * len(plane)] if plane else data), {
        "scale": scale,
        "translate": translate,
    }


def message(value: str = "", **kw: Any) -> Any:
    """A label for messages: long ones wrap, and a long unbreakable word (a path) never widens the dock: its
    width is the form's (a status naming /tmp/pytest-of-…/pred-2 made the Review form 580 px wide in a 340-px
    dock, its buttons cut off at the window's edge)."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=value, **kw)
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label


def save_to(tooltip: str) -> Any:
    """The folder a widget keeps its work in (``~/unetkit-napari`` by default)."""
    from magicgui.types import FileDialogMode
    from magicgui.widgets import FileEdit

    return FileEdit(
        label="save to",
        mode=FileDialogMode.EXISTING_DIRECTORY,
        value=Path.home() / "unetkit-napari",
        tooltip=tooltip,
    )


def safe_name(name: str) -> str:
    """A layer or folder name as a file name."""
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return keep or "layer"


def is_result(layer: Any) -> bool:
    """Whether a layer is one a Segment widget made (by its name)."""
    return bool(_RESULT.search(getattr(layer, "name", "")))


def result_labels(viewer: Any) -> Any:
    """The newest Labels layer a Segment made (a prediction), or None."""
    made = [layer for layer in _labels_layers(viewer) if _RESULT.search(layer.name)]
    return made[-1] if made else None


def painted_labels(viewer: Any, truth_first: bool = False) -> Any:
    """The newest Labels layer a person made (not a Segment result), or None; ``truth_first``: one named as
    ground truth wins."""
    own = [layer for layer in _labels_layers(viewer) if not _RESULT.search(layer.name)]
    if truth_first:
        named = [layer for layer in own if _TRUTH.search(layer.name)]
        own = named or own
    return own[-1] if own else None


class Scrolling(Container):
    """A form that scrolls: napari docks a widget's ``native``, here the scroll area around the form, so the plugin's
    widgets docked together fit a 1080-pixel-high screen (stacked, they needed 1,717 pixels). ``inner`` is the form
    itself, whose layout holds the fields."""

    def __init__(self) -> None:
        super().__init__(labels=True, scrollable=True)
        from qtpy.QtCore import QEvent, QObject

        scroll, form = self.root_native_widget, self.inner

        class _Width(QObject):
            """The scroll area as wide as the form would like (it scrolls up and down; sideways only when the
            window is too narrow for that)."""

            def eventFilter(self, watched: Any, event: Any) -> bool:
                if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Show):
                    need = max(form.minimumSizeHint().width(), form.sizeHint().width())
                    scroll.setMinimumWidth(need + scroll.verticalScrollBar().sizeHint().width())
                return False

        self._width = _Width(scroll)
        form.installEventFilter(self._width)
        from qtpy.QtCore import Qt

        scroll.setHorizontalScrollBarPolicy(
            Qt.ScrollBarPolicy.ScrollBarAsNeeded
        )  # never a field cut off unseen

    @property
    def native(self) -> Any:
        return self.root_native_widget

    @property
    def inner(self) -> Any:
        return self._widget._mgui_get_native_widget()


class WorkerWidget(Scrolling):
    """A form whose work runs in a worker thread. Subclasses add their fields, then :meth:`_controls` with their
    ``start``, which calls :meth:`_launch`. ``busy`` is true from the launch until the worker has finished (set on the
    GUI thread: tests wait for it to fall)."""

    def __init__(self) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self.worker: Any = None
        self.busy = False

    def _controls(self, run: str, cancel: str, unit: str, start: Callable[..., Any]) -> list[Any]:
        self.run_button = PushButton(text=run)
        self.cancel_button = PushButton(text=cancel, enabled=False)
        self.progress = ProgressBar(label=unit, value=0, min=0, max=1)
        self.status = message()
        self.run_button.changed.connect(start)
        self.cancel_button.changed.connect(self.stop)
        return [self.run_button, self.cancel_button, self.progress, self.status]

    def stop(self, *_: Any) -> None:
        self._cancel.set()

    def _launch(self, work: Callable[..., Any], *args: Any, returned: Callable[[Any], None]) -> Any:
        """Run ``work(*args)`` in a worker thread: ``returned`` gets its result, :meth:`_failed` its exception."""
        from napari.qt.threading import create_worker

        self._cancel.clear()
        self.progress.value, self.progress.max = 0, 1
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.busy = True
        # errors handled in _failed: Cancel and user mistakes as one line, not a traceback
        self.worker = create_worker(work, *args, _ignore_errors=True)
        self.worker.returned.connect(returned)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._idle)
        self.worker.start()
        return self.worker

    def _idle(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.busy = False

    #: the command line's flags in a message, as this widget's fields (the library speaks the CLI's words)
    FIELDS: ClassVar[dict[str, str]] = {}

    def _failed(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        message = str(exc)
        for flag, field in self.FIELDS.items():
            message = re.sub(rf"{re.escape(flag)}(?![\w-])", field, message)
        self.status.value = f"error: {message}"
        if not isinstance(exc, UnetkitError):  # not the user's mistake: keep the traceback for a report
            log.error("%s failed", type(self).__name__, exc_info=exc)
        show_error(message)
