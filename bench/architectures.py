"""The U-Net family side by side (``make bench-arch``): prints one table; never a timed test.

One row per registered architecture at the same width and depth (base 16, depth 4, batch norm): parameters,
forward GFLOPs for one 256x256 image and one 64³ volume (counted by ``torch.utils.flop_counter``, a
multiply-add = 2 FLOPs), CPU inference time for each, and the validation Dice after the same short training
budget on the built-in synthetic nuclei (same data, seed, steps and patch size for every architecture).

A second table gives the peak training memory of one step (forward + backward + Adam, float32, batch 8 of
256², each measured in a fresh process: its peak resident memory above what it held before the step) for the
plain U-Net and for dense-unet with and without gradient checkpointing (``memory_efficient``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from unetkit import RunConfig, synthesize_dataset, train
from unetkit.models import create_model, list_models


def gflops(net: torch.nn.Module, shape: tuple[int, ...]) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(shape))
    return counter.get_total_flops() / 1e9


def seconds(net: torch.nn.Module, shape: tuple[int, ...], repeat: int = 3) -> float:
    x = torch.randn(shape)
    with torch.inference_mode():
        net(x)
        t0 = time.perf_counter()
        for _ in range(repeat):
            net(x)
    return (time.perf_counter() - t0) / repeat


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _training_step_memory(name: str, kw: dict, batch: int, size: int) -> tuple[float, float]:
    """In a fresh process: (peak MiB above the resident memory before the first step, seconds per step)."""
    torch.manual_seed(0)
    net = create_model(name, num_classes=1, **kw).train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = torch.randn(batch, 1, size, size), (torch.rand(batch, 1, size, size) > 0.5).float()
    before = _rss_mib()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return peak - before, min(times[1:])


def training_memory(name: str, kw: dict, batch: int = 8, size: int = 256) -> tuple[float, float]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_training_step_memory, (name, kw, batch, size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25, help="steps per epoch")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize_dataset(Path(tmp) / "data", n=24, size=192, seed=0)
        for name in list_models():
            kw = {"base_channels": args.base_channels, "depth": args.depth, "norm": "batch"}
            net2, net3 = (create_model(name, spatial_dims=d, **kw).eval() for d in (2, 3))
            params = sum(p.numel() for p in net2.parameters())
            g2, g3 = gflops(net2, (1, 1, 256, 256)), gflops(net3, (1, 1, 64, 64, 64))
            t2, t3 = seconds(net2, (1, 1, 256, 256)), seconds(net3, (1, 1, 64, 64, 64), repeat=2)
            cfg = RunConfig()
            cfg.model.arch = name
            cfg.model.base_channels, cfg.model.depth = args.base_channels, args.depth
            cfg.data.patch_size = 128
            cfg.train.epochs, cfg.train.steps_per_epoch, cfg.train.batch_size = args.epochs, args.steps, 8
            t0 = time.perf_counter()
            run = train(data, Path(tmp) / name, cfg, progress=False)
            fit = time.perf_counter() - t0
            rows.append(
                (
                    name,
                    f"{params:,}",
                    f"{g2:.2f}",
                    f"{g3:.2f}",
                    f"{t2 * 1e3:.0f}",
                    f"{t3 * 1e3:.0f}",
                    f"{run.best_score:.4f}",
                    f"{fit:.0f}",
                )
            )
            print(f"{name}: done", file=sys.stderr)
    print(
        f"architectures: base {args.base_channels}, depth {args.depth}, batch norm; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; training {args.epochs} x {args.steps} steps "
        "of 8 x 128² on 24 synthetic 192² images"
    )
    head = (
        "architecture",
        "params",
        "GFLOPs 256²",
        "GFLOPs 64³",
        "CPU ms 256²",
        "CPU ms 64³",
        "val Dice",
        "train s",
    )
    table(head, rows)
    kw = {"base_channels": args.base_channels, "depth": args.depth, "norm": "batch"}
    memory = []
    for name, extra, label in (
        ("unet", {}, "unet"),
        ("dense-unet", {}, "dense-unet"),
        ("dense-unet", {"memory_efficient": True}, "dense-unet, memory_efficient"),
    ):
        peak, step = training_memory(name, {**kw, **extra})
        memory.append((label, f"{peak:.0f}", f"{step:.2f}"))
    print("\ntraining step, float32, batch 8 x 256², one process each")
    table(("network", "peak MiB above start", "s per step"), memory)


def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    w = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, tuple("-" * n for n in w), *rows]:
        print("| " + " | ".join(f"{c!s:<{n}}" for c, n in zip(r, w, strict=True)) + " |")


if __name__ == "__main__":
    main()
