"""unetkit speed table (``make bench``): prints one table; never a timed test.

Rows: synthetic data generation, training throughput of the demo model (with the share of step time spent
waiting for data), and tiled inference throughput. Numbers depend on the machine and its load: compare rows
of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unetkit import Predictor, create_model, synth_nuclei, synthesize_dataset
from unetkit.data.augment import Augmenter
from unetkit.data.dataset import PatchDataset, SampleStore, View
from unetkit.data.layouts import paired_folders
from unetkit.data.masks import MaskEncoding
from unetkit.data.normalize import Normalizer, normalize
from unetkit.data.synthetic import SynthParams
from unetkit.data.weights import separate_touching, weight_map
from unetkit.inference.tiling import read_window
from unetkit.losses import get_loss
from unetkit.workflows.demo import DEMO_CONFIG


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


def bench_augment(rows: list[tuple[str, str, str]]) -> None:
    """Per-sample cost of drawing one augmented 128² training patch (image, target and weight map)."""
    image, labels = synth_nuclei(256, 0)
    target = (labels > 0).astype(np.uint8)
    item = (normalize(image[None]), target, weight_map(labels, target, 2))
    configs = {
        "flips/rot90 only": Augmenter(),
        "+ elastic (3x3 grid, 10 px)": Augmenter(elastic=True),
        "+ elastic, rotation, scaling, intensity, noise, blur": Augmenter(
            elastic=True, rotate=180, scale=0.2, intensity=0.2, noise=0.05, blur=1.0
        ),
    }
    for name, aug in configs.items():
        rng = np.random.default_rng(0)
        pad = aug.context(128)

        def one(aug=aug, rng=rng, pad=pad) -> None:
            window = [(64 - pad, 192 + pad)] * 2
            aug(rng, read_window(item[0], window), [read_window(a, window) for a in item[1:]], 0, pad)

        t = timeit(one, 30)
        rows.append(
            (
                f"augment 128² patch: {name}",
                f"{t * 1e3:.1f} ms/sample",
                "x batch per step in the main process; --workers N moves it off the step",
            )
        )


def demo_model() -> torch.nn.Module:
    kw = {k: v for k, v in vars(DEMO_CONFIG.model).items() if k != "arch"}
    return create_model("unet", **{**kw, "in_channels": 1, "num_classes": 1})


def bench_train(rows: list[tuple[str, str, str]], steps: int) -> None:
    patch, batch = DEMO_CONFIG.data.patch_size, DEMO_CONFIG.train.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize_dataset(Path(tmp) / "d", n=8, size=256, seed=0)
        store = SampleStore(paired_folders(data), MaskEncoding("instances"), Normalizer(), 1)
        views = [View(i, s.name) for i, s in enumerate(store.samples)]
        ds = PatchDataset(
            store, views, [(256, 256)] * 8, patch, patch, steps * batch, seed=0, fg_fraction=0.33
        )
        loader = torch.utils.data.DataLoader(ds, batch_size=batch)
        model = demo_model().train()
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        loss_fn = get_loss("auto", 1)
        wait = compute = 0.0
        for i, (t_data, (x, y)) in enumerate(_timed(loader)):
            t0 = time.perf_counter()
            loss = loss_fn(model(x), y[:, None])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i > 0:  # first step is warm-up
                wait += t_data
                compute += time.perf_counter() - t0
    step = (wait + compute) / (steps - 1)
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
    prep = {"in_channels": 1, "normalization": Normalizer().to_dict()}
    predictor = Predictor(demo_model().eval(), prep, device="cpu", tile=512, batch_size=4)
    for size, repeat in ((512, 3), (2048, 1)):
        image = synth_nuclei(size, 0)[0]
        t = timeit(lambda im=image: predictor.predict(im), repeat)
        rows.append(
            (
                f"predict {size}x{size}, demo U-Net, tile 512, Predictor defaults",
                f"{size * size / t / 1e6:.2f} MP/s",
                f"{t:.2f} s/image",
            )
        )
    # the CPU fast path: channels-last weights and inputs, then bfloat16 autocast on top
    image = synth_nuclei(1024, 0)[0]
    times = {}
    for label, kw in (
        ("float32", {"precision": "float32"}),
        ("float32 channels-last", {"precision": "float32", "channels_last": True}),
        ("bfloat16 channels-last", {"precision": "bfloat16", "channels_last": True}),
    ):
        p = Predictor(demo_model().eval(), prep, device="cpu", tile=512, batch_size=4, **kw)
        times[label] = timeit(lambda p=p: p.predict_proba(image), 2)
    base = times["float32"]
    for label, t in times.items():
        rows.append(
            (
                f"predict 1024², demo U-Net, {label}",
                f"{1024 * 1024 / t / 1e6:.2f} MP/s",
                f"{base / t:.2f}x float32 (contiguous)",
            )
        )
    paper = create_model("unet", num_classes=2, base_channels=64, padding="valid", norm=None).eval()
    x = torch.zeros(1, 1, 572, 572)
    with torch.inference_mode():
        t = timeit(lambda: paper(x), 2)
    rows.append(
        ("paper U-Net forward 572² → 388²", f"{t:.2f} s/tile", f"{388 * 388 / t / 1e6:.3f} MP/s of output")
    )


def bench_metrics(rows: list[tuple[str, str, str]]) -> None:
    from unetkit.metrics import match_instances

    true = synth_nuclei(2048, 2)[1]
    pred = np.roll(true, 2, axis=1)  # every object shifted: all pairs overlap partially
    n = len(np.unique(true)) - 1

    def score() -> None:
        s = match_instances(true, pred)
        s.f1(0.5), s.mean_ap(), s.pq(), s.aji(), s.f1(0.3)

    t = timeit(score, 3)
    rows.append(
        (
            f"instance metrics 2048², {n} vs {n} objects",
            f"{t * 1e3:.0f} ms/image",
            "F1@0.5, DSB score (10 thresholds), PQ, AJI, F1@0.3; target: well under 1 s",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12, help="training steps to time")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows: list[tuple[str, str, str]] = []
    bench_synth(rows)
    bench_weights(rows)
    bench_augment(rows)
    bench_train(rows, args.steps)
    bench_predict(rows)
    bench_metrics(rows)
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
