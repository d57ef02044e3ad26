"""Export to ONNX / TorchScript, verified against PyTorch, and prediction on ONNX Runtime."""

import os
import subprocess

import numpy as np
import pytest
import tifffile
import torch

from unetkit import ConfigError, Predictor, UnetkitError, synth_nuclei, write_image
from unetkit.workflows.export import export_model

onnx = pytest.importorskip("onnx", reason="the [onnx] extra is not installed")
pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")


def test_onnx_export_is_verified_and_self_describing(tiny_run, tmp_path):
    result = export_model(tiny_run.best_checkpoint, tmp_path / "m.onnx")
    assert result.max_abs_diff < 1e-4
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto)
    keys = {p.key for p in proto.metadata_props}
    assert {"unetkit.model", "unetkit.preprocessing"} <= keys
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param for d in dims[2:])  # dynamic height and width
    with pytest.raises(UnetkitError, match="already exists"):
        export_model(tiny_run.best_checkpoint, tmp_path / "m.onnx")
    # issue 31: metadata that does not describe the graph (a shallower depth) failed inside ONNX Runtime with a
    # traceback; now one line naming the file
    import json

    for prop in proto.metadata_props:
        if prop.key == "unetkit.model":
            spec = json.loads(prop.value)
            spec["hparams"]["depth"] = 1
            prop.value = json.dumps(spec)
    onnx.save(proto, str(tmp_path / "altered.onnx"))
    with pytest.raises(UnetkitError, match=r"altered\.onnx: ONNX Runtime failed on a tile of 2x2"):
        Predictor.from_checkpoint(tmp_path / "altered.onnx", tile=66)  # refused on loading, before any image


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_torchscript_export_matches(tiny_run, tmp_path):
    result = export_model(tiny_run.best_checkpoint, tmp_path / "m.ts.pt", "torchscript")
    assert result.max_abs_diff < 1e-4
    assert isinstance(torch.jit.load(str(result.path)), torch.jit.ScriptModule)


def test_onnxruntime_predictions_equal_pytorch_ones(tiny_run, tmp_path, unetkit_exe):
    image, _ = synth_nuclei((70, 110), seed=8)
    torch_probs = Predictor.from_checkpoint(
        tiny_run.best_checkpoint, device="cpu", tile=64, precision="float32"
    ).predict_proba(image)
    ort = Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu", tile=64, engine="onnxruntime")
    assert type(ort.model).__name__ == "OnnxModel" and ort.precision == "float32"  # what ORT computes in
    with pytest.raises(ConfigError, match="ONNX Runtime runs the float32 graph"):
        Predictor.from_checkpoint(tiny_run.best_checkpoint, engine="onnxruntime", precision="bfloat16")
    np.testing.assert_allclose(ort.predict_proba(image), torch_probs, atol=1e-4)

    src = write_image(tmp_path / "in" / "x.png", image)
    onnx_file = export_model(tiny_run.best_checkpoint, tmp_path / "m.onnx").path
    for model, extra in ((onnx_file, []), (tiny_run.best_checkpoint, ["--engine", "onnxruntime"])):
        out = tmp_path / f"out-{len(extra)}"
        done = subprocess.run(
            [
                unetkit_exe,
                "predict",
                str(model),
                str(src),
                "--out",
                str(out),
                "--tile",
                "64",
                "--save-probs",
                "float32",
                "--device",
                "cpu",
                "--no-progress",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        np.testing.assert_allclose(tifffile.imread(out / "x_probs.tif"), torch_probs[0], atol=1e-4)
    done = subprocess.run(
        [unetkit_exe, "export", str(tiny_run.best_checkpoint), "--out", str(tmp_path / "c.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "max |exported - PyTorch|" in done.stdout


def test_compiled_predictions_equal_eager_ones_and_kernels_are_cached(tiny_run, tmp_path, unetkit_exe):
    image, _ = synth_nuclei((150, 100), seed=3)  # 3 x 2 tiles of 64 with batch 4: a partial last batch
    eager = Predictor.from_checkpoint(
        tiny_run.best_checkpoint, device="cpu", tile=64, precision="float32"
    ).predict_proba(image)
    src = write_image(tmp_path / "in" / "x.png", image)
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    cmd = [unetkit_exe, "predict", str(tiny_run.best_checkpoint), str(src), "--out", str(tmp_path / "out")]
    cmd += [
        "--tile",
        "64",
        "--batch",
        "4",
        "--save-probs",
        "float32",
        "--precision",
        "float32",
        "--device",
        "cpu",
    ]
    done = subprocess.run(
        [*cmd, "--no-progress", "--compile"], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out" / "x_probs.tif"), eager[0], atol=1e-4)
    cache = tmp_path / "cache" / "unetkit" / "inductor"
    assert cache.is_dir() and sum(1 for p in cache.rglob("*") if p.is_file()) > 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize(("model", "fmt", "written"), [("nuclei", "onnx", "nuclei.onnx"),
                                                        ("pretrained:nuclei", "torchscript", "nuclei.ts.pt")])  # fmt: skip
def test_a_built_in_model_exports_by_its_name_in_every_format(model, fmt, written, tmp_path, unetkit_exe):
    # README: a built-in name works wherever a MODEL is taken; it was refused as "no such model file"
    from unetkit.pretrained import file_sha256, get_pretrained, pretrained_path

    shipped = pretrained_path("nuclei")
    done = subprocess.run([unetkit_exe, "export", model, "--format", fmt], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / written).is_file() and f"wrote {written}" in done.stdout
    assert file_sha256(shipped) == get_pretrained("nuclei").sha256  # the built-in file is untouched
    assert Predictor.from_checkpoint(model, device="cpu").model is not None
