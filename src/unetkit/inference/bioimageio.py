"""Running a BioImage Model Zoo package (model description 0.5; a ``.zip`` or a folder holding ``rdf.yaml``)
through unetkit's tiling: ``unetkit predict model.zip IMAGES --out PRED``.

Only weights that carry no Python code are run: ONNX (preferred, on ONNX Runtime) or TorchScript. A package with
only ``pytorch_state_dict`` weights is refused, since rebuilding it means running the package's architecture
source. The description says how to tile (input sizes ``min + n * step``, the output halo) and what to do around
the network; the preprocessing operations unetkit has an exact equivalent for (``scale_range`` per image over
``y, x``, ``scale_linear`` without offset, ``zero_mean_unit_variance``, ``fixed_zero_mean_unit_variance``,
``ensure_dtype``) become the predictor's normalisation, and the output's ``sigmoid``/``softmax`` its activation;
anything else is refused by name before an image is read. Archives are read with bounds: no member outside the
package, no member or total larger than ``MAX_BYTES``.
"""

from __future__ import annotations

import math
import shutil
import stat
import weakref
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import Preprocessing
from ..config import read_yaml
from ..errors import CheckpointError, ConfigError, UnetkitError
from ..extras import require_extra
from ..pretrained import file_sha256
from .foreign import check_onnx, load_scripted, onnx_session
from .writers import process_temp, remove_tree

__all__ = ["DESCRIPTIONS", "PackageModel", "is_package", "load_package"]

#: the file names a package's description may have
DESCRIPTIONS = ("rdf.yaml", "bioimageio.yaml")
#: the most an archive may unpack to (a zip bomb is refused before it is extracted)
MAX_BYTES = 4 * 2**30
#: the most a member may inflate (weights compress about 1.1-fold, text ~10-fold)
MAX_RATIO = 200


def is_package(path: str | Path) -> bool:
    """A ``.zip`` (not a unetkit checkpoint) or a folder holding ``rdf.yaml``/``bioimageio.yaml``."""
    p = Path(path)
    if p.is_dir():
        return any((p / name).is_file() for name in DESCRIPTIONS)
    return p.suffix.lower() == ".zip" and p.is_file()


def load_package(path: str | Path) -> tuple[PackageModel, Preprocessing]:
    """The network of a package and the preprocessing record a :class:`Predictor` takes. A zip is unpacked into a
    temporary folder that goes with the model: removed when the model is released (or at exit, or by the next
    process after a kill), never left behind for a failed load."""
    folder = _folder(Path(path))
    unpacked = folder != Path(path)
    try:
        model = _load(folder, path)
    except BaseException:
        if unpacked:
            remove_tree(folder)
        raise
    if unpacked:
        weakref.finalize(model, remove_tree, folder)
    return model, model.preprocessing


