"""Model sources: a checkpoint, an ONNX file, a bioimage.io package or a built-in name, opened as a network
(an engine) with its preprocessing record and the predictor settings that follow from where it came from.

Safe loading throughout (:func:`~unetkit.checkpoint.load_checkpoint`; packages: :mod:`.bioimageio`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import (
    Preprocessing,
    StoredModel,
    build_model,
    load_checkpoint,
    preprocessing_of,
    resolve_model_path,
)
from ..config import DEFAULT_TILE, ENGINES, MAX_TILE, MIN_DEFAULT_TILE, PredictConfig
from ..errors import CheckpointError, ConfigError
from .bioimageio import is_package, load_package
from .engines import cached_onnx, choose_engine, choose_pass
from .writers import process_temp

__all__ = ["MAX_TILE", "Opened", "default_tile", "open_model"]

log = logging.getLogger(__name__)


#: a network, its preprocessing record and the predictor's keyword arguments
Opened = tuple[nn.Module, Preprocessing, dict[str, Any]]


def default_tile(payload: dict[str, Any], minimum: int = MIN_DEFAULT_TILE) -> int:
    """Tile size for a checkpoint: its training patch size, at least ``minimum`` (fewer, larger tiles are
    cheaper; a fully convolutional net trained on 128-pixel patches segments 256-pixel tiles as well). Not more
    by default: measured on CPUs (``bench/peers.py``), 512² tiles one per pass ran no faster per FLOP than four
    of 256², and their coarser grid computes more overlap on most image sizes."""
    cfg = StoredModel.of(payload).config
    patch = (cfg.get("data") or {}).get("patch_size") or DEFAULT_TILE
    if not isinstance(patch, int) or not 1 <= patch <= MAX_TILE:
        raise CheckpointError(
            f"the checkpoint declares a training patch of {str(patch)[:40]} pixels (at most {MAX_TILE}): damaged "
            "or not made by unetkit; pass --tile to choose the tile size"
        )
    return max(int(patch), minimum)


def open_model(path: str | Path, kwargs: dict[str, Any]) -> Opened:
    """Open the model at ``path`` for prediction with the predictor settings ``kwargs`` (None: the default):
    the network, its preprocessing and the settings completed (``tile`` from the training patch; a model
    the predictor owns is run channels-last with its batch norms folded)."""
    path = resolve_model_path(path)
    if is_package(path):
        return _open_package(path, kwargs)
    kwargs = dict(kwargs)
    engine = kwargs.pop("engine", None) or "torch"
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r} is unknown; choose one of {', '.join(ENGINES)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if engine == "auto":
        engine = _auto_engine(Path(path), kwargs)
    if engine == "openvino" or engine == "onnxruntime" or Path(path).suffix.lower() == ".onnx":
        model, payload = _open_onnx(Path(path), kwargs, "openvino" if engine == "openvino" else "onnxruntime")
    else:
        payload = load_checkpoint(path)
        model = build_model(payload, path)
        kwargs.setdefault("channels_last", True)  # the predictor owns this model
        kwargs.setdefault("fuse", True)
    if kwargs.get("tile") is None:
        kwargs["tile"] = default_tile(payload)
    return model, preprocessing_of(payload, path), kwargs


def _open_onnx(
    path: Path, kwargs: dict[str, Any], engine: str = "onnxruntime"
) -> tuple[nn.Module, dict[str, Any]]:
    """An ONNX file, or a checkpoint exported (verified) once and kept, run by ONNX Runtime (float32) or by
    OpenVINO (float32, or bfloat16: asked for, or ``auto`` on a CPU with native bfloat16)."""
    runtime = "OpenVINO" if engine == "openvino" else "ONNX Runtime"
    if kwargs.get("compile"):
        raise ConfigError(f"--compile applies to the torch engine; {runtime} optimises its own graph")
    wanted = kwargs.get("precision") or "auto"
    if engine == "onnxruntime" and wanted == "bfloat16":
        raise ConfigError(
            "--precision bfloat16 applies to the torch and openvino engines; ONNX Runtime runs the float32 graph"
        )
    from ..device import cpu_has_native_bf16

    computes = (
        "bfloat16" if wanted == "bfloat16" or (wanted == "auto" and cpu_has_native_bf16()) else "float32"
    )
    kwargs["precision"] = "float32"  # no autocast around the runtime: it computes in its own precision
    from .export import OnnxModel, OpenVinoModel, write_exported

    if path.suffix.lower() != ".onnx":  # a checkpoint: its verified export, made once and kept by its sha256
        exported = cached_onnx(path)
        if not exported.is_file():
            payload = load_checkpoint(path)
            try:
                exported.parent.mkdir(parents=True, exist_ok=True)
                target = exported
            except OSError:  # no cache to keep it in: this process's own temporary folder
                target = process_temp("onnx") / "model.onnx"
            exported = write_exported(build_model(payload, path).eval(), payload, target, "onnx").path
        path = exported
    model = OpenVinoModel(path, computes) if engine == "openvino" else OnnxModel(path)
    # the records its metadata carries, as a checkpoint holds them (no weights)
    return model, {"model": model.spec, "training": model.training_info, "preprocessing": model.preprocessing}


def _auto_engine(path: Path, kwargs: dict[str, Any]) -> str:
    """``--engine auto`` (:mod:`.engines`): the engine, and the precision in ``kwargs``, that run this model
    fastest on this CPU; an ONNX file runs on ONNX Runtime whatever the choice."""
    if path.suffix.lower() == ".onnx":
        return "onnxruntime"
    from ..device import resolve_device
    from .executor import TileExecutor

    payload = load_checkpoint(path)
    defaults = PredictConfig()
    tile = int(kwargs.get("tile") or default_tile(payload))
    batch = int(kwargs.get("batch_size") or defaults.batch_size)
    given = kwargs.get("precision")

    def open_with(engine: str, precision: str) -> TileExecutor:
        model, pre, settings = open_model(
            path, {**kwargs, "engine": engine, "precision": precision, "tile": tile}
        )
        return TileExecutor(
            model, in_channels=pre.in_channels, device=settings.get("device", defaults.device), tile=tile,
            overlap=defaults.overlap, blend=None, batch_size=batch, amp=True, precision=settings["precision"],
            channels_last=settings.get("channels_last", False), prefetch=0, fuse=settings.get("fuse", False),
            compile=False,
        )  # fmt: skip

    device = resolve_device(kwargs.get("device") or defaults.device)
    choice = choose_engine(path, open_with, tile, batch, device,
                           precision=None if given in (None, "auto") else given)  # fmt: skip
    log.info("engine: %s", choice.why())
    chosen: dict[str, Any] = {"engine": choice.engine}
    if choice.precision != "auto":
        kwargs["precision"] = chosen["precision"] = choice.precision
    # the default plan's pass bound, measured, unless the user sized the passes or fixed the tiles
    sized = (
        any(kwargs.get(k) is not None for k in ("tile", "batch_size", "overlap"))
        or kwargs.get("blend") == "crop"
    )
    stored = StoredModel.of(payload, path)
    tiled = (
        stored.spatial_dims == 2 and stored.hparams.get("padding", "same") != "valid"
    )  # the default plan's
    if device.type == "cpu" and tiled and not sized:
        architecture = {"name": stored.arch, "hparams": stored.hparams}
        bound = choose_pass(
            architecture, choice.engine, choice.precision, lambda: open_with(choice.engine, choice.precision)
        )
        log.info("tiles: %s", bound.why())
        kwargs["pass_pixels"] = chosen["pass_pixels"] = bound.pixels
    kwargs["chosen"] = chosen
    return choice.engine


def _open_package(path: Path, kwargs: dict[str, Any]) -> Opened:
    """A bioimage.io package (see :mod:`unetkit.inference.bioimageio`): tiles of at least its minimum size,
    overlapping by at least twice its output halo, which is cropped (unetkit's own packages: blended as their
    checkpoints are)."""
    kwargs = dict(kwargs)
    if (kwargs.pop("engine", None) or "torch") not in ("torch", "auto") or kwargs.get("compile"):
        raise ConfigError("a bioimage.io package runs its own weights: drop --engine and --compile")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model, preprocessing = load_package(path)
    step = model.size_multiples[0]
    tile = max(int(kwargs.get("tile") or DEFAULT_TILE), model.min_size)
    kwargs["tile"] = -(-tile // step) * step
    if model.halo and not model.ours:  # the spec's halo: output to discard at tile edges, not to blend
        kwargs.setdefault("blend", "crop")
    from .executor import FIXED_OVERLAP

    # unetkit's own: the checkpoint's default plan (seams of two contexts, 4 pooling cells each, cover the halo
    # of at most one cell its export declares); another's: fixed tiles overlapping by twice its halo at least
    if not model.ours or kwargs.get("overlap") is not None:
        kwargs["overlap"] = max(
            float(kwargs.get("overlap") or FIXED_OVERLAP), min(0.9, 2 * model.halo / kwargs["tile"])
        )
    return model, preprocessing, kwargs
