"""``unetkit weights``: write the paper's weight maps of a dataset as pictures to look at."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..config import check_config
from ..data.checks import check_dataset
from ..data.io import write_image
from ..data.layouts import read_sample_mask
from ..safety import guard_outputs, sample_files
from ..viz import heatmap
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
    check_config(cfg)  # --w0, --sigma: before any mask is read
    report = check_dataset(args.data, cfg.data, num_classes=cfg.model.num_classes)
    report.raise_if_problems()
    encoding, out = report.encoding, Path(args.out)
    assert encoding is not None
    outputs = [out / f"{s.name}_weights.{ext}" for s in report.samples for ext in ("tif", "png")]
    guard_outputs(sample_files(report.samples), out, outputs)
    for s in tqdm(report.samples, desc="weights", unit="mask", disable=not args.progress):
        mask = read_sample_mask(s)
        target = encoding.encode(mask, s.mask_label)
        w = encoding.weights(mask, target, cfg.data.w0, cfg.data.sigma, cfg.data.weight_balance)
        write_image(out / f"{s.name}_weights.tif", w, overwrite=args.overwrite)
        write_image(out / f"{s.name}_weights.png", heatmap(w), overwrite=args.overwrite)
    print(
        f"wrote {len(report.samples)} weight maps to {out} (w0={cfg.data.w0}, sigma={cfg.data.sigma}, "
        f"border gap {cfg.data.border_gap}); max weight {float(np.max(w)):.2f}"
    )
    return 0
