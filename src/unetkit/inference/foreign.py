"""Foreign weights (TorchScript, ONNX) checked before they run: tensor arithmetic only, nothing from outside.

**TorchScript** is checked before and after ``torch.jit.load``. TorchScript is a programming language, not only a graph of tensor operations: a scripted module can open a file
(``torch.from_file(..., shared=True)`` maps one read-write), save one (``torch.save``), start work on other
threads or processes, call C++ custom classes, and run a ``__setstate__`` method while it is being loaded. A model
package is data a user downloaded, so unetkit runs only the tensor arithmetic in it:

1. **Before loading**, the archive is read as data: every pickled global must be a TorchScript class of the
   archive (``__torch__.…``) or one of the tensor-rebuilding functions torch writes itself, and no class of the
   archive's code may define ``__setstate__`` (the only code TorchScript runs while loading).
2. **After loading**, every method of every submodule is inlined and each node of its graph must be an operator
   of ATen or of TorchScript's ``prim`` namespace, outside :data:`DENIED` (files, storage, threads and processes,
   the network, global state, calls that stay opaque after inlining: C++ custom classes). The check covers every
   method, not only ``forward``, so nothing unchecked is reachable.

Anything else is refused before the first image is read, naming the operator.

**ONNX** graphs (:func:`check_onnx`) may use the standard operator domains (``ai.onnx``, ``ai.onnx.ml``) and the
model's own local functions only (custom domains need native libraries unetkit never registers), and external
data only from files beside the model (no absolute path, no ``..``); ONNX Runtime's refusals become one line.
"""

from __future__ import annotations

import ast
import io
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

__all__ = ["DENIED", "check_archive", "check_graphs", "check_onnx", "load_scripted", "onnx_session"]

#: ATen and prim operators a model package may not use, though they are in the allowed namespaces
DENIED = frozenset(
    {
        # files and shared memory
        "aten::from_file",
        "aten::save",
        # re-pointing a tensor at other memory
        "aten::set_",
        "aten::set_data",
        "aten::record_stream",
        # global state of this process
        "aten::manual_seed",
        "aten::seed",
        "aten::_cufft_set_plan_cache_max_size",
        # threads, futures, processes and the network
        "prim::fork",
        "aten::wait",
        "prim::awaitable",
        "prim::awaitable_nowait",
        "prim::awaitable_wait",
        "prim::rpc_async",
        "prim::rpc_sync",
        "prim::rpc_remote",
        # calls that inlining leaves opaque (C++ custom classes, Python) and context managers of such objects
        "prim::CallMethod",
        "prim::CallFunction",
        "prim::PythonOp",
        "prim::Enter",
        "prim::Exit",
    }
)
#: the namespaces whose operators are tensor arithmetic and TorchScript's own control flow
ALLOWED_NAMESPACES = ("aten", "prim")
#: pickled globals torch itself writes into a TorchScript archive (module, name); ``__torch__.…`` classes aside
_PICKLE_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"),
}
_PICKLE_MODULES = ("torch.jit._pickle",)  # build_intlist, build_tensor_from_id, restore_type_tag, …
#: the largest code or pickle record read for the checks (a whole U-Net's code is ~100 KB)
MAX_RECORD = 16 * 2**20


def _storage_global(module: str, name: str) -> bool:
    return module == "torch" and name.endswith("Storage")


