"""Issue 31: foreign TorchScript weights run tensor arithmetic only. Each hostile module is scripted here, saved
as a real archive, and must be refused before it touches the file it aims at."""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from typing import List  # noqa: UP035  (TorchScript reads the annotation)

import pytest
import torch

from unetkit.errors import CheckpointError
from unetkit.inference.foreign import load_scripted


class MapsAFile(torch.nn.Module):
    """Maps a file read-write and overwrites its first bytes, the result feeding the output (so it stays in the
    graph)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        t = torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8)
        t.fill_(0)
        return self.conv(x) + t.float().sum()


class HidesItInAHelper(torch.nn.Module):
    """The file write sits in a second method, reached from forward."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def write(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.path)
        return x

    def forward(self, x):
        return self.write(x) * 2


class RunsWhileLoading(torch.nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self) -> List[str]:  # noqa: UP006
        return [self.path]

    @torch.jit.export
    def __setstate__(self, state: List[str]) -> None:  # noqa: UP006
        self.path = state[0]
        torch.save(torch.ones(1), self.path)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_module_that_maps_a_file_is_refused_before_it_runs(tmp_path):
    victim = tmp_path / "image.tif"
    victim.write_bytes(b"the user's image")
    before = _digest(victim)
    file = tmp_path / "weights.pt"
    torch.jit.script(MapsAFile(str(victim))).save(str(file))
    with pytest.raises(CheckpointError, match=r"aten::from_file \(in forward\)"):
        load_scripted(file, "pkg")
    assert _digest(victim) == before


def test_a_file_write_in_a_helper_method_is_found(tmp_path):
    target = tmp_path / "planted.pt"
    file = tmp_path / "weights.pt"
    torch.jit.script(HidesItInAHelper(str(target))).save(str(file))
    with pytest.raises(CheckpointError, match="aten::save"):
        load_scripted(file, "pkg")
    assert not target.exists()


def test_code_that_would_run_while_loading_is_refused_unloaded(tmp_path):
    target = tmp_path / "planted.pt"
    file = tmp_path / "weights.pt"
    torch.jit.script(RunsWhileLoading(str(tmp_path / "elsewhere.pt"))).save(str(file))
    # the archive's own __setstate__ is what torch.jit.load would run: rewrite its target to prove it never runs
    with zipfile.ZipFile(file) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members = {
        n: (
            b.replace(str(tmp_path / "elsewhere.pt").encode(), str(target).encode())
            if n.endswith("data.pkl")
            else b
        )
        for n, b in members.items()
    }
    with zipfile.ZipFile(file, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(CheckpointError, match="defines __setstate__"):
        load_scripted(file, "pkg")
    assert not target.exists()


def test_a_pickle_naming_anything_but_tensors_is_refused(tmp_path):
    file = tmp_path / "weights.pt"
    torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3))).save(str(file))
    with zipfile.ZipFile(file) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data = next(n for n in members if n.endswith("/data.pkl"))
    members[data] = pickle.dumps(io.StringIO, protocol=2)  # a global outside torch's tensor rebuilding
    with zipfile.ZipFile(file, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(CheckpointError, match=r"refers to _io\.StringIO"):
        load_scripted(file, "pkg")


def test_ordinary_scripted_and_traced_networks_load_and_run(tmp_path):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.ConvTranspose2d(4, 2, 2, stride=2),
        torch.nn.Softmax(dim=1),
    ).eval()
    x = torch.rand(1, 1, 32, 32)
    for name, module in (("scripted", torch.jit.script(net)), ("traced", torch.jit.trace(net, x))):
        file = tmp_path / f"{name}.pt"
        module.save(str(file))
        loaded = load_scripted(file, name)
        assert torch.allclose(loaded(x), net(x), atol=1e-6)


# -- ONNX: standard domains, external data beside the model, ONNX Runtime's refusals in one line -------------


def _onnx_graph(tmp_path, node, initializer=None, name="m.onnx"):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        initializer=[initializer] if initializer is not None else [],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.evil", 1)]
    )
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_onnx_operators_outside_the_standard_domains_are_refused(tmp_path):
    import onnx
    from onnx import helper

    from unetkit.inference.foreign import check_onnx

    path = _onnx_graph(tmp_path, helper.make_node("RunShell", ["x"], ["y"], domain="com.evil"))
    with pytest.raises(CheckpointError, match=r"com\.evil\.RunShell, outside the standard operator domains"):
        check_onnx(onnx.load(str(path), load_external_data=False), tmp_path, "m.onnx")


def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from unetkit.inference.foreign import check_onnx

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    (tmp_path / "model").mkdir()
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "4")):
        weight.external_data.add(key=key, value=value)
    path = _onnx_graph(tmp_path / "model", helper.make_node("Mul", ["x", "w"], ["y"]), weight)
    proto = onnx.load(str(path), load_external_data=False)
    with pytest.raises(CheckpointError, match=r"point to '\.\./secret\.bin', outside the model's folder"):
        check_onnx(proto, tmp_path / "model", "m.onnx")
    weight.external_data[0].value = str(secret)  # an absolute path
    path = _onnx_graph(tmp_path / "model", helper.make_node("Mul", ["x", "w"], ["y"]), weight, "abs.onnx")
    with pytest.raises(CheckpointError, match="outside the model's folder"):
        check_onnx(onnx.load(str(path), load_external_data=False), tmp_path / "model", "abs.onnx")


def test_an_unknown_onnx_operator_is_one_line_not_a_traceback(tmp_path):
    pytest.importorskip("onnxruntime")
    from onnx import helper

    from unetkit.inference.foreign import onnx_session

    path = _onnx_graph(tmp_path, helper.make_node("NotAnOperator", ["x"], ["y"]))
    with pytest.raises(CheckpointError, match="ONNX Runtime refuses this graph") as info:
        onnx_session(str(path), "m.onnx")
    assert "\n" not in str(info.value)
