"""``--engine auto``: the fastest engine for a model on this CPU, chosen by measurement and remembered.

Which engine runs a U-Net fastest depends on the CPU: where bfloat16 is native (AVX512-BF16, AMX), PyTorch in
bfloat16 ran the built-in model 2.1x faster than ONNX Runtime; on an AVX2-only CPU ONNX Runtime ran it 1.5x
faster than PyTorch in float32. Guessing from flags gets such cases wrong, so on a model's first use on a CPU
each available engine runs a few tiles of the size and batch prediction will use (PyTorch in float32, in
bfloat16 where it is native, ONNX Runtime with the ``[onnx]`` extra, OpenVINO in float32 and native bfloat16 with
the ``[openvino]`` extra), the fastest whose classes agree with
PyTorch float32 on at least :data:`AGREEMENT` of the pixels wins, and the choice is kept in
``CACHE/engines.json`` (``CACHE``: ``$UNETKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/unetkit``, else
``~/.cache/unetkit``) per model file (sha256), CPU, library versions, tile and batch. The ONNX file exported
for the measurement is kept there too (``CACHE/onnx/SHA.onnx``), so choosing ONNX Runtime costs its export
once. GPUs run PyTorch (cuDNN with mixed precision), without a measurement.

The first use of a network shape (architecture and its arguments, whatever the weights) also sizes the tiles (:func:`choose_pass`): the chosen engine runs one tile of each side in
:data:`PASS_SIDES`, and the side that segments a large image fastest, its rate times the share of a tile left
beside the seams, bounds the pixels of one forward pass of the default plan (on one CPU the rate may hold up to
several megapixels a pass, on another fall after a quarter of one: larger tiles mean fewer seams, computed twice).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..pretrained import file_sha256
from ..version import __version__

__all__ = [
    "AGREEMENT",
    "PASS_SIDES",
    "Choice",
    "PassBound",
    "cache_dir",
    "cached_onnx",
    "choose_engine",
    "choose_pass",
]

log = logging.getLogger(__name__)

#: the share of pixels whose class must equal PyTorch float32's for an engine to be chosen
AGREEMENT = 0.995
#: forward passes timed per engine (the fastest counts), after one warm-up
REPEATS = 3
#: tile sides timed for the pass bound, one tile a pass
PASS_SIDES = (384, 512, 768, 1024, 1280, 1536, 2048)


@dataclass
class Choice:
    """The engine and precision to run, and what was measured (tiles per second per candidate)."""

    engine: str
    precision: str
    rates: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    def why(self) -> str:
        """The choice in words, for the log."""
        if not self.rates:
            return f"{self.engine} ({self.precision}): a GPU"
        measured = ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.rates.items(), key=lambda kv: -kv[1]))
        how = "measured before on this CPU" if self.cached else "measured now on this CPU"
        return f"{self.engine} ({self.precision}), the fastest: tiles/s {measured} ({how}; cached in {cache_dir()})"


def cache_dir() -> Path:
    """Where measurements and exported models are kept (see the module docstring)."""
    if os.environ.get("UNETKIT_CACHE_DIR"):
        return Path(os.environ["UNETKIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unetkit"


def cached_onnx(path: Path) -> Path:
    """Where the ONNX export of checkpoint ``path`` is kept (it may not exist yet)."""
    return cache_dir() / "onnx" / f"{file_sha256(path)}.onnx"


def _key(model: str, *what: str) -> str:
    import torch

    from ..device import cpu_summary

    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = "none"
    try:
        import openvino

        ov_version = openvino.__version__
    except ImportError:
        ov_version = "none"
    return "|".join(
        [
            model,
            cpu_summary(),
            f"torch {torch.__version__}",
            f"ort {ort_version}",
            f"openvino {ov_version}",
            f"unetkit {__version__}",
            *what,
        ]
    )


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / "engines.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or damaged: measured again
    return data if isinstance(data, dict) else {}


def _have(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def _candidates(precision: str | None = None) -> list[tuple[str, str]]:
    from ..device import cpu_has_native_bf16

    bf16 = precision == "bfloat16" or cpu_has_native_bf16()  # asked for, or native
    found = [("torch", "float32"), *([("torch", "bfloat16")] if bf16 else [])]
    if _have("onnx", "onnxscript", "onnxruntime"):  # the export, and its runtimes
        found.append(("onnxruntime", "float32"))
    if _have("onnx", "onnxscript", "openvino"):
        found += [("openvino", "float32"), *([("openvino", "bfloat16")] if bf16 else [])]
    return [c for c in found if precision is None or c[1] == precision]


def choose_engine(
    path: Path, open_with: Any, tile: int, batch: int, device: Any, precision: str | None = None
) -> Choice:
    """The engine for checkpoint ``path`` (see the module docstring). ``open_with(engine, precision)`` opens the
    model as prediction will and returns its :class:`~.executor.TileExecutor`; ``tile`` and ``batch`` are
    prediction's; ``precision``: only engines computing in it (the user chose one)."""
    if device.type != "cpu":
        return Choice("torch", "auto")
    key = _key(file_sha256(path), f"tile {tile}", f"batch {batch}") + (
        f"|precision {precision}" if precision else ""
    )
    cache = _read_cache()
    entry = cache.get(key)
    if isinstance(entry, dict) and (
        f"{entry.get('engine')} {entry.get('precision')}" in _names(_candidates(precision))
    ):
        kept = _rates(entry.get("rates"))
        if kept is not None:
            return Choice(str(entry["engine"]), str(entry["precision"]), kept, cached=True)
    rates, outputs = {}, {}
    candidates = _candidates(precision)
    log.info(
        "engine auto: first use of this model on this CPU: timing %s on %d tiles of %d px (seconds; the ONNX "
        "export is kept for later runs) ...", ", ".join(f"{e} {p}" for e, p in candidates), batch, tile,
    )  # fmt: skip
    for engine, computes in candidates:
        executor = open_with(engine, computes)
        x = _tiles(executor, tile, batch)
        executor.forward(x)  # warm-up: first-call allocations, kernel choice
        best = np.inf
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            probs = executor.forward(x)
            best = min(best, time.perf_counter() - t0)
        name = f"{engine} {computes}"
        rates[name] = batch / best
        outputs[name] = probs
    reference = outputs.get("torch float32", next(iter(outputs.values())))
    agree = {k: _agreement(v, reference) for k, v in outputs.items()}
    usable = [k for k in rates if agree[k] >= AGREEMENT]
    for k in rates:
        if k not in usable:
            log.info(
                "engine auto: %s left out: its classes agree with torch float32 on %.2f%% of pixels",
                k,
                100 * agree[k],
            )
    engine, precision = max(usable, key=lambda k: rates[k]).split(" ")
    cache[key] = {"engine": engine, "precision": precision, "rates": rates, "agreement": agree,
                  "measured": time.strftime("%Y-%m-%d")}  # fmt: skip
    _write_cache(cache)
    return Choice(engine, precision, rates)


