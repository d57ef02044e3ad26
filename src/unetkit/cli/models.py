"""``unetkit models``: the registered architectures and their sizes."""

from __future__ import annotations

import argparse

from ..config import ModelConfig
from ..models.registry import create_model, describe_model, list_models

DEFAULTS = ModelConfig()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the architectures (--arch NAME) with their parameter counts",
        description="List every registered architecture with its parameter count at the given width and depth "
        "(for one input channel and one output class), in 2-D and 3-D.",
    )
    p.add_argument("--base-channels", type=int, default=DEFAULTS.base_channels, help="(default: %(default)s)")
    p.add_argument("--depth", type=int, default=DEFAULTS.depth, help="(default: %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(f"{'name':<16}{'params 2-D':>14}{'params 3-D':>14}  description")
    for name in list_models():
        counts = []
        for dims in (2, 3):
            net = create_model(
                name, base_channels=args.base_channels, depth=args.depth, norm="batch", spatial_dims=dims
            )
            counts.append(sum(p.numel() for p in net.parameters()))
        print(f"{name:<16}{counts[0]:>14,}{counts[1]:>14,}  {describe_model(name)}")
    return 0
