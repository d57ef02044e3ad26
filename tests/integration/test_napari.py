"""The napari plugin, driven headless in a real viewer (napari's ``make_napari_viewer``, pytest-qt, Xvfb started
by pytest-xvfb): the sample data through the plugin's own contribution, the Segment widget on a NumPy layer and
on a Dask-backed one (the same objects as the Python API), Cancel, the Train widget from painted layers and from
a folder (a checkpoint offered to Segment; Cancel keeps the best model), the Evaluate widget, and screenshots of
what the user sees."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="the [napari] extra is not installed")
pytest.importorskip("pytestqt", reason="the [napari] extra is not installed")

from unetkit import Predictor  # noqa: E402
from unetkit.cli import train as train_cli  # noqa: E402
from unetkit.napari._segment import SegmentWidget  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(autouse=True)
def _no_trained_models():
    """Each test starts in a fresh session: no model trained by an earlier test is offered."""
    from unetkit.napari._models import TRAINED

    TRAINED.models.clear()
    yield
    TRAINED.models.clear()


def _wait(qtbot, widget, timeout=120_000):
    """Until the widget's run has finished. Not ``waitSignal(worker.finished)`` after ``start()``: a run that fails
    at once (a bad model file) can finish before the test connects, and the signal is never seen."""
    assert widget.worker is not None, "the widget started nothing"
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def _segmented_sample(make_napari_viewer, qtbot):
    """A viewer with the plugin's sample image segmented by the built-in model (``nuclei objects``)."""
    viewer = make_napari_viewer()
    viewer.open_sample("unetkit", "nuclei")
    segment = SegmentWidget(viewer)
    segment.image.value = viewer.layers["nuclei"]
    segment.start()
    _wait(qtbot, segment)
    return viewer


