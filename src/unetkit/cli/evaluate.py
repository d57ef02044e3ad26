"""``unetkit evaluate``: the field's metrics, from prediction files or straight from a model."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..metrics.evaluate import MODES, evaluate, evaluate_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions (or a model) against ground truth",
        description=(
            "Pair PRED/NAME.* with GT/NAME.* (or GT/masks/NAME.*) by file name and print per-image and mean "
            "scores: semantic (Dice, IoU, precision, recall, pixel accuracy, Hausdorff/HD95/mean surface "
            "distance), instance (Hungarian matching at IoU 0.5: TP/FP/FN, F1, PQ, Data Science Bowl 2018 "
            "score, AJI, splits, merges) or isbi (pixel error, V_Rand, V_Info, warping error). With a "
            "checkpoint as first argument, the model predicts DATA's images first."
        ),
    )
    p.add_argument(
        "pred", metavar="PRED_OR_MODEL", help="folder of predictions, or a checkpoint (RUN/best.pt)"
    )
    p.add_argument("gt", metavar="GT_OR_DATA", help="folder of ground-truth masks, or a dataset folder")
    p.add_argument("--mode", choices=MODES, default="auto", help="which metrics (default: from the data)")
    p.add_argument("--json", metavar="FILE", help="also write every score and its definition as JSON")
    p.add_argument("--csv", metavar="FILE", help="also write one row per image (and the mean) as CSV")
    p.add_argument("--report", metavar="DIR", help="also write an HTML report with error pictures")
    p.add_argument(
        "--out", metavar="DIR", help="with a MODEL: keep its predictions here (default: discarded)"
    )
    p.add_argument("--device", default="auto", help="with a MODEL: auto, cpu, cuda, ... (default: auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report or predictions")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if Path(args.pred).is_file():
        with tempfile.TemporaryDirectory() as tmp:
            result = evaluate_model(
                args.pred,
                args.gt,
                args.out or Path(tmp) / "pred",
                mode=args.mode,
                device=args.device,
                overwrite=args.overwrite,
            )
            _write(result, args)
    else:
        result = evaluate(args.pred, args.gt, mode=args.mode)
        _write(result, args)
    return 0


def _write(result, args: argparse.Namespace) -> None:
    print(f"mode: {result.mode}")
    print(result.table())
    if args.json:
        print(f"wrote {result.write_json(args.json)}")
    if args.csv:
        print(f"wrote {result.write_csv(args.csv)}")
    if args.report:
        from ..metrics.report import write_report

        print(f"wrote {write_report(result, args.report, overwrite=args.overwrite)}")
