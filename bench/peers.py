"""unetkit against its peers on this machine (``make bench-peers``): prints one table; never a timed test.

Engines are timed in alternation and the median is reported (this machine is shared and noisy). Same
architecture size (a 4-level U-Net, 16 → 256 channels, batch norm, ReLU), input, batch and threads:

- unetkit ``UNet`` through ``Predictor`` as ``Predictor.from_checkpoint`` sets it up (batch norms folded into the
  convolutions, channels-last), in float32 and on the CPU fast path (bfloat16 where the CPU has native bfloat16),
  each eager and ``torch.compile``d, vs MONAI's ``BasicUNet`` (features (16, 32, 64, 128, 256, 16): the same
  two-convolution levels) called as its documentation shows (float32 ``sliding_window_inference``): megapixels/s
  at 256² and 1024², and time and peak RSS at 4096² (each engine in a fresh process);
- accuracy of the fast paths: a small U-Net trained here for about a minute, Dice on held-out synthetic images in
  float32 and on each fast path (the target: within 0.005 of float32);
- training images/s (batch 8 x 128², Adam, BCE), and the share of unetkit's training step time spent waiting for
  data (measured by the trainer itself, ``data_wait`` in ``metrics.csv``);
- unetkit's FLOPs per pixel and attained GFLOP/s (FLOPs of every tile it runs / wall time), as a share of a
  convolution ceiling measured here (the best 3x3 convolution at U-Net shapes, channels-last, per precision).

segmentation_models_pytorch is not in the table: it requires torchvision, whose wheel does not import beside
torch 2.13.0 on this machine. Needs the ``[bench]`` extra (MONAI).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from unetkit import Predictor, synth_nuclei
from unetkit.data.normalize import Normalizer
from unetkit.device import compile_cache_dir
from unetkit.models import create_model


def timeit(fn, repeat: int = 3) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def interleaved(fns: dict[str, object], rounds: int = 5) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternation (round r starts with a different one), so
    that the machine's slow and fast moments are shared fairly between the engines."""
    for fn in fns.values():
        fn()  # type: ignore[operator]
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(rounds):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            t0 = time.perf_counter()
            fns[k]()  # type: ignore[operator]
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def conv_ceiling(bf16: bool) -> float:
    """The best GFLOP/s of a 3x3 convolution at the shapes a U-Net's levels have (batch 4: 64 channels at 256²,
    128 at 128², 256 at 64²), channels-last (the fastest layout for both precisions here)."""
    best = 0.0
    for ch, size in ((64, 256), (128, 128), (256, 64)):
        conv = torch.nn.Conv2d(ch, ch, 3, padding=1).eval().to(memory_format=torch.channels_last)
        x = torch.randn(4, ch, size, size).contiguous(memory_format=torch.channels_last)
        flops = 2 * ch * ch * 9 * 4 * size * size
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            best = max(best, flops / timeit(lambda conv=conv, x=x: conv(x), 5) / 1e9)
    return best


ENGINES = {  # label: (precision, compiled)
    "unetkit float32": ("float32", False),
    "unetkit float32, compiled": ("float32", True),
    "unetkit fast path": ("auto", False),
    "unetkit fast path, compiled": ("auto", True),
}
PEER = "MONAI BasicUNet"


def make_ours():
    torch.manual_seed(0)
    return create_model("unet", base_channels=16, depth=4, norm="batch").eval()


def make_peer():
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    # BasicUNet is MONAI's classic U-Net (two 3x3 conv-norm-act per level, max-pooling, transposed convs)
    return BasicUNet(2, 1, 1, features=(16, 32, 64, 128, 256, 16), norm="batch", act="relu").eval()


PREP = {"in_channels": 1, "normalization": Normalizer().to_dict()}


def predictor(model, precision: str, compiled: bool, **kw) -> Predictor:
    """unetkit's predictor set up as ``Predictor.from_checkpoint`` does (it owns the model)."""
    kw = {"tile": 256, "overlap": 0.25, "batch_size": 4, **kw}
    return Predictor(
        model, PREP, device="cpu", precision=precision, channels_last=True, fuse=True, compile=compiled, **kw
    )


