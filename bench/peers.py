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

unetkit's allocator setting (``device.tune_allocator``, as the CLI) is on for the whole in-process table, the
peer's engines included, and for unetkit's fresh-process runs; one more fresh run shows glibc's defaults.

segmentation_models_pytorch is not in the table: it requires torchvision, whose wheel does not import beside
torch 2.13.0 on this machine. Needs the ``[bench]`` extra (MONAI).
"""

from __future__ import annotations

import argparse
import json
import math
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
from unetkit.device import compile_cache_dir, cpu_has_native_bf16, cpu_summary, tune_allocator
from unetkit.models import create_model


def timeit(fn, repeat: int = 3, best: bool = False) -> float:
    """Seconds per call after a warm-up: the mean of ``repeat`` calls, or with ``best`` the fastest (a ceiling is
    what the hardware can do, and the machine's noise only ever slows a call down)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) if best else sum(times) / repeat


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


def conv_ceiling(bf16: bool, dims: int = 2) -> float:
    """The single-image ceiling: the best GFLOP/s of one 3x3 (3x3x3) convolution on one image at the shapes a
    U-Net's levels have (2-D: 16 channels at 512² ... 256 at 64²; 3-D: 16 at 64³ ... 128 at 16³), in the layout
    unetkit runs (channels-last in 2-D), fastest of 7 calls; the input is already in the
    computing precision."""
    best = 0.0
    shapes = (
        ((16, 512), (32, 256), (64, 256), (128, 128), (256, 64))
        if dims == 2
        else ((16, 64), (32, 32), (64, 32), (128, 16))
    )
    for ch, size in shapes:
        if dims == 2:
            conv = torch.nn.Conv2d(ch, ch, 3, padding=1).eval().to(memory_format=torch.channels_last)
            x = torch.randn(1, ch, size, size).contiguous(memory_format=torch.channels_last)
        else:
            conv = torch.nn.Conv3d(ch, ch, 3, padding=1).eval()
            x = torch.randn(1, ch, size, size, size)
        flops = 2 * ch * ch * 3**dims * size**dims
        if bf16:
            conv, x = conv.to(torch.bfloat16), x.to(torch.bfloat16)
        with torch.inference_mode():
            best = max(best, flops / timeit(lambda conv=conv, x=x: conv(x), 7, best=True) / 1e9)
    return best


ENGINES = {  # label: (precision, compiled), at tile 256, batch 4 (MONAI's settings)
    "unetkit float32": ("float32", False),
    "unetkit float32, compiled": ("float32", True),
    "unetkit fast path": ("auto", False),
    "unetkit fast path, compiled": ("auto", True),
}
#: larger tiles, one per pass: is the 256 x 4 default the right one? (it was, measured: docs/performance.md)
DEFAULTS = "unetkit fast path, default tiling (tiles per image up to 4 x 512², seams of 2 x 64 px)"
DEFAULT_TILING = {"tile": 512, "batch_size": 4, "overlap": None}
PEER = "MONAI BasicUNet"
SYSTEM_MALLOC = "unetkit fast path, glibc's allocator defaults (UNETKIT_MALLOC=system)"
ONNX = "unetkit, ONNX Runtime engine"


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


def onnx_predictor(tmp: Path) -> Predictor:
    """The same network through ``--engine onnxruntime`` (a checkpoint exported on the fly, verified)."""
    from unetkit import save_checkpoint

    path = save_checkpoint(tmp / "bench.pt", make_ours(), model_name="unet", preprocessing=PREP)
    return Predictor.from_checkpoint(
        path, engine="onnxruntime", device="cpu", tile=256, overlap=0.25, batch_size=4
    )


def peak_rss_mib() -> float:
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(engine: str, size: int) -> None:
    """One 4096² run in this fresh process: prints a JSON line with wall time and peak RSS. unetkit's engines
    run with its allocator setting, as the CLI does (``UNETKIT_MALLOC=system``: glibc's defaults); the peer as its
    users run it."""
    if engine != PEER:
        tune_allocator()
    image = synth_nuclei(size, 0)[0]
    if engine == PEER:
        from monai.inferers import sliding_window_inference

        peer = make_peer()
        x = torch.from_numpy(Normalizer()(image[None].astype(np.float32)))[None]

        def run() -> None:
            with torch.inference_mode():
                torch.sigmoid(sliding_window_inference(x, (256, 256), 4, peer, overlap=0.25, mode="gaussian"))
    else:
        precision, compiled = ENGINES.get(engine, ("auto", False))
        p = predictor(make_ours(), precision, compiled, **(DEFAULT_TILING if engine == DEFAULTS else {}))
        if compiled:  # compilation (or loading the kernel cache) is a one-off cost, reported apart
            p.predict_proba(image[:256, :256])

        def run() -> None:
            p.predict_proba(image)

    with open("/proc/self/clear_refs", "w") as fh:  # peak RSS from here on: inference, not set-up
        fh.write("5")
    t0 = time.perf_counter()
    run()
    print(json.dumps({"wall": time.perf_counter() - t0, "peak_mib": peak_rss_mib()}))


def in_fresh_process(engine: str, size: int, system_malloc: bool = False) -> dict:
    env = {**os.environ, "UNETKIT_MALLOC": "system"} if system_malloc else None
    out = subprocess.run(
        [sys.executable, __file__, "--child", engine, "--size", str(size)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
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
        run = train(data, Path(tmp) / "run", cfg, progress=False)  # the default: amp (bfloat16 here)
        cfg.train.amp = False
        run32 = train(data, Path(tmp) / "run32", cfg, progress=False)
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
        trained = {}
        for label, r in (("trained with --no-amp (float32)", run32), ("trained with amp (default)", run)):
            p = Predictor.from_checkpoint(r.best_checkpoint, device="cpu", precision="float32")
            cm = sum(confusion_matrix(lab > 0, p.predict(im) > 0, 2) for im, lab in held_out)
            trained[label] = 2 * cm[1, 1] / (2 * cm[1, 1] + cm[0, 1] + cm[1, 0])
            first = trained["trained with --no-amp (float32)"]
            rows.append(
                (
                    "Dice of the small U-Net trained here in each precision (float32 inference)",
                    label,
                    "bfloat16" if "default" in label and cpu_has_native_bf16() else "float32",
                    f"{trained[label]:.4f}",
                    f"{trained[label] - first:+.4f} vs float32",
                )
            )
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


TRAIN_ENGINES = {  # label: (bfloat16 autocast, channels-last)
    "unetkit trainer, float32 (--no-amp)": (False, True),
    "unetkit trainer, default (amp: bfloat16)": (True, True),
}


def training_flops(net: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """FLOPs of one training step (forward and backward) at ``shape``."""
    net.train()
    x = torch.randn(*shape)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    return float(counter.get_total_flops())


def training_rows(
    rows, rounds, shape, make_net, make_peer_net, flops, peaks, what="training, batch 8 x 128², Adam"
):
    """Training steps (BCE, Adam) timed in alternation: unetkit as its trainer runs them (channels-last in 2-D;
    bfloat16 autocast by default on a CPU with native bfloat16) and the peer in float32 and given the same fast
    path. Returns the medians."""
    x = torch.randn(*shape)
    y = (torch.rand(*shape) > 0.7).float()
    fmt = torch.channels_last if len(shape) == 4 else torch.contiguous_format
    native = cpu_has_native_bf16()
    engines = {label: (make_net, bf16 and native, cl) for label, (bf16, cl) in TRAIN_ENGINES.items()}
    if (
        len(shape) == 5
    ):  # volumes train in float32 by default (docs/performance.md: bfloat16 Conv3d backward on CPUs)
        engines = {
            k.replace("float32 (--no-amp)", "default for volumes (float32)").replace(
                "default (amp: bfloat16)", "bfloat16 autocast (not used for volumes)"
            ): v
            for k, v in engines.items()
        }
    engines[PEER] = (make_peer_net, False, False)
    engines[f"{PEER}, same fast path"] = (make_peer_net, native, len(shape) == 4)
    steps: dict[str, object] = {}
    for label, (make, bf16, cl) in engines.items():
        net = make().train()
        if cl:
            net = net.to(memory_format=fmt)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        xi = x.contiguous(memory_format=fmt) if cl else x

        def step(net=net, opt=opt, loss_fn=loss_fn, xi=xi, bf16=bf16) -> None:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = net(xi)
            loss_fn(out.float(), y).backward()
            opt.step()

        steps[label] = (step, "bfloat16" if bf16 else "float32")
    times = interleaved({k: v[0] for k, v in steps.items()}, rounds=rounds)
    n = shape[0]
    for label, t in times.items():
        prec = steps[label][1]
        share = f", {flops / t / 1e9 / peaks[prec]:.0%} of ceiling" if label.startswith("unetkit") else ""
        rows.append((what, label, prec, f"{n / t:.1f} images/s", f"{times[PEER] / t:.2f}{share}"))
    return times


def three_d(rows: list) -> None:
    """A 3-D U-Net (the same levels, Conv3d) on a 128³ volume: inference (tile 64³, overlap 0.25, Gaussian, batch
    1) in float32 and on the fast path against MONAI's 3-D BasicUNet, attained share of the 3-D ceiling, and
    training steps (batch 2 x 64³)."""
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import BasicUNet

    from unetkit import synth_nuclei_3d

    def ours3() -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model("unet", base_channels=16, depth=4, norm="batch", spatial_dims=3).eval()

    def peer3() -> torch.nn.Module:
        torch.manual_seed(0)
        return BasicUNet(3, 1, 1, features=(16, 32, 64, 128, 256, 16), norm="batch", act="relu").eval()

    volume = synth_nuclei_3d((128, 128, 128), 0)[0]
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        ours3()(torch.zeros(1, 1, 64, 64, 64))
    tile_flops = counter.get_total_flops()
    engines = {
        f"unetkit 3-D {k}": Predictor(
            ours3(),
            PREP,
            device="cpu",
            precision=prec,
            channels_last=True,
            fuse=True,
            tile=64,
            overlap=0.25,
            batch_size=1,
        )
        for k, prec in (("float32", "float32"), ("fast path", "auto"))
    }
    n_tiles = len(next(iter(engines.values())).plan((128, 128, 128)))
    peer = peer3()
    x = torch.from_numpy(Normalizer()(volume[None].astype(np.float32)))[None]

    def monai() -> None:
        with torch.inference_mode():
            sliding_window_inference(x, (64, 64, 64), 1, peer, overlap=0.25, mode="gaussian")

    fns: dict[str, object] = {k: (lambda p=p: p.predict_proba(volume)) for k, p in engines.items()}
    fns[f"{PEER} 3-D"] = monai
    times = interleaved(fns, rounds=3)
    peaks = {"float32": conv_ceiling(False, 3), "bfloat16": conv_ceiling(True, 3)}
    for label, t in times.items():
        prec = engines[label].precision if label in engines else "float32"
        share = f", {n_tiles * tile_flops / t / 1e9 / peaks[prec]:.0%} of ceiling" if label in engines else ""
        rows.append(
            (
                "3-D inference 128³, tile 64³, overlap 0.25",
                label,
                prec,
                f"{t:.2f} s ({128**3 / t / 1e6:.2f} MVox/s)",
                f"{times[f'{PEER} 3-D'] / t:.2f}{share}",
            )
        )
    for prec, peak in peaks.items():
        rows.append(
            (
                "3x3x3 conv ceiling, single volume (best of 4 U-Net shapes)",
                "torch",
                prec,
                f"{peak:.0f} GFLOP/s",
                "",
            )
        )
    flops = training_flops(ours3(), (2, 1, 64, 64, 64))
    training_rows(
        rows, 3, (2, 1, 64, 64, 64), ours3, peer3, flops, peaks, what="3-D training, batch 2 x 64³, Adam"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-steps", type=int, default=8, help="timed training steps per engine")
    parser.add_argument("--large", type=int, default=4096, help="side of the large image (0: skip)")
    parser.add_argument("--no-3d", dest="three_d", action="store_false", help="skip the 3-D table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=4096, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.size)
        return
    tune_allocator()  # as the CLI: every engine of the in-process tables (the peer's too) reuses freed memory
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

    early = {"float32": conv_ceiling(False), "bfloat16": conv_ceiling(True)}  # and again at the end: the best
    accuracy(rows)
    t0 = time.perf_counter()
    engines = {label: predictor(make_ours(), *spec) for label, spec in ENGINES.items()}
    engines[DEFAULTS] = predictor(make_ours(), "auto", False, **DEFAULT_TILING)
    engines[ONNX] = onnx_predictor(Path(tempfile.mkdtemp(prefix="unetkit-bench-")))
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
        precisions = {label: p.precision for label, p in engines.items()} | {PEER: "float32", ONNX: "float32"}
        medians = interleaved(fns, rounds=5 if size == 256 else 3)
        for label, t in medians.items():
            mps = size * size / t / 1e6
            if size == 1024:
                mps_1024[label] = (mps, precisions[label])
            ratio = f"{medians[PEER] / t:.2f}"
            rows.append(
                (
                    f"inference {size}², overlap 0.25, tile 256 x batch 4 unless named",
                    label,
                    precisions[label],
                    f"{mps:.2f} MP/s",
                    ratio,
                )
            )

    if args.large:
        mp = args.large**2 / 1e6
        large = {label: in_fresh_process(label, args.large) for label in [*ENGINES, DEFAULTS, PEER]}
        large[SYSTEM_MALLOC] = in_fresh_process("unetkit fast path", args.large, system_malloc=True)
        for label, info in large.items():
            engine = "unetkit fast path" if label == SYSTEM_MALLOC else label
            prec = engines[engine].precision if engine in engines else "float32"
            rows.append(
                (
                    f"inference {args.large}² (fresh process): time, peak RSS while predicting",
                    label,
                    prec,
                    f"{info['wall']:.1f} s ({mp / info['wall']:.2f} MP/s), {info['peak_mib']:.0f} MiB",
                    f"{large[PEER]['wall'] / info['wall']:.2f}",
                )
            )

    peaks = {"float32": conv_ceiling(False), "bfloat16": conv_ceiling(True)}
    peaks = {k: max(v, early[k]) for k, v in peaks.items()}
    train_flops = training_flops(make_ours(), (8, 1, 128, 128))
    training_rows(rows, args.train_steps, (8, 1, 128, 128), make_ours, make_peer, train_flops, peaks)
    if args.three_d:
        three_d(rows)
    for prec, peak in peaks.items():
        rows.append(
            (
                "3x3 conv ceiling, single image (best of 5 U-Net shapes, start and end of the run)",
                "torch",
                prec,
                f"{peak:.0f} GFLOP/s",
                "",
            )
        )
    # a padded network's FLOPs grow with the pixels it computes: the default plan's tiles differ in size
    computed = sum(
        math.prod(a.read_stop - a.read_start for a in t.axes) for t in engines[DEFAULTS].plan((1024, 1024))
    )
    for label in [*ENGINES, DEFAULTS, ONNX]:
        mps, prec = mps_1024[label]
        flops = computed * flops_px if label == DEFAULTS else tiles_1024 * flops_tile
        attained = flops / (1024 * 1024 / (mps * 1e6)) / 1e9
        rows.append(
            (
                "attained, inference 1024²",
                label,
                prec,
                f"{attained:.0f} GFLOP/s",
                f"{attained / peaks[prec]:.0%} of ceiling",
            )
        )
    print(f"CPU: {cpu_summary()}")
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
