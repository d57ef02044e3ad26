"""The house's own contracts: one option table, one atomic writer, one instance numbering, the version from
the installed metadata, and the latent defects found while restructuring (each failed before its fix)."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.metadata
import inspect
import os
import random

import numpy as np
import pytest
import torch

import unetkit
from unetkit import PredictConfig, Predictor, UNet, read_image, save_checkpoint, synth_nuclei, write_image
from unetkit.atomic import atomic_folder, atomic_path, atomic_write_text, is_temporary, temporary_of
from unetkit.cli.main import build_parser
from unetkit.config import (
    DataConfig,
    EvaluateConfig,
    ModelConfig,
    OutputConfig,
    RunConfig,
    TrainConfig,
    load_config,
)
from unetkit.data.masks import MaskEncoding
from unetkit.inference.executor import _group_rows
from unetkit.inference.postprocess import (
    block_regions,
    first_pixel_order,
    first_pixel_table,
    instances_blockwise,
    instances_from_classes,
    region_objects,
    region_slices,
)
from unetkit.inference.tiling import plan_tiles
from unetkit.workflows.predict import predict_files


def test_the_version_is_the_installed_metadata():
    assert unetkit.__version__ == importlib.metadata.version("unetkit")


# -- one option table ------------------------------------------------------------------------------------


def _actions(command: str) -> dict[str, object]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices[command]._actions if a.help != argparse.SUPPRESS}


@pytest.mark.parametrize(
    ("command", "sections"),
    [
        ("train", (ModelConfig, DataConfig, TrainConfig)),
        ("predict", (PredictConfig, OutputConfig)),
        ("evaluate", (EvaluateConfig,)),
    ],
)
def test_every_flag_of_a_config_field_has_its_name_default_and_choices(command, sections):
    actions = _actions(command)
    seen = 0
    for cls in sections:
        for f in dataclasses.fields(cls):
            action = actions.get(f.name)
            if action is None:
                continue
            seen += 1
            assert "--" + f.name.replace("_", "-") in action.option_strings, f.name  # one name
            if f.metadata.get("choices"):
                assert tuple(action.choices) == tuple(f.metadata["choices"]), f.name
            if isinstance(f.default, bool):  # one boolean style: --x / --no-x
                assert "--no-" + f.name.replace("_", "-") in action.option_strings, f.name
            elif f.default is not None and f.default is not dataclasses.MISSING:
                shown = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
                valid = f"; {f.metadata['valid']}" if f.metadata.get("valid") else ""
                assert f"(default: {f.metadata.get('default_text', shown)}{valid})" in action.help, f.name
    assert seen >= {"train": 30, "predict": 25, "evaluate": 2}[command]


def test_flags_set_the_fields_of_the_same_name_and_old_spellings_still_work(tmp_path):
    from unetkit.cli.train import config_from_args

    parser = build_parser()
    args = parser.parse_args(
        [
            "train",
            "d",
            "--patch-size",
            "64",
            "--batch-size",
            "4",
            "--num-workers",
            "1",
            "--arch",
            "unet++",
            "--no-augment",
            "--no-amp",
            "--weight-map",
        ]
    )
    cfg = config_from_args(args, RunConfig())
    assert (cfg.data.patch_size, cfg.train.batch_size, cfg.train.num_workers) == (64, 4, 1)
    assert cfg.model.arch == "unet++" and not cfg.data.augment and not cfg.train.amp and cfg.data.weight_map
    old = config_from_args(parser.parse_args(["train", "d", "--patch", "48", "--batch", "2"]), RunConfig())
    assert (old.data.patch_size, old.train.batch_size) == (48, 2)


def test_configs_written_before_the_rename_still_load(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("model:\n  name: attention-unet\n  depth: 3\n")
    assert load_config(path).model.arch == "attention-unet"


def test_python_and_cli_share_the_prediction_defaults():
    defaults = PredictConfig()
    params = inspect.signature(Predictor.__init__).parameters
    for f in dataclasses.fields(PredictConfig):
        if f.name in params and f.name != "device":  # tile included: one rule (issue 33 item 1)
            assert params[f.name].default == getattr(defaults, f.name), f.name
    from unetkit.config import DEFAULT_TILE

    net = UNet(depth=2, base_channels=4)
    prep = {"in_channels": 1, "normalization": {"method": "percentile", "low": 1.0, "high": 99.8}}
    assert Predictor(net, prep).tile_in == DEFAULT_TILE  # no training patch recorded: 512
    assert defaults.tile is None  # None: the model's own (its training patch, at least 256; else 512)
    assert params["precision"].default == "auto"  # the CLI's default, no longer float32 in Python only
    # what is written and how inputs are gone through: predict_files takes every OutputConfig field, same default
    from unetkit.workflows.predict import predict_files

    files = inspect.signature(predict_files).parameters
    for f in dataclasses.fields(OutputConfig):
        assert f.name in files and files[f.name].default == f.default, f.name
    from unetkit.workflows.evaluate import evaluate, evaluate_model

    for function, names in ((evaluate, ("mode", "pred_encoding")), (evaluate_model, ("mode",))):
        params = inspect.signature(function).parameters
        for f in dataclasses.fields(EvaluateConfig):
            if f.name in names:
                assert params[f.name].default == f.default, (function.__name__, f.name)


# -- one atomic writer -----------------------------------------------------------------------------------


def test_atomic_writes_leave_the_old_file_or_the_new_one_never_a_part(tmp_path):
    target = tmp_path / "config.yaml"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["config.yaml"]
    folder = tmp_path / "result.zarr"
    with atomic_folder(folder) as tmp:
        (tmp / "a").write_text("1")
        assert not folder.exists()
    assert (folder / "a").read_text() == "1"
    with pytest.raises(FileExistsError), atomic_folder(folder):
        pass
    assert is_temporary(".best.pt.ab12cd34.tmp") and not is_temporary("best.pt")
    assert temporary_of(".metrics.csv.x_9Kq2Lm.tmp") == "metrics.csv" and temporary_of(".DS_Store") is None


def test_run_config_and_evaluation_files_are_written_atomically(tmp_path):
    RunConfig().to_yaml(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == RunConfig()
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]


# -- one block-wise instance algorithm ------------------------------------------------------------------


def _classes(seed: int = 11) -> np.ndarray:
    _, truth = synth_nuclei((300, 280), seed=seed)
    return (truth > 0).astype(np.uint8)


@pytest.mark.parametrize("park", [False, True], ids=["label-twice", "label-once"])
def test_block_wise_ids_equal_the_whole_image_ones_in_raster_order(park):
    classes = _classes()
    expected = first_pixel_order(instances_from_classes(classes, "watershed"))
    out = np.zeros(classes.shape, np.int32)

    def write(where, values):
        out[where] = values

    n = instances_blockwise(
        lambda where: classes[where],
        classes.shape,
        write,
        lambda c: instances_from_classes(c, "watershed"),
        block=64,
        context=40,
        out_read=(lambda where: out[where]) if park else None,
    )
    crossing = sum(
        len({(y // 64, x // 64) for y, x in zip(*np.nonzero(expected == i), strict=True)}) > 1
        for i in range(1, expected.max() + 1)
    )
    assert crossing > 10  # many objects cross block borders
    assert n == expected.max()
    np.testing.assert_array_equal(out, expected)  # identical IDs, not only the same partition


def test_chunk_tasks_in_any_order_number_objects_as_one_process_does():
    """What Dask does (regions in completion order, each written alone) gives the serial result exactly."""
    classes = _classes(seed=3)
    label = lambda c: instances_from_classes(c, "watershed")  # noqa: E731
    serial = np.zeros(classes.shape, np.int32)
    instances_blockwise(
        lambda w: classes[w],
        classes.shape,
        lambda w, v: serial.__setitem__(w, v),
        label,
        block=96,
        context=40,
    )
    regions = block_regions(classes.shape, 96)
    shuffled = random.Random(0).sample(regions, len(regions))
    read = lambda w: classes[w]  # noqa: E731
    table = first_pixel_table(
        [region_objects(read, classes.shape, r, 40, label).candidates() for r in shuffled], 40
    )
    chunked = np.zeros(classes.shape, np.int32)
    for r in random.Random(1).sample(regions, len(regions)):
        chunked[region_slices(r)] = region_objects(read, classes.shape, r, 40, label).global_ids(table)
    np.testing.assert_array_equal(chunked, serial)


# -- latent defects --------------------------------------------------------------------------------------


def _class_model(tmp_path, values):
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4, num_classes=len(values)).eval()
    enc = MaskEncoding("classes", values=tuple(values), class_names=tuple(f"c{v}" for v in values))
    prep = {
        "in_channels": 1,
        "num_classes": len(values),
        "normalization": {"method": "percentile"},
        "encoding": enc.to_dict(),
        "class_names": enc.names,
    }
    return save_checkpoint(tmp_path / "classes.pt", net, model_name="unet", preprocessing=prep)


def test_class_values_above_255_survive_tiled_output(tmp_path):
    """The tiled writer fixed the mask dtype from a decoded all-zero sample: 300 was written as 44."""
    ckpt = _class_model(tmp_path, [0, 300, 1000])
    image = synth_nuclei(128, seed=2)[0]
    write_image(tmp_path / "in.tif", image)
    kw = {"tile": 64, "device": "cpu", "precision": "float32", "progress": False, "format": "tiff"}
    whole = predict_files(ckpt, [tmp_path / "in.tif"], tmp_path / "whole", **kw)[0]
    tiled = predict_files(ckpt, [tmp_path / "in.tif"], tmp_path / "tiled", max_pixels_in_memory=1000, **kw)[0]
    a, b = read_image(whole.mask), read_image(tiled.mask)
    assert set(np.unique(b)) <= {0, 300, 1000} and (b >= 256).any()
    np.testing.assert_array_equal(a, b)


def test_tile_rows_are_grouped_by_position_not_by_object_identity():
    """Tiles that crossed a process boundary (pickled, as on Dask) are equal but not the same objects."""
    tiles = plan_tiles((200, 300), (64, 64), halo=8)
    copied = [copy.deepcopy(t) for t in tiles]
    rows = _group_rows(tiles)
    assert len(rows) == len({t.axes[0] for t in tiles}) > 1
    assert [len(r) for r in _group_rows(copied)] == [len(r) for r in rows]


def test_the_report_escapes_file_names(tmp_path):
    from unetkit import evaluate
    from unetkit.workflows.report import write_report

    _, labels = synth_nuclei(64, seed=1)
    name = "a<b>&'c"
    for folder in ("truth/images", "truth/masks", "pred"):
        (tmp_path / folder).mkdir(parents=True)
    write_image(tmp_path / "truth" / "images" / f"{name}.png", synth_nuclei(64, seed=1)[0])
    write_image(tmp_path / "truth" / "masks" / f"{name}.png", labels.astype(np.uint16))
    write_image(tmp_path / "pred" / f"{name}.png", ((labels > 0) * 255).astype(np.uint8))
    result = evaluate(tmp_path / "pred", tmp_path / "truth", mode="semantic")
    html = write_report(result, tmp_path / "report").read_text()
    assert "a&lt;b&gt;&amp;&#x27;c" in html and "a<b>" not in html


def test_resume_removes_only_the_temporaries_of_run_files(tmp_path):
    from unetkit.errors import DataError
    from unetkit.training.run_folder import RunFolder

    (tmp_path / ".last.pt.ab12cd34.tmp").write_bytes(b"cut short")
    (tmp_path / ".notes.20261201").write_text("the user's own")  # looks like a temporary, is not ours
    with pytest.raises(DataError, match="no last.pt"):
        RunFolder(tmp_path).load_resume()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.20261201"]
