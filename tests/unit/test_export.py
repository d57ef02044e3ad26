"""Export to ONNX / TorchScript, verified against PyTorch, and prediction on ONNX Runtime."""

import pytest
import torch

from unetkit.checkpoint import save_checkpoint
from unetkit.models import create_model
from unetkit.workflows.export import export_model


def test_valid_networks_are_refused_with_the_reason(tmp_path):
    net = create_model("unet", base_channels=4, depth=2, padding="valid")
    ckpt = save_checkpoint(tmp_path / "v.pt", net, model_name="unet", preprocessing={"in_channels": 1})
    with pytest.raises(Exception, match="padded"):
        export_model(ckpt, tmp_path / "v.onnx")


@pytest.mark.parametrize("name", ["unet", "residual-unet", "attention-unet"])
def test_folding_batch_norms_into_convolutions_keeps_the_outputs(name):
    from unetkit.models.blocks import fold_batch_norms

    torch.manual_seed(0)
    model = create_model(name, base_channels=8, depth=2, norm="batch")
    for m in model.modules():  # statistics far from the identity, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    with pytest.raises(ValueError, match="eval"):
        fold_batch_norms(model)
    model.eval()
    x = torch.randn(2, 1, 64, 64)
    n_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # each follows a conv
    with torch.no_grad():
        before = model(x)
        folded = fold_batch_norms(model)
        after = model(x)
    assert folded == n_norms > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_an_export_is_named_by_its_format(tmp_path):
    """Before: `unetkit export nuclei --out x.txt` wrote an ONNX file named x.txt, which unetkit itself then
    refused to load as a model (it goes by the suffix)."""
    from unetkit.errors import ConfigError
    from unetkit.workflows.export import export_model

    with pytest.raises(ConfigError, match=r"--out .*x.txt: onnx exports are named NAME.onnx"):
        export_model("nuclei", tmp_path / "x.txt")
    with pytest.raises(ConfigError, match="torchscript exports are named NAME.pt"):
        export_model("nuclei", tmp_path / "m.onnx", "torchscript")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("model", "fmt", "written"),
    [
        ("runs/a/best.pt", "onnx", "runs/a/best.onnx"),
        ("runs/a/best.pth", "torchscript", "runs/a/best.ts.pt"),
        ("runs/a.v2", "onnx", "runs/a.v2.onnx"),  # a run folder: its whole name, not cut at a dot
        ("runs/a.v2", "bioimageio", "runs/a.v2.bioimageio.zip"),
        ("nuclei", "bioimageio", "nuclei.bioimageio.zip"),
        (
            "pretrained:nuclei",
            "bioimageio",
            "nuclei.bioimageio.zip",
        ),  # was 'pretrained:nuclei.bioimageio.zip'
        ("pretrained:nuclei@1", "onnx", "nuclei@1.onnx"),
    ],
)
def test_an_export_without_out_goes_beside_its_model_for_every_format(model, fmt, written):
    """One rule for every format (the CLI had two: a package of a run folder named `a.v2` lost `.v2`, and one of
    `pretrained:nuclei` got a colon in its file name)."""
    from unetkit.errors import ConfigError
    from unetkit.workflows.export import default_export_path

    assert default_export_path(model, fmt).as_posix() == written
    with pytest.raises(ConfigError, match="--format 'tflite' is unknown"):
        default_export_path(model, "tflite")
