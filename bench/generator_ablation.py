"""What each feature of the synthetic generator's version 3 does for the built-in model (``make bench-ablation``).

The built-in ``nuclei`` model learns only from generated images, so the generator decides how well it segments
images it never saw. Version 3 adds feature groups to version 2's family (``unetkit.data.synthetic.FEATURES``:
sizes, camera, focus, illumination, chromatin, mitosis, sheets). This bench trains the same network on the same
number of images of the whole family (``none`` left out) and of the family with one group left out (every other
value drawn the same), and scores each zero-shot on the style-shift suite (``unetkit.data.domains``, plain and
with ``--diameter auto``) and on unseen images of the whole family. A feature earns its place when leaving it out
lowers the suite's mean. ``--arch`` compares network widths and depths the same way (``16x4,16x5``: base channels
x depth) on the whole family.

Prints a table (one row per run) and appends each run's scores to ``OUT/results.jsonl``. ``--jobs N`` runs N
training runs at once in child processes (a machine with many cores or a GPU); ``--steps``/``--n`` shorten it.
About 15 minutes per run on 2 CPU cores at the defaults.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def jobs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(left-out feature or "none", arch) pairs: every variant on the first arch, every other arch whole."""
    variants = [v for v in args.variants.split(",") if v]
    archs = [a for a in args.arch.split(",") if a]
    out = [(v, archs[0]) for v in variants]
    out += [("none", a) for a in archs[1:]]
    return out


def run_one(args: argparse.Namespace, variant: str, arch: str, root: Path) -> dict:
    import torch

    from unetkit import DataConfig, ModelConfig, RunConfig, TrainConfig, train, write_image
    from unetkit.data.synthetic import random_style, synth_nuclei
    from unetkit.workflows.pretrain import score_pretrained, score_suite

    if args.threads:
        torch.set_num_threads(args.threads)
    base, depth = (int(v) for v in arch.split("x"))
    tag = f"{variant}-{arch}"
    data = root / f"data-{tag}"
    without = () if variant == "none" else (variant,)
    t0 = time.perf_counter()
    for i in range(args.n):  # the recipe's data: image i's style and pixels depend on (seed, i) only
        style = random_style(
            np.random.default_rng(np.random.SeedSequence([args.seed, i, 1])), without=without
        )
        image, labels = synth_nuclei(args.size, np.random.SeedSequence([args.seed, i]), style)
        write_image(data / "images" / f"synth_{i:04d}.png", image, overwrite=True)
        write_image(data / "masks" / f"synth_{i:04d}.png", labels, overwrite=True)
    (data / "dataset.yaml").write_text("layout: paired\nmask_encoding: instances\n")
    generated = time.perf_counter() - t0
    cfg = RunConfig(
        model=ModelConfig(arch="unet", base_channels=base, depth=depth, norm="batch"),
        data=DataConfig(target="border", patch_size=args.patch, val_fraction=0.05, scale=args.scale,
                        intensity=0.2, normalization="percentile"),
        train=TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps // args.epochs,
                          batch_size=args.batch, lr=args.lr, warmup=100, patience=1000, seed=0,
                          device=args.device, num_workers=args.workers),
    )  # fmt: skip
    t1 = time.perf_counter()
    result = train(data, root / f"run-{tag}", cfg, progress=False)
    trained = time.perf_counter() - t1
    best = result.best_checkpoint
    row = {"variant": variant, "arch": arch, "steps": args.steps, "images": args.n,
           "generate_s": round(generated), "train_s": round(trained)}  # fmt: skip
    for diameter in (None, "auto"):
        suite = score_suite(best, root / "suite", device=args.device, diameter=diameter)
        row[f"suite{'_auto' if diameter else ''}"] = suite
    row["family"] = score_pretrained(
        best,
        {"style": "random", "n": 16, "size": 256, "seed": 1000},
        root / f"family-{tag}",
        device=args.device,
    )
    with open(root / "results.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def table(rows: list[dict]) -> str:
    domains = [d for d in rows[0]["suite"] if d != "mean"]
    head = ["left out", "net", *domains, "suite mean", "suite mean, auto", "family", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], r["arch"], *(f"{r['suite'][d]['f1']:.3f}" for d in domains)]
        cells += [f"**{r['suite']['mean']['f1']:.3f}**", f"{r['suite_auto']['mean']['f1']:.3f}"]
        cells += [f"{r['family']['f1']:.3f}", str(r["train_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default="none,sizes,camera,focus,illumination,chromatin,mitosis,sheets",
                        help="feature groups to leave out, one run each (none: the whole family)")  # fmt: skip
    parser.add_argument(
        "--arch", default="16x4", help="base channels x depth; the first trains every variant"
    )
    parser.add_argument("--n", type=int, default=800, help="training images (256²)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4000, help="training steps")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=192)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes per run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--jobs", type=int, default=1, help="training runs at once (child processes)")
    parser.add_argument("--only", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help="keep data, runs and results.jsonl here")
    args = parser.parse_args()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="unetkit-ablation-"))
    root.mkdir(parents=True, exist_ok=True)
    todo = jobs(args)
    if args.only is not None:
        run_one(args, *todo[args.only], root)
        return
    print(f"{len(todo)} runs of {args.steps} steps on {args.n} images; results in {root}", flush=True)
    from unetkit.data.domains import DOMAINS, synthesize_domain

    for name in DOMAINS:  # once, before the runs that share them
        synthesize_domain(name, root / "suite" / f"{name}-test", "test", overwrite=True)
    rows = []
    if args.jobs <= 1:
        for variant, arch in todo:
            rows.append(run_one(args, variant, arch, root))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    else:
        argv = [
            f"--{k}={v}" for k, v in vars(args).items() if k not in ("jobs", "only", "out") and v is not None
        ]
        running: list[subprocess.Popen] = []
        for k in range(len(todo)):
            while len([p for p in running if p.poll() is None]) >= args.jobs:
                time.sleep(2)
            child = [sys.executable, __file__, *argv, "--out", str(root), "--only", str(k)]
            running.append(subprocess.Popen(child))
        for p in running:
            p.wait()
        rows = [json.loads(line) for line in (root / "results.jsonl").read_text().splitlines()]
    print("\n## F1@0.5 zero-shot on the style-shift suite (test images of each domain) and on the family\n")
    print(table(rows))


if __name__ == "__main__":
    main()
