"""``unetkit export --format bioimageio``: a BioImage Model Zoo package (spec 0.5) that the zoo's own tool,
``bioimageio.core``, tests and runs: all three weight formats reproduce the test output; the description says
what the network takes (axes, sizes, preprocessing) and gives (probabilities, and instance labels computed
in the graph)."""

from __future__ import annotations

import importlib.util
import sys
import zipfile

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.conftest import tiny_config
from unetkit import ConfigError, UnetkitError, read_image, synthesize_dataset, train
from unetkit.cli.main import main
from unetkit.config import ModelConfig
from unetkit.workflows.bioimageio import architecture_source, export_bioimageio

bioimageio_core = pytest.importorskip("bioimageio.core", reason="the [bioimageio] extra is not installed")
pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")

FILES = {
    "rdf.yaml",
    "README.md",
    "cover.png",
    "test_input.npy",
    "test_output.npy",
    "test_instances.npy",
    "unetkit_unet.py",
    "weights.pt",
    "weights.torchscript.pt",
    "weights.onnx",
}


def _zoo_test(path) -> None:
    summary = bioimageio_core.test_model(str(path))
    failed = [
        f"{d.name}: {d.errors[0].msg[:200] if d.errors else ''}"
        for d in summary.details
        if d.status == "failed"
    ]
    assert summary.status == "passed", failed
    reproduced = [d.name for d in summary.details if d.name.startswith("Reproduce test outputs")]
    assert len(reproduced) == 3  # onnx, pytorch_state_dict, torchscript: each against the test output


def test_the_built_in_model_exports_as_a_package_the_zoos_own_test_passes(tmp_path, capsys):
    out = tmp_path / "nuclei.zip"
    assert (
        main(["export", "nuclei", "--format", "bioimageio", "--out", str(out), "--author", "A. Tester"]) == 0
    )
    assert "bioimage.io 0.5" in capsys.readouterr().out
    with zipfile.ZipFile(out) as archive:
        assert set(archive.namelist()) == FILES  # nothing else: no exporter leftovers
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    raw = rdf["inputs"][0]
    assert [a["type"] for a in raw["axes"]] == ["batch", "channel", "space", "space"]
    assert raw["axes"][2]["size"] == {"min": 64, "step": 16}  # depth 4: multiples of 16
    scale = next(p for p in raw["preprocessing"] if p["id"] == "scale_range")["kwargs"]
    assert (scale["min_percentile"], scale["max_percentile"], scale["axes"]) == (1.0, 99.8, ["y", "x"])
    output = rdf["outputs"][0]
    assert output["axes"][1]["channel_names"] == ["background", "interior", "border"]
    assert output["postprocessing"] == [{"id": "softmax", "kwargs": {"axis": "channel"}}]
    assert rdf["weights"]["onnx"]["parent"] == rdf["weights"]["torchscript"]["parent"] == "pytorch_state_dict"
    assert (
        rdf["authors"] == [{"name": "A. Tester"}] and rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    )
    labels = rdf["outputs"][1]  # the second output: instance labels, computed in the graph
    assert labels["id"] == "instances" and labels["data"] == {"type": "int32"}
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "UNetInstances"
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["instances"]["method"] == "interior"
    _zoo_test(out)  # all three formats reproduce both outputs


def test_a_consumer_running_only_the_onnx_weights_gets_unetkits_objects(tmp_path):
    """What deepImageJ, QuPath or ilastik do: apply the described preprocessing, run the weights, read the
    outputs; no Python of ours. The labels match unetkit's own instance step on the same image."""
    import onnxruntime as ort

    from unetkit import Predictor, synth_nuclei
    from unetkit.metrics.instance import match_instances

    package = export_bioimageio("nuclei", tmp_path / "nuclei.zip")
    session = ort.InferenceSession(zipfile.ZipFile(package.path).read("weights.onnx"))
    assert [o.name for o in session.get_outputs()] == ["logits", "instances"]
    image, truth = synth_nuclei((256, 320), seed=7)
    x = image.astype(np.float32)
    lo, hi = np.percentile(x, (1.0, 99.8))  # the package's scale_range
    _, labels = session.run(None, {"x": ((x - lo) / (hi - lo + 1e-6)).astype(np.float32)[None, None]})
    labels = labels[0, 0]
    ours = Predictor.from_pretrained("nuclei", precision="float32", tile=512).predict_instances(image)
    assert labels.dtype == np.int32 and labels.max() == len(np.unique(labels)) - 1
    agreement = match_instances(ours, labels).f1(0.5)
    assert agreement > 0.9, agreement
    assert match_instances(truth, labels).f1(0.5) > match_instances(truth, ours).f1(0.5) - 0.05


