"""Measurement on the target device: a trial forward/backward pass that sets the batch fitting in memory,
and the process memory figures it reads."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelConfig

log = logging.getLogger(__name__)


def fit_batch(
    model_cfg: ModelConfig, in_ch: int, classes: int, shape: tuple[int, ...], want: int, device: Any
) -> tuple[int, str]:
    """The largest batch up to ``want`` whose training step fits the device's memory, by trial steps."""
    import torch

    from ..losses import get_loss
    from ..models import create_model

    kw = model_cfg.kwargs()
    kw.update(in_channels=in_ch, num_classes=classes, norm="batch")
    net = create_model(model_cfg.arch, **kw).to(device)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = get_loss("auto", classes)
    cuda = device.type == "cuda"
    total: float
    if cuda:
        total = torch.cuda.get_device_properties(device).total_memory
        allowed = 0.8 * total
    else:
        total = _mem_available()
        allowed = 0.5 * total
    batch = want
    while True:
        try:
            seconds, peak = _trial(net, opt, loss_fn, in_ch, classes, shape, batch, device)
        except torch.OutOfMemoryError:
            peak, seconds = float("inf"), float("nan")
            torch.cuda.empty_cache()
        if peak <= allowed or batch <= 1:
            break
        batch //= 2
    where = "GPU memory" if cuda else "available RAM"
    size = "x".join(map(str, shape))
    return batch, (
        f"a trial step of {batch} x {size} used {peak / 2**20:.0f} MiB, within {allowed / 2**30:.1f} GiB "
        f"({'80' if cuda else '50'}% of {where}); {seconds:.2f} s per step, model only"
    )


class PeakMemory:
    """The peak memory of what runs after it is made: the device's allocations on CUDA, the process's resident
    set elsewhere (Linux; 0 where unknown)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.cuda = device.type == "cuda"
        self.device = device
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            self.base = float(torch.cuda.memory_allocated(device))
        else:
            self.base = _reset_peak_rss()

    def bytes(self) -> float:
        import torch

        peak = torch.cuda.max_memory_allocated(self.device) if self.cuda else _peak_rss()
        return float(max(peak - self.base, 0))


def _trial(net, opt, loss_fn, in_ch, classes, shape, batch, device) -> tuple[float, float]:
    import torch

    x = torch.randn(batch, in_ch, *shape, device=device)
    y = (
        (torch.rand(batch, 1, *shape, device=device) > 0.5).float()
        if classes == 1
        else torch.randint(0, classes, (batch, *shape), device=device)
    )
    cuda = device.type == "cuda"
    memory = PeakMemory(device)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x).float(), y, None)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:])), memory.bytes()


def _proc_kib(path: str, field: str) -> float | None:
    """A ``field:  N kB`` line of a Linux ``/proc`` file, in bytes (None elsewhere)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return None


def _mem_available() -> float:
    free = _proc_kib("/proc/meminfo", "MemAvailable")
    return free if free is not None else 8 * 2.0**30  # unknown: assume a small machine


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark of this process (Linux) and return the current RSS in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return 0.0
    return _proc_kib("/proc/self/status", "VmRSS") or 0.0


def _peak_rss() -> float:
    return _proc_kib("/proc/self/status", "VmHWM") or 0.0