def _write_cache(cache: dict[str, Any]) -> None:
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_dir() / "engines.json", json.dumps(cache, indent=1))
    except OSError as exc:  # a read-only home: measured again next time
        log.info("engine auto: the measurement is not kept (%s)", exc)


@dataclass
class PassBound:
    """The tile side whose pass segments a large image fastest, and what was measured: megapixels per second
    of one tile a pass, by side (sides as text, as JSON keeps them)."""

    side: int
    rates: dict[str, float]
    context: int
    cached: bool = False

    @property
    def pixels(self) -> int:
        """The bound of one forward pass's pixels."""
        return self.side**2

    def why(self) -> str:
        """The choice in words, for the log."""
        measured = ", ".join(f"{k}² {v:.2f}" for k, v in self.rates.items())
        how = "measured before on this CPU" if self.cached else "measured now on this CPU"
        return (
            f"up to {self.side}² px a pass, the fastest on large images with seams of {2 * self.context} px: "
            f"MP/s by tile {measured} ({how})"
        )


def large_image_rate(side: int, rate: float, context: int) -> float:
    """Megapixels of a large image segmented per second with tiles of ``side`` computed at ``rate``: each
    tile's share beside the seams (``2 * context`` pixels shared with each neighbour) is new."""
    return rate * max(0, side - 2 * context) ** 2 / side**2


