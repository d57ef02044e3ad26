"""The ``train`` workflow: a dataset folder and a configuration → a run folder with ``best.pt``.

Resolves the configuration (or ``--resume``'s own), checks it and every file of the dataset before any compute
is spent, records what was resolved from the data (channels, classes, the dataset description), starts the
distributed processes when asked, and runs the fit loop (:mod:`unetkit.training`)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import StoredModel
from ..config import DEFAULT_LR, DataConfig, RunConfig, check_config, load_config
from ..data.checks import DataReport, check_dataset, described_volumes
from ..data.layouts import detect_layout
from ..data.normalize import Normalizer
from ..data.spec import DESCRIPTOR
from ..device import resolve_device, tune_allocator
from ..errors import ConfigError, DataError
from ..losses import get_loss
from ..safety import guard_outputs, sample_files
from ..training.distributed import init_distributed, spawn
from ..training.init import init_config, init_evidence, input_scale_for, load_initial_weights
from ..training.loop import TrainHooks, TrainingInterrupted
from ..training.run_folder import RunFolder
from ..training.setup import build_training, check_memory, num_classes_for
from ..training.state import SCORES, BudgetClock, TrainResult, TrainState
from ..training.trainer import fit

__all__ = [
    "SCORES",
    "TrainHooks",
    "TrainingInterrupted",
    "announce",
    "new_folder",
    "resolve_data",
    "starting_from",
    "train",
]

log = logging.getLogger(__name__)


def train(
    data: str | Path,
    out: str | Path,
    config: RunConfig | dict[str, Any] | str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    epochs: int | None = None,
    time_budget: float | None = None,
    nproc: int = 1,
    hooks: TrainHooks | None = None,
    started: float | None = None,
    fill_budget: bool = False,
) -> TrainResult:
    """Train a U-Net on a dataset (any layout ``check-data`` reads) and write a run folder.

    Args:
        data: dataset folder, or a ``.csv``/``.json`` list.
        out: run directory to create (``best.pt``, ``last.pt``, ``config.yaml``, ``metrics.csv``, ``tb/``,
            ``curves.png``).
        config: a :class:`RunConfig`, a YAML file, its sections as a dict, or ``None`` for the defaults.
        overwrite: replace an existing run in ``out`` (its run files only).
        progress: show a progress bar.
        resume: continue the run in ``out`` from ``out/last.pt`` with its own settings (``config`` must be
            ``None``): model, optimiser, scheduler, epoch and step, early-stopping state and random streams are
            restored, so the result is identical to an uninterrupted run.
        epochs: override ``train.epochs`` (with ``resume``: extend a finished run).
        time_budget: with ``resume``, seconds more to train from this call's start: the run's clock stops
            that much later, and its epochs (unless ``epochs`` is given) are extended by as many as fit at the
            pace its history measured (the learning-rate schedule follows). Without ``resume``, use
            ``config.train.time_budget``.
        nproc: train data-parallel in this many processes on this machine (``torch.distributed``: gloo on
            CPUs, NCCL on GPUs, one process per GPU); ``train.batch_size`` is the global batch, split between
            them. Under ``torchrun`` (``WORLD_SIZE`` set) every process calls ``train`` and joins the group.
        hooks: follow the run step by step and stop it from another thread (:class:`TrainHooks`: a GUI, a
            notebook); one process only.
        started: when the command began (a ``time.perf_counter()`` reading, e.g. before planning): the
            ``train.time_budget`` clock runs from then to the last validation (default: now). The log's last
            line splits that time into planning, preparation, training, validation and saving.
        fill_budget: ``train.epochs`` is a plan's estimate for ``train.time_budget``: re-fit it to the budget at
            the pace measured in the first epochs (the learning-rate schedule follows).

    Example:
        >>> result = train("nuclei/", "run/", RunConfig(train=TrainConfig(epochs=5)))
        >>> result.best_checkpoint
        PosixPath('run/best.pt')
    """
    entered = time.perf_counter()
    tune_allocator()  # as the CLI: freed activations reused, not faulted in afresh (a step 1.5x faster here)
    clock = BudgetClock(started=entered if started is None else started)
    clock.add("planning", entered - clock.started)
    folder = RunFolder(out)
    cfg, payload = _run_config(folder, config, resume, overwrite, epochs, time_budget)
    device = resolve_device(cfg.train.device)
    launch = nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1
    if hooks is not None and (nproc > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise ConfigError(
            "training hooks (a GUI's progress and Cancel) follow one process: train with nproc=1"
        )
    _check_processes(cfg, nproc, launch, device)
    cfg, init_payload, init_notes, report, normalizer = _starting_point(
        cfg, payload, data, folder, config, device
    )
    if launch:  # everything is checked: start the processes, each of which runs this function
        if payload is None:
            folder.existing(overwrite)
        run = functools.partial(
            train,
            data,
            out,
            config,
            overwrite=overwrite,
            progress=progress,
            resume=resume,
            epochs=epochs,
            time_budget=time_budget,
            started=clock.started,
            fill_budget=fill_budget,
        )
        return spawn(nproc, run)
    ctx, device = init_distributed(device)
    if ctx.is_main:
        folder.lock()  # one writer per run folder, held until fit() closes the folder
    try:
        if payload is None and ctx.is_main:
            folder.prepare(overwrite)
        ctx.barrier()
        setup = build_training(cfg, report, normalizer, data, device, ctx)
        if init_payload is not None:
            init_notes += load_initial_weights(setup.model, init_payload, cfg.train.init or "")
            for note in init_notes if ctx.is_main else []:
                log.info("%s", note)
        st = TrainState()
        if payload is not None:
            st = setup.restore(payload)
            log.info("resuming %s after epoch %d (step %d of the next)", out, st.epoch, st.step_in_epoch)
            saved = dict(st.clock)  # the time budget counts the earlier processes' time too
            clock.before = saved.pop("elapsed", sum(h["seconds"] for h in st.history))
            for phase, seconds in saved.items():
                clock.add(phase, seconds)
        if ctx.is_main:  # one writer: rank 0
            folder.write_config(cfg)
            folder.open_log(purge_after=st.epoch + 1 if payload is not None else None)
            folder.write_csv(st.history)  # rewritten from the checkpoint's history on resume
        hint = f"unetkit train {data} --resume {folder.path}"
        clock.add("preparation", time.perf_counter() - entered)
        return fit(
            setup,
            folder,
            st,
            ctx,
            progress=progress,
            resume_hint=hint,
            hooks=hooks,
            clock=clock,
            # a resumed run keeps its length, exactly, unless given more time (then re-fitted to it)
            fill_budget=(fill_budget and payload is None) or time_budget is not None,
        )
    except BaseException:
        folder.close()  # fit() closes it too; this covers a failure before training starts
        raise


def _run_config(
    folder: RunFolder,
    config: RunConfig | dict[str, Any] | str | Path | None,
    resume: bool,
    overwrite: bool,
    epochs: int | None,
    time_budget: float | None,
) -> tuple[RunConfig, dict[str, Any] | None]:
    """The run's configuration (a copy of ``config``'s, or a resumed run's own, extended by ``epochs`` or
    ``time_budget``) and, when resuming, the checkpoint it continues from."""
    payload = None
    if resume:
        if config is not None or overwrite:
            raise ConfigError(
                "--resume continues a run with its own settings: give no --config or --overwrite"
            )
        payload = folder.load_resume()
        cfg = RunConfig.from_dict(StoredModel.of(payload, folder.last).config, source=f"{folder.last}")
    else:
        if isinstance(config, dict):  # the sections of a config.yaml, e.g. {"train": {"epochs": 5}}
            config = RunConfig.from_dict(config, source="config")
        cfg = config if isinstance(config, RunConfig) else (load_config(config) if config else RunConfig())
        cfg = dataclasses.replace(cfg)  # never mutate the caller's object
    if time_budget is not None:
        if payload is None:
            raise ConfigError("time_budget= extends a resumed run; a new run takes config.train.time_budget")
        cfg, epochs = _more_budget(cfg, payload, time_budget, epochs)
    if epochs is not None:
        # extending a run: the epochs asked for, not its spent budget
        if resume and cfg.train.time_budget and time_budget is None:
            log.info(
                "--epochs %d: the run's time budget (%.0f s) no longer caps it; it trains to epoch %d",
                epochs,
                cfg.train.time_budget,
                epochs,
            )
            cfg.train = dataclasses.replace(cfg.train, time_budget=None)
        cfg.train = dataclasses.replace(cfg.train, epochs=epochs)
    return cfg, payload


def _starting_point(
    cfg: RunConfig,
    payload: dict[str, Any] | None,
    data: str | Path,
    folder: RunFolder,
    config: RunConfig | dict[str, Any] | str | Path | None,
    device: torch.device,
) -> tuple[RunConfig, dict[str, Any] | None, list[str], DataReport, Normalizer]:
    """What a new run starts from (its ``--init`` model, whose architecture, normalisation and object sizes it
    takes) and every file of the dataset checked against the configuration, before any compute: the
    configuration completed, the starting model's payload and notes, the data report and its normaliser."""
    init_notes: list[str] = []
    init_payload = None
    if cfg.train.init and payload is None:  # a resumed run restores its own weights
        cfg, init_payload, init_notes = init_config(cfg)
    if cfg.train.lr is None:  # from scratch, nothing chosen
        cfg.train = dataclasses.replace(cfg.train, lr=DEFAULT_LR)
    check_config(cfg)
    _check_loss(cfg)
    check_memory(cfg, device)  # the network and a batch fit the device, before anything is built
    # every file checked, before the run folder is made; the configuration file and the starting model in use
    # are inputs too
    used = [p for p in (config, cfg.train.init) if isinstance(p, (str, Path)) and p and Path(p).exists()]
    evidence = init_evidence(cfg.train.init, init_payload) if init_payload is not None else None
    report, normalizer = resolve_data(cfg, data, folder, protect=used, evidence=evidence)
    if cfg.data.input_scale is None:  # auto: 1, or what brings the objects to the initial model's sizes
        scale, note = (1.0, None)
        if init_payload is not None and cfg.model.spatial_dims == 2:
            scale, note = input_scale_for(init_payload, report.object_diameter, cfg.train.init or "")
        cfg.data = dataclasses.replace(cfg.data, input_scale=scale)
        init_notes += [note] if note else []
    if cfg.data.input_scale != 1 and cfg.model.spatial_dims == 3:
        raise ConfigError("--input-scale resamples 2-D images; volumes are trained at their own scale")
    return cfg, init_payload, init_notes, report, normalizer


