"""``unetkit models``: the built-in pretrained models, and the registered architectures with their sizes."""

from __future__ import annotations

import argparse

from ..config import ModelConfig
from ..workflows.catalog import architecture_sizes, list_pretrained
from .common import add_progress

DEFAULTS = ModelConfig()
#: what each registry score set is, in words
SCORE_SETS = {
    "validation": "unseen images of its training family",
    "style_shift": "held-out styles (version 2)",
    "suite": "style-shift suite, mean over its domains (make bench-pretrained)",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the built-in pretrained models and the architectures (--arch NAME)",
        description="List the built-in pretrained models (use one by name: `unetkit predict nuclei IMAGES --out "
        "PRED`, `unetkit train DATA --init nuclei`) with what they were trained on, their size and validation "
        "scores; then every registered architecture with its parameter count at the given width and depth "
        "(for one input channel and one output class), in 2-D and 3-D.",
    )
    p.add_argument("--base-channels", type=int, default=DEFAULTS.base_channels, help="(default: %(default)s)")
    p.add_argument("--depth", type=int, default=DEFAULTS.depth, help="(default: %(default)s)")
    add_progress(p)  # every command takes --no-progress, so scripts can pass it to all
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("Built-in pretrained models (shipped in the package; MODEL for predict, evaluate, export, --init):")
    for m in list_pretrained():
        state = f"{m.bytes / 1e6:.1f} MB" if m.sha256 else "weights not built (make pretrained)"
        print(f"  {m.name:<14}{m.summary} [{state}]")
        print(f"  {'':<14}data: {m.modality}")
        print(f"  {'':<14}trained on: {m.trained_on}")
        for set_name, scores in m.scores.items():
            numbers = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
            print(f"  {'':<14}{SCORE_SETS.get(set_name, set_name.replace('_', ' '))}: {numbers}")
        if m.suite:
            f1 = ", ".join(f"{domain} {s['f1']:.2f}" for domain, s in m.suite.items())
            print(f"  {'':<14}F1@0.5 per suite domain: {f1}")
    print("\nArchitectures (--arch NAME):")
    print(f"{'name':<16}{'params 2-D':>18}{'params 3-D':>18}  description")
    for name, two, three, description in architecture_sizes(args.base_channels, args.depth):
        print(f"{name:<16}{two:>18,}{three:>18,}  {description}")
    return 0
