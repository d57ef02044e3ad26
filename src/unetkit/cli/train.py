"""``unetkit train``: train a U-Net on a dataset folder."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..config import ARCH_ONLY_FIELDS, RunConfig, check_config, load_config, replace
from ..errors import ConfigError
from ..workflows.catalog import CPU_TRAIN_BUDGET, DEFAULT_BUDGET, list_models, parse_duration
from ..workflows.plan import plan_and_train
from ..workflows.train import guard_run_folder, new_folder, train
from .common import add_data_args, add_progress, config_with_data_args, reading_config
from .options import add_options, apply_options

log = logging.getLogger("unetkit")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a U-Net on a dataset (paired, DSB, ISBI, CTC or a list; see check-data)",
        description=(
            "Check the dataset (as check-data), train, and write OUT/best.pt, last.pt, "
            "config.yaml, metrics.csv, tb/ (TensorBoard) and curves.png. Settings come from the plan "
            "(DATA/plan.yaml, made on the fly if absent; see `unetkit plan`), or from --config, or from the "
            "defaults with --no-plan; then the flags given here."
        ),
    )
    p.add_argument(
        "data", metavar="DATA", help="dataset folder (any layout of `check-data`), or a .csv/.json list"
    )
    p.add_argument("--out", "-o", help="run folder to write (default: runs/NAME, numbered if it exists)")
    p.add_argument(
        "--plan",
        metavar="FILE",
        help="train with this plan (default: DATA/plan.yaml, made by `unetkit plan` first if absent)",
    )
    p.add_argument(
        "--no-plan", action="store_true", help="start from the built-in defaults instead of a plan"
    )
    p.add_argument(
        "--time-budget",
        help="the command's time, e.g. 5m, 2h: one clock from its start (planning included) to the last "
        "validation; the plan's epochs fill it (from its measured times), and no epoch starts that would "
        f"overrun it (default for a new plan: {CPU_TRAIN_BUDGET} on a CPU, {DEFAULT_BUDGET} on a GPU); with "
        "--resume, time more: the run's epochs grow by as many as fit at its measured pace",
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in RUN from RUN/last.pt with its own settings (only --epochs and --time-budget may "
        "change); the result is identical to an uninterrupted run",
    )
    add_data_args(p)
    g = p.add_argument_group("training")
    add_options(g, "train", ("epochs", "steps_per_epoch", "batch_size", "lr", "loss", "patience"))
    add_options(g, "train", ("select_by", "seed"))
    add_options(g, "train", ("device", "num_workers", "amp", "init", "freeze_norm"))
    add_options(g, "data", ("val_fraction", "val_split", "augment", "input_scale"))
    a = p.add_argument_group("augmentation (image, mask and weight map alike; seeded)")
    add_options(a, "data", AUGMENTATION)
    o = p.add_argument_group("optimisation")
    add_options(o, "train", ("optimizer", "momentum", "schedule", "warmup", "weight_decay", "class_weights"))
    add_options(o, "train", ("compile",))
    d = p.add_argument_group("distributed (torch.distributed; also under torchrun: see docs/scale-out.md)")
    d.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine: one per GPU, or CPU processes sharing the cores (gloo); "
        "--batch-size is the global batch, split between them (default: 1)",
    )
    add_options(d, "train", ("sync_bn",))
    m = p.add_argument_group("model")
    add_options(m, "model", MODEL, arch={"choices": list_models()})
    add_options(m, "data", ("patch_depth",))
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in OUT")
    add_progress(p)
    p.set_defaults(run=run)


#: the augmentation flags (data section)
AUGMENTATION = ("elastic", "elastic_sigma", "rotate", "scale", "intensity", "noise", "blur", "fg_fraction")
#: the model flags (model section); in_channels and num_classes come from the data (or --num-classes)
MODEL = (
    "arch",
    "depth",
    "base_channels",
    "padding",
    "up",
    "norm",
    "dropout",
    "spatial_dims",
    "anisotropic_levels",
    "deep_supervision",
    *ARCH_ONLY_FIELDS,
)


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """``base`` (or ``--config``, or the defaults) with every flag given on the command line."""
    cfg = config_with_data_args(args, base)  # data and model flags
    if cfg.model.norm == "none":
        cfg.model = replace(cfg.model, norm=None)
    cfg.train = apply_options(args, cfg.train, "train", skip=("time_budget",))  # a duration: see run()
    return cfg


RESUME_ALLOWED = {
    "data",
    "plan",
    "resume",
    "epochs",
    "time_budget",
    "nproc",
    "progress",
    "out",
    "run",
    "command",
    "verbose",
    "quiet",
    "started",
}


def default_run_dir(data: str | Path) -> Path:
    """``runs/NAME`` for dataset ``NAME``, or ``runs/NAME-2``, ``-3``...: never an existing folder."""
    out = new_folder("runs", Path(data).resolve().stem or "run")
    log.info("writing the run to %s (--out to choose)", out)
    return out


def configuring(args: argparse.Namespace) -> dict:
    """How the run's configuration is made from the flags (:func:`~unetkit.workflows.plan.configure_training`,
    as the napari Train widget makes it): the plan (or --config / --no-plan) with the flags on top, initialised
    from --init."""
    settings = None
    if args.config or args.no_plan:
        if args.plan:
            raise ConfigError("--plan FILE is a starting point of its own: drop --config or --no-plan")
        settings = load_config(args.config) if args.config else RunConfig()
    return {
        "settings": settings,
        "overrides": lambda cfg: config_from_args(args, cfg),
        "init": args.init,
        "lr_chosen": args.lr is not None,
        "time_budget": args.time_budget,
        "fixed_length": args.epochs is not None or args.steps_per_epoch is not None,
        "plan_file": args.plan,
        "reading": reading_config(args, RunConfig()),
        "device": args.device,
        "progress": args.progress,
        "started": args.started,
    }


def run(args: argparse.Namespace) -> int:
    if args.resume:
        given = sorted(k for k, v in vars(args).items() if k not in RESUME_ALLOWED and v not in (None, False))
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ConfigError(
                f"--resume uses the run's own settings; drop {flags} (only --epochs and --time-budget may change)"
            )
        if args.out and args.out != args.resume:
            raise ConfigError(f"--resume {args.resume} continues that folder; drop --out {args.out}")
        result = train(
            args.data,
            args.resume,
            resume=True,
            epochs=args.epochs,
            time_budget=parse_duration(args.time_budget) if args.time_budget else None,
            progress=args.progress,
            nproc=args.nproc,
            started=args.started,
        )
    else:
        check_config(config_from_args(args, RunConfig()))  # the flags themselves, before any planning
        out = Path(args.out) if args.out else default_run_dir(args.data)
        # before any planning: never among the inputs, nor over a run unless --overwrite
        guard_run_folder(args.data, out, (args.init, args.config), overwrite=args.overwrite)
        rank0 = int(os.environ.get("RANK", "0")) == 0
        result = plan_and_train(
            args.data,
            out,
            say=log.info if rank0 else (lambda _: None),
            overwrite=args.overwrite,
            nproc=args.nproc,
            **configuring(args),
        )
    if int(os.environ.get("RANK", "0")):  # under torchrun: rank 0 reports
        return 0
    stop = "stopped early" if result.stopped_early else "finished"
    at = "epoch 0 (the starting model)" if result.best_epoch == 0 else f"epoch {result.best_epoch}"
    print(
        f"training {stop} after {result.trained_epochs} epoch(s); best {result.score_name} {result.best_score:.4f} at {at}\n"
        f"  best checkpoint: {result.best_checkpoint}\n  curves: {result.run_dir / 'curves.png'}\n"
        f"  TensorBoard: tensorboard --logdir {result.run_dir / 'tb'}"
    )
    return 0
