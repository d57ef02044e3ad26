"""Data-parallel training on torch.distributed: one process per device (or per CPU share), gradients all-reduced
by ``DistributedDataParallel``.

A run is distributed when ``WORLD_SIZE`` > 1 in the environment, as ``torchrun`` sets it (single- or multi-node,
with torchrun's usual rendezvous flags), or when :func:`spawn` starts the processes itself
(``unetkit train --nproc N``, ``train(..., nproc=N)``). The backend is NCCL on CUDA devices and gloo on CPUs.

The global batch (``train.batch_size``) is split evenly between the ranks, and each global batch holds exactly
the patches of the same step of a single-process run (patches are a pure function of seed, epoch and index, drawn
afresh every epoch), so with batch-independent normalisation and a per-pixel loss a distributed run follows the
single-process one to float rounding.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import ConfigError, UnetkitError

__all__ = ["DistContext", "init_distributed", "spawn"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: ``rank`` of ``world`` processes (``world`` 1: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs, TensorBoard events and curves."""
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.cpu().tolist()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self, finished: bool = False) -> None:
        """Leave the process group. ``finished``: every rank got here the same way (the run ended normally), so
        they first wait for each other and none tears its connections down under a rank still communicating."""
        if self.enabled and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group described by the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``), if any. Returns the context and this rank's device (``cuda:LOCAL_RANK``
    on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {rank}: LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s); start at "
                "most one process per GPU (--nproc / --nproc-per-node)"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"distributed training runs on CUDA or CPU devices, not {device.type}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    if device.type == "cpu":  # share the cores of this machine between its ranks
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if rank != 0:  # one voice: the others log warnings and errors only
        logging.getLogger("unetkit").setLevel(logging.WARNING)
    return DistContext(rank, world, local), device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, results: Any) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    try:
        out = fn(*args)
    except UnetkitError as exc:  # a clean message for the parent; the others are stopped by the spawner
        results.put((rank, exc))
        raise SystemExit(2) from None
    results.put((rank, out if rank == 0 else None))
    # The work is done and written (files closed, process group left). Skip the interpreter's finalisation:
    # there, C++ threads of the communication backend can abort the process (seen once in CI: "terminate called
    # without an active exception", SIGABRT) and turn a finished run into a failed command.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _drain(results: Any, got: dict[int, Any]) -> None:
    while not results.empty():
        rank, out = results.get()
        got[rank] = out


def spawn(nproc: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in ``nproc`` fresh processes on this machine (``torch.multiprocessing.spawn``) that
    form one process group; returns rank 0's result."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    got: dict[int, Any] = {}
    context = mp.start_processes(
        _worker,
        args=(nproc, _free_port(), fn, args, results),
        nprocs=nproc,
        join=False,
        start_method="spawn",
    )
    try:
        # read the results while waiting: a result larger than the pipe's buffer (a long run's history) would
        # otherwise keep its process from exiting, and the join from returning
        while not context.join(timeout=0.2):
            _drain(results, got)
    except ProcessException as exc:
        _drain(results, got)
        for out in got.values():
            if isinstance(out, BaseException):
                raise out from None
        raise UnetkitError(f"distributed training failed in process {exc.error_index}: {exc}") from None
    _drain(results, got)
    if 0 not in got:
        raise UnetkitError("distributed training ended without a result from process 0")
    return got[0]
