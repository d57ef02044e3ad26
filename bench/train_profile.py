"""Where a training step's time goes (``make bench-train-profile``): prints tables; never a timed test.

The training step of ``bench/peers.py`` (unetkit's U-Net, base 16, depth 4, batch norm; batch 8 x 128²; BCE;
channels-last; with the CLI's allocator setting) in float32 (``--no-amp``, what a CPU without native bfloat16 runs) and, where bfloat16 is native,
in the default bfloat16 autocast. First the step split into forward (with the loss), backward and the optimiser
(each timed alone, medians of interleaved rounds), then the operators by kind from ``torch.profiler`` (share of
the step's CPU time: 3x3 convolutions forward and backward, batch norm, ReLU, pooling, up-convolutions,
concatenation, the optimiser, the rest), then the optimiser's implementations (for-loop, foreach, fused Adam).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

#: operator name fragments → the kind reported
KINDS = (
    ("convolution_backward", "conv backward"),
    ("mkldnn_convolution", "conv forward"),
    ("convolution", "conv forward"),
    ("conv_transpose", "up-conv"),
    ("batch_norm", "batch norm"),
    ("native_batch_norm", "batch norm"),
    ("threshold_backward", "ReLU"),
    ("relu", "ReLU"),
    ("max_pool", "max-pool"),
    ("cat", "concatenate"),
    ("adam", "optimiser"),
    ("_foreach", "optimiser"),
    ("binary_cross_entropy", "loss"),
    ("copy_", "copies / layout"),
    ("contiguous", "copies / layout"),
    ("to_dense", "copies / layout"),
)


def make_step(bf16: bool, optimiser: str = "default"):
    from unetkit.models import create_model

    torch.manual_seed(0)
    net = (
        create_model("unet", base_channels=16, depth=4, norm="batch")
        .train()
        .to(memory_format=torch.channels_last)
    )
    kw = (
        {"foreach": False} if optimiser == "for-loop" else {"foreach": True} if optimiser == "foreach" else {}
    )
    if optimiser == "fused":
        kw = {"fused": True}
    opt = torch.optim.Adam(net.parameters(), 1e-3, **kw)
    x = torch.randn(8, 1, 128, 128).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(8, 1, 128, 128) > 0.7).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        return loss_fn(out.float(), y)

    def step():
        opt.zero_grad()
        forward().backward()
        opt.step()

    return net, opt, forward, step


def median_time(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def phases(bf16: bool, rounds: int) -> dict[str, float]:
    _, opt, forward, step = make_step(bf16)
    total = median_time(step, rounds)
    fwd = median_time(lambda: forward(), rounds)

    def fwd_bwd():
        opt.zero_grad()
        forward().backward()

    fb = median_time(fwd_bwd, rounds)
    return {"step": total, "forward + loss": fwd, "backward": fb - fwd, "optimiser + zero_grad": total - fb}


def by_kind(bf16: bool, steps: int = 5) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    _, _, _, step = make_step(bf16)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:  # self times: every microsecond counted once
        for _ in range(steps):
            step()
    kinds: dict[str, float] = defaultdict(float)
    total = 0.0
    for event in prof.key_averages():
        own = event.self_cpu_time_total
        total += own
        name = event.key.lower()
        kind = next((k for frag, k in KINDS if frag in name), "other")
        kinds[kind] += own
    return {k: v / total for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from unetkit.device import cpu_has_native_bf16, cpu_summary, tune_allocator

    tune_allocator()  # as the CLI runs training
    print(f"CPU: {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    modes = [("float32 (--no-amp)", False)] + (
        [("bfloat16 (default here)", True)] if cpu_has_native_bf16() else []
    )
    print("| step of batch 8 x 128² | " + " | ".join(m for m, _ in modes) + " |")
    print("|---|" + "---:|" * len(modes))
    split = {m: phases(b, args.rounds) for m, b in modes}
    for part in split[modes[0][0]]:
        cells = [
            f"{split[m][part] * 1000:.0f} ms ({split[m][part] / split[m]['step']:.0%})" for m, _ in modes
        ]
        print(f"| {part} | " + " | ".join(cells) + " |")
    print("\nOperators by kind, share of the step's CPU time (torch.profiler, self time):\n")
    shares = {m: by_kind(b) for m, b in modes}
    kinds = list(dict.fromkeys(k for m, _ in modes for k in shares[m]))
    print("| kind | " + " | ".join(m for m, _ in modes) + " |")
    print("|---|" + "---:|" * len(modes))
    for k in kinds:
        print(f"| {k} | " + " | ".join(f"{shares[m].get(k, 0):.1%}" for m, _ in modes) + " |")
    print("\nThe optimiser (Adam, 1.94 M parameters), one step, float32:\n")
    print("| implementation | step time | images/s |")
    print("|---|---:|---:|")
    for name in ("default", "for-loop", "foreach", "fused"):
        try:
            _, _, _, step = make_step(False, name)
            t = median_time(step, args.rounds)
        except (RuntimeError, TypeError) as exc:
            print(f"| {name} | not available ({str(exc)[:60]}) | |")
            continue
        print(f"| {name} | {t * 1000:.0f} ms | {8 / t:.1f} |")


if __name__ == "__main__":
    main()