def test_a_trained_run_exports_and_passes_too(tiny_run, tmp_path):
    package = export_bioimageio(
        tiny_run.run_dir, tmp_path / "tiny.zip", name="tiny nuclei", license="CC-BY-4.0"
    )
    assert package.rdf["inputs"][0]["axes"][2]["size"] == {"min": 16, "step": 4}  # depth 2
    assert package.rdf["outputs"][0]["postprocessing"] == [{"id": "sigmoid"}]  # binary: one sigmoid output
    assert package.rdf["config"]["unetkit"]["instances"]["method"] == "watershed"  # and its objects
    assert max(package.diffs.values()) < 1e-4
    _zoo_test(package.path)
    with zipfile.ZipFile(package.path) as archive:  # the cover: the model on one of its validation images
        card = archive.read("README.md").decode()
        cover = np.asarray(Image.open(archive.open("cover.png")))
    shown = tiny_run_validation_image(tiny_run)
    assert f"a validation image of its run ({shown.name})" in card
    assert cover.shape[:2] == read_image(shown).shape[:2]  # the image itself (under 512 pixels a side)
    plain = export_bioimageio(tiny_run.run_dir, tmp_path / "plain.zip", instances=False)
    assert [o["id"] for o in plain.rdf["outputs"]] == ["probabilities"]
    with zipfile.ZipFile(plain.path) as archive:
        assert "test_instances.npy" not in archive.namelist()
    with pytest.raises(UnetkitError, match="already exists"):
        export_bioimageio(tiny_run.run_dir, tmp_path / "tiny.zip")


def tiny_run_validation_image(run):
    from pathlib import Path

    payload = torch.load(run.best_checkpoint, weights_only=True)
    return Path(payload["training"]["validation"][0]["image"])


def test_the_architecture_file_rebuilds_the_network_without_unetkit(tiny_run, tmp_path):
    source = tmp_path / "unetkit_unet.py"  # our own generated source, imported as a consumer would
    source.write_text(architecture_source())
    spec = importlib.util.spec_from_file_location("unetkit_unet_test", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    payload = torch.load(tiny_run.best_checkpoint, weights_only=True)
    net = module.UNet(**payload["model"]["hparams"]).eval()
    net.load_state_dict(payload["state_dict"])
    from unetkit.checkpoint import build_model

    ours = build_model(payload).eval()
    x = torch.from_numpy(np.random.default_rng(0).random((1, 1, 48, 40), np.float32))
    with torch.no_grad():
        torch.testing.assert_close(net(x), ours(x))
    assert "import unetkit" not in architecture_source() and "from ." not in architecture_source()


def test_the_papers_unpadded_network_exports_with_its_margins_and_runs_back(tmp_path):
    from unetkit import Predictor, synth_nuclei

    data = synthesize_dataset(tmp_path / "d", n=4, size=96, seed=1)
    cfg = tiny_config(epochs=1)
    cfg.model = ModelConfig(base_channels=4, depth=2, padding="valid")
    cfg.data.patch_size = 60
    run = train(data, tmp_path / "valid", cfg, progress=False)
    package = export_bioimageio(run.best_checkpoint, tmp_path / "v.zip")
    # valid sizes 4k + 44 (depth 2); the output is the input less a 20-pixel margin on each side, no halo
    assert package.rdf["inputs"][0]["axes"][2]["size"] == {"min": 44, "step": 4}
    for output in package.rdf["outputs"]:
        assert output["axes"][2] == {"id": "y", "type": "space", "size": {"tensor_id": "raw", "axis_id": "y",
                                                                         "offset": -40}}  # fmt: skip
    _zoo_test(package.path)
    image = synth_nuclei((150, 171), seed=3)[0]  # odd sizes: unetkit tiles the package with its margins
    a = Predictor.from_checkpoint(run.best_checkpoint, precision="float32", tile=64).predict_proba(image)
    b = Predictor.from_checkpoint(package.path, precision="float32", tile=64).predict_proba(image)
    assert a.shape == b.shape == (1, 150, 171) and np.abs(a - b).max() < 1e-4


def test_what_the_format_cannot_express_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"\.zip"):
        export_bioimageio("nuclei", tmp_path / "model.yaml")
    with pytest.raises(ConfigError, match="5 to 128"):
        export_bioimageio("nuclei", tmp_path / "m.zip", name="nuc")
    with pytest.raises(ConfigError, match="SPDX"):
        export_bioimageio("nuclei", tmp_path / "m.zip", license="my own licence")
    assert not list(tmp_path.glob("*.zip"))


