"""``unetkit plan``: fingerprint a dataset, choose a training setup for this machine, write DATA/plan.yaml."""

from __future__ import annotations

import argparse

from ..config import ARCH_ONLY_FIELDS, RunConfig, check_config
from ..workflows.catalog import DEFAULT_BUDGET, PLAN_FILE, list_models
from ..workflows.plan import guard_plan_file, plan_training
from .common import add_progress, add_reading_args, reading_config
from .options import add_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="choose patch size, depth, batch, normalisation, targets and epochs from a dataset and a time budget",
        description=(
            "Fingerprint DATA (sizes, spacings, channels, intensities, class frequencies, object diameters, "
            "touching objects), choose a training setup for the device, measure it there (a trial step for the "
            "batch, a short training run for the epochs that fill --time-budget), and write DATA/plan.yaml with "
            "the reason for every value. `unetkit train DATA` then uses it; flags override any value."
        ),
    )
    p.add_argument("data", metavar="DATA", help="dataset folder (any layout of `check-data`)")
    p.add_argument(
        "--out",
        "-o",
        help=f"plan file to write (default: DATA/{PLAN_FILE}, or LIST.{PLAN_FILE} beside a list)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument(
        "--time-budget",
        default=DEFAULT_BUDGET,
        help=f"training time to fill, e.g. 30m, 2h, 1h30m (default: {DEFAULT_BUDGET}; a bare `unetkit train DATA` "
        "without a plan uses 10m on a CPU)",
    )
    p.add_argument(
        "--no-measure",
        action="store_true",
        help="skip the measured training run (quick look at the choices; epochs stay at the default)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing plan file")
    add_progress(p)
    add_reading_args(p)
    m = p.add_argument_group("model (the plan chooses the rest)")
    add_options(m, "model", ("arch", "deep_supervision", *ARCH_ONLY_FIELDS), arch={"choices": list_models()})
    p.set_defaults(run=run)


def _reading_flags(args: argparse.Namespace) -> str:
    """Reading flags that must follow the plan to another file (DATA/plan.yaml itself holds them)."""
    if not args.out:
        return ""
    return f" --plan {args.out}"


def run(args: argparse.Namespace) -> int:
    path = guard_plan_file(args.data, args.out, getattr(args, "config", None), overwrite=args.overwrite)
    reading = reading_config(args, RunConfig())
    check_config(reading)  # the flags themselves, before anything is read
    plan = plan_training(
        args.data,
        device=args.device,
        time_budget=args.time_budget,
        config=reading,
        calibrate=not args.no_measure,
        progress=args.progress,
    )
    plan.write(path, overwrite=True)
    print(plan.summary())
    flags = _reading_flags(args)
    print(f"  plan: {path}\n  train with it: unetkit train {args.data}{flags}")
    return 0
