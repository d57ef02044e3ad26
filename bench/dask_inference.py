"""Distributed tiled inference with Dask (``make bench-dask``): prints one table; never a timed test.

A ``--size`` x ``--size`` synthetic nuclei image stored as zarr goes through ``predict_files(..., dask=...)`` on a
``LocalCluster`` of 1 worker (all cores) and of 2 workers (the cores shared), and through the single-process
predictor for reference: wall time, peak RSS of each worker process, and speed-up. Then a paper estimate for a
100,000 x 100,000 image on a 16-node cluster, from the measured cost per tile.

The model is the demo-sized U-Net (base 16, depth 4), trained for about a minute here so that the instance stage
sees realistic objects. Needs the ``[dask]`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def train_small(work: Path) -> Path:
    from unetkit import RunConfig, synthesize_dataset, train

    cfg = RunConfig()
    cfg.model.base_channels, cfg.model.depth = 16, 4
    cfg.data.patch_size = 128
    cfg.train.epochs, cfg.train.steps_per_epoch, cfg.train.batch_size = 3, 15, 8
    data = synthesize_dataset(work / "data", n=12, size=256, seed=0)
    return train(data, work / "run", cfg, progress=False).best_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096, help="side of the image (default: 4096)")
    parser.add_argument("--chunk", type=int, default=1024, help="pixels per chunk side (default: 1024)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--nodes", type=int, default=16, help="cluster size of the estimate")
    args = parser.parse_args()
    import zarr

    from unetkit import Predictor, predict_files, synth_nuclei
    from unetkit.inference.distributed import DaskRun, model_spec, predict_chunks

    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        ckpt = train_small(work)
        print(f"trained the small U-Net in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        src = work / "image.zarr"
        image = synth_nuclei(args.size, 0)[0]
        zarr.create_array(str(src), data=image, chunks=(1024, 1024))
        settings = {"tile": args.tile, "device": "cpu"}
        predictor = Predictor.from_checkpoint(ckpt, **settings)
        n_tiles = len(predictor.plan((args.size, args.size)))
        mp = args.size**2 / 1e6

        t0 = time.perf_counter()
        ref = predict_files(
            ckpt, [src], work / "single", format="zarr", instances=True, progress=False, **settings
        )
        single = time.perf_counter() - t0
        rows.append(
            ("single process (no Dask)", 1, cores, f"{single:.1f} s", f"{mp / single:.2f}", "", "1.00")
        )
        times = {}
        for workers in (1, 2):
            threads = max(1, cores // workers)
            with DaskRun(workers=workers) as run:  # the runner predict_files uses: a LocalCluster
                spec = model_spec(ckpt, threads, settings)
                out = work / f"dask{workers}"
                t0 = time.perf_counter()
                objects = predict_chunks(
                    run,
                    spec,
                    predictor,
                    src,
                    out / "result.zarr",
                    out,
                    chunk=args.chunk,
                    probs_dtype=None,
                    instances=True,
                    object_context=128,
                    progress=False,
                )
                wall = time.perf_counter() - t0
                rss = run.client.run(peak_rss_mib)
            times[workers] = wall
            same = np.array_equal(
                zarr.open_group(str(out / "result.zarr"))["mask"][:],
                zarr.open_group(str(ref[0].mask))["mask"][:],
            )
            rows.append(
                (
                    f"Dask LocalCluster, chunk {args.chunk}",
                    workers,
                    threads,
                    f"{wall:.1f} s",
                    f"{mp / wall:.2f}",
                    ", ".join(f"{v:.0f}" for v in rss.values())
                    + f" MiB; mask == single: {same}; {objects} objects",
                    f"{single / wall:.2f}",
                )
            )

    # the estimate: the measured cost per tile on this machine, 100,000² on `nodes` machines like it
    per_tile = times[2] / n_tiles  # seconds per tile per machine (whole pipeline, instances included)
    big = 100_000
    big_tiles = len(predictor.plan((big, big)))
    hours = big_tiles * per_tile / args.nodes / 3600
    print(
        f"Dask bench: {args.size}² image ({n_tiles} tiles of {args.tile}), {cores} CPUs, torch threads per worker = "
        "cores / workers"
    )
    head = ("what", "workers", "threads each", "time", "MP/s", "peak RSS per worker", "vs single")
    table = [head, tuple("-" * 8 for _ in head), *rows]
    for r in table:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print(
        f"\nEstimate: {big:,} x {big:,} pixels = {big_tiles:,} tiles; at the measured {per_tile * 1e3:.0f} ms per tile "
        f"per {cores}-core machine (2 workers, instances included), {args.nodes} such machines take about "
        f"{hours:.1f} h ({hours * args.nodes:.0f} machine-hours), assuming chunk tasks scale linearly across nodes "
        "(they share nothing but the storage) and the storage keeps up (about "
        f"{big_tiles / (hours * 3600) * args.tile**2 / 1e6:.1f} MP/s of reads in all)."
    )


if __name__ == "__main__":
    main()