# ---- import: unetkit predict PACKAGE ----


def test_an_exported_package_predicts_the_same_masks_as_its_checkpoint(tmp_path):
    from unetkit import Predictor, read_image, synth_nuclei, write_image

    package = export_bioimageio("nuclei", tmp_path / "nuclei.zip")
    image = synth_nuclei((301, 517), seed=5)[0]  # odd sizes, larger than one 256-pixel tile
    write_image(tmp_path / "in" / "img.png", image)
    for model, out in ((str(package.path), "zip"), ("nuclei", "checkpoint")):
        args = ["predict", model, str(tmp_path / "in"), "--out", str(tmp_path / out), "--tile", "256"]
        assert main([*args, "--precision", "float32", "--instances", "--no-progress"]) == 0
    np.testing.assert_array_equal(
        read_image(tmp_path / "zip" / "img.png"), read_image(tmp_path / "checkpoint" / "img.png")
    )
    np.testing.assert_array_equal(
        read_image(tmp_path / "zip" / "img_instances.tif"),
        read_image(tmp_path / "checkpoint" / "img_instances.tif"),
    )
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(package.path).extractall(unpacked)  # a folder holding rdf.yaml is a package too
    data = synthesize_dataset(tmp_path / "data", n=2, size=128, seed=3)
    for model in (package.path, unpacked):  # evaluate MODEL DATA takes packages as well
        assert main(["evaluate", str(model), str(data), "--mode", "instance"]) == 0
    with pytest.raises(ConfigError, match="not a training checkpoint"):
        train(data, tmp_path / "tuned", tiny_config(init=str(package.path)), progress=False)
    a = Predictor.from_checkpoint(unpacked, precision="float32", tile=256).predict_proba(image)
    b = Predictor.from_pretrained("nuclei", precision="float32", tile=256).predict_proba(image)
    assert np.abs(a - b).max() < 1e-4


