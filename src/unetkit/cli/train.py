"""``unetkit train``: train a U-Net on a dataset folder."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..config import RunConfig, check_config, replace
from ..data.checks import naming_of
from ..data.layouts import load_layout
from ..device import resolve_device
from ..errors import ConfigError
from ..models import list_models
from ..planning import (
    CPU_TRAIN_BUDGET,
    DEFAULT_BUDGET,
    parse_duration,
    read_plan,
    rebudget,
)
from ..safety import writable
from ..workflows.plan import plan_training
from ..workflows.train import train
from .common import add_data_args, config_with_data_args, reading_config
from .plan import plan_path

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
        help=f"training time, planning included, e.g. 5m, 2h: the plan's epochs fill it (from its measured "
        f"times), and no epoch starts that would overrun it (default for a new plan: {CPU_TRAIN_BUDGET} on a CPU, "
        f"{DEFAULT_BUDGET} on a GPU)",
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in RUN from RUN/last.pt with its own settings (only --epochs may change); "
        "the result is identical to an uninterrupted run",
    )
    add_data_args(p)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, help="maximum number of epochs (default: 40)")
    g.add_argument("--steps-per-epoch", type=int, help="optimiser steps per epoch (default: 25)")
    g.add_argument("--batch", type=int, help="patches per step (default: 8)")
    g.add_argument("--lr", type=float, help="Adam learning rate (default: 1e-3)")
    g.add_argument("--loss", help="auto, bce, ce, dice, bce_dice, ce_dice (default: auto)")
    g.add_argument(
        "--patience", type=int, help="early stopping: epochs without a better validation Dice (default: 10)"
    )
    g.add_argument("--seed", type=int, help="random seed (default: 0)")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: auto: CUDA when present)")
    g.add_argument("--workers", type=int, help="DataLoader worker processes (default: 0)")
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    g.add_argument(
        "--val-fraction",
        type=float,
        help="fraction of images (or rows, for < 4 images) held out (default: 0.2)",
    )
    g.add_argument("--no-augment", action="store_true", help="no random flips and rotations")
    a = p.add_argument_group("augmentation (image, mask and weight map alike; seeded)")
    a.add_argument(
        "--elastic",
        action=argparse.BooleanOptionalAction,
        help="the paper's elastic deformation: 3x3 grid, 10 px std (default: off, or the plan's)",
    )
    a.add_argument("--elastic-sigma", type=float, help="elastic displacement std in pixels (default: 10)")
    a.add_argument("--rotate", type=float, help="free rotation up to this many degrees (default: 0)")
    a.add_argument("--scale", type=float, help="scaling by up to this fraction, e.g. 0.2 (default: 0)")
    a.add_argument(
        "--intensity", type=float, help="brightness/contrast/gamma jitter strength, e.g. 0.2 (default: 0)"
    )
    a.add_argument("--noise", type=float, help="Gaussian noise std in normalised units (default: 0)")
    a.add_argument("--blur", type=float, help="Gaussian blur sigma up to this (default: 0)")
    a.add_argument(
        "--fg-fraction", type=float, help="share of patches centred near an object (default: 0.33)"
    )
    o = p.add_argument_group("optimisation")
    o.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), help="default adam; sgd uses --momentum")
    o.add_argument("--momentum", type=float, help="SGD momentum (default: 0.99, as the paper)")
    o.add_argument(
        "--schedule", choices=("cosine", "poly", "constant"), help="learning-rate schedule (default: cosine)"
    )
    o.add_argument("--warmup", type=int, help="linear warm-up steps (default: 0)")
    o.add_argument(
        "--class-weights", type=float, nargs="+", metavar="W", help="one weight per class for the CE term"
    )
    o.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA; slower start)")
    d = p.add_argument_group("distributed (torch.distributed; also under torchrun: see the README)")
    d.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine: one per GPU, or CPU processes sharing the cores (gloo); "
        "--batch is the global batch, split between them (default: 1)",
    )
    d.add_argument("--sync-bn", action="store_true", help="synchronise batch-norm statistics across GPUs")
    m = p.add_argument_group("model")
    m.add_argument("--arch", help=f"architecture: {', '.join(list_models())} (default: unet)")
    m.add_argument("--depth", type=int, help="number of poolings (default: 4, as the paper)")
    m.add_argument(
        "--base-channels", type=int, help="channels at the first level, doubling per level (default: 16)"
    )
    m.add_argument(
        "--padding", choices=("same", "valid"), help="same: any size; valid: the paper's unpadded net"
    )
    m.add_argument(
        "--up", choices=("transpose", "bilinear"), help="up-sampling (default: transpose, as the paper)"
    )
    m.add_argument(
        "--norm", choices=("batch", "instance", "group", "none"), help="normalisation (default: batch)"
    )
    m.add_argument("--dropout", type=float, help="dropout at the end of the contracting path (paper: 0.5)")
    m.add_argument(
        "--spatial-dims",
        type=int,
        choices=(2, 3),
        help="3: volumes (TIFF z-stacks, .npy, .zarr) and a 3-D network (default: 2, or DATA/dataset.yaml's)",
    )
    m.add_argument("--patch-depth", type=int, help="volumes: patch size along z (default: --patch)")
    m.add_argument(
        "--anisotropic-levels", type=int, help="volumes: the first N poolings keep z (coarse z spacing)"
    )
    m.add_argument("--deep-supervision", action="store_true", help="unet++: a loss on every nested output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    cfg = config_with_data_args(args, base)
    cfg.model = replace(
        cfg.model,
        name=args.arch,
        depth=args.depth,
        base_channels=args.base_channels,
        padding=args.padding,
        up=args.up,
        dropout=args.dropout,
        spatial_dims=args.spatial_dims,
        anisotropic_levels=args.anisotropic_levels,
        deep_supervision=args.deep_supervision or None,
    )
    if args.norm is not None:
        cfg.model = replace(cfg.model, norm=None if args.norm == "none" else args.norm)
    cfg.data = replace(
        cfg.data,
        patch_depth=args.patch_depth,
        val_fraction=args.val_fraction,
        augment=False if args.no_augment else None,
        elastic=args.elastic,
        elastic_sigma=args.elastic_sigma,
        rotate=args.rotate,
        scale=args.scale,
        intensity=args.intensity,
        noise=args.noise,
        blur=args.blur,
        fg_fraction=args.fg_fraction,
    )
    cfg.train = replace(
        cfg.train,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch,
        lr=args.lr,
        loss=args.loss,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        num_workers=args.workers,
        amp=False if args.no_amp else None,
        optimizer=args.optimizer,
        momentum=args.momentum,
        schedule=args.schedule,
        warmup=args.warmup,
        class_weights=args.class_weights,
        compile=True if args.compile else None,
        sync_bn=True if args.sync_bn else None,
    )
    return cfg


RESUME_ALLOWED = {
    "data",
    "plan",
    "resume",
    "epochs",
    "nproc",
    "no_progress",
    "out",
    "run",
    "command",
    "verbose",
    "quiet",
}


def default_run_dir(data: str | Path) -> Path:
    """``runs/NAME`` for dataset ``NAME``, or ``runs/NAME-2``, ``-3``...: never an existing folder."""
    name = Path(data).resolve().stem or "run"
    out = Path("runs") / name
    k = 2
    while out.exists():
        out, k = Path("runs") / f"{name}-{k}", k + 1
    log.info("writing the run to %s (--out to choose)", out)
    return out


def default_time_budget(device: str | None) -> str:
    """The budget a bare `unetkit train DATA` plans for: short on a CPU (a newcomer's first run), longer on a GPU."""
    return CPU_TRAIN_BUDGET if resolve_device(device or "auto").type == "cpu" else DEFAULT_BUDGET


def planned_config(args: argparse.Namespace, out: Path | None = None) -> tuple[RunConfig | None, dict]:
    """The plan to start from (read, or made now and written) and its measured times, or None for --config
    / --no-plan. A plan made here fills --time-budget (default: CPU_TRAIN_BUDGET on a CPU), planning
    included; with --epochs or --steps-per-epoch it skips the measured run (the flags fix the length)."""
    if args.config or args.no_plan:
        if args.plan:
            raise ConfigError("--plan FILE is a starting point of its own: drop --config or --no-plan")
        return None, {}
    path = Path(args.plan) if args.plan else plan_path(args.data, None)
    budget = parse_duration(args.time_budget)
    if path.is_file():
        cfg, info = read_plan(path)
        counted = info["fingerprint"].get("samples")
        log.info("training with the plan %s", path)
        if budget is not None and budget != cfg.train.time_budget:
            cfg, reason = rebudget(cfg, info["measured"], budget)
            log.info("--time-budget %s: %d epochs (%s)", args.time_budget, cfg.train.epochs, reason)
        if counted and Path(args.data).is_dir():
            now = len(load_layout(Path(args.data), cfg.data.layout, naming=naming_of(cfg.data)).samples)
            if now != counted:
                log.warning(
                    "%s was made for %d samples; %s now holds %d: plan again with `unetkit plan %s --overwrite`",
                    path,
                    counted,
                    args.data,
                    now,
                    args.data,
                )
        return cfg, info["measured"]
    if args.plan:
        raise ConfigError(f"--plan {path}: no such file (make one with `unetkit plan DATA --out {path}`)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"{path} is missing: run `unetkit plan {args.data}` once before torchrun")
    if out is not None and not writable(path.parent):  # a read-only dataset: the plan goes with the run
        log.info("%s is not writable: the plan goes to %s", path.parent, out / "plan.yaml")
        out.mkdir(parents=True, exist_ok=True)
        path = out / "plan.yaml"
    fixed = args.epochs is not None or args.steps_per_epoch is not None
    if args.time_budget is None:
        cpu = resolve_device(args.device or "auto").type == "cpu"
        args.time_budget = default_time_budget(args.device)
        if not fixed:
            log.info(
                "no %s yet and no --time-budget: planning a %s run on this %s (planning included; "
                "--time-budget 1h for longer)",
                path,
                args.time_budget,
                "CPU" if cpu else "GPU",
            )
    log.info(
        "planning %s (%s)",
        path,
        "no measured run: --epochs/--steps-per-epoch fix the length"
        if fixed
        else "a trial step and a short measured run, counted in the budget",
    )
    plan = plan_training(
        args.data,
        device=args.device or "auto",
        time_budget=args.time_budget,
        config=reading_config(args, RunConfig()),
        calibrate=not fixed,
        progress=not args.no_progress,
        budget_includes_planning=True,
    )
    plan.write(path)
    log.info("wrote %s:\n%s", path, plan.summary())
    return plan.config, plan.measured


def announce(cfg: RunConfig, measured: dict, data: str | Path, out: str | Path) -> str:
    """What training will do and how long it will take, said before it starts."""
    t, d, m = cfg.train, cfg.data, cfg.model
    what = (
        f"{t.epochs} epoch(s) x {t.steps_per_epoch} steps of {t.batch_size} patches of {d.patch_size} px "
        f"(U-Net depth {m.depth}, base {m.base_channels}) on {data} into {out}"
    )
    step = measured.get("step_seconds")
    val = measured.get("validation_seconds", 0.0)
    if step:
        est = t.epochs * (t.steps_per_epoch * step + val) + measured.get("startup_seconds", 0.0)
        when = f"about {_minutes(est)} (measured {step:.2f} s/step)"
    else:
        when = "time not measured (no plan measurement for these settings)"
    if t.time_budget:
        when += f"; stops before an epoch that would pass {_minutes(t.time_budget)}"
    return f"training: {what}; {when}; early stopping after {t.patience} epoch(s) without a better Dice"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def run(args: argparse.Namespace) -> int:
    if args.resume:
        given = sorted(k for k, v in vars(args).items() if k not in RESUME_ALLOWED and v not in (None, False))
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ConfigError(
                f"--resume uses the run's own settings; drop {flags} (only --epochs may change)"
            )
        if args.out and args.out != args.resume:
            raise ConfigError(f"--resume {args.resume} continues that folder; drop --out {args.out}")
        result = train(
            args.data,
            args.resume,
            resume=True,
            epochs=args.epochs,
            progress=not args.no_progress,
            nproc=args.nproc,
        )
    else:
        check_config(config_from_args(args, RunConfig()))  # the flags themselves, before any planning
        out = Path(args.out) if args.out else default_run_dir(args.data)
        planned, measured = planned_config(args, out)
        cfg = config_from_args(args, planned)
        if args.time_budget and (args.config or args.no_plan):
            cfg.train = replace(cfg.train, time_budget=parse_duration(args.time_budget))
        if int(os.environ.get("RANK", "0")) == 0:
            log.info(
                "%s",
                announce(
                    cfg,
                    measured
                    if planned is not None and cfg.train.batch_size == planned.train.batch_size
                    else {},
                    args.data,
                    out,
                ),
            )
        result = train(
            args.data,
            out,
            cfg,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            nproc=args.nproc,
        )
    if int(os.environ.get("RANK", "0")):  # under torchrun: rank 0 reports
        return 0
    stop = "stopped early" if result.stopped_early else "finished"
    print(
        f"training {stop} after {len(result.history)} epoch(s); best validation Dice "
        f"{result.best_score:.4f} at epoch {result.best_epoch}\n"
        f"  best checkpoint: {result.best_checkpoint}\n  curves: {result.run_dir / 'curves.png'}\n"
        f"  TensorBoard: tensorboard --logdir {result.run_dir / 'tb'}"
    )
    return 0
