"""``unetkit check-data``: every problem with a dataset, one line each, then a summary."""

from __future__ import annotations

import argparse

from ..workflows.catalog import check_dataset
from .common import add_data_args, add_progress, config_with_data_args
from .options import add_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-data",
        help="report every problem with a dataset before training",
        description=(
            "Read every image and mask once and report every problem, one line each with the file: unreadable "
            "or empty files, images without masks and masks without images, size mismatches, mask values "
            "outside the encoding, NaN/Inf pixels, mixed channel counts, duplicate names. A summary closes the "
            "report. Exit code 0 only if training would succeed. `unetkit train` runs the same checks first."
        ),
    )
    p.add_argument("data", metavar="DATA", help="dataset folder, or a .csv/.json list of image,mask paths")
    add_data_args(p)
    # --spatial-dims: default as DATA/dataset.yaml says (spatial_dims: 3), else 2-D
    add_options(p, "model", ("spatial_dims",))
    add_progress(p)  # every command takes --no-progress, so scripts can pass it to all
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_with_data_args(args)
    given = args.spatial_dims is not None or bool(args.config)
    report = check_dataset(
        args.data,
        cfg.data,
        num_classes=cfg.model.num_classes,
        in_channels=cfg.model.in_channels,
        volumes=(cfg.model.spatial_dims == 3) if given else None,  # None: DATA/dataset.yaml decides
    )
    for problem in report.problems:
        print(f"problem: {problem}")
    for note in report.notes:
        print(f"note: {note}")
    if report.problems:
        print()
    print(report.summary())
    if report.ok:
        print("\nOK: training would start with these settings")
        return 0
    print(f"\n{len(report.problems) or 1} problem(s): training would be refused")
    return 1