def _zoo_layout_package(folder, weights=("torchscript",)):
    """A package laid out as the spec repository's unet2d_nuclei_broad example (bioimageio.yaml, input 'raw',
    zero_mean_unit_variance, output 'probability' with a halo and sigmoid), its weights made here."""
    folder.mkdir()
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1)
    ).eval()
    torch.jit.trace(net, torch.zeros(1, 1, 64, 64)).save(str(folder / "weights.pt"))
    size = {"min": 64, "step": 16}
    rdf = {
        "name": "UNet 2D Nuclei Broad (test copy)",
        "description": "a tiny stand-in network in the example's layout",
        "authors": [{"name": "Test"}],
        "cite": [{"text": "test", "url": "https://example.com/"}],
        "license": "MIT",
        "format_version": "0.5.4",
        "type": "model",
        "documentation": "README.md",
        "inputs": [
            {
                "id": "raw",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["raw_intensity"]},
                    {"id": "y", "type": "space", "size": size},
                    {"id": "x", "type": "space", "size": size},
                ],
                "test_tensor": {"source": "test_input.npy"},
                "preprocessing": [
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                    {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"]}},
                ],
            }
        ],
        "outputs": [
            {
                "id": "probability",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["probability"]},
                    {"id": "y", "type": "space", "halo": 8, "size": {"tensor_id": "raw", "axis_id": "y"}},
                    {"id": "x", "type": "space", "halo": 8, "size": {"tensor_id": "raw", "axis_id": "x"}},
                ],
                "test_tensor": {"source": "test_output.npy"},
                "postprocessing": [{"id": "sigmoid"}],
            }
        ],
        "weights": {},
    }
    if "torchscript" in weights:
        rdf["weights"]["torchscript"] = {"source": "weights.pt", "pytorch_version": "2.13"}
    if "pytorch_state_dict" in weights:
        rdf["weights"]["pytorch_state_dict"] = {
            "source": "weights.pt",
            "architecture": {"source": "unet2d.py", "callable": "UNet2d", "kwargs": {}},
        }
    (folder / "bioimageio.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return net


def test_a_zoo_layout_package_runs_through_unetkits_tiling(tmp_path):
    from unetkit import Predictor, synth_nuclei

    net = _zoo_layout_package(tmp_path / "zoo")
    image = synth_nuclei((150, 170), seed=1)[0]
    predictor = Predictor.from_checkpoint(tmp_path / "zoo", tile=64, precision="float32")
    assert predictor.tile_in == 64 and predictor.halo >= 8  # the package's minimum size and halo
    probs = predictor.predict_proba(image)
    x = image.astype(np.float32)
    x = (x - x.mean()) / x.std()  # zero_mean_unit_variance over y, x
    with torch.no_grad():
        whole = torch.sigmoid(net(torch.from_numpy(x)[None, None]))[0].numpy()
    assert probs.shape == whole.shape == (1, 150, 170)
    # tiles with mirrored context = the whole image at once (but at the image's own border, where unetkit
    # mirrors and the network pads with zeros: two convolutions reach 2 pixels)
    assert np.abs(probs - whole)[:, 2:-2, 2:-2].max() < 1e-3


def test_a_size_step_of_zero_is_refused_in_one_line(tmp_path):
    """Issue 31: an axis `step: 0` was a ZeroDivisionError traceback."""
    from unetkit import Predictor

    _zoo_layout_package(tmp_path / "zoo")
    rdf = yaml.safe_load((tmp_path / "zoo" / "bioimageio.yaml").read_text())
    rdf["inputs"][0]["axes"][2]["size"] = {"min": 64, "step": 0}
    (tmp_path / "zoo" / "bioimageio.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(ConfigError, match=r"input axis 'y' has the size .*min >= 1 and step >= 1"):
        Predictor.from_checkpoint(tmp_path / "zoo")


def test_a_3d_zoo_layout_package_segments_volumes(tmp_path):
    """A 3-D package (axes batch, channel, z, y, x; a stand-in network, TorchScript) through unetkit's 3-D
    tiling and the CLI: the volume's probabilities equal the network on the whole volume away from its border."""
    from unetkit import Predictor, synth_nuclei_3d
    from unetkit.data.io import write_volume

    folder = tmp_path / "zoo3d"
    folder.mkdir()
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 1, 3, padding=1)
    ).eval()
    torch.jit.trace(net, torch.zeros(1, 1, 16, 32, 32)).save(str(folder / "weights.pt"))
    size = {"min": 16, "step": 8}
    space = [{"id": a, "type": "space", "size": size} for a in ("z", "y", "x")]
    rdf = {
        "name": "tiny 3-D stand-in", "format_version": "0.5.4", "type": "model",
        "inputs": [{"id": "raw", "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["raw"]}, *space],
                    "preprocessing": [{"id": "scale_range", "kwargs": {"axes": ["z", "y", "x"],
                                                                      "min_percentile": 1, "max_percentile": 99.8}}]},
        ],
        "outputs": [{"id": "fg", "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["fg"]},
                                          *[{"id": a, "type": "space", "halo": 2,
                                             "size": {"tensor_id": "raw", "axis_id": a}} for a in ("z", "y", "x")]],
                     "postprocessing": [{"id": "sigmoid"}]}],
        "weights": {"torchscript": {"source": "weights.pt", "pytorch_version": "2.13"}},
    }  # fmt: skip
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    volume = synth_nuclei_3d((24, 70, 60), seed=2)[0]
    predictor = Predictor.from_checkpoint(folder, precision="float32", tile=32)
    assert predictor.spatial_dims == 3
    probs = predictor.predict_proba(volume)
    x = volume.astype(np.float32)
    lo, hi = np.percentile(x, (1, 99.8))
    with torch.no_grad():
        whole = torch.sigmoid(net(torch.from_numpy(((x - lo) / (hi - lo)).astype(np.float32))[None, None]))[
            0
        ].numpy()
    assert probs.shape == whole.shape == (1, 24, 70, 60)
    assert np.abs(probs - whole)[:, 2:-2, 2:-2, 2:-2].max() < 1e-3
    write_volume(tmp_path / "in" / "vol.tif", volume)
    assert (
        main(["predict", str(folder), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--no-progress"])
        == 0
    )
    assert read_volume_shape(tmp_path / "out" / "vol.tif") == (24, 70, 60)


def read_volume_shape(path):
    from unetkit.data.io import read_volume

    return read_volume(path).shape


def test_packages_unetkit_cannot_run_safely_are_refused_by_name(tmp_path):
    from unetkit import Predictor

    _zoo_layout_package(tmp_path / "code", weights=("pytorch_state_dict",))
    with pytest.raises(ConfigError, match="Python architecture code"):
        Predictor.from_checkpoint(tmp_path / "code")
    old = tmp_path / "old"
    _zoo_layout_package(old)
    text = (old / "bioimageio.yaml").read_text().replace("format_version: 0.5.4", "format_version: 0.4.10")
    (old / "bioimageio.yaml").write_text(text)
    with pytest.raises(ConfigError, match="format 0.4.10"):
        Predictor.from_checkpoint(old)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\n")
        archive.writestr("../outside.txt", "x")
    with pytest.raises(UnetkitError, match="outside the package"):
        Predictor.from_checkpoint(evil)
    assert not (tmp_path / "outside.txt").exists()


def test_a_package_whose_weights_write_into_the_input_image_is_refused_before_it_runs(tmp_path, capsys):
    """Issue 31: a TorchScript package whose forward maps the image being segmented read-write (the attack
    overwrote it, exit 0). Refused by operator name before any image is read; the image is unchanged."""
    import hashlib

    from tests.unit.test_foreign import MapsAFile
    from unetkit import synth_nuclei, write_image

    images = tmp_path / "images"
    write_image(images / "cells.tif", synth_nuclei((96, 96), seed=1)[0])
    victim = images / "cells.tif"
    before = hashlib.sha256(victim.read_bytes()).hexdigest()
    _zoo_layout_package(tmp_path / "zoo")
    torch.jit.script(MapsAFile(str(victim))).save(str(tmp_path / "zoo" / "weights.pt"))
    code = main(
        ["predict", str(tmp_path / "zoo"), str(images), "--out", str(tmp_path / "pred"), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code != 0 and "aten::from_file" in err and "Traceback" not in err
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == before
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())


def test_an_unpacked_package_goes_with_its_model(tmp_path):
    """Issue 33: the temporary folder a zip is unpacked into lived until the process ended; it now goes when the
    model is released, and a package that fails to load leaves none behind."""
    import gc

    from unetkit import Predictor

    package = export_bioimageio("nuclei", tmp_path / "nuclei.zip")
    predictor = Predictor.from_checkpoint(package.path)
    folder = predictor.model.folder
    assert folder.is_dir() and (folder / "rdf.yaml").is_file() and folder != tmp_path
    del predictor
    gc.collect()
    assert not folder.exists()
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(package.path).extractall(unpacked)
    Predictor.from_checkpoint(unpacked)  # a folder given as the package is the user's: kept when released
    gc.collect()
    assert (unpacked / "rdf.yaml").is_file()


def test_a_model_trained_on_one_stain_says_which_in_its_package(tmp_path):
    """A `train --channel 1` model reads one channel: the package's input names the stored channel it learnt
    (another tool feeding it the first channel of a two-stain image would segment the wrong stain)."""
    from unetkit.checkpoint import load_checkpoint

    payload = load_checkpoint("nuclei")
    payload["preprocessing"]["channel"] = 1  # as `unetkit train --channel 1` records it
    torch.save(payload, tmp_path / "dapi.pt")
    package = export_bioimageio(tmp_path / "dapi.pt", tmp_path / "dapi.zip", instances=False)
    with zipfile.ZipFile(package.path) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        card = archive.read("README.md").decode()
    raw = rdf["inputs"][0]
    assert raw["axes"][1]["channel_names"] == ["channel1"] and "channel 1 (0-based)" in raw["description"]
    assert "channel 1 of multi-channel images" in rdf["description"]
    assert "it reads channel 1 (0-based; trained with `--channel 1`)" in card
    from bioimageio.spec import InvalidDescr, load_description

    described = load_description(package.path)
    assert not isinstance(described, InvalidDescr), described.validation_summary.format()
