"""Exported models: a network as ONNX or TorchScript, verified against PyTorch, and ONNX models run by
ONNX Runtime (the ``onnxruntime`` engine). The ``export`` workflow (:mod:`unetkit.workflows.export`) picks
the checkpoint and the output; this module converts.

The exported graph is the network itself on inputs whose spatial sizes are multiples of ``2**depth`` (the
tiles ``unetkit predict`` feeds it always are), with dynamic batch, height and width (and depth for 3-D).
The checkpoint's preprocessing and geometry travel in the ONNX file's metadata, so an exported model is
self-describing like a checkpoint: ``unetkit predict model.onnx ...`` (or ``--engine onnxruntime`` with a
checkpoint) tiles, normalises and post-processes exactly as with PyTorch. Needs the ``[onnx]`` extra.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..checkpoint import Preprocessing, preprocessing_of
from ..errors import CheckpointError, ConfigError, UnetkitError
from ..extras import require_extra
from .foreign import check_onnx, onnx_session

__all__ = ["EXPORT_FORMATS", "ExportResult", "OnnxModel", "OpenVinoModel", "write_exported"]

EXPORT_FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4


class _Core(nn.Module):
    """The network without its input padding (sizes must be multiples of its ``size_multiples``, or valid
    sizes): logits, and with :class:`~unetkit.models.instances.UNetInstances` the instance labels too."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.labels = hasattr(model, "forward_multiples")

    def forward(self, x: torch.Tensor) -> Any:
        if self.labels:
            return self.model.forward_multiples(x)  # type: ignore[operator]
        return self.model._forward(x)  # type: ignore[operator]


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # largest difference from PyTorch on the verification inputs (float32)
    labels_mismatch: float = 0.0  # with instances: the fraction of pixels whose label differs from PyTorch's


def _sample_inputs(model: Any, channels: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    if model.padding == "valid":  # two valid sizes (the paper's network: 16k + 124)
        a = model.geometry.input_size(1)
        b = model.geometry.input_size(a + 2**model.depth)
        return [torch.randn(1, channels, a, b), torch.randn(2, channels, b, a)]
    mult = model.size_multiples
    return [
        torch.randn(1, channels, *(2 * m for m in mult)),
        torch.randn(2, channels, *(m * (3 + i) for i, m in enumerate(mult))),
    ]


def write_exported(
    model: Any, payload: dict[str, Any], out: Path, format: str, *, valid_ok: bool = False
) -> ExportResult:
    """Export ``model`` (rebuilt from the checkpoint ``payload``) to ``out`` atomically and verify it: the
    largest absolute difference from PyTorch over two input sizes must stay below 1e-4 (float32), else the
    file is not written. A :class:`~unetkit.models.instances.UNetInstances` is exported with its second
    output, the instance labels (``instances``); their mismatch with PyTorch's is measured, not bounded (a
    probability at a class boundary may round the other way)."""
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"--format {format!r} is unknown; choose one of {', '.join(EXPORT_FORMATS)}")
    if model.padding != "same" and not valid_ok:  # a bioimage.io package describes valid sizes; a file not
        raise ConfigError(
            f"{out}: export supports padded (padding='same') networks; this one is 'valid' (the paper's), "
            "whose input sizes are not a simple multiple"
        )
    if format == "onnx":
        require_extra(("onnx", "onnxruntime", "onnxscript"), "onnx", "export --format onnx")
    channels = preprocessing_of(payload).in_channels
    inputs = _sample_inputs(model, channels)
    core = _Core(model).eval()
    two = core.labels
    names = ["logits", "instances"] if two else ["logits"]
    with atomic_path(out, out.suffix or ".tmp") as path, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracers' notes on shape checks that are constant in the graph
        tmp = str(path)
        if format == "onnx":
            run = _export_onnx(core, model, inputs[0], tmp, payload, names)
        else:
            with torch.no_grad():
                scripted = torch.jit.trace(core, inputs[0], check_trace=False)
            scripted.save(tmp)
            loaded = torch.jit.load(tmp)

            def run(x: np.ndarray) -> list[np.ndarray]:
                with torch.no_grad():
                    y = loaded(torch.from_numpy(x))
                return [t.numpy() for t in y] if isinstance(y, tuple) else [y.numpy()]

        diff, mismatch = 0.0, 0.0
        with torch.no_grad():
            for x in inputs:
                ref = core(x)
                ref = [t.numpy() for t in ref] if isinstance(ref, tuple) else [ref.numpy()]
                got = run(x.numpy())
                diff = max(diff, float(np.abs(got[0] - ref[0]).max()))
                if two:
                    mismatch = max(mismatch, float((got[1] != ref[1]).mean()))
        if not diff < TOLERANCE:
            raise UnetkitError(
                f"{out}: the exported model differs from PyTorch by {diff:.2e} (> {TOLERANCE}); not written"
            )
    return ExportResult(out, format, diff, mismatch)