def _screenshot(viewer, name, tmp_path, reset=True):
    """What the user sees (viewer and docked widgets), saved under the test's folder, and under docs/ when
    UNETKIT_DOCS_SCREENSHOTS=1 (how the docs' pictures are made)."""
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    viewer.window._qt_window.resize(1400, 860)  # room for the canvas beside the docked widget
    QApplication.processEvents()  # laid out at that size before the grab (else forms are cut at the edge)
    if reset:
        viewer.reset_view()
    picture = viewer.screenshot(canvas_only=False, flash=False)
    assert picture.ndim == 3 and picture.shape[0] > 200 and picture[..., :3].std() > 5  # not a blank window
    Image.fromarray(picture).save(tmp_path / name)
    if os.environ.get("UNETKIT_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        Image.fromarray(picture).save(DOCS / name)


def test_segment_widget_turns_an_image_layer_into_objects(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("unetkit", "nuclei")  # the plugin's sample data contribution
    assert [layer.name for layer in viewer.layers] == ["nuclei", "nuclei (true labels)"]
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment", area="right")
    assert widget.model.value == "nuclei"  # the built-in model is offered first
    widget.image.value = viewer.layers["nuclei"]
    widget.tile.value = 256
    widget.start()
    _wait(qtbot, widget)
    result = viewer.layers["nuclei objects"]
    image = viewer.layers["nuclei"].data
    assert result.data.shape == image.shape
    expected, table = Predictor.from_checkpoint("nuclei", tile=256).predict_instances(
        image, return_table=True
    )
    np.testing.assert_array_equal(np.asarray(result.data), expected)  # the same work as the API and the CLI
    assert widget.progress.value == widget.progress.max > 1 and "objects in" in widget.status.value
    # every object's confidence rides on the layer (issue 34): napari shows it when hovering the object
    features = result.features
    np.testing.assert_array_equal(np.asarray(features["index"]), table["label"])
    np.testing.assert_allclose(np.asarray(features["confidence"]), table["confidence"], rtol=1e-6)
    assert "doubtful: confidence under 0.5" in widget.status.value
    _screenshot(viewer, "napari-segment.png", tmp_path)


def test_the_segment_widget_starts_from_unetkit_predicts_defaults(make_napari_viewer):
    """Issue 33 item 1: the widget tiled at 512 and separated instances by default while `unetkit predict` tiles at
    the model's patch and writes masks: every default is now the definition's, except where it says why not."""
    import inspect

    from unetkit import PredictConfig, predict_files
    from unetkit.config import SURFACE_DEFAULTS

    widget = SegmentWidget(make_napari_viewer())
    defaults = PredictConfig()
    assert widget.tile.value == 0 and "training patch" in widget.tile.tooltip  # 0: the model's, as the CLI
    assert widget.tta.value == defaults.tta and widget.threshold.value == defaults.threshold
    assert widget.invert.value == defaults.invert  # dark objects (bright-field): off, as --invert
    assert widget.diameter.value == 0 and defaults.diameter is None  # 0: as the model learnt
    assert widget.min_size.value == (
        defaults.min_size or 0
    )  # exposed (0: auto), as StarDist and cellpose-napari do
    documented, why = SURFACE_DEFAULTS["napari"]["instances"]
    assert (
        widget.instances.value
        == documented
        != inspect.signature(predict_files).parameters["instances"].default
    )
    assert why


def test_a_trained_model_stays_offered_and_chosen_when_layers_change(make_napari_viewer, tmp_path):
    """Issue 35 item 1: napari resets every widget's choices when a layer is added or removed; the model trained
    in the session vanished from the list and the next Segment silently used the built-in `nuclei`."""
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment", area="right")
    widget.add_model("cells (trained)", tmp_path / "best.pt")
    viewer.add_image(np.zeros((32, 32), np.uint8), name="a")  # napari resets the dock widgets' choices
    viewer.layers.remove("a")
    assert "cells (trained)" in widget.model.choices and widget.model.value == "cells (trained)"
    assert widget.chosen_model() == str(tmp_path / "best.pt")


def test_threshold_acts_on_a_binary_model_and_is_disabled_with_the_reason_otherwise(
    make_napari_viewer, tiny_run
):
    """Issue 35 item 3: with the built-in 3-class model, thresholds 0.1 and 0.9 gave identical labels."""
    widget = SegmentWidget(make_napari_viewer())
    assert widget.model.value == "nuclei"
    assert not widget.threshold.enabled and "3 classes" in widget.threshold.tooltip
    widget.model_file.value = tiny_run.best_checkpoint  # a binary model: the threshold is what decides
    assert widget.threshold.enabled and "binary" in widget.threshold.tooltip


def test_the_train_widget_and_unetkit_train_make_the_same_configuration(tiny_data, tiny_run, tmp_path):
    """Issue 33 item 4: the widget chained plan, init and train itself and resolved the fine-tuning rate its own way
    (a settings file's rate was kept); both now start runs with workflows.plan.plan_and_train, configured by
    what each makes of its settings."""
    import time

    from unetkit.cli.main import build_parser
    from unetkit.napari._train import job_settings
    from unetkit.workflows.plan import configure_training

    settings = tmp_path / "settings.yaml"
    settings.write_text("model:\n  base_channels: 4\n  depth: 2\ntrain:\n  lr: 0.01\n  epochs: 3\n")
    started = time.perf_counter()
    job = {"settings": str(settings), "init": str(tiny_run.run_dir), "budget": 180.0, "started": started}
    widget_cfg, _, widget_fill = configure_training(tiny_data, tmp_path / "w", **job_settings(job))
    argv = ["train", str(tiny_data), "--config", str(settings), "--init", str(tiny_run.run_dir),
            "--time-budget", "3m", "--out", str(tmp_path / "c")]  # fmt: skip
    args = build_parser().parse_args(argv)
    args.started = started
    cli_cfg, _, cli_fill = configure_training(args.data, tmp_path / "c", **train_cli.configuring(args))
    assert widget_cfg.to_dict() == cli_cfg.to_dict() and widget_fill == cli_fill
    assert widget_cfg.train.lr != 0.01  # fine-tuning: the settings file's rate was its own training's
    assert widget_cfg.train.time_budget == 180.0


def test_segment_estimates_the_diameter_and_warns_about_sizes_the_model_never_learnt(
    make_napari_viewer, qtbot, tmp_path
):
    """Issue 35: no "estimate diameter from image" (cellpose-napari's "compute from image"), and no warning when
    the objects were far from the learnt sizes (F1 0.445 at the default, 0.878 rescaled)."""
    from scipy import ndimage

    from unetkit import synth_nuclei

    small = ndimage.zoom(synth_nuclei((1024, 1024), seed=3)[0], 0.25, order=1)  # nuclei of about 5 px
    viewer = make_napari_viewer()
    viewer.add_image(small, name="small")
    widget = SegmentWidget(viewer)
    widget.image.value = viewer.layers["small"]
    widget.start()
    _wait(qtbot, widget)
    lo, hi = Predictor.from_pretrained("nuclei").trained_range
    assert (
        f"smaller than any the model learnt ({lo:g}-{hi:g} px): tick 'estimate the diameter"
        in widget.status.value
    )
    widget.estimate.value = True
    assert not widget.diameter.enabled  # one or the other
    widget.start()
    _wait(qtbot, widget)
    assert f"(estimated); the model learnt {lo:g}-{hi:g} px: segmented zoomed x1." in widget.status.value
    viewer.window.add_dock_widget(widget, name="Segment", area="right")
    _screenshot(viewer, "napari-segment-estimate.png", tmp_path)
    widget.min_size.value = 10**6  # the min-size field reaches the work: no object is that large
    widget.start()
    _wait(qtbot, widget)
    assert widget.status.value.startswith("small: 0 objects")


def test_train_and_evaluate_choose_sensible_layers(make_napari_viewer):
    """Issue 35: Evaluate preselected the same layer as prediction and truth; Train's labels defaulted to the first
    Labels layer, not the painted one."""
    from unetkit.napari._evaluate import EvaluateWidget
    from unetkit.napari._train import TrainWidget

    viewer = make_napari_viewer()
    viewer.open_sample("unetkit", "nuclei")  # "nuclei" and "nuclei (true labels)"
    shape = viewer.layers["nuclei"].data.shape
    train, evaluate = TrainWidget(viewer), EvaluateWidget(viewer)
    viewer.add_labels(np.zeros(shape, np.uint8), name="nuclei objects")  # what Segment adds
    viewer.add_labels(np.zeros(shape, np.uint8), name="Labels")  # napari's name for a layer one paints
    assert train.labels.value.name == "Labels"  # the painted layer, not a result
    assert evaluate.prediction.value.name == "nuclei objects"
    assert evaluate.truth.value.name == "nuclei (true labels)"  # named as truth, and not the prediction
    evaluate.truth.value = viewer.layers["Labels"]  # a person's own choice stays when layers change
    viewer.add_labels(np.zeros(shape, np.uint8), name="nuclei objects [1]")
    assert evaluate.truth.value.name == "Labels" and evaluate.prediction.value.name == "nuclei objects [1]"
    train.labels.value = viewer.layers["nuclei (true labels)"]  # chosen by hand: kept when a layer is painted
    viewer.add_labels(np.zeros(shape, np.uint8), name="Labels 2")
    assert train.labels.value.name == "nuclei (true labels)"


def test_train_errors_name_the_widgets_fields_not_the_command_lines_flags(make_napari_viewer):
    """Issue 35: a refused budget said "give at least 4m21s" for "--time-budget", a flag the widget does not have."""
    from unetkit.errors import ConfigError
    from unetkit.napari._train import TrainWidget

    widget = TrainWidget(make_napari_viewer())
    widget._failed(ConfigError("--time-budget 6s: one epoch takes 30 s here; give at least 40s"))
    assert (
        widget.status.value
        == "error: the time budget ('minutes') 6s: one epoch takes 30 s here; give at least 40s"
    )


def test_a_dask_backed_layer_is_read_window_by_window(make_napari_viewer, qtbot):
    da = pytest.importorskip("dask.array")
    from unetkit import synth_nuclei

    image = synth_nuclei((300, 420), seed=3)[0]
    reads = []

    def counted(block, block_info=None):
        reads.append(block.shape)
        return block

    lazy = da.from_array(image, chunks=(128, 128)).map_blocks(counted, dtype=image.dtype)
    viewer = make_napari_viewer()
    layer = viewer.add_image(lazy, name="lazy")
    widget = SegmentWidget(viewer)
    widget.image.value = layer
    widget.tile.value, widget.instances.value, widget.probabilities.value = 256, False, True
    widget.start()
    _wait(qtbot, widget)
    classes = viewer.layers["lazy classes"].data
    probs = viewer.layers["lazy probabilities"].data
    expected = Predictor.from_checkpoint("nuclei", tile=256).predict(image)
    np.testing.assert_array_equal(np.asarray(classes), expected)
    assert probs.shape == (3, 300, 420) and probs.dtype == np.float16
    assert reads and max(h * w for h, w in reads) < image.size  # never the whole layer at once


def test_cancel_stops_the_run_and_adds_nothing(make_napari_viewer, qtbot):
    from unetkit import synth_nuclei

    viewer = make_napari_viewer()
    viewer.add_image(synth_nuclei((1024, 1024), seed=1)[0], name="big")
    widget = SegmentWidget(viewer)
    widget.image.value = viewer.layers["big"]
    widget.tile.value = 64  # many tiles: time to cancel
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=60_000)
    widget.stop()
    _wait(qtbot, widget)
    assert widget.status.value == "cancelled: nothing was added"
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_evaluate_widget_scores_as_unetkit_evaluate_and_shows_the_errors(make_napari_viewer, qtbot, tmp_path):
    from unetkit import evaluate, synth_nuclei, write_image
    from unetkit.config import DataConfig
    from unetkit.napari._evaluate import ROWS, EvaluateWidget

    image, truth = synth_nuclei((256, 256), seed=5)
    pred = Predictor.from_checkpoint("nuclei", tile=256).predict_instances(image)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(truth, name="truth")
    viewer.add_labels(pred, name="prediction")
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Evaluate", area="right")
    widget.prediction.value, widget.truth.value = viewer.layers["prediction"], viewer.layers["truth"]
    scores = widget.evaluate()
    # the same numbers as `unetkit evaluate` on the same labels written as files
    write_image(tmp_path / "gt" / "img.tif", truth.astype(np.uint16))
    write_image(tmp_path / "pred" / "img.tif", pred.astype(np.uint16))  # a label image, read by its IDs
    ev = evaluate(
        tmp_path / "pred", tmp_path / "gt", mode="instance", data=DataConfig(mask_encoding="instances")
    )
    for key in ROWS:
        assert scores[key] == pytest.approx(ev.mean[key]), key
    assert tuple(widget.table.row_headers) == ROWS and widget.table.shape == (len(ROWS), 1)
    assert widget.table.data[ROWS.index("f1"), 0] == f"{scores['f1']:.4g}"
    # every row shown (the table grows, the dock scrolls) and every score's definition on its name and value
    from unetkit.workflows.evaluate import DEFINITIONS

    table = widget.table.native
    assert (
        table.height()
        >= sum(table.rowHeight(r) for r in range(len(ROWS))) + table.horizontalHeader().height()
    )
    for row, key in enumerate(ROWS):
        assert DEFINITIONS[key] in table.verticalHeaderItem(row).toolTip() == table.item(row, 0).toolTip()
    # the errors as layers: every missed object is a true object no prediction matches, and so on
    missed = viewer.layers["prediction: misses"].data
    false = viewer.layers["prediction: false positives"].data
    assert len(np.unique(missed)) - 1 == int(scores["fn"]) and len(np.unique(false)) - 1 == int(scores["fp"])
    assert set(np.unique(missed)) <= set(np.unique(truth)) and set(np.unique(false)) <= set(np.unique(pred))
    assert "F1@0.5" in widget.status.value
    _screenshot(viewer, "napari-evaluate.png", tmp_path)


def test_a_model_file_is_used_and_a_bad_one_is_one_line(make_napari_viewer, qtbot, tiny_run, tmp_path):
    from unetkit import synth_nuclei

    image = synth_nuclei((128, 160), seed=2)[0]
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = SegmentWidget(viewer)
    widget.image.value = viewer.layers["cells"]
    widget.model_file.value = tiny_run.best_checkpoint  # a trained run's checkpoint instead of a built-in
    widget.start()
    _wait(qtbot, widget)
    expected = Predictor.from_checkpoint(tiny_run.best_checkpoint, tile=512).predict_instances(image)
    np.testing.assert_array_equal(np.asarray(viewer.layers["cells objects"].data), expected)
    (tmp_path / "notes.pt").write_text("not a model")
    widget.model_file.value = tmp_path / "notes.pt"
    widget.start()
    _wait(qtbot, widget)
    assert widget.status.value.startswith("error: ") and "\n" not in widget.status.value
    assert "Traceback" not in widget.status.value
    assert [layer.name for layer in viewer.layers] == ["cells", "cells objects"]  # nothing added


def _hidden(field):
    """Hidden by the widget (``visible`` also says False for any field of a window not shown)."""
    return field.native.isHidden()


def _tiny_settings(tmp_path, **train):
    from tests.conftest import tiny_config

    path = tmp_path / "tiny.yaml"
    tiny_config(**train).to_yaml(path)
    return path


def test_train_widget_learns_from_painted_layers_and_offers_the_model(make_napari_viewer, qtbot, tmp_path):
    from unetkit import read_image, synth_nuclei
    from unetkit.napari._train import SCRATCH, TrainWidget
    from unetkit.workflows.painted import IGNORED

    image, truth = synth_nuclei((256, 256), seed=11)
    ids = np.unique(truth)[1:]
    paint = np.where(np.isin(truth, ids[::4]), truth + 1, 0)  # a quarter of the nuclei painted
    paint[(truth == 0) & (np.arange(256)[:, None] % 32 < 3)] = 1  # background painted in strokes
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    viewer.add_labels(paint, name="painted")
    segment = SegmentWidget(viewer)  # open, not docked: the screenshot shows Train beside the image
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train", area="right")
    assert _hidden(widget.background_label) and _hidden(widget.folder)
    widget.image.value, widget.labels.value = viewer.layers["cells"], viewer.layers["painted"]
    widget.unpainted.value = "ignored"
    assert not _hidden(widget.background_label)
    widget.init.value = SCRATCH
    widget.settings.value = _tiny_settings(tmp_path, epochs=3, steps_per_epoch=4)
    widget.work.value = tmp_path / "work"
    widget.start()
    _wait(qtbot, widget)
    run = tmp_path / "work" / "cells" / "run"
    assert (run / "best.pt").is_file() and "offered in Segment" in widget.status.value, widget.status.value
    # the painted layers were written as a dataset with the unpainted pixels ignored, kept beside the run
    mask = read_image(tmp_path / "work" / "cells" / "data" / "masks" / "cells.tif")
    assert (mask == IGNORED).any() and set(np.unique(mask[mask != IGNORED])) >= {0}
    # the live plot saw every step and epoch; the progress bar ended full
    assert len(widget.plot.rows) == 3 and len(widget.plot.steps) == 12
    assert widget.progress.value == widget.progress.max == 12
    _screenshot(viewer, "napari-train.png", tmp_path)
    # the trained model is chosen in the Segment widget, and it is the run's checkpoint that segments
    assert segment.model.value == "cells (trained)" and segment.chosen_model() == str(run / "best.pt")
    segment.image.value = viewer.layers["cells"]
    segment.start()
    _wait(qtbot, segment)
    expected = Predictor.from_checkpoint(run / "best.pt").predict_instances(image)  # the CLI's defaults
    np.testing.assert_array_equal(np.asarray(viewer.layers["cells objects"].data), expected)
    # a Segment widget opened later offers it too
    assert SegmentWidget(viewer).model.value == "cells (trained)"  # one opened later offers it, chosen


def test_train_widget_fine_tuning_plots_the_starting_model_as_epoch_0(
    make_napari_viewer, qtbot, tiny_data, tmp_path
):
    import csv

    from unetkit.napari._train import TrainWidget

    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    widget.source.value = "dataset folder"
    widget.folder.value = tiny_data
    widget.init.value = "nuclei"  # fine-tune the built-in model
    widget.settings.value = _tiny_settings(tmp_path, epochs=2, steps_per_epoch=2)
    widget.work.value = tmp_path / "work"
    widget.start()
    _wait(qtbot, widget)
    run = tmp_path / "work" / "tiny" / "run"
    assert (run / "best.pt").is_file(), widget.status.value
    with open(run / "metrics.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    # the plot starts at epoch 0, the starting model's validation, as metrics.csv does
    assert [int(r["epoch"]) for r in widget.plot.rows] == [int(r["epoch"]) for r in table] == [0, 1, 2]
    assert widget.plot.rows[0]["val_dice"] == pytest.approx(float(table[0]["val_dice"]))
    assert "offered in Segment" in widget.status.value and " of 2" in widget.status.value


def test_train_widget_from_a_folder_cancel_keeps_the_best_model(
    make_napari_viewer, qtbot, tiny_data, tmp_path
):
    from unetkit.napari._models import TRAINED
    from unetkit.napari._train import SCRATCH, TrainWidget

    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train", area="right")  # docked: its layer lists follow
    widget.source.value = "dataset folder"
    assert not _hidden(widget.folder) and _hidden(widget.image)
    widget.start()  # no folder chosen: one line, nothing started
    assert widget.worker is None and widget.status.value == "choose the dataset folder"
    widget.folder.value = tiny_data
    widget.init.value = SCRATCH
    widget.settings.value = _tiny_settings(tmp_path, epochs=500, steps_per_epoch=3)
    widget.work.value = tmp_path / "work"
    widget.start()
    qtbot.waitUntil(lambda: widget.best is not None and widget.progress.value > 6, timeout=120_000)
    widget.stop()
    _wait(qtbot, widget)
    run = tmp_path / "work" / "tiny" / "run"
    assert widget.status.value.startswith("cancelled; kept the best model"), widget.status.value
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()  # last.pt: resumable from the CLI
    assert TRAINED.models["tiny (trained)"] == str(run / "best.pt")
    assert widget.progress.value < widget.progress.max == 1500
    # a painted layer that cannot train is one line in the status, nothing written
    from unetkit import synth_nuclei

    image, truth = synth_nuclei((128, 128), seed=1)
    viewer.add_image(image, name="few")
    viewer.add_labels(np.zeros_like(truth), name="nothing painted")
    widget.source.value = "painted layers"
    widget.image.value, widget.labels.value = viewer.layers["few"], viewer.layers["nothing painted"]
    widget.start()
    _wait(qtbot, widget)
    assert (
        widget.status.value == "error: few: no object is painted: paint a few objects with labels 1, 2, 3 ..."
    )
    assert not (tmp_path / "work" / "few" / "data").exists()


def test_a_predict_result_opens_as_layers_through_the_reader(make_napari_viewer, tmp_path):
    from unetkit import predict_files, synth_nuclei, write_image

    image, _ = synth_nuclei((200, 240), seed=4)
    write_image(tmp_path / "in" / "cells.png", image)
    (result,) = predict_files(
        "nuclei",
        [tmp_path / "in"],
        tmp_path / "pred",
        format="zarr",
        save_probs=True,
        instances=True,
        progress=False,
    )
    viewer = make_napari_viewer()
    layers = viewer.open(str(result.mask), plugin="unetkit")
    assert [layer.name for layer in layers] == [
        "cells objects",
        "cells mask",
        *(f"cells probabilities (class {i})" for i in range(3)),
    ]
    objects, mask = viewer.layers["cells objects"], viewer.layers["cells mask"]
    assert type(objects).__name__ == "Labels" and type(mask).__name__ == "Labels"
    # issue 34: the objects table round-trips through the reader as the layer's features
    table = objects.features
    assert sorted(table["index"]) == sorted(set(np.unique(np.asarray(objects.data)).tolist()) - {0})
    assert ((table["confidence"] >= 0) & (table["confidence"] <= 1)).all() and "area" in table
    expected = Predictor.from_checkpoint("nuclei").predict_instances(image)
    np.testing.assert_array_equal(np.asarray(objects.data), expected)
    assert not mask.visible and np.asarray(mask.data).shape == image.shape
    assert sum(type(layer).__name__ == "Image" for layer in layers) == 3  # one per class, 0..1
    # a zarr store that is not a unetkit result is left to other readers
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_array("raw", shape=(4, 4), dtype="u1")
    from unetkit.napari._reader import get_reader

    assert (
        get_reader(str(tmp_path / "other.zarr")) is None
        and get_reader(str(tmp_path / "in" / "cells.png")) is None
    )
    # issue 35 item 4: dropped on the window, a result folder opens napari's "Choose reader" dialog, which
    # preselects its first entry: that was napari's own reader, which fails on our stores with a bare ValueError
    from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog
    from napari.plugins import _npe2

    readers = _npe2.get_readers(str(result.mask))
    assert "unetkit" in readers and len(readers) > 1  # napari's builtins offer themselves too
    dialog = QtReaderDialog(pth=str(result.mask), readers=readers)
    assert dialog._get_plugin_choice() == readers["unetkit"]


def test_review_steps_through_the_objects_least_confident_first(make_napari_viewer, qtbot, tmp_path):
    """Issue 34: after Segment, Review centres the view on the most doubtful object and selects it; Delete
    removes it from the layer, Keep keeps it; verdicts stay on the layer; the next is the next least confident."""
    from unetkit.napari._review import ReviewWidget

    viewer = _segmented_sample(make_napari_viewer, qtbot)
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review, name="Review", area="right")
    layer = viewer.layers["nuclei objects"]
    assert review.objects.value is layer  # the result that carries confidences, not the true labels
    order = layer.features.sort_values("confidence", kind="stable")["index"].tolist()
    first = review.next()
    assert first == order[0] and layer.selected_label == first
    row = layer.features[layer.features["index"] == first].iloc[0]
    np.testing.assert_allclose(viewer.camera.center[-2:], [row["centroid_y"], row["centroid_x"]], atol=1e-6)
    assert "confidence" in review.status.value and f"object {first}" in review.status.value
    review.delete()  # removes it and moves on to the next least confident
    assert not (np.asarray(layer.data) == first).any() and review.current == order[1]
    review.keep()
    verdicts = dict(zip(layer.features["index"], layer.features["reviewed"], strict=True))
    assert verdicts[first] == "deleted" and verdicts[order[1]] == "kept" and review.current == order[2]
    assert "1 kept, 1 deleted" in review.status.value
    from unetkit.napari._train import TrainWidget
    from unetkit.workflows.painted import write_painted_dataset

    # the four least confident objects reviewed (one deleted, three kept) lie above the painted area's bottom
    # rows: once refused (fewer than 5 objects validated on those rows), now one kept object is held out whole
    kept = 3
    for _ in range(kept - 1):
        review.keep()
    # the verdicts become training labels, unreviewed pixels ignored, and Train reads them so

    original = np.asarray(viewer.layers["nuclei objects"].data).copy()
    made = review.training_labels()
    labels = np.asarray(made.data)
    assert (
        made.name == "nuclei reviewed" and made.metadata["unetkit_training_labels"]["unpainted"] == "ignored"
    )
    for k in order[1 : 1 + kept]:
        assert (labels[original == k] == k + 1).all()  # kept objects: objects (1 is background)
    assert (labels[np.asarray(layer.metadata["unetkit_deleted_pixels"])] == 1).all()  # deleted: background
    unreviewed = order[-1]
    assert (labels[original == unreviewed] == 0).all()  # not reviewed: ignored
    assert (labels == 1).sum() > (
        labels[np.isin(original, order[1 : 1 + kept])] > 0
    ).sum() // 4  # a ring of background
    train = TrainWidget(viewer)
    assert (
        train.labels.value is made
        and train.unpainted.value == "ignored"
        and train.background_label.value == 1
    )
    data = write_painted_dataset(
        viewer.layers["nuclei"].data, labels, tmp_path / "reviewed", unpainted="ignored"
    )
    assert (data / "dataset.yaml").is_file()
    viewer.window._qt_window.resize(1400, 860)
    viewer.reset_view()
    viewer.camera.zoom *= 4  # as a reviewer works: close up, the view following each object
    review.current = None
    review.next()
    _screenshot(viewer, "napari-review.png", tmp_path, reset=False)


def test_retrain_learns_from_the_verdicts_and_segments_again_round_after_round(
    make_napari_viewer, qtbot, tmp_path
):
    """Issue 34: one click fine-tunes the model that segmented on the verdicts (unreviewed pixels ignored), never
    below its start, segments the image again as a numbered round whose model Segment offers; the next round starts
    from that model and learns from both rounds' corrections."""
    from unetkit import synth_nuclei, write_image
    from unetkit.napari._models import TRAINED
    from unetkit.napari._review import ReviewWidget

    images = tmp_path / "images"  # an image opened from its folder: the rest of the folder is segmented too
    for name, seed in (("nuclei", 0), ("b", 1), ("c", 2)):
        write_image(images / f"{name}.tif", synth_nuclei((256, 256), seed=seed)[0])
    viewer = make_napari_viewer()
    viewer.open(images / "nuclei.tif", plugin="napari")
    segment = SegmentWidget(viewer)
    segment.image.value = viewer.layers["nuclei"]
    segment.start()
    _wait(qtbot, segment)
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review, name="Review", area="right")
    review.work.value = tmp_path / "work"
    # one epoch with its start-up took 16 s alone, 47 s under the whole suite's load: room for a loaded machine
    review.budget.value = 1.0
    assert review.objects.value is viewer.layers["nuclei objects"]
    for _ in range(8):
        review.keep()
    review.retrain()
    _wait(qtbot, review, timeout=240_000)
    assert "round 1:" in review.status.value and "offered in Segment" in review.status.value, (
        review.status.value
    )
    first = viewer.layers["nuclei objects (round 1)"]
    assert (
        review.objects.value is first and "confidence" in first.features and np.asarray(first.data).max() > 10
    )
    folder = tmp_path / "work" / "nuclei-review"
    assert "2 other image(s) of its folder segmented into" in review.status.value
    assert sorted(p.name for p in (folder / "pred-1").glob("*_objects.csv")) == [
        "b_objects.csv",
        "c_objects.csv",
    ]
    assert sorted(p.name for p in images.iterdir()) == [
        "b.tif",
        "c.tif",
        "nuclei.tif",
    ]  # nothing written there
    metrics = (folder / "model-1" / "metrics.csv").read_text().splitlines()
    assert metrics[1].startswith("0,")  # the model that segmented, validated before the first step
    assert TRAINED.models["nuclei round 1"] == str(folder / "model-1" / "best.pt")
    assert "nuclei round 1" in SegmentWidget(viewer).model.choices
    for _ in range(8):  # the second round reviews the new layer
        review.keep()
    review.budget.value = 1.5  # two rounds' corrections: 29 s an epoch after 18 s of start-up under load
    review.retrain()
    _wait(qtbot, review, timeout=240_000)
    assert "round 2:" in review.status.value, review.status.value
    assert (folder / "pred-2" / "b_instances.tif").is_file()  # every round's model segments the folder again
    assert sorted(p.name for p in (folder / "train-2" / "images").iterdir()) == ["r1.tif", "r2.tif"]
    second = viewer.layers["nuclei objects (round 2)"]
    assert second.metadata["unetkit_segmented"]["model"] == str(folder / "model-2" / "best.pt")
    config = (folder / "model-2" / "config.yaml").read_text()
    assert str(folder / "model-1") in config  # round 2 started from round 1's model
    _screenshot(viewer, "napari-retrain.png", tmp_path)


