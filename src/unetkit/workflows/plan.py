"""The ``plan`` workflow: fingerprint a dataset, apply the planning rules, measure on the device (a trial pass for
the batch, a short real training run for the step and validation times) and fill the time budget."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import preprocessing_of
from ..config import FINE_TUNE_LR, RunConfig
from ..data.checks import described_volumes, naming_of
from ..data.io import IMAGE_SUFFIXES
from ..data.layouts import load_layout
from ..data.spec import DESCRIPTOR
from ..device import resolve_device
from ..errors import ConfigError, DataError
from ..inference.writers import temp_root, work_folder
from ..planning import (
    CPU_TRAIN_BUDGET,
    DEFAULT_BUDGET,
    PLAN_FILE,
    Plan,
    fingerprint,
    format_duration,
    parse_duration,
    read_plan,
    rebudget,
)
from ..planning.fingerprint import describe_dataset
from ..planning.measure import PeakMemory, fit_batch
from ..planning.planfile import is_plan
from ..planning.rules import (
    augmentation_rules,
    geometry_rules,
    init_proposal,
    intensity_rules,
    learning_rate_rule,
    length_rules,
    norm_rule,
    patience_for,
    target_rules,
    width_rule,
)
from ..pretrained import list_pretrained
from ..safety import guard_file, writable
from ..training.distributed import DistContext
from ..training.init import INIT_ARCH_FIELDS, init_config, init_evidence
from ..training.loop import TrainHooks, validate
from ..training.setup import build_training
from ..training.state import TrainResult
from .train import announce, resolve_data, starting_from, train

__all__ = ["PROBE_BUDGET", "default_time_budget", "plan_for_training", "plan_path", "plan_training"]

log = logging.getLogger(__name__)

#: budgets up to this many seconds are planned from a probe of a few real steps, not a measured run
PROBE_BUDGET = 600.0
#: the probe's timed steps (after one that warms up: decoding, caches, kernels)
PROBE_STEPS = 3


def plan_training(
    data: str | Path,
    *,
    device: str = "auto",
    time_budget: str | float | None = DEFAULT_BUDGET,
    config: RunConfig | None = None,
    calibrate: bool = True,
    progress: bool = False,
    budget_includes_planning: bool = False,
    started: float | None = None,
) -> Plan:
    """Fingerprint ``data`` and choose a training setup for ``device`` and ``time_budget`` (see the module).

    ``config``: how to read the data (layout, mask encoding, class map, ignore index are kept; everything
    else is planned) and ``train.init``, the model to fine-tune: its architecture is the one measured. For
    budgets up to ``PROBE_BUDGET`` the times come from a probe of a few real steps instead of the measured run
    (on a CPU without the trial pass either: the probe's steps run at the usual batch and report their memory),
    so a short budget trains instead of planning. ``calibrate=False`` skips the measurement: the epochs are then the default and the plan says so
    (quick, for looking at the choices). ``budget_includes_planning``: the epochs fill what is left of the
    budget after planning (``unetkit train`` planning on the fly), on a clock that began at ``started`` (a
    ``time.perf_counter()`` reading; default: now)."""
    budget = parse_duration(time_budget)
    dev = resolve_device(device)  # a bad --device is refused before anything is read
    base = config or RunConfig()
    t_start = time.perf_counter() if started is None else started
    volumes = base.model.spatial_dims == 3 or described_volumes(data)
    evidence = init_evidence(base.train.init) if base.data.mask_encoding == "auto" else None
    fp = fingerprint(data, base.data, volumes=volumes, num_classes=base.model.num_classes, evidence=evidence)
    cuda = dev.type == "cuda"
    reasons: dict[str, str] = {}
    model = dataclasses.replace(base.model)
    dcfg = dataclasses.replace(base.data)
    describe_dataset(data, base.data, dcfg, fp, reasons)
    tcfg = dataclasses.replace(base.train, device=device)
    dims = fp.spatial_dims

    geometry_rules(fp, cuda, model, dcfg, reasons)
    if (
        dims == 3
    ):  # say where "volumes" came from: the user's flag or configuration, or the dataset's description
        reasons["model.spatial_dims"] = (
            "volumes (given: --spatial-dims 3)"
            if base.model.spatial_dims == 3
            else f"volumes ({Path(data) / DESCRIPTOR}: spatial_dims 3)"
        )
    width_rule(dims, cuda, model, reasons)
    intensity_rules(fp, dcfg, reasons)
    crowded = target_rules(fp, dcfg, tcfg, reasons)
    augmentation_rules(fp, dcfg, reasons)
    init = base.train.init
    if init:  # the network that will train is the starting model's: measure that one
        start, payload, _ = init_config(RunConfig(model=model, data=dcfg, train=tcfg))
        model, dcfg = start.model, start.data
        for key in INIT_ARCH_FIELDS:
            reasons[f"model.{key}"] = f"the starting model's (--init {init})"
        reasons["data.normalization"] = f"the starting model's (--init {init})"
        learnt = (preprocessing_of(payload, init).encoding or {}).get("target")
        if learnt == "border" and fp.mask_encoding == "instances" and base.data.target == "foreground":
            dcfg.target, crowded = "border", True  # its output layer carries over instead of starting anew
            reasons["data.target"] = f"the starting model's (--init {init}): its output layer carries over"

    # --- batch: a trial forward/backward pass on the device
    in_ch = fp.channels
    classes = 3 if crowded else (1 if len(fp.class_names) <= 2 else len(fp.class_names))
    patch = dcfg.patch_size
    shape: tuple[int, ...] = (dcfg.patch_depth or patch, patch, patch) if dims == 3 else (patch, patch)
    want = (16 if cuda else 8) if dims == 2 else (4 if cuda else 2)
    probe = calibrate and budget is not None and budget <= PROBE_BUDGET
    if probe and not cuda:  # the probe's real steps run at this batch and report their memory (below)
        batch, trial = want, ""
    else:
        batch, trial = fit_batch(model, in_ch, classes, shape, want, dev)
    if not init:  # a starting model keeps its own normalisation layers
        norm_rule(batch, model, reasons)
    tcfg.batch_size = batch
    reasons["train.batch_size"] = trial
    tcfg.optimizer, tcfg.schedule = "adam", "cosine"
    reasons["train.optimizer"] = "Adam: robust to the learning rate, fast on short budgets"
    reasons["train.schedule"] = "cosine decay to 1% over the planned epochs"

    # --- training length: measured
    measured: dict[str, Any] = {"device": str(dev), "threads": torch.get_num_threads(), "trial": trial}
    tcfg.steps_per_epoch = 25
    cfg = RunConfig(model=model, data=dcfg, train=tcfg)
    if calibrate and budget is not None:
        timing = _probe(data, cfg) if probe else _calibrate(data, cfg, progress)
        peak = timing.pop("peak_mib", 0.0)
        if probe and not trial:
            measured["trial"] = reasons["train.batch_size"] = (
                f"the probe's steps of {batch} x {'x'.join(map(str, shape))} used {peak:.0f} MiB"
            )
        measured["timing"] = (
            f"a probe of {PROBE_STEPS} real steps and one validation image"
            if probe
            else "a measured run of 3 epochs x 6 steps"
        )
        startup = timing["startup_seconds"]
        if init:  # epoch 0: the starting model is validated before the first step
            startup += timing["validation_seconds"]
        if budget_includes_planning:
            startup += time.perf_counter() - t_start
        epoch_seconds = length_rules(timing, budget, startup, tcfg, reasons)
        measured.update(timing, epoch_seconds=round(epoch_seconds, 3))
    else:
        reasons["train.epochs"] = "the default: not measured (no --time-budget, or calibration skipped)"
        reasons["train.steps_per_epoch"] = "the default"
    learning_rate_rule(tcfg.epochs * tcfg.steps_per_epoch, tcfg, reasons)
    if init:
        tcfg.lr = FINE_TUNE_LR
        reasons["train.lr"] = f"the fine-tuning rate (--init {init}): the starting weights are kept close"
    tcfg.patience = patience_for(tcfg.epochs)
    reasons["train.patience"] = "a third of the epochs (at least 10): a budgeted run mostly trains to its end"
    measured["planning_seconds"] = round(time.perf_counter() - t_start, 1)
    cfg = RunConfig(model=model, data=dcfg, train=tcfg)
    proposal = None if init else init_proposal(fp, list_pretrained(), dcfg.target)
    return Plan(cfg, reasons, fp, measured, str(data), str(dev), budget, [proposal] if proposal else [])


def plan_path(data: str | Path, out: str | Path | None = None) -> Path:
    """Where a dataset's plan lives: ``DATA/plan.yaml``, or ``LIST.plan.yaml`` beside a .csv/.json list."""
    if out:
        return Path(out)
    data = Path(data)
    if data.is_file():  # a .csv/.json list of samples: the plan goes beside it
        return data.with_name(f"{data.stem}.{PLAN_FILE}")
    if not data.is_dir():
        raise DataError(f"{data}: no such dataset folder")
    return data / PLAN_FILE


def guard_plan_file(
    data: str | Path, out: str | Path | None, config: str | Path | None, *, overwrite: bool
) -> Path:
    """Where ``unetkit plan`` writes (:func:`plan_path`), checked before any compute: never an input (the
    dataset's description, the configuration file, a list of samples), never inside the data it reads, and only
    a plan file replaced (with ``overwrite``)."""
    path = plan_path(data, out)
    data = Path(data)
    protect = [p for p in (data / DESCRIPTOR, Path(config) if config else None) if p and p.is_file()]
    guard_file(
        path,
        "--out",
        [data] if data.is_file() else [],  # a .csv/.json list of samples
        protect,
        overwrite=overwrite,
        ours=is_plan,
        data_folders=[data] if data.is_dir() else [],
        data_suffixes=IMAGE_SUFFIXES,
    )
    return path


def default_time_budget(device: str | None) -> str:
    """The budget a bare `unetkit train DATA` plans for: short on a CPU (a newcomer's first run), longer on a GPU."""
    return CPU_TRAIN_BUDGET if resolve_device(device or "auto").type == "cpu" else DEFAULT_BUDGET


def plan_and_train(
    data: str | Path,
    out: Path,
    *,
    say: Callable[[str], None] = log.info,
    planned: Callable[[RunConfig], None] | None = None,
    overwrite: bool = False,
    nproc: int = 1,
    hooks: TrainHooks | None = None,
    **configure: Any,
) -> TrainResult:
    """A new run, start to end: plan if needed and initialise (:func:`configure_training`, which takes
    ``configure``), say what will happen (``say``: the announcement), then train (with the plan's epochs re-fitted
    to the budget unless the caller fixed the length). ``planned(cfg)`` is called between planning and
    training (a GUI shows the epochs; an exception it raises, e.g. on Cancel, stops there). The one way
    ``unetkit train`` and the napari Train widget start a run, so the same settings give the same run."""
    cfg, measured, fill = configure_training(data, out, **configure)
    if planned is not None:
        planned(cfg)
    say(announce(cfg, measured, data, out))
    return train(
        data,
        out,
        cfg,
        overwrite=overwrite,
        progress=configure.get("progress", True),
        nproc=nproc,
        hooks=hooks,
        started=configure.get("started"),
        fill_budget=fill,  # the plan's epochs are an estimate for the budget unless the caller fixed the length
    )


def configure_training(
    data: str | Path,
    out: Path,
    *,
    settings: RunConfig | None = None,
    overrides: Callable[[RunConfig], RunConfig] | None = None,
    init: str | None = None,
    lr_chosen: bool = False,
    time_budget: str | float | None = None,
    fixed_length: bool = False,
    plan_file: str | Path | None = None,
    reading: RunConfig | None = None,
    device: str | None = None,
    progress: bool = True,
    started: float | None = None,
) -> tuple[RunConfig, dict[str, Any], bool]:
    """Plan if needed, then initialise: the one way a new run's configuration is made (``unetkit train``, the
    napari Train widget), so the same settings give the same run. Returns the configuration, the plan's
    measured times for :func:`~unetkit.workflows.train.announce` (empty when they do not describe it) and
    whether its epochs are a plan's estimate to re-fit to the budget (``train(fill_budget=...)``).

    ``settings``: start from this configuration instead of a plan (``--config``, ``--no-plan``); else from
    ``plan_file`` or the dataset's plan, made now if absent (:func:`plan_for_training`, with ``reading``,
    ``device``, ``progress`` and ``started``). ``overrides``: the caller's explicit choices (the command
    line's flags), applied to either. ``init``: the model to fine-tune; its architecture and normalisation,
    and the fine-tuning learning rate unless ``lr_chosen`` (the user chose one now: a settings file's rate is
    its own training's). ``time_budget``: the run's clock; ``fixed_length``: the caller fixed epochs or steps,
    which then no plan's time cap limits unless ``time_budget`` is given too."""
    planned_batch = None
    measured: dict[str, Any] = {}
    if settings is None:
        cfg, measured = plan_for_training(
            data,
            plan_file=plan_file,
            time_budget=time_budget,
            device=device,
            reading=reading,
            fixed_length=fixed_length,
            out=out,
            progress=progress,
            init=init,
            started=started,
        )
        planned_batch = cfg.train.batch_size
    else:
        cfg = dataclasses.replace(settings)
        if time_budget:
            cfg.train = dataclasses.replace(cfg.train, time_budget=parse_duration(time_budget))
    if overrides is not None:
        cfg = overrides(cfg)
    if init:
        cfg.train = dataclasses.replace(cfg.train, init=init)
    cfg = starting_from(cfg, keep_lr=lr_chosen)  # said before training is announced
    if fixed_length and not time_budget and cfg.train.time_budget:  # the user's length, not the plan's cap
        log.info(
            "--epochs/--steps-per-epoch fix this run's length: the plan's time budget (%s) does not cap it "
            "(--time-budget to keep one)",
            format_duration(cfg.train.time_budget),
        )
        cfg.train = dataclasses.replace(cfg.train, time_budget=None)
    same = planned_batch is not None and cfg.train.batch_size == planned_batch  # the measured times apply
    return cfg, measured if same else {}, planned_batch is not None and not fixed_length


def plan_for_training(
    data: str | Path,
    *,
    plan_file: str | Path | None = None,
    time_budget: str | float | None = None,
    device: str | None = None,
    reading: RunConfig | None = None,
    fixed_length: bool = False,
    out: Path | None = None,
    progress: bool = True,
    init: str | None = None,
    started: float | None = None,
) -> tuple[RunConfig, dict[str, Any]]:
    """The plan a training run starts from, and its measured times: ``plan_file`` (default ``DATA/plan.yaml``)
    when it exists (re-budgeted for ``time_budget``), else a plan made now and written there (beside the run in
    ``out`` when the dataset is read-only) that fills ``time_budget`` (default: ``CPU_TRAIN_BUDGET`` on a CPU),
    planning included. ``fixed_length``: the caller fixes epochs/steps, so no measured run is made.

    ``init``: the run fine-tunes this model: a new plan measures its network (for budgets up to
    ``PROBE_BUDGET`` by a probe of a few steps, see :func:`plan_training`) and goes with the run, to
    ``out/plan.yaml``, since it is not a plan for the dataset alone. A plan in ``out`` replaces the one there:
    the caller has checked that ``out`` may be written. ``started``: when the command began (the
    budget's clock; default: now)."""
    path = Path(plan_file) if plan_file else plan_path(data)
    budget = parse_duration(time_budget)
    existing = read_plan(path) if path.is_file() else None  # read once, whoever uses it
    why_not = None if plan_file or existing is None else _not_for_this_run(existing, init, budget)
    if why_not and out is not None:  # the dataset's plan stays; this run plans its own, which goes with it
        log.info("%s %s: this run plans its own (%s)", path, why_not, out / "plan.yaml")
    elif existing is not None:
        return _read_for_training(path, existing, data, budget, time_budget)
    if plan_file:
        raise ConfigError(f"--plan {path}: no such file (make one with `unetkit plan DATA --out {path}`)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"{path} is missing: run `unetkit plan {data}` once before torchrun")
    if out is not None and (init or why_not):
        out.mkdir(parents=True, exist_ok=True)
        path = out / "plan.yaml"
    elif out is not None and not writable(path.parent):  # a read-only dataset: the plan goes with the run
        log.info("%s is not writable: the plan goes to %s", path.parent, out / "plan.yaml")
        out.mkdir(parents=True, exist_ok=True)
        path = out / "plan.yaml"
    if time_budget is None:
        time_budget = default_time_budget(device)
        if not fixed_length:
            cpu = resolve_device(device or "auto").type == "cpu"
            log.info(
                "no %s yet and no --time-budget: planning a %s run on this %s (planning included; "
                "--time-budget 1h for longer)",
                path,
                time_budget,
                "CPU" if cpu else "GPU",
            )
    base = dataclasses.replace(reading or RunConfig())
    if init:
        base.train = dataclasses.replace(base.train, init=init)
    probe = (parse_duration(time_budget) or 0) <= PROBE_BUDGET
    log.info(
        "planning %s (%s)",
        path,
        "no measured run: --epochs/--steps-per-epoch fix the length"
        if fixed_length
        else f"a probe of {PROBE_STEPS} steps of {f'the starting model {init}' if init else 'the network'}, counted "
        "in the budget"
        if probe
        else "a trial step and a short measured run, counted in the budget",
    )
    plan = plan_training(
        data,
        device=device or "auto",
        time_budget=time_budget,
        config=base,
        calibrate=not fixed_length,
        progress=progress,
        budget_includes_planning=True,
        started=started,
    )
    plan.write(path, overwrite=out is not None and path.parent == out)  # a run's own plan goes with it
    log.info("wrote %s:\n%s", path, plan.summary())
    return plan.config, plan.measured


def _not_for_this_run(
    existing: tuple[RunConfig, dict[str, Any]], init: str | None, budget: float | None
) -> str | None:
    """Why the dataset's plan (``existing``: :func:`read_plan`'s) cannot serve this run (None: it can): a
    fine-tune from ``init`` needs its starting model measured, and a ``budget`` needs measured epoch times, which a
    plan written by a run of fixed length (``--epochs``) or by ``unetkit plan --no-measure`` lacks."""
    cfg, info = existing
    if init and cfg.train.init != init:
        return f"was made for {'training from scratch' if not cfg.train.init else cfg.train.init}, not a fine-tune of {init}"  # fmt: skip
    if budget is not None and not (info.get("measured") or {}).get("epoch_seconds"):
        return "has no measured epoch time (written by a run of fixed length, or `unetkit plan --no-measure`) for --time-budget"  # fmt: skip
    return None


def _read_for_training(
    path: Path,
    existing: tuple[RunConfig, dict[str, Any]],
    data: str | Path,
    budget: float | None,
    given: str | float | None,
) -> tuple[RunConfig, dict[str, Any]]:
    """An existing plan (``path``, as :func:`read_plan` read it), re-budgeted when asked, with a warning when the
    dataset changed since."""
    cfg, info = existing
    counted = info["fingerprint"].get("samples")
    log.info("training with the plan %s", path)
    if budget is not None and budget != cfg.train.time_budget:
        cfg, reason = rebudget(cfg, info["measured"], budget)
        log.info("--time-budget %s: %d epochs (%s)", given, cfg.train.epochs, reason)
    if counted and Path(data).is_dir():
        now = len(load_layout(Path(data), cfg.data.layout, naming=naming_of(cfg.data)).samples)
        if now != counted:
            log.warning(
                "%s was made for %d samples; %s now holds %d: plan again with `unetkit plan %s --overwrite`",
                path,
                counted,
                data,
                now,
                data,
            )
    return cfg, info["measured"]


class _OtherThreads(logging.Filter):
    """Passes records of other threads, and warnings and errors of this one."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread or record.levelno >= logging.WARNING


@contextlib.contextmanager
def _quiet_here() -> Iterator[None]:
    """This thread's info messages are dropped while the block runs; the logger's level and other threads'
    messages are left alone."""
    quiet = _OtherThreads()
    handlers = [h for name in ("unetkit", "") for h in logging.getLogger(name).handlers]
    for h in handlers:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)


def _calibrate(data: str | Path, cfg: RunConfig, progress: bool) -> dict[str, float]:
    """A real training run of 3 epochs x 6 steps in a scratch folder: step, validation and start-up times."""
    steps, epochs = 6, 3
    trial = dataclasses.replace(cfg)
    trial.train = dataclasses.replace(  # the starting weights (init) change no time: not loaded here
        cfg.train, epochs=epochs, steps_per_epoch=steps, patience=10, time_budget=None, init=None
    )
    with work_folder(temp_root(), "plan") as tmp:  # TMP/unetkit-UID: swept after a kill
        t0 = time.perf_counter()
        with _quiet_here():  # the trial run's own messages would only confuse
            train(data, Path(tmp) / "run", trial, progress=progress)
        wall = time.perf_counter() - t0
        with open(Path(tmp) / "run" / "metrics.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    warm = min(rows[1:], key=lambda r: float(r["seconds"]))  # after the first epoch's warm-up
    val = float(warm["val_seconds"])
    step = (float(warm["seconds"]) - val) / steps
    # everything but warm epochs: checks, caching, the first epoch's warm-up (kernels, weight maps), writes
    startup = max(0.0, wall - epochs * float(warm["seconds"]))
    return {
        "step_seconds": round(step, 4),
        "validation_seconds": round(val, 3),
        "startup_seconds": round(startup, 2),
        "data_wait": round(float(warm["data_wait"]), 4),
    }


def _probe(data: str | Path, cfg: RunConfig) -> dict[str, float]:
    """The times of a short fine-tuning run without running one: the run's own parts (data checks, sample
    store, patches with their augmentation, the network, optimiser step) built as training builds them, then
    ``PROBE_STEPS`` timed steps after one that warms up, and the prediction of one validation image (scaled to
    all of them by their pixels). Nothing is written."""
    t0 = time.perf_counter()
    trial = dataclasses.replace(cfg)
    trial.train = dataclasses.replace(cfg.train, init=None, time_budget=None, lr=cfg.train.lr or FINE_TUNE_LR)
    with _quiet_here():
        report, normalizer = resolve_data(trial, data)
        setup = build_training(
            trial, report, normalizer, data, resolve_device(trial.train.device), DistContext()
        )
    batch = trial.train.batch_size
    device = setup.step.device
    memory = PeakMemory(device)
    setup.dataset.set_epoch(1)
    loader = iter(torch.utils.data.DataLoader(setup.dataset, batch_size=batch, num_workers=0, drop_last=True))
    times = []
    for _ in range(PROBE_STEPS + 1):
        t_step = time.perf_counter()
        x, y, *w = next(loader)
        setup.step(x, y, w[0] if w else None)
        times.append(time.perf_counter() - t_step)
    startup = time.perf_counter() - t0 - sum(times[1:])
    views = setup.val_views
    t_val = time.perf_counter()
    tile = max(setup.patch_in) if setup.volumes else 512
    validate(setup.model, setup.preprocessing, setup.store, views[:1], device, trial.train.amp, tile)
    pixels = [view.pixels(setup.shapes[view.index]) for view in views]
    val = (time.perf_counter() - t_val) * sum(pixels) / max(pixels[0], 1)
    return {
        "step_seconds": round(min(times[1:]), 4),  # the steadiest: the first steps still warm up
        "validation_seconds": round(val, 3),
        "startup_seconds": round(startup, 2),
        "data_wait": 0.0,
        "peak_mib": memory.bytes() / 2**20,
    }
