"""``unetkit review``: the doubtful objects of a prediction, listed, drawn and made ready to correct."""

from __future__ import annotations

import argparse

from ..workflows.review import review
from .common import add_progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review",
        help="list, draw and prepare for correction the least confident objects of a prediction",
        description=(
            "Read PRED/NAME_objects.csv (unetkit predict MODEL IMAGES --instances --out PRED) and list the "
            "objects under a confidence, least confident first. With --images (the images that were predicted): "
            "--sheet draws them on a contact sheet; --corrections adds a numbered round of regions around them to "
            "a dataset folder, to correct in any label editor (pixels outside the regions are ignored in "
            "training). Then: unetkit train DIR --init MODEL --time-budget 1m learns from every round so far."
        ),
    )
    p.add_argument("pred", metavar="PRED", help="a prediction folder written with --instances")
    p.add_argument(
        "--below", type=float, default=0.5, metavar="C",
        help="objects with a confidence under C (default: 0.5; 1 lists every object)",
    )  # fmt: skip
    p.add_argument(
        "--most", type=int, metavar="N", help="at most the N least confident objects over all images"
    )
    p.add_argument(
        "--images", metavar="IMAGES", help="the images that were predicted (folder, dataset or file)"
    )
    p.add_argument("--sheet", metavar="FILE.png", help="write the objects on a contact sheet (PNG)")
    p.add_argument(
        "--corrections", metavar="DIR",
        help="add the regions to correct to this dataset folder (new, or one review wrote: a new round)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing --sheet")
    add_progress(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    found = review(
        args.pred,
        below=args.below,
        most=args.most,
        images=args.images,
        sheet=args.sheet,
        corrections=args.corrections,
        overwrite=args.overwrite,
    )
    print(
        f"{len(found.doubtful)} of {found.objects} object(s) in {found.images} image(s) "
        f"{'under confidence ' + format(args.below, 'g') if args.below is not None else 'listed'}"
        + (f" (the {args.most} least confident)" if args.most else "")
        + (f"; {found.corrected} more are in regions corrected in earlier rounds" if found.corrected else "")
    )
    if found.doubtful:
        print(found.text())
    if found.sheet:
        print(f"contact sheet: {found.sheet}")
    if found.corrections:
        print(
            f"round {found.round} of corrections: {len(found.files)} image(s) in {found.corrections} (regions to "
            f"correct in masks/r{found.round}_*.tif; listed in {found.corrections / 'review.csv'})\n"
            f"then: unetkit train {found.corrections} --init MODEL --time-budget 1m"
        )
    return 0