def test_segment_shows_the_models_card(make_napari_viewer, tiny_run, tmp_path):
    """Issue 35: no view of the model's card and learnt size range (StarDist and cellpose-napari show neither
    either; a biologist asks what a model learnt before trusting it)."""
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment", area="right")
    assert widget.card.native.isHidden()  # one click away
    widget.card_button.changed.emit(True)
    card = widget.card.value
    assert (
        not widget.card.native.isHidden() and "built-in" in card and "synthetic" in card and "limit:" in card
    )
    assert "7 to 58 px" in card and "style-shift suite" in card  # its learnt sizes and its scores
    _screenshot(viewer, "napari-card.png", tmp_path)
    widget.model_file.value = tiny_run.best_checkpoint  # a run of one's own: what the checkpoint records
    card = widget.card.value
    assert (
        "validation Dice" in card
        and "learnt object size" in card
        and str(tiny_run.best_checkpoint.parent.name) in card
    )
    widget.model_file.value = tmp_path / "missing.pt"
    assert "no such model file" in widget.card.value


def test_the_widgets_docked_together_fit_a_1080_pixel_screen(make_napari_viewer, tmp_path):
    """Issue 35: with the widgets docked, the window needed 1277-1418 px of height (1,717 with Review too): each
    form now scrolls inside its dock."""
    from qtpy.QtWidgets import QApplication, QScrollArea

    from unetkit.napari._evaluate import EvaluateWidget
    from unetkit.napari._review import ReviewWidget
    from unetkit.napari._train import TrainWidget

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    for name, make in (("Segment", SegmentWidget), ("Train", TrainWidget), ("Evaluate", EvaluateWidget),
                       ("Review", ReviewWidget)):  # fmt: skip
        widget = make(viewer)
        assert isinstance(widget.native, QScrollArea) and widget.inner.layout() is not None
        viewer.window.add_dock_widget(widget, name=name, area="right")
        # a status naming a long path (one unbreakable word) never widens the form: it wrapped at spaces only, and
        # a Retrain status made the Review form 580 px wide in a 340-px dock, its buttons cut off
        narrow = widget.inner.minimumSizeHint().width()
        widget.status.value = "segmented into /" + "/".join(["a-rather-long-folder-name"] * 12)
        QApplication.processEvents()
        assert widget.inner.minimumSizeHint().width() <= narrow, name
    window.resize(1920, 1080)
    QApplication.processEvents()
    assert window.minimumSizeHint().height() <= 1080 and window.height() <= 1080


