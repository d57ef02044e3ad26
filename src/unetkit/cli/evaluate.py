"""``unetkit evaluate``: the field's metrics, from prediction files or straight from a model."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..config import RunConfig
from ..errors import ConfigError
from ..workflows.evaluate import evaluate, evaluate_model, guard_evaluation_outputs, model_or_predictions
from .common import add_progress, add_reading_args, reading_config
from .options import add_options, given_options


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
        "pred",
        metavar="PRED_OR_MODEL",
        help="folder of predictions, or a model: a built-in model (nuclei), a run folder, RUN/best.pt or a .onnx "
        "file",
    )
    p.add_argument(
        "gt",
        metavar="GT_OR_DATA",
        help="a dataset in any layout train takes, or a folder of ground-truth masks",
    )
    add_options(p, "evaluate", ("mode",))
    p.add_argument("--json", metavar="FILE", help="also write every score and its definition as JSON")
    p.add_argument("--csv", metavar="FILE", help="also write one row per image (and the mean) as CSV")
    p.add_argument("--report", metavar="DIR", help="also write an HTML report with error pictures")
    p.add_argument(
        "--out", metavar="DIR", help="with a MODEL: keep its predictions here (default: discarded)"
    )
    p.add_argument("--device", default="auto", help="with a MODEL: auto, cpu, cuda, ... (default: auto)")
    add_options(p, "evaluate", ("pred_encoding",))
    add_options(p, "predict", ("invert",))  # with a MODEL: how it reads the images
    p.add_argument("--overwrite", action="store_true", help="replace an existing report or predictions")
    add_progress(p)
    add_reading_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    data = reading_config(args, RunConfig()).data
    if args.num_classes and data.mask_encoding == "classes" and not data.class_values:
        data.class_values = list(range(args.num_classes))
    kind = model_or_predictions(args.pred)
    is_model = kind != "predictions"
    reading = {k: v for k, v in given_options(args, "predict").items() if k == "invert"}  # how a MODEL reads
    for flag, given in (("--channel", data.channel is not None), ("--invert", bool(reading))):
        if given and not is_model:
            raise ConfigError(
                f"{flag} says how a MODEL reads the images; {args.pred} holds predictions: drop it"
            )
    guard_evaluation_outputs(
        args.pred, args.gt, kind == "model", csv=args.csv, json=args.json, report=args.report,
        overwrite=args.overwrite, config=getattr(args, "config", None),
    )  # fmt: skip
    if is_model:
        with tempfile.TemporaryDirectory() as tmp:
            result = evaluate_model(
                args.pred,
                args.gt,
                args.out or Path(tmp) / "pred",
                device=args.device,
                overwrite=args.overwrite,
                progress=args.progress,
                data_config=data,
                **{k: v for k, v in given_options(args, "evaluate").items() if k != "pred_encoding"},
                **reading,
            )
            _write(result, args)
    else:
        result = evaluate(args.pred, args.gt, data_config=data, **given_options(args, "evaluate"))
        _write(result, args)
    return 0


def _write(result, args: argparse.Namespace) -> None:
    print(f"mode: {result.mode}")
    for note in result.notes:
        print(f"  {note}")
    print(result.table())
    if args.json:
        print(f"wrote {result.write_json(args.json)}")
    if args.csv:
        print(f"wrote {result.write_csv(args.csv)}")
    if args.report:
        from ..workflows.report import write_report

        print(f"wrote {write_report(result, args.report, overwrite=args.overwrite)}")
