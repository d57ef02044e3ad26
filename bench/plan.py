"""Self-configuration vs the hand-set demo (``make bench-plan``): prints one table; never a timed test.

On the built-in synthetic nuclei (the demo's 40 training images, 256², and its 8 held-out 288x352 images), one
run trains the demo's hand-set configuration (``unetkit demo``'s: base 16, depth 4, patch 128, 12 epochs x 25
steps) and one runs ``unetkit train DATA --time-budget 5m`` (the plan made on the fly, then trained). Both
models predict the held-out images (float32) and are scored against their instance labels: foreground Dice,
object F1 at IoU 0.5 and the DSB 2018 score. About 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", default="5m", help="the plan's time budget (default: 5m)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep the runs in this folder")
    args = parser.parse_args()

    from unetkit import evaluate_model, synthesize_dataset, train
    from unetkit.workflows.demo import DEMO_CONFIG

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="unetkit-bench-plan-"))
    data = synthesize_dataset(work / "data", n=40, size=256, seed=args.seed, overwrite=True)
    test = synthesize_dataset(work / "test", n=8, size=(288, 352), seed=args.seed + 10_000, overwrite=True)
    rows = []

    cfg = dataclasses.replace(DEMO_CONFIG, train=dataclasses.replace(DEMO_CONFIG.train, device="cpu"))
    t0 = time.perf_counter()
    demo = train(data, work / "demo-run", cfg, progress=False)
    demo_time = time.perf_counter() - t0
    rows.append(("hand-set demo configuration", demo.best_checkpoint, demo_time, cfg, len(demo.history)))

    t0 = time.perf_counter()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "unetkit", "train", str(data), "--time-budget", args.budget),
            *("--device", "cpu", "--out", str(work / "plan-run"), "--no-progress"),
        ],
        capture_output=True,
        text=True,
    )
    plan_time = time.perf_counter() - t0
    if done.returncode:
        sys.exit(done.stderr)
    from unetkit import load_config

    planned = load_config(work / "plan-run" / "config.yaml")
    epochs = sum(1 for _ in open(work / "plan-run" / "metrics.csv")) - 1
    rows.append(
        (
            f"plan, --time-budget {args.budget} (planning included)",
            work / "plan-run" / "best.pt",
            plan_time,
            planned,
            epochs,
        )
    )

    print(
        f"Plan vs hand-set: {len(list((data / 'images').iterdir()))} training images, 8 held-out 288x352 images"
    )
    head = (
        "configuration",
        "wall time",
        "network",
        "patch × batch",
        "targets",
        "epochs × steps",
        "Dice",
        "F1@0.5",
        "DSB score",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for name, ckpt, wall, c, ran in rows:
        ev = evaluate_model(
            ckpt,
            test,
            work / f"pred-{ckpt.parent.name}",
            overwrite=True,
            progress=False,
            device="cpu",
            precision="float32",
        )
        m, d, t = c.model, c.data, c.train
        target = d.target + (" + weight maps" if d.weight_map else "")
        print(
            f"| {name} | {wall:.0f} s | depth {m.depth}, base {m.base_channels} | {d.patch_size}² × {t.batch_size} | "
            f"{target} | {ran}/{t.epochs} × {t.steps_per_epoch} | {ev.mean['dice']:.4f} | {ev.mean['f1']:.3f} | "
            f"{ev.mean['dsb_score']:.3f} |"
        )
    print(f"\nruns in {work}")


if __name__ == "__main__":
    main()