def test_a_3d_model_segments_the_volume_shown(make_napari_viewer, qtbot, tmp_path):
    """Issue 35: 3-D models on volumes (cellpose-napari's 3-D): a 3-D model segments a z-stack layer as one volume,
    as the Python API (and `unetkit predict`) does; on a time-lapse of volumes, the volume shown; a 2-D layer is
    refused in one line."""
    from unetkit import DataConfig, ModelConfig, RunConfig, TrainConfig, synthesize_dataset, train
    from unetkit.data.io import read_volume

    data = synthesize_dataset(tmp_path / "vol", n=4, size=40, seed=3, depth=12)
    cfg = RunConfig(
        model=ModelConfig(base_channels=4, depth=2, spatial_dims=3),
        data=DataConfig(patch_size=24, patch_depth=8),
        train=TrainConfig(epochs=1, batch_size=2, steps_per_epoch=2),
    )
    run = train(data, tmp_path / "run", cfg, progress=False)
    volume = read_volume(data / "images" / "synth_000.tif")
    viewer = make_napari_viewer()
    layer = viewer.add_image(volume, name="vol", scale=(2.0, 1.0, 1.0))
    widget = SegmentWidget(viewer)
    widget.model_file.value = run.best_checkpoint
    widget.image.value = layer
    widget.probabilities.value = True
    widget.start()
    _wait(qtbot, widget)
    shown = viewer.layers["vol objects"]
    expected = Predictor.from_checkpoint(run.best_checkpoint).predict_instances(volume)
    np.testing.assert_array_equal(np.asarray(shown.data), expected)  # one volume, not 12 planes
    assert tuple(shown.scale) == (2.0, 1.0, 1.0)  # over the volume, its z spacing kept
    probs = viewer.layers["vol probabilities"]  # one layer, the classes on its first axis, as for an image
    classes = Predictor.from_checkpoint(run.best_checkpoint).predict_proba(volume).shape[0]
    assert np.asarray(probs.data).shape == (classes, *volume.shape) and tuple(probs.scale)[-3:] == (
        2.0,
        1.0,
        1.0,
    )
    widget.probabilities.value = False
    series = viewer.add_image(np.stack([volume, volume[::-1]]), name="series")
    widget.image.reset_choices()
    widget.image.value = series
    viewer.dims.set_point(0, 1)
    widget.start()
    _wait(qtbot, widget)
    second = viewer.layers["series objects (plane 1)"]
    assert np.asarray(second.data).shape == (1, *volume.shape) and second.translate[0] == 1
    reversed_objects = Predictor.from_checkpoint(run.best_checkpoint).predict_instances(volume[::-1])
    np.testing.assert_array_equal(np.asarray(second.data)[0], reversed_objects)
    widget.planes.value = "every plane"  # every volume of the series, one model load
    widget.start()
    _wait(qtbot, widget)
    every = np.asarray(viewer.layers["series objects (every plane)"].data)
    assert every.shape == (2, *volume.shape)
    np.testing.assert_array_equal(every[0] > 0, expected > 0)
    np.testing.assert_array_equal(every[1] > 0, reversed_objects > 0)
    assert not set(np.unique(every[0])[1:]) & set(np.unique(every[1])[1:])  # numbered across volumes
    flat = viewer.add_image(volume[0], name="flat")
    widget.image.reset_choices()
    widget.image.value = flat
    assert widget.start() is None and "3-D model" in widget.status.value