def _more_budget(
    cfg: RunConfig, payload: dict[str, Any], seconds: float, epochs: int | None
) -> tuple[RunConfig, int]:
    """A resumed run given ``seconds`` more: its budget ends that long after the time already on its clock, and
    its length grows by the epochs that fit at its measured pace (``epochs``, when given, instead)."""
    st = TrainState.from_dict(StoredModel.of(payload).state)
    spent = float(st.clock.get("elapsed", sum(h["seconds"] for h in st.history)))
    pace = st.epoch_seconds()
    if epochs is None:
        epochs = st.epoch + max(1, int(seconds // pace)) if pace else max(cfg.train.epochs, st.epoch + 1)
    log.info(
        "--time-budget: %.0f s more after the %.0f s this run has spent: it trains to epoch %d%s",
        seconds,
        spent,
        epochs,
        f" (measured {pace:.1f} s per epoch)" if pace else "",
    )
    cfg.train = dataclasses.replace(cfg.train, time_budget=spent + seconds)
    return cfg, epochs


def new_folder(parent: str | Path, name: str) -> Path:
    """``parent/NAME``, or ``parent/NAME-2``, ``-3``...: never an existing folder."""
    out, k = Path(parent) / name, 2
    while out.exists():
        out, k = Path(parent) / f"{name}-{k}", k + 1
    return out


def starting_from(cfg: RunConfig, keep_lr: bool = False) -> RunConfig:
    """``cfg`` made ready for its ``train.init`` model (architecture and normalisation from it, said in the
    log), with the fine-tuning learning rate unless ``keep_lr`` (the user chose one); unchanged without init."""
    if not cfg.train.init:
        return cfg
    if not keep_lr:  # not the plan's from-scratch rate: the fine-tuning one
        cfg.train = dataclasses.replace(cfg.train, lr=None)
    cfg, _, notes = init_config(cfg)
    for note in notes:
        log.info("%s", note)
    return cfg


def announce(cfg: RunConfig, measured: dict, data: str | Path, out: str | Path) -> str:
    """What training will do and how long it will take, said before it starts (``measured``: the plan's
    times, or empty)."""
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
    return f"training: {what}; {when}; early stopping after {t.patience} epoch(s) without a better validation score"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _check_loss(cfg: RunConfig) -> None:
    """The loss fits the classes (when known) and the weight map; weight-map settings without the weight map
    are said to do nothing."""
    if cfg.model.num_classes is not None:
        get_loss(cfg.train.loss, cfg.model.num_classes)
    elif cfg.train.loss != "auto":
        get_loss(cfg.train.loss, 1)
    plain = DataConfig()
    unused = [
        f"--{k.replace('_', '-')}"
        for k in ("w0", "sigma", "weight_balance")
        if getattr(cfg.data, k) != getattr(plain, k)
    ]
    if unused and not cfg.data.weight_map:
        log.warning(
            "%s set without --weight-map: the loss is not weighted, add --weight-map", ", ".join(unused)
        )


def _check_processes(cfg: RunConfig, nproc: int, launch: bool, device: torch.device) -> None:
    world = nproc if launch else int(os.environ.get("WORLD_SIZE", "1"))
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if cfg.train.batch_size % world:
        raise ConfigError(
            f"train.batch_size {cfg.train.batch_size} (the global batch) must split evenly between {world} "
            f"processes; use a multiple of {world}"
        )
    if cfg.train.sync_bn and world > 1 and device.type != "cuda":
        raise ConfigError(
            "--sync-bn needs CUDA devices (torch's SyncBatchNorm); on CPUs drop it or use --norm group"
        )
    if launch and device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(
            f"--nproc {nproc}: only {torch.cuda.device_count()} CUDA device(s); one process per GPU"
        )


def guard_run_folder(
    data: str | Path, out: str | Path, protect: Sequence[str | Path | None] = (), *, overwrite: bool = False
) -> None:
    """The run folder ``out`` is not the dataset, inside it, nor any of ``protect`` (the starting model, the
    configuration), and holds no run unless ``overwrite``: checked from the paths alone, before planning reads
    the data (:func:`train` checks again with every file of the dataset)."""
    used = [p for p in protect if isinstance(p, (str, Path)) and p and Path(p).exists()]
    try:
        detect_layout(data)  # not a dataset: that is the error to report first (planning says it)
        folders = [Path(data)] if Path(data).is_dir() else []
    except DataError:
        folders = []
    guard_outputs([], Path(out), [], used, data_folders=folders)
    RunFolder(out).existing(overwrite)


def _learnt_channel(cfg: RunConfig) -> int | None:
    """The stored channel the starting model (``--init``) learnt from multi-channel images (``--channel`` at its
    training), when this run picks none and the model reads one channel; else None."""
    if not cfg.train.init or cfg.data.channel is not None:
        return None
    from ..checkpoint import read_model

    pre = read_model(cfg.train.init).preprocessing
    return pre.channel if pre.in_channels == 1 else None


def resolve_data(
    cfg: RunConfig,
    data: str | Path,
    folder: RunFolder | None = None,
    protect: Sequence[str | Path] = (),
    evidence: str | None = None,
) -> tuple[DataReport, Normalizer]:
    """Check every file of the dataset, refuse outputs (the run ``folder``'s) that touch it or ``protect``
    (nor sit inside the dataset's folders), and record in ``cfg`` what was resolved from the data: 3-D,
    channels, classes, and the dataset description (layout, encoding, class map)."""
    if described_volumes(data) and cfg.model.spatial_dims == 2:
        log.info("%s/dataset.yaml says the samples are volumes: training a 3-D network", data)
        cfg.model = dataclasses.replace(cfg.model, spatial_dims=3)

    def checked() -> DataReport:
        found = check_dataset(
            data,
            cfg.data,
            num_classes=cfg.model.num_classes,
            in_channels=cfg.model.in_channels,
            volumes=cfg.model.spatial_dims == 3,
            evidence=evidence,
        )
        found.raise_if_problems()
        return found

    report = checked()
    learnt = _learnt_channel(cfg)
    if learnt is not None and (report.in_channels or 1) > 1:  # a stain model fine-tuned on images of several
        log.info(
            "--init %s reads channel %d of images with several (it was trained with --channel %d): so does this "
            "run (--channel N to choose another)",
            cfg.train.init, learnt, learnt,
        )  # fmt: skip
        cfg.data = dataclasses.replace(cfg.data, channel=learnt)
        report = checked()
    if folder is not None:
        files = sample_files(report.samples)
        described = [Path(data) / DESCRIPTOR] if (Path(data) / DESCRIPTOR).is_file() else []
        guard_outputs(
            files,
            folder.path,
            folder.files,
            [*protect, *described],
            data_folders=[Path(data), *{f.parent for f in files}] if Path(data).is_dir() else [],
        )
    for note in report.notes:
        log.info("%s", note)
    encoding = report.encoding
    assert encoding is not None and report.in_channels is not None
    num_classes = num_classes_for(cfg.model.num_classes, encoding)
    cfg.model = dataclasses.replace(cfg.model, in_channels=report.in_channels, num_classes=num_classes)
    cfg.data = dataclasses.replace(  # record what was resolved from the data
        cfg.data,
        layout=report.layout,
        mask_encoding=encoding.name,
        class_values=list(encoding.values) if encoding.values else None,
        class_colors=[list(c) for c in encoding.colors] if encoding.colors else None,
        class_names=encoding.names,
        ignore_index=encoding.ignore_value,
    )
    return report, report.normalizer(cfg.data)