def _load(folder: Path, path: str | Path) -> PackageModel:
    description = next(folder / n for n in DESCRIPTIONS if (folder / n).is_file())
    try:  # bounded: no aliases, at most YAML_MAX_BYTES, nesting bounded
        rdf = read_yaml(description, f"{path}:", aliases=True)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise CheckpointError(
            f"{path}: not a bioimage.io model description (type: {str(rdf.get('type'))[:40]})"
        )
    version = str(rdf.get("format_version", ""))
    if not version.startswith("0.5"):
        raise ConfigError(
            f"{path}: bioimage.io model format {version or '?'}; unetkit runs format 0.5 packages (update it with "
            "`bioimageio update-format`)"
        )
    inputs, outputs = rdf.get("inputs") or [], rdf.get("outputs") or []
    ours = ((rdf.get("config") or {}).get("unetkit") or {}).get("instances")
    if len(outputs) == 2 and ours and isinstance(outputs[1], dict) and outputs[1].get("id") == "instances":
        # unetkit's own package: probabilities, then the in-graph labels; unetkit labels the whole image
        # itself (tile-coherent), from the probabilities
        outputs = outputs[:1]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConfigError(
            f"{path}: {len(inputs)} inputs and {len(outputs)} outputs; unetkit runs one of each"
        )
    try:
        model = PackageModel(folder, rdf, str(path))
    except UnetkitError:  # already said plainly (UnetkitError is also a ValueError)
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(
            f"{path}: damaged model description ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    return model


def _folder(path: Path) -> Path:
    if path.is_dir():
        return path
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable zip archive ({exc})") from None
    with archive:
        infos = archive.infolist()
        total = sum(i.file_size for i in infos)
        for info in infos:
            name = Path(info.filename)
            if name.is_absolute() or ".." in name.parts:
                raise CheckpointError(f"{path}: the member {info.filename[:80]!r} points outside the package")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise CheckpointError(
                    f"{path}: the member {info.filename[:80]!r} is a symbolic link: refused"
                )
            if info.file_size > 2**20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise CheckpointError(
                    f"{path}: the member {info.filename[:80]!r} inflates {info.file_size / max(info.compress_size, 1):.0f}"
                    f"-fold (> {MAX_RATIO}): a zip bomb, refused"
                )
        if total > MAX_BYTES:
            raise CheckpointError(
                f"{path}: unpacks to {total / 2**30:.1f} GiB (> {MAX_BYTES / 2**30:.0f}): refused"
            )
        if not any(Path(i.filename).name in DESCRIPTIONS and len(Path(i.filename).parts) == 1 for i in infos):
            raise CheckpointError(f"{path}: no rdf.yaml at the top of the archive: not a bioimage.io package")
        folder = process_temp("package")  # TMP/unetkit-UID: removed at exit, swept after a kill
        free = shutil.disk_usage(folder).free
        # unpacking would fill the disk (a large, incompressible member within the bounds)
        if total + 2**28 > free:
            remove_tree(folder)
            raise CheckpointError(
                f"{path}: unpacks to {total / 2**30:.2f} GiB, and {folder.parent} has {free / 2**30:.2f} GiB free "
                "(with 0.25 GiB to spare): free space there, or set TMPDIR to a larger disk"
            )
        try:
            archive.extractall(folder)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:  # a bad CRC, a truncated member, a full disk
            remove_tree(folder)
            raise CheckpointError(f"{path}: cannot be unpacked ({str(exc)[:200]})") from None
    return folder


def _axes(tensor: dict[str, Any]) -> list[dict[str, Any]]:
    axes = tensor.get("axes")
    if not isinstance(axes, list):
        raise ConfigError(f"tensor {tensor.get('id')!r}: no axes list (a format 0.5 description has one)")
    return axes


class PackageModel(nn.Module):
    """A package's network behind the interface :class:`~unetkit.inference.predictor.Predictor` uses: logits
    ``(N, C, *spatial)`` for inputs whose spatial sizes are ``min + n * step``."""

    def __init__(self, folder: Path, rdf: dict[str, Any], source: str) -> None:
        super().__init__()
        self.source, self.rdf, self.folder = source, rdf, folder
        inp, out = rdf["inputs"][0], rdf["outputs"][0]
        in_axes, out_axes = _axes(inp), _axes(out)
        kinds = [a.get("type") for a in in_axes]
        space = [a for a in in_axes if a.get("type") == "space"]
        expected = [k for k in ("batch", "channel") if k in kinds] + ["space"] * len(space)
        ids = [a.get("id") for a in space]
        if kinds != expected or ids not in (["y", "x"], ["z", "y", "x"]):
            raise ConfigError(
                f"{source}: input axes {[a.get('id', a.get('type')) for a in in_axes]}; unetkit feeds batch, "
                "channel, (z,) y, x"
            )
        self.batch, self.channel = "batch" in kinds, "channel" in kinds
        self.spatial_dims = len(space)
        steps, mins = [], []
        for axis in space:
            size = axis.get("size")
            if not isinstance(size, dict) or "step" not in size:
                raise ConfigError(
                    f"{source}: input axis {axis.get('id')!r} has the fixed size {size}; unetkit tiles models whose "
                    "sizes are min + n*step"
                )
            try:
                step_, min_ = int(size["step"]), int(size.get("min") or size["step"])
            except (TypeError, ValueError):
                step_, min_ = 0, 0
            if step_ < 1 or min_ < 1:
                raise ConfigError(
                    f"{source}: input axis {axis.get('id')!r} has the size {str(size)[:80]}; a parameterized size "
                    "has min >= 1 and step >= 1"
                )
            steps.append(step_)
            mins.append(min_)
        step = max(steps)
        if any(s & (s - 1) for s in steps) or any(m % step for m in mins):
            raise ConfigError(
                f"{source}: input sizes min {mins} step {steps}: unetkit tiles powers-of-two steps"
            )
        self.depth = int(math.log2(step))
        self.min_size = max(mins)
        self.size_multiples = (step,) * self.spatial_dims
        self.padding, self.margin = "same", 0
        offsets = {
            int(a["size"].get("offset", 0) or 0)
            for a in out_axes
            if a.get("type") == "space" and isinstance(a.get("size"), dict) and "tensor_id" in a["size"]
        }
        if offsets - {0}:  # an unpadded network: the output is the input less a margin on each side
            if len(offsets) != 1 or next(iter(offsets)) % 2 or next(iter(offsets)) > 0:
                raise ConfigError(
                    f"{source}: output size offsets {sorted(offsets)}; unetkit tiles outputs smaller than the "
                    "input by the same even margin on every axis"
                )
            self.padding, self.margin = "valid", -next(iter(offsets)) // 2
            self.geometry = _PackageGeometry(self.min_size, step, 2 * self.margin)
        halos = [int(a.get("halo", 0) or 0) for a in out_axes if a.get("type") == "space"]
        self.halo = max(halos, default=0)
        channel = next((a for a in in_axes if a.get("type") == "channel"), None)
        self.in_channels = len(channel.get("channel_names") or []) if channel else 1
        out_channel = next((a for a in out_axes if a.get("type") == "channel"), None)
        self.num_classes = len(out_channel.get("channel_names") or []) if out_channel else 1
        self.activation = _activation(out.get("postprocessing") or [], source)
        raw: dict[str, Any] = {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "normalization": _normalization(inp.get("preprocessing") or [], source),
            "package": {"name": rdf.get("name"), "format_version": rdf.get("format_version")},
        }
        names = list(out_channel.get("channel_names") or []) if out_channel else []
        ours = ((rdf.get("config") or {}).get("unetkit") or {}).get("preprocessing") or {}
        self.ours = bool(ours)
        if isinstance(ours.get("encoding"), dict) and ours.get("num_classes") == self.num_classes:
            # written by unetkit: how its masks were encoded (a border target gives instances), its object size
            keep = ("encoding", "class_names", "object_diameter", "object_diameter_range")
            raw.update({k: ours[k] for k in keep if k in ours})
        elif self.num_classes > 1:  # one class per output channel, written as its index
            raw["encoding"] = {
                "name": "classes",
                "values": list(range(self.num_classes)),
                "class_names": names or [f"class{i}" for i in range(self.num_classes)],
            }
        self.preprocessing = Preprocessing.from_dict(raw, source)
        self._run = _runner(folder, rdf.get("weights") or {}, source)

    def output_size(self, size: int) -> int:
        return self.geometry.output_size(size) if self.padding == "valid" else size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().float().numpy()
        if not self.channel:
            array = array[:, 0]
        if self.batch:
            out = np.asarray(self._run(array), np.float32)
        else:
            out = np.stack([np.asarray(self._run(a), np.float32) for a in array])
        if out.ndim == x.ndim - 1:  # an output without a channel axis
            out = out[:, None]
        y = torch.from_numpy(out)
        if self.activation == "none":  # the network gives probabilities: back to logits for the predictor
            y = (
                torch.logit(y.clamp(1e-6, 1 - 1e-6))
                if self.num_classes == 1
                else torch.log(y.clamp_min(1e-12))
            )
        return y.to(x.device)


class _PackageGeometry:
    """The sizes an unpadded package takes (``low + n * step``) and gives (the input less ``shrink``)."""

    def __init__(self, low: int, step: int, shrink: int) -> None:
        self.low, self.step, self.shrink = low, step, shrink

    def fit(self, size: int) -> int:
        """The largest valid input length not above ``size``, or the smallest valid one."""
        return self.low + max(0, (size - self.low) // self.step) * self.step

    def output_size(self, size: int) -> int:
        return size - self.shrink


def _activation(steps: list[dict[str, Any]], source: str) -> str:
    ids = [s.get("id") for s in steps if s.get("id") != "ensure_dtype"]
    if not ids:
        return "none"
    if ids in (["sigmoid"], ["softmax"]):
        return ids[0]
    raise ConfigError(f"{source}: output postprocessing {ids}: unetkit runs sigmoid, softmax or none")


def _normalization(steps: list[dict[str, Any]], source: str) -> dict[str, Any]:
    ops = [s for s in steps if s.get("id") != "ensure_dtype"]
    if not ops:
        return {"method": "none"}
    if len(ops) > 1:
        raise ConfigError(f"{source}: preprocessing {[s.get('id') for s in ops]}: unetkit maps one operation")
    op, kw = ops[0].get("id"), ops[0].get("kwargs") or {}
    axes = set(kw.get("axes") or [])
    per_image = axes <= {"y", "x", "z"} and bool(axes)
    if op == "scale_range" and per_image:
        return {"method": "percentile", "low": float(kw.get("min_percentile", 0.0)),
                "high": float(kw.get("max_percentile", 100.0))}  # fmt: skip
    if op == "zero_mean_unit_variance" and per_image:
        return {"method": "zscore"}
    if op == "scale_linear" and not kw.get("offset") and isinstance(kw.get("gain", 1.0), (int, float)):
        return {"method": "fixed", "scale": 1.0 / float(kw.get("gain", 1.0))}
    if op == "fixed_zero_mean_unit_variance":
        mean: Any = kw.get("mean", 0.0)
        std: Any = kw.get("std", 1.0)
        return {"method": "dataset", "mean": list(np.atleast_1d(mean).astype(float)),
                "std": list(np.atleast_1d(std).astype(float))}  # fmt: skip
    raise ConfigError(
        f"{source}: preprocessing {op} with {kw}: no exact unetkit equivalent (scale_range or "
        "zero_mean_unit_variance over y, x; scale_linear without offset; fixed_zero_mean_unit_variance)"
    )


def _runner(folder: Path, weights: dict[str, Any], source: str):
    for fmt in ("onnx", "torchscript"):
        entry = weights.get(fmt)
        if not isinstance(entry, dict) or not entry.get("source"):
            continue
        file = (folder / str(entry["source"])).resolve()
        if folder.resolve() not in file.parents or not file.is_file():
            raise CheckpointError(f"{source}: {fmt} weights {entry['source']!r} are not in the package")
        if entry.get("sha256") and file_sha256(file) != entry["sha256"]:
            raise CheckpointError(f"{source}: {file.name} does not match its sha256: the package was altered")
        if fmt == "onnx":
            require_extra(("onnxruntime",), "onnx", "running ONNX weights of a bioimage.io package")
            session = onnx_session(_first_output_only(file, source), source)
            name = session.get_inputs()[0].name
            return lambda x: session.run(None, {name: x})[0]
        scripted = load_scripted(file, source)

        def run(x: np.ndarray, scripted: Any = scripted) -> np.ndarray:
            # the package's numbers are float32: no autocast around foreign weights (--precision bf16/fp16)
            with torch.no_grad(), torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
                y = scripted(torch.from_numpy(x))
            return (y[0] if isinstance(y, (tuple, list)) else y).numpy()

        return run
    raise ConfigError(
        f"{source}: no ONNX or TorchScript weights (found {sorted(weights) or 'none'}); unetkit does not run a "
        "package's Python architecture code: convert it (`bioimageio convert`) or export it with those formats"
    )


def _first_output_only(file: Path, source: str) -> bytes | str:
    """The ONNX graph, checked (:func:`check_onnx`), cut to its first output (ONNX Runtime runs every node of a
    graph: a package's in-graph instance step would triple the run time, for labels unetkit does not use)."""
    import onnx

    try:
        proto = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError … for a damaged file
        raise CheckpointError(
            f"{source}: {file.name} is not a readable ONNX file ({str(exc)[:200]})"
        ) from None
    check_onnx(proto, file.parent, source)
    if len(proto.graph.output) < 2:
        return str(file)
    onnx.load_external_data_for_model(proto, str(file.parent))
    first = proto.graph.output[0].name
    cut = onnx.utils.Extractor(proto).extract_model([i.name for i in proto.graph.input], [first])
    cut.metadata_props.extend(proto.metadata_props)
    return cut.SerializeToString()