def _export_onnx(
    core: nn.Module, model: Any, example: torch.Tensor, path: str, payload: dict[str, Any], names: list[str]
):
    import onnx
    import onnxruntime as ort

    mult = model.size_multiples
    axes = ("d", "h", "w")[-len(mult) :]
    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    for axis, (name, m) in enumerate(zip(axes, mult, strict=True), start=2):
        dims[axis] = m * torch.export.Dim(name, min=1, max=8192 // m)
    if len(names) == 1 and model.padding == "same":
        with _quiet_exporter():  # its progress lines and notes about torchvision are not the user's business
            torch.onnx.export(
                core,
                (example,),
                path,
                dynamo=True,
                dynamic_shapes={"x": dims},
                input_names=["x"],
                output_names=names,
            )
    else:  # the in-graph instance step is ~2000 unrolled operations: the TorchScript-based exporter takes
        # seconds where the dynamo one (symbolic shapes on every node) takes minutes; valid networks' sizes
        # (16k + 124) are not a multiple the dynamo one is told
        spatial = {axis: name for axis, name in enumerate(axes, start=2)}
        out_spatial = spatial if model.padding == "same" else {a: f"{n}_out" for a, n in spatial.items()}
        torch.onnx.register_custom_op_symbolic("aten::scatter_reduce", _scatter_max, 18)
        try:
            torch.onnx.export(
                core,
                (example,),
                path,
                dynamo=False,
                opset_version=18,
                dynamic_axes={
                    "x": {0: "batch", **spatial},
                    **{n: {0: "batch", **out_spatial} for n in names},
                },
                input_names=["x"],
                output_names=names,
            )
        finally:
            torch.onnx.unregister_custom_op_symbolic("aten::scatter_reduce", 18)
    proto = onnx.load(path)
    del proto.graph.value_info[:]  # shapes the exporter guessed for one input size; the runtime infers them
    meta = {
        "unetkit.model": json.dumps(payload["model"]),
        "unetkit.preprocessing": json.dumps(payload["preprocessing"]),
        "unetkit.training": json.dumps(
            {k: v for k, v in payload.get("training", {}).items() if k == "config"}
        ),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)  # weights inline: one self-contained file
    Path(path + ".data").unlink(
        missing_ok=True
    )  # the exporter's external weights, named after the temporary file
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter prints its steps on stdout and logs warnings about torchvision operators: silenced (a
    failed export still raises, and the export is verified after)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _scatter_max(g: Any, self: Any, dim: Any, index: Any, src: Any, reduce: Any, include_self: Any) -> Any:
    """``scatter_reduce(..., "amax")`` as one ONNX ScatterElements (the stock translation wraps it in If nodes
    for 0-d tensors, whose mixed ranks make ONNX Runtime warn on every run)."""
    from torch.onnx import symbolic_helper

    mode = symbolic_helper._maybe_get_const(reduce, "s")
    if mode != "amax" or not symbolic_helper._maybe_get_const(include_self, "b"):
        raise UnetkitError(f"scatter_reduce {mode!r} is not exported by unetkit")
    axis = symbolic_helper._get_const(dim, "i", "dim")
    return g.op("ScatterElements", self, index, src, axis_i=axis, reduction_s="max")


class OnnxModel(nn.Module):
    """An exported ONNX model behind the interface :class:`~unetkit.inference.predictor.Predictor` uses, run
    by ONNX Runtime (CPU, or CUDA when its provider is installed)."""

    #: the engine's name, in messages
    runtime = "ONNX Runtime"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        require_extra(("onnx",), "onnx", f"the {self.runtime} engine")
        import onnx

        self.path = Path(path)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise CheckpointError(
                f"{path}: not a readable ONNX file ({str(exc).splitlines()[0][:200]}); export it again with "
                "`unetkit export`"
            ) from None
        check_onnx(proto, self.path.parent, str(path))
        meta = {p.key: p.value for p in proto.metadata_props}
        if "unetkit.model" not in meta:
            raise ConfigError(f"{path}: not an ONNX file written by 'unetkit export' (no unetkit metadata)")
        try:
            self.spec = json.loads(meta["unetkit.model"])
            raw = json.loads(meta["unetkit.preprocessing"])
            self.training_info = json.loads(meta.get("unetkit.training", "{}"))
            hp = self.spec["hparams"]
            self.num_classes, self.depth, self.padding = hp["num_classes"], hp["depth"], hp["padding"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: damaged unetkit metadata in this ONNX file ({exc!s:.200})"
            ) from None
        self.preprocessing = Preprocessing.from_dict(raw, path)
        outputs = proto.graph.output[0].type.tensor_type.shape.dim if proto.graph.output else []
        channels = outputs[1].dim_value if len(outputs) > 1 else 0
        if channels and channels != self.num_classes:
            raise CheckpointError(
                f"{path}: the metadata says {self.num_classes} output channel(s), the graph has {channels}: "
                "the file was altered; export it again"
            )
        self.spatial_dims, self.margin = hp.get("spatial_dims", 2), 0
        k = hp.get("anisotropic_levels", 0)
        self.size_multiples = (
            (2 ** (self.depth - k), *(2**self.depth,) * 2) if self.spatial_dims == 3 else (2**self.depth,) * 2
        )
        self._open()
        self._probe(self.preprocessing.in_channels)

    def _open(self) -> None:
        """The runtime's session for the checked file."""
        require_extra(("onnxruntime",), "onnx", "the onnxruntime engine")
        import onnxruntime as ort

        providers = [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
        ]
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnx_session(str(self.path), str(self.path), options, providers)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"x": x})[0]

    def _probe(self, channels: int) -> None:
        """Run the graph once on the smallest input its metadata allows, before any image is read: a graph deeper
        than its metadata says fails on such sizes, and an altered file is refused here, not at the first tile
        (or, where it happened to run, with masks of the wrong shape)."""
        x = torch.zeros((1, channels, *self.size_multiples))
        out = self.forward(x)
        if tuple(out.shape) != (1, self.num_classes, *self.size_multiples):
            raise CheckpointError(
                f"{self.path}: on a {'x'.join(map(str, self.size_multiples))} input the graph gives "
                f"{tuple(out.shape)}, not (1, {self.num_classes}, ...) as its metadata says (depth {self.depth}): "
                "the file was altered; export it again with `unetkit export`"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape[2:])
        if any(n % m for n, m in zip(shape, self.size_multiples, strict=True)):
            raise ValueError(
                f"ONNX model input sizes must be multiples of {self.size_multiples}, got {shape}"
            )
        try:
            out = self._infer(x.detach().cpu().float().numpy())
        except MemoryError:  # out of memory is not a damaged file
            raise
        # the runtimes' own classes (ONNX Runtime's Fail, InvalidArgument …; OpenVINO's RuntimeError)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{self.path}: {self.runtime} failed on a tile of {'x'.join(map(str, shape))} ({first}); the file's "
                "metadata may not describe its graph (altered?): export it again with `unetkit export`"
            ) from None
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)


class OpenVinoModel(OnnxModel):
    """The same exported ONNX model compiled by OpenVINO for this CPU (the ``[openvino]`` extra), in float32 or,
    where the CPU has native bfloat16, in bfloat16. On a 2-core AMD EPYC with AVX512-BF16 it ran the built-in
    model's 512² tiles 1.9x (bfloat16) and 2.0x (float32) faster than PyTorch eager in the same precision."""

    runtime = "OpenVINO"

    def __init__(self, path: str | Path, precision: str = "float32") -> None:
        if precision not in ("float32", "bfloat16"):
            raise ConfigError(f"the openvino engine computes in float32 or bfloat16, not {precision}")
        self.computes = precision
        super().__init__(path)

    def _open(self) -> None:
        require_extra(("openvino",), "openvino", "the openvino engine")
        import openvino as ov

        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if self.computes == "bfloat16" else "f32",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        }
        try:
            compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        except RuntimeError as exc:  # OpenVINO's refusals (an operator it lacks, a bad graph)
            first = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{self.path}: OpenVINO refuses this graph ({first})") from None
        self.request = compiled.create_infer_request()

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return np.array(self.request.infer({0: x})[0], copy=True)  # the request's buffer is reused next call
