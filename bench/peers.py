"""unetkit against its peers on this machine (``make bench-peers``): prints one table; never a timed test.

Engines are timed in alternation and the median is reported (this machine is shared and noisy). Same
architecture size (a 4-level U-Net, 16 → 256 channels, batch norm, ReLU), input, batch and threads:

- unetkit ``UNet`` through ``Predictor`` (float32, and the CPU fast path: channels-last + bfloat16 where the CPU
  has native bfloat16), vs MONAI's ``BasicUNet`` (features (16, 32, 64, 128, 256, 16): the same two-convolution levels) called
  as its documentation shows (float32 ``sliding_window_inference``);
- training images/s (batch 8 x 128², Adam, BCE);
- unetkit's FLOPs per pixel and attained GFLOP/s (FLOPs of every tile it runs / wall time), as a share of a
  convolution ceiling measured here (the best 3x3 convolution at U-Net shapes, channels-last, per precision).

segmentation_models_pytorch is not in the table: it requires torchvision, whose wheel does not import beside
torch 2.13.0 on this machine. Needs the ``[bench]`` extra (MONAI).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from unetkit import Predictor, synth_nuclei
from unetkit.data.normalize import Normalizer
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-steps", type=int, default=8, help="timed training steps per engine")
    args = parser.parse_args()
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    ours = create_model("unet", base_channels=16, depth=4, norm="batch").eval()
    # BasicUNet is MONAI's classic U-Net (two 3x3 conv-norm-act per level, max-pooling, transposed convs)
    peer = BasicUNet(2, 1, 1, features=(16, 32, 64, 128, 256, 16), norm="batch", act="relu").eval()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_peer = sum(p.numel() for p in peer.parameters())
    prep = {"in_channels": 1, "normalization": Normalizer().to_dict()}
    rows = []
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        ours(torch.zeros(1, 1, 256, 256))
    flops_tile = counter.get_total_flops()
    flops_px = flops_tile / 256**2
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        peer(torch.zeros(1, 1, 256, 256))
    peer_px = counter.get_total_flops() / 256**2
    tiles_1024 = len(Predictor(ours, prep, device="cpu", tile=256, overlap=0.25).plan((1024, 1024)))

    for size in (256, 1024):
        image = synth_nuclei(size, 0)[0]
        x = torch.from_numpy(Normalizer()(image[None].astype(np.float32)))[None]
        fns: dict[str, object] = {}
        precisions: dict[str, str] = {}
        for label, precision in (("unetkit float32", "float32"), ("unetkit fast path", "auto")):
            p = Predictor(
                create_model("unet", base_channels=16, depth=4, norm="batch").eval(),
                prep,
                device="cpu",
                tile=256,
                overlap=0.25,
                batch_size=4,
                precision=precision,
                channels_last=True,
            )
            fns[label], precisions[label] = (lambda p=p, image=image: p.predict_proba(image)), p.precision

        def monai(x=x) -> None:
            with torch.inference_mode():
                sliding_window_inference(x, (256, 256), 4, peer, overlap=0.25, mode="gaussian")

        fns["MONAI BasicUNet"], precisions["MONAI BasicUNet"] = monai, "float32"
        medians = interleaved(fns, rounds=5 if size == 256 else 3)
        res = {k: (medians[k], precisions[k]) for k in fns}
        best_peer = res["MONAI BasicUNet"][0]
        for label, (t, prec) in res.items():
            mps = size * size / t / 1e6
            rows.append(
                (
                    f"inference {size}², tile 256, overlap 0.25",
                    label,
                    prec,
                    f"{mps:.2f} MP/s",
                    f"{best_peer / t:.2f}",
                )
            )

    x = torch.randn(8, 1, 128, 128)
    y = (torch.rand(8, 1, 128, 128) > 0.7).float()
    steps: dict[str, object] = {}
    for label, net in (("unetkit UNet", ours), ("MONAI BasicUNet", peer)):
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
        ratio = train_t["MONAI BasicUNet"] / t
        rows.append(
            ("training, batch 8 x 128², Adam", label, "float32", f"{8 / t:.1f} images/s", f"{ratio:.2f}")
        )
    peak32, peak16 = conv_ceiling(False), conv_ceiling(True)
    for prec, peak in (("float32", peak32), ("bfloat16", peak16)):
        rows.append(("3x3 conv ceiling (best of 3 U-Net shapes)", "torch", prec, f"{peak:.0f} GFLOP/s", ""))
    for label, prec in (("unetkit float32", "float32"), ("unetkit fast path", None)):
        r = next(r for r in rows if r[0].startswith("inference 1024") and r[1] == label)
        seconds = 1024 * 1024 / (float(r[3].split()[0]) * 1e6)
        attained = tiles_1024 * flops_tile / seconds / 1e9
        peak = peak16 if (prec or r[2]) == "bfloat16" else peak32
        rows.append(
            (
                "attained, inference 1024²",
                label,
                r[2],
                f"{attained:.0f} GFLOP/s",
                f"{attained / peak:.0%} of ceiling",
            )
        )
    print(
        f"peers: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; unetkit UNet "
        f"{n_ours:,} params, {flops_px / 1e3:.1f} kFLOP/pixel; MONAI BasicUNet {n_peer:,} params, "
        f"{peer_px / 1e3:.1f} kFLOP/pixel"
    )
    head = ("what", "engine", "precision", "result", "vs MONAI / ceiling")
    w = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    for r in [head, tuple("-" * n for n in w), *rows]:
        print("| " + " | ".join(f"{c!s:<{n}}" for c, n in zip(r, w, strict=True)) + " |")


if __name__ == "__main__":
    main()
