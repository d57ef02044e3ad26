"""``unetkit weights``: write the paper's weight maps of a dataset as pictures to look at."""

from __future__ import annotations

import argparse

from ..workflows.weights import write_weight_maps
from .common import add_data_args, add_progress, config_with_data_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="write the paper's weight maps (class balance + separation borders) of a dataset",
        description=(
            "For every mask of DATA write OUT/NAME_weights.png (a heat map to look at) and OUT/NAME_weights.tif "
            "(float32 values) of w(x) = w_c(x) + w0*exp(-(d1+d2)^2/(2 sigma^2)), Ronneberger et al. 2015, Eq. 2. "
            "Use --border-gap to cut separation borders between touching instances first."
        ),
    )
    p.add_argument("data", metavar="DATA", help="dataset folder")
    p.add_argument("--out", "-o", required=True, help="folder for the weight maps")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in OUT")
    add_data_args(p)
    add_progress(p)  # every command takes --no-progress, so scripts can pass it to all
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_with_data_args(args)
    maps = write_weight_maps(args.data, args.out, cfg, overwrite=args.overwrite, progress=args.progress)
    d = cfg.data
    print(
        f"wrote {maps.count} weight maps to {maps.out} (w0={d.w0}, sigma={d.sigma}, border gap {d.border_gap}); "
        f"max weight {maps.max_weight:.2f}"
    )
    return 0