def test_stacks_segment_this_plane_or_every_plane(make_napari_viewer, qtbot, tmp_path):
    """Issue 35: stacks were refused; StarDist segments per frame, cellpose-napari in 3-D. Now the plane shown, or
    every plane of the first axis, one after another; Review goes to each object's plane."""
    from unetkit import synth_nuclei
    from unetkit.napari._review import ReviewWidget
    from unetkit.workflows.segment import segment_array

    stack = np.stack([synth_nuclei((160, 200), seed=k)[0] for k in range(3)])
    viewer = make_napari_viewer()
    layer = viewer.add_image(stack, name="stack")
    widget = SegmentWidget(viewer)
    widget.image.value = layer
    assert not widget.planes.native.isHidden() and widget.planes.value == "this plane"
    viewer.dims.set_point(0, 1)
    widget.start()
    _wait(qtbot, widget)
    one = viewer.layers["stack objects (plane 1)"]
    assert np.asarray(one.data).shape == (1, 160, 200) and one.translate[0] == 1
    assert tuple(layer.translate) == (0, 0, 0)  # the image stays where it was
    alone = segment_array(
        "nuclei", stack[1], rgb=False, name="p1", options={}, instances=True, probabilities=False
    )
    np.testing.assert_array_equal(np.asarray(one.data)[0], alone["labels"])  # what the plane gives alone
    widget.planes.value = "every plane"
    widget.start()
    _wait(qtbot, widget)
    every = viewer.layers["stack objects (every plane)"]
    labels = np.asarray(every.data)
    assert labels.shape == stack.shape and all(labels[k].max() > 0 for k in range(3))
    for k in range(2):  # objects numbered across planes: one label, one object of one plane
        assert not set(np.unique(labels[k])[1:]) & set(np.unique(labels[k + 1])[1:])
    np.testing.assert_array_equal(labels[1] > 0, alone["labels"] > 0)
    table = every.features
    assert set(table["plane"]) == {0, 1, 2} and len(table) == len(np.unique(labels)) - 1
    review = ReviewWidget(viewer)
    assert review.objects.value is every
    first = review.next()
    plane = int(table.loc[table["index"] == first, "plane"].iloc[0])
    assert viewer.dims.point[0] == plane and (labels[plane] == first).any()
    assert review.retrain() is None and "one plane" in review.status.value
    review.objects.value = one  # one plane's result: Retrain learns from it and segments that plane again
    review.work.value, review.budget.value = tmp_path, 1.0
    for _ in range(6):
        review.keep()
    review.retrain()
    _wait(qtbot, review, timeout=240_000)
    again = viewer.layers["stack objects (round 1)"]
    assert "round 1:" in review.status.value, review.status.value
    assert np.asarray(again.data).shape == (1, 160, 200) and again.translate[0] == 1
    flat = viewer.add_image(stack[0], name="flat")
    widget.image.reset_choices()
    widget.image.value = flat
    assert widget.planes.native.isHidden()  # a 2-D image has no planes to choose


