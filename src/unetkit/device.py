"""Device selection and mixed precision, in one place."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import ConfigError

__all__ = [
    "autocast",
    "compile_cache_dir",
    "compile_model",
    "cpu_summary",
    "process_started",
    "resolve_device",
    "tune_allocator",
]


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else Apple MPS, else the CPU. Explicit names are checked."""
    if isinstance(name, torch.device):
        return name
    name = name or "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX), where bfloat16 convolutions run about
    twice as fast as float32; elsewhere bfloat16 is emulated and slower."""
    return bool(
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )


def amp_dtype(device: torch.device, cpu: bool = False) -> torch.dtype | None:
    """The autocast dtype used on ``device`` (``None``: full float32): bfloat16 where CUDA supports it, else
    float16; with ``cpu``, bfloat16 on CPUs with native bfloat16 (training's mixed precision)."""
    if device.type == "cpu" and cpu and cpu_has_native_bf16():
        return torch.bfloat16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True, cpu: bool = False) -> Iterator[None]:
    """Mixed precision on CUDA (and, with ``cpu``, bfloat16 on CPUs with native bfloat16); a no-op elsewhere."""
    dtype = amp_dtype(device, cpu)
    if enabled and dtype is not None:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
    else:
        yield


# read at import, before torch's first compilation writes its own default (under /tmp) into the environment
_USER_CACHE_DIR = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def compile_cache_dir() -> Path:
    """Where compiled kernels are kept between runs: ``$TORCHINDUCTOR_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/unetkit/inductor`` (``~/.cache/unetkit/inductor``), not torch's default under ``/tmp``,
    which a reboot empties."""
    if _USER_CACHE_DIR:
        return Path(_USER_CACHE_DIR)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "unetkit" / "inductor"


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` with a persistent kernel cache (see :func:`compile_cache_dir`).

    The first compilation of a model and input shape takes tens of seconds on a CPU; later processes load the
    cached kernels in a few. Shapes are static (tiles and patches have one size; a smaller last batch gets its
    own kernels, compiled once and cached like the rest)."""
    cache = compile_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    compiled: torch.nn.Module = torch.compile(model, dynamic=False)  # type: ignore[assignment]
    return compiled


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`tune_allocator` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks above it are mapped, and unmapped when freed
TRIM_THRESHOLD = 2**31 - 1


def tune_allocator() -> bool:
    """Keep freed memory in the process for the next tensor instead of returning it to the kernel (glibc only;
    the CLI calls this once; ``UNETKIT_MALLOC=system`` leaves glibc's defaults). Returns whether it applied.

    glibc's defaults hand every freed block above a few MiB back to the kernel (unmapped, or trimmed off the
    heap's top), so each training step or tile batch maps its activations afresh and the kernel zeroes every page
    again on first touch: on the 2-core reference machine 4 million page faults per 2048² prediction, a third of
    its time. With blocks up to 32 MiB served from the heap and the heap not trimmed, that work goes (2048²
    prediction 1.4x, a 256² training step 1.2x faster); blocks above 32 MiB (whole images, accumulators) are
    still mapped and returned, so peak memory stays within a few per cent on large images (``make bench-peers``
    measures both)."""
    if os.environ.get("UNETKIT_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another C library
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def process_started() -> float:
    """When this process started, as a ``time.perf_counter()`` reading: a command's time budget counts its
    start-up (Python and torch imports) too. Linux reads it from ``/proc``; elsewhere, or if that fails, now."""
    now = time.perf_counter()
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(
            stat[stat.rindex(")") + 2 :].split()[19]
        )  # field 22, starttime, in clock ticks after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - age if age >= 0 else now


def cpu_summary() -> str:
    """This machine's CPU in one line, for benches and reports: model, threads torch uses, and the instruction
    sets that decide CPU speed here (AVX2, AVX-512, AVX512-BF16, AMX) with whether bfloat16 is native."""
    import platform

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # the first processor's entries
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux: the model from platform, no flags
        pass
    model = info.get("model name") or platform.processor() or "unknown CPU"
    flags = set(info.get("flags", "").split())
    sets = {"AVX2": "avx2", "AVX-512": "avx512f", "AVX512-BF16": "avx512_bf16", "AMX": "amx_tile"}
    have = [name for name, flag in sets.items() if flag in flags] if flags else ["flags unknown"]
    return (
        f"{model}; {torch.get_num_threads()} threads; {', '.join(have) or 'no AVX2'}; native bfloat16: "
        f"{'yes' if cpu_has_native_bf16() else 'no'}"
    )