def peak_rss_mib() -> float:
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(engine: str, size: int) -> None:
    """One 4096² run in this fresh process: prints a JSON line with wall time and peak RSS."""
    image = synth_nuclei(size, 0)[0]
    if engine == PEER:
        from monai.inferers import sliding_window_inference

        peer = make_peer()
        x = torch.from_numpy(Normalizer()(image[None].astype(np.float32)))[None]

        def run() -> None:
            with torch.inference_mode():
                torch.sigmoid(sliding_window_inference(x, (256, 256), 4, peer, overlap=0.25, mode="gaussian"))
    else:
        precision, compiled = ENGINES[engine]
        p = predictor(make_ours(), precision, compiled)
        if compiled:  # compilation (or loading the kernel cache) is a one-off cost, reported apart
            p.predict_proba(image[:256, :256])

        def run() -> None:
            p.predict_proba(image)

    with open("/proc/self/clear_refs", "w") as fh:  # peak RSS from here on: inference, not set-up
        fh.write("5")
    t0 = time.perf_counter()
    run()
    print(json.dumps({"wall": time.perf_counter() - t0, "peak_mib": peak_rss_mib()}))


def in_fresh_process(engine: str, size: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", engine, "--size", str(size)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"{engine} at {size}² failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def accuracy(rows: list) -> None:
    """Train a small U-Net for about a minute with the real trainer; Dice of every engine on held-out images,
    and the trainer's own data-wait share."""
    from unetkit import RunConfig, synthesize_dataset, train
    from unetkit.metrics.semantic import confusion_matrix

    cfg = RunConfig()
    cfg.model.base_channels, cfg.model.depth = 8, 4
    cfg.data.patch_size = 128
    cfg.train.epochs, cfg.train.steps_per_epoch, cfg.train.batch_size = 3, 20, 8
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize_dataset(Path(tmp) / "data", n=16, size=256, seed=0)
        run = train(data, Path(tmp) / "run", cfg, progress=False)
        wait = np.mean([h["data_wait"] for h in run.history[1:]])  # epoch 1 includes start-up
        rows.append(
            (
                f"training: share of step time waiting for data (num_workers={cfg.train.num_workers})",
                "unetkit trainer",
                "float32",
                f"{wait:.1%}",
                "",
            )
        )
        held_out = [synth_nuclei(512, 100 + i) for i in range(4)]
        dice = {}
        for label, (precision, compiled) in ENGINES.items():
            p = Predictor.from_checkpoint(
                run.best_checkpoint, device="cpu", precision=precision, compile=compiled
            )
            cm = sum(confusion_matrix(lab > 0, p.predict(im) > 0, 2) for im, lab in held_out)
            dice[label] = 2 * cm[1, 1] / (2 * cm[1, 1] + cm[0, 1] + cm[1, 0])
            rows.append(
                (
                    "Dice, 4 held-out 512² images (small U-Net trained here)",
                    label,
                    p.precision,
                    f"{dice[label]:.4f}",
                    f"{dice[label] - dice['unetkit float32']:+.4f} vs float32",
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-steps", type=int, default=8, help="timed training steps per engine")
    parser.add_argument("--large", type=int, default=4096, help="side of the large image (0: skip)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=4096, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.size)
        return
    from monai.inferers import sliding_window_inference

    ours, peer = make_ours(), make_peer()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_peer = sum(p.numel() for p in peer.parameters())
    rows: list[tuple[str, str, str, str, str]] = []
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        ours(torch.zeros(1, 1, 256, 256))
    flops_tile = counter.get_total_flops()
    flops_px = flops_tile / 256**2
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        peer(torch.zeros(1, 1, 256, 256))
    peer_px = counter.get_total_flops() / 256**2
    tiles_1024 = len(predictor(ours, "float32", False).plan((1024, 1024)))

    accuracy(rows)
    t0 = time.perf_counter()
    engines = {label: predictor(make_ours(), *spec) for label, spec in ENGINES.items()}
    for p in engines.values():
        p.predict_proba(synth_nuclei(256, 0)[0])  # compiles (or loads the kernel cache)
    compile_s = time.perf_counter() - t0
    mps_1024: dict[str, tuple[float, str]] = {}
    for size in (256, 1024):
        image = synth_nuclei(size, 0)[0]
        x = torch.from_numpy(Normalizer()(image[None].astype(np.float32)))[None]
        fns: dict[str, object] = {
            label: (lambda p=p, image=image: p.predict_proba(image)) for label, p in engines.items()
        }

        def monai(x=x) -> None:
            with torch.inference_mode():
                sliding_window_inference(x, (256, 256), 4, peer, overlap=0.25, mode="gaussian")

        fns[PEER] = monai
        precisions = {label: p.precision for label, p in engines.items()} | {PEER: "float32"}
        medians = interleaved(fns, rounds=5 if size == 256 else 3)
        for label, t in medians.items():
            mps = size * size / t / 1e6
            if size == 1024:
                mps_1024[label] = (mps, precisions[label])
            ratio = f"{medians[PEER] / t:.2f}"
            rows.append(
                (
                    f"inference {size}², tile 256, overlap 0.25",
                    label,
                    precisions[label],
                    f"{mps:.2f} MP/s",
                    ratio,
                )
            )

    if args.large:
        mp = args.large**2 / 1e6
        large = {label: in_fresh_process(label, args.large) for label in [*ENGINES, PEER]}
        for label, info in large.items():
            prec = engines[label].precision if label in engines else "float32"
            rows.append(
                (
                    f"inference {args.large}² (fresh process): time, peak RSS while predicting",
                    label,
                    prec,
                    f"{info['wall']:.1f} s ({mp / info['wall']:.2f} MP/s), {info['peak_mib']:.0f} MiB",
                    f"{large[PEER]['wall'] / info['wall']:.2f}",
                )
            )

    x = torch.randn(8, 1, 128, 128)
    y = (torch.rand(8, 1, 128, 128) > 0.7).float()
    steps: dict[str, object] = {}
    for label, net in (("unetkit UNet", make_ours()), (PEER, make_peer())):
        net.train()
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        def step(net=net, opt=opt, loss_fn=loss_fn) -> None:
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()

        steps[label] = step
    train_t = interleaved(steps, rounds=args.train_steps)
    for label, t in train_t.items():
        ratio = train_t[PEER] / t
        rows.append(
            ("training, batch 8 x 128², Adam", label, "float32", f"{8 / t:.1f} images/s", f"{ratio:.2f}")
        )
    peaks = {"float32": conv_ceiling(False), "bfloat16": conv_ceiling(True)}
    for prec, peak in peaks.items():
        rows.append(("3x3 conv ceiling (best of 3 U-Net shapes)", "torch", prec, f"{peak:.0f} GFLOP/s", ""))
    for label in ENGINES:
        mps, prec = mps_1024[label]
        attained = tiles_1024 * flops_tile / (1024 * 1024 / (mps * 1e6)) / 1e9
        rows.append(
            (
                "attained, inference 1024²",
                label,
                prec,
                f"{attained:.0f} GFLOP/s",
                f"{attained / peaks[prec]:.0%} of ceiling",
            )
        )
    print(
        f"peers: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; unetkit UNet "
        f"{n_ours:,} params, {flops_px / 1e3:.1f} kFLOP/pixel; MONAI BasicUNet {n_peer:,} params, "
        f"{peer_px / 1e3:.1f} kFLOP/pixel; compiling both compiled engines took {compile_s:.0f} s in this run "
        f"(kernel cache: {compile_cache_dir()})"
    )
    head = ("what", "engine", "precision", "result", "vs MONAI / ceiling")
    w = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    for r in [head, tuple("-" * n for n in w), *rows]:
        print("| " + " | ".join(f"{c!s:<{n}}" for c, n in zip(r, w, strict=True)) + " |")


if __name__ == "__main__":
    main()