def test_a_layer_of_stains_segments_and_trains_with_its_channel_axis(make_napari_viewer, qtbot, tmp_path):
    """A TIFF of two stains opens in napari as one layer (2, H, W), a stack to the viewer (which axis holds
    channels is the user's to say: two planes and two stains look alike). The built-in model (one channel) reads
    the stain shown; a model trained from scratch on the layer reads both; results lie over every channel."""
    from unetkit import read_image, synth_nuclei
    from unetkit.napari._train import SCRATCH, TrainWidget
    from unetkit.napari._worker import SEGMENTED_KEY, channels_last
    from unetkit.workflows.segment import declared

    dapi, truth = synth_nuclei((160, 192), seed=5)
    marker = (255 - dapi // 2).astype(np.uint8)  # another stain: the nuclei dark on a bright cytoplasm
    stains = np.stack([marker, dapi])
    viewer = make_napari_viewer()
    layer = viewer.add_image(stains, name="stains", scale=(1, 0.5, 0.5))
    widget = SegmentWidget(viewer)
    widget.image.value = layer
    assert list(widget.channel_axis.choices) == ["none: planes", "axis 0 (2)"]
    assert widget.channel_axis.value == "none: planes" and not _hidden(widget.planes)  # a stack until said
    widget.channel_axis.value = "axis 0 (2)"
    assert _hidden(widget.planes)  # one image of two stains
    viewer.dims.set_point(0, 1)  # the nuclei's stain shown
    widget.start()
    _wait(qtbot, widget)
    objects = viewer.layers["stains objects"]
    np.testing.assert_array_equal(
        np.asarray(objects.data), Predictor.from_checkpoint("nuclei").predict_instances(dapi)
    )
    assert tuple(objects.scale) == (0.5, 0.5)  # over the image, whichever channel is shown
    assert objects.metadata[SEGMENTED_KEY]["options"]["channel"] == 1
    assert objects.metadata[SEGMENTED_KEY]["channel_axis"] == 0
    assert widget.status.value.startswith("stains (channel 1 of axis 0): ")  # what was read, said
    viewer.window.add_dock_widget(widget, name="Segment", area="right")
    _screenshot(viewer, "napari-stains.png", tmp_path)

    viewer.add_labels(truth, name="truth", scale=(0.5, 0.5))
    train = TrainWidget(viewer)
    train.image.value, train.labels.value = layer, viewer.layers["truth"]
    assert not _hidden(train.channel_axis)
    train.channel_axis.value = "axis 0 (2)"
    train.settings.value = _tiny_settings(tmp_path, epochs=1, steps_per_epoch=2)
    train.work.value = tmp_path / "work"
    train.start()  # fine-tuning the built-in model (one channel): the stain shown
    _wait(qtbot, train)
    tuned = read_image(tmp_path / "work" / "stains" / "data" / "images" / "stains.tif")
    np.testing.assert_array_equal(tuned, dapi)
    train.init.value = SCRATCH  # from scratch: both stains, as channels
    train.start()
    _wait(qtbot, train)
    both = read_image(tmp_path / "work" / "stains-2" / "data" / "images" / "stains.tif")
    np.testing.assert_array_equal(both, np.moveaxis(stains, 0, -1))
    run = tmp_path / "work" / "stains-2" / "run"
    assert declared(str(run / "best.pt")).channels == 2, train.status.value

    assert widget.chosen_model() == str(run / "best.pt")  # offered, and chosen, in Segment
    widget.start()
    _wait(qtbot, widget)
    again = viewer.layers[-1]
    expected = Predictor.from_checkpoint(run / "best.pt").predict_instances(np.moveaxis(stains, 0, -1))
    np.testing.assert_array_equal(np.asarray(again.data), expected)
    assert "channel" not in again.metadata[SEGMENTED_KEY]["options"]  # it reads both
    # a zarr-backed layer's channels are read window by window, not loaded: the same windows as NumPy's
    import zarr

    store = zarr.create_array(store={}, shape=stains.shape, dtype=stains.dtype, chunks=(1, 64, 64))
    store[:] = stains
    lazy, eager = channels_last(store, 0), np.moveaxis(stains, 0, -1)
    assert lazy.shape == eager.shape
    for key in [(slice(10, 50), slice(3, 70)), (5,), (slice(None), 7, 1), (..., 0), (slice(2, 9), ...)]:
        np.testing.assert_array_equal(lazy[key], eager[key])
    np.testing.assert_array_equal(np.asarray(lazy), eager)


def test_a_bright_field_layer_is_said_and_segmented_with_invert(make_napari_viewer, qtbot):
    """Dark nuclei on a bright background: the status says so with the fix; ticked, the objects are found."""
    from unetkit import synth_nuclei

    image, _ = synth_nuclei((160, 160), seed=2)
    viewer = make_napari_viewer()
    layer = viewer.add_image((image.max() - image).astype(image.dtype), name="bright-field")
    widget = SegmentWidget(viewer)
    widget.image.value = layer
    widget.start()
    _wait(qtbot, widget)
    assert "background looks bright" in widget.status.value and "tick 'invert'" in widget.status.value
    widget.invert.value = True
    widget.start()
    _wait(qtbot, widget)
    found = np.asarray(viewer.layers[-1].data)
    np.testing.assert_array_equal(found, Predictor.from_checkpoint("nuclei").predict_instances(image))
    assert "background looks bright" not in widget.status.value
