"""``unetkit demo``: the whole pipeline on built-in synthetic nuclei."""

from __future__ import annotations

import argparse

from ..workflows.demo import run_demo
from .common import add_progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="synthetic nuclei → train → predict → evaluate → pictures (about 2 minutes on a CPU)",
        description=(
            "Generate the built-in synthetic nuclei, train a small U-Net, segment held-out images of another "
            "size, print Dice and IoU, and write overlays and training curves under OUT."
        ),
    )
    p.add_argument("--out", "-o", default="demo-output", help="output folder (default: demo-output)")
    p.add_argument("--epochs", type=int, help="training epochs (default: 12)")
    p.add_argument("--n-train", type=int, default=40, help="synthetic training images (default: 40)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier demo results in OUT")
    add_progress(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    r = run_demo(
        args.out,
        n_train=args.n_train,
        epochs=args.epochs,
        device=args.device,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    print(r.evaluation.table())
    print(
        f"\nheld-out images: mean Dice {r.evaluation.mean_dice:.4f}, mean IoU {r.evaluation.mean_iou:.4f} "
        f"({len(r.evaluation.images)} images never seen in training)\n"
        f"overlays: {r.out / 'overlays'}/  curves: {r.training.run_dir / 'curves.png'}\n"
        f"checkpoint: {r.training.best_checkpoint}  scores: {r.out / 'scores.json'}\n"
        f"finished in {r.seconds:.0f} s"
    )
    return 0
