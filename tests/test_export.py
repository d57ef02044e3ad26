"""Export to ONNX / TorchScript, verified against PyTorch, and prediction on ONNX Runtime."""

import subprocess

import numpy as np
import onnx
import pytest
import tifffile
import torch

from unetkit import Predictor, UnetkitError, synth_nuclei, write_image
from unetkit.checkpoint import save_checkpoint
from unetkit.export import export_model
from unetkit.models import create_model


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


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_torchscript_export_matches(tiny_run, tmp_path):
    result = export_model(tiny_run.best_checkpoint, tmp_path / "m.ts.pt", "torchscript")
    assert result.max_abs_diff < 1e-4
    assert isinstance(torch.jit.load(str(result.path)), torch.jit.ScriptModule)


def test_valid_networks_are_refused_with_the_reason(tmp_path):
    net = create_model("unet", base_channels=4, depth=2, padding="valid")
    ckpt = save_checkpoint(tmp_path / "v.pt", net, model_name="unet", preprocessing={"in_channels": 1})
    with pytest.raises(Exception, match="padded"):
        export_model(ckpt, tmp_path / "v.onnx")


def test_onnxruntime_predictions_equal_pytorch_ones(tiny_run, tmp_path, unetkit_exe):
    image, _ = synth_nuclei((70, 110), seed=8)
    torch_probs = Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu", tile=64).predict_proba(
        image
    )
    ort = Predictor.from_checkpoint(tiny_run.best_checkpoint, device="cpu", tile=64, engine="onnxruntime")
    assert type(ort.model).__name__ == "OnnxModel"
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