def check_archive(file: Path, source: str) -> None:
    """Refuse, without loading it, a TorchScript archive whose pickles name anything but tensors and its own
    classes, or whose code runs at load time (``__setstate__``)."""
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{source}: {file.name} is not a TorchScript archive ({exc})") from None
    with archive:
        names = archive.namelist()
        code = {n for n in names if "/code/" in n and n.endswith(".py")}
        pickles = {n for n in names if n.endswith(".pkl") and not n.endswith(".debug_pkl")}
        if not code or not any(n.endswith("/data.pkl") for n in pickles):
            raise CheckpointError(
                f"{source}: {file.name} is not a TorchScript archive (no code/ or data.pkl)"
            )
        for info in archive.infolist():  # code and pickles (structure only: tensors are separate records)
            if info.filename in code or info.filename in pickles:
                if info.file_size > MAX_RECORD:
                    raise CheckpointError(
                        f"{source}: {file.name}/{info.filename} would unpack to {info.file_size:,} bytes; code and "
                        f"structure records of a model stay under {MAX_RECORD:,}"
                    )
        for name in sorted(pickles):
            for module, attr in _pickle_globals(archive.read(name), f"{source}: {file.name}/{name}"):
                if not (
                    module.startswith("__torch__")
                    or (module, attr) in _PICKLE_GLOBALS
                    or module in _PICKLE_MODULES
                    or _storage_global(module, attr)
                ):
                    raise CheckpointError(
                        f"{source}: {file.name} refers to {module}.{attr}, which is not a tensor or a class of the "
                        "archive (custom classes run native code): unetkit does not load it"
                    )
        for name in sorted(code):
            try:
                tree = ast.parse(archive.read(name).decode("utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
                raise CheckpointError(
                    f"{source}: {file.name}/{name}: unreadable TorchScript code ({exc})"
                ) from None
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef) and item.name == "__setstate__":
                            raise CheckpointError(
                                f"{source}: {file.name}: class {node.name} defines __setstate__, code that would "
                                "run while the model loads: unetkit does not load it (export the model without it)"
                            )


def _pickle_globals(data: bytes, where: str) -> list[tuple[str, str]]:
    """The (module, name) pairs a pickle refers to, read without unpickling."""
    found: list[tuple[str, str]] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                found.append((module, name))
            elif op.name == "STACK_GLOBAL":
                found.append((strings[-2], strings[-1]) if len(strings) >= 2 else ("?", "?"))
            elif isinstance(arg, str):
                strings.append(arg)
    except (ValueError, EOFError) as exc:  # pickletools' errors for a damaged stream
        raise CheckpointError(f"{where}: damaged pickle ({exc})") from None
    return found


def check_graphs(scripted: Any, source: str) -> None:
    """Every operator of every method (inlined) is allowed: ATen or prim, not :data:`DENIED`."""
    for sub_name, sub in scripted.named_modules():
        for method_name in sub._c._method_names():
            graph = sub._c._get_method(method_name).inlined_graph
            bad = _first_denied(graph.block())
            if bad is not None:
                where = f"{sub_name}.{method_name}" if sub_name else method_name
                raise CheckpointError(
                    f"{source}: the TorchScript weights use {bad} (in {where}), an operator that reaches beyond "
                    "tensor arithmetic (files, memory, processes or native code): unetkit does not run them"
                )


def _first_denied(block: Any) -> str | None:
    for node in block.nodes():
        kind = node.kind()
        if kind.split("::")[0] not in ALLOWED_NAMESPACES or kind in DENIED:
            return str(kind)
        for inner in node.blocks():
            bad = _first_denied(inner)
            if bad is not None:
                return bad
    return None


def load_scripted(file: Path, source: str) -> Any:
    """``torch.jit.load`` of foreign weights, on the CPU, between the two checks above."""
    check_archive(file, source)
    try:
        scripted = torch.jit.load(str(file), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {file.name}: not loadable TorchScript ({str(exc)[:200]})") from None
    check_graphs(scripted, source)
    return scripted.eval()


#: ONNX operator domains a model may use ("" is ai.onnx)
ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})


def check_onnx(proto: Any, folder: Path, source: str) -> None:
    """Refuse an ONNX graph (loaded without its external data) that uses an operator outside the standard
    domains and its own functions, or external data outside ``folder``."""
    import onnx

    local = {(f.domain, f.name) for f in proto.functions}
    graphs = [proto.graph, *[f for f in proto.functions]]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            if node.domain not in ONNX_DOMAINS and (node.domain, node.op_type) not in local:
                raise CheckpointError(
                    f"{source}: the ONNX graph uses {node.domain}.{node.op_type}, outside the standard operator "
                    "domains (custom operators need native libraries): unetkit does not run it"
                )
            for attr in node.attribute:  # If/Loop/Scan bodies
                graphs.extend([attr.g] if attr.HasField("g") else [])
                graphs.extend(attr.graphs)
        for tensor in getattr(g, "initializer", []):
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            entry = {e.key: e.value for e in tensor.external_data}
            location = entry.get("location", "")
            target = (folder / location).resolve()
            if not location or Path(location).is_absolute() or folder.resolve() not in target.parents:
                raise CheckpointError(
                    f"{source}: the ONNX weights {tensor.name[:60]!r} point to {location[:120]!r}, outside the "
                    f"model's folder {folder}: unetkit does not read them"
                )
            if not target.is_file():
                raise CheckpointError(
                    f"{source}: the ONNX weights {tensor.name[:60]!r} need {location[:120]!r}, missing"
                )


def onnx_session(
    model: str | bytes, source: str, options: Any = None, providers: list[str] | None = None
) -> Any:
    """An ONNX Runtime session for a checked graph; ONNX Runtime's refusals (unknown operator, bad graph) in one
    line."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model, options, providers=providers or ["CPUExecutionProvider"])
    # onnxruntime raises its own pybind classes (Fail, InvalidGraph, NotImplemented…), no common base
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source}: ONNX Runtime refuses this graph ({first[:240]})") from None
