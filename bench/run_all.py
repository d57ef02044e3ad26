"""unetkit speed table (``make bench``): prints one table; never a timed test.

Rows: synthetic data generation, training throughput of the demo model (with the share of step time spent
waiting for data), and tiled inference throughput. Numbers depend on the machine and its load: compare rows
of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from unetkit import Predictor, create_model, synth_nuclei
from unetkit.data.dataset import LoadedImage, PatchDataset
from unetkit.data.normalize import normalize
from unetkit.data.synthetic import SynthParams
from unetkit.data.weights import separate_touching, weight_map
from unetkit.demo import DEMO_CONFIG
from unetkit.losses import get_loss


def timeit(fn, repeat: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def bench_synth(rows: list[tuple[str, str, str]]) -> None:
    for shape, repeat in (((256, 256), 30), ((1024, 1024), 5)):
        seeds = iter(range(10_000))
        t = timeit(lambda s=shape, it=seeds: synth_nuclei(s, next(it)), repeat)
        rows.append(
            (
                f"synth_nuclei {shape[0]}x{shape[1]}",
                f"{t * 1e3:.1f} ms/image",
                "target: well under 50 ms at 256²",
            )
        )


def bench_weights(rows: list[tuple[str, str, str]]) -> None:
    labels = synth_nuclei(1024, 1, SynthParams(nuclei_per_mpx=400, clusters_per_mpx=30))[1]
    labels = separate_touching(labels, 2)
    target = (labels > 0).astype(np.uint8)
    t = timeit(lambda: weight_map(labels, target, 2), 3)
    n = len(np.unique(labels)) - 1
    rows.append(
        (f"paper weight map 1024x1024, {n} nuclei", f"{t * 1e3:.0f} ms/image", "target: well under 1 s")
    )


def demo_model() -> torch.nn.Module:
    kw = {k: v for k, v in vars(DEMO_CONFIG.model).items() if k != "name"}
    return create_model("unet", **{**kw, "in_channels": 1})


def bench_train(rows: list[tuple[str, str, str]], steps: int) -> None:
    patch, batch = DEMO_CONFIG.data.patch_size, DEMO_CONFIG.train.batch_size
    items = []
    for s in range(8):
        image, labels = synth_nuclei(256, s)
        items.append(LoadedImage(str(s), normalize(image[None]), (labels > 0).astype(np.uint8)))
    ds = PatchDataset(items, patch, patch, steps * batch, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch)
    model = demo_model().train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = get_loss("auto", 1)
    wait = compute = 0.0
    for i, (x, y) in enumerate(_timed(loader)):
        t_data, (x, y) = x, y
        t0 = time.perf_counter()
        loss = loss_fn(model(x), y[:, None].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i > 0:  # first step is warm-up
            wait += t_data
            compute += time.perf_counter() - t0
    n = steps - 1
    step = (wait + compute) / n
    rows.append(
        (
            f"train step, demo U-Net, batch {batch} x {patch}²",
            f"{step * 1e3:.0f} ms/step",
            f"{batch / step:.1f} patches/s; {wait / (wait + compute):.1%} of step time waiting for data",
        )
    )


def _timed(loader):
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        yield time.perf_counter() - t0, batch


def bench_predict(rows: list[tuple[str, str, str]]) -> None:
    prep = {"in_channels": 1, "normalization": "percentile", "norm_low": 1.0, "norm_high": 99.8}
    predictor = Predictor(demo_model().eval(), prep, device="cpu", tile=512, batch_size=4)
    for size, repeat in ((512, 3), (2048, 1)):
        image = synth_nuclei(size, 0)[0]
        t = timeit(lambda im=image: predictor.predict(im), repeat)
        rows.append(
            (
                f"predict {size}x{size}, demo U-Net, tile 512",
                f"{size * size / t / 1e6:.2f} MP/s",
                f"{t:.2f} s/image",
            )
        )
    paper = create_model("unet", num_classes=2, base_channels=64, padding="valid", norm=None).eval()
    x = torch.zeros(1, 1, 572, 572)
    with torch.inference_mode():
        t = timeit(lambda: paper(x), 2)
    rows.append(
        ("paper U-Net forward 572² → 388²", f"{t:.2f} s/tile", f"{388 * 388 / t / 1e6:.3f} MP/s of output")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12, help="training steps to time")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows: list[tuple[str, str, str]] = []
    bench_synth(rows)
    bench_weights(rows)
    bench_train(rows, args.steps)
    bench_predict(rows)
    print(
        f"unetkit bench: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"| {'what':<{w[0]}} | {'result':<{w[1]}} | {'notes':<{w[2]}} |")
    print(f"|{'-' * (w[0] + 2)}|{'-' * (w[1] + 2)}|{'-' * (w[2] + 2)}|")
    for r in rows:
        print(f"| {r[0]:<{w[0]}} | {r[1]:<{w[1]}} | {r[2]:<{w[2]}} |")


if __name__ == "__main__":
    main()