def choose_pass(architecture: dict[str, Any], engine: str, precision: str, open_executor: Any) -> PassBound:
    """The pass bound of a network (``architecture``: its name and constructor arguments, as a checkpoint
    records them) run by ``engine`` in ``precision`` on this CPU (see the module docstring), measured on first
    use and kept beside the engine choice: per architecture, not per file, since speed does not depend on the
    weights (a user's tenth fine-tuned model of the same shape is not measured again). ``open_executor()`` opens
    the model as prediction will (its :class:`~.executor.TileExecutor`); sides whose working memory (the
    network's first level, ``base_channels`` wide) would exceed an eighth of the memory available now are not
    tried."""
    import hashlib

    from ..memory import available_memory

    shape = hashlib.sha256(json.dumps(architecture, sort_keys=True, default=str).encode()).hexdigest()
    width = int((architecture.get("hparams") or {}).get("base_channels") or 64)
    key = _key(f"architecture {shape}", f"pass {engine} {precision}")
    cache = _read_cache()
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("side") in PASS_SIDES and isinstance(entry.get("context"), int):
        kept = _rates(entry.get("rates"))
        if kept is not None and str(entry["side"]) in kept:
            return PassBound(int(entry["side"]), kept, int(entry["context"]), cached=True)
    executor = open_executor()
    # a pass's peak memory, measured with the built-in model: about 6 float32 maps of the first level's width
    room = available_memory() / 8
    sides = [s for s in PASS_SIDES if s % executor.align == 0 and 8 * 4 * width * s * s < room]
    log.info(
        "tiles: first use of this network shape on this CPU: timing one tile a pass of %s px with %s %s (seconds) ...",
        ", ".join(map(str, sides)), engine, precision,
    )  # fmt: skip
    rates: dict[str, float] = {}
    for side in sides:
        x = np.resize(_tiles(executor, 256, 1), (1, executor.in_channels, side, side))  # content: any
        executor.forward(x)  # warm-up: this shape's first allocations and kernel choice
        best = min(_timed(executor.forward, x) for _ in range(REPEATS - 1))
        rates[str(side)] = side * side / best / 1e6
    context = int(executor.context)
    side = max(sides, key=lambda s: large_image_rate(s, rates[str(s)], context))
    cache[key] = {"side": side, "rates": rates, "context": context, "measured": time.strftime("%Y-%m-%d")}
    _write_cache(cache)
    return PassBound(side, rates, context)


def _timed(run: Any, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    run(x)
    return time.perf_counter() - t0


def _names(candidates: list[tuple[str, str]]) -> set[str]:
    return {f"{engine} {precision}" for engine, precision in candidates}


def _rates(found: Any) -> dict[str, float] | None:
    """A cached entry's rates, or None when they are not what a measurement writes (damaged or edited: the
    measurement is made again)."""
    if not isinstance(found, dict) or not found:
        return None
    if not all(isinstance(k, str) and isinstance(v, (int, float)) and v > 0 for k, v in found.items()):
        return None
    return {k: float(v) for k, v in found.items()}


def _tiles(executor: Any, tile: int, batch: int) -> np.ndarray:
    """A batch of normalised tiles like a nuclei image's: blobs on a dark background with noise (a model's
    speed does not depend on content; the agreement check needs objects to classify)."""
    from ..data.synthetic import synth_nuclei

    image = synth_nuclei(tile, seed=7)[0].astype(np.float32)
    image = (image - image.mean()) / (image.std() + 1e-6)
    rng = np.random.default_rng(7)
    tiles = [
        np.roll(image, (int(rng.integers(tile)), int(rng.integers(tile))), axis=(0, 1)) for _ in range(batch)
    ]
    return np.repeat(np.stack(tiles)[:, None], executor.in_channels, axis=1).astype(np.float32)


def _agreement(probs: np.ndarray, reference: np.ndarray) -> float:
    """The share of pixels where two probability maps give the same class (threshold 0.5 for one channel)."""
    if probs.shape[1] == 1:
        return float(((probs >= 0.5) == (reference >= 0.5)).mean())
    return float((probs.argmax(1) == reference.argmax(1)).mean())
