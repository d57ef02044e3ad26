"""``unetkit evaluate``: Dice and IoU of predicted masks against ground truth."""

from __future__ import annotations

import argparse

from ..metrics.evaluate import evaluate


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predicted masks against ground truth",
        description=(
            "Pair PRED/NAME.png with GT/NAME.* (or GT/masks/NAME.*) by file name and print per-image and mean "
            "foreground Dice and IoU (non-zero pixels are foreground; both empty counts as 1.0)."
        ),
    )
    p.add_argument("pred", metavar="PRED", help="folder of predicted masks")
    p.add_argument("gt", metavar="GT", help="folder of ground-truth masks, or a dataset folder with masks/")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = evaluate(args.pred, args.gt)
    print(result.table())
    if args.json:
        print(f"wrote {result.write_json(args.json)}")
    return 0
