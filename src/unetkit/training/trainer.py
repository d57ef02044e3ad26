"""The fit loop: random patches → model → loss; validation by tiled prediction; checkpoints and logs.

A run directory holds everything needed to understand the run: ``best.pt``, ``last.pt``, ``config.yaml``,
``metrics.csv``, ``tb/`` (TensorBoard) and ``curves.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import DATASET_KEYS, RunConfig, load_config
from ..data.augment import Augmenter
from ..data.checks import check_dataset
from ..data.dataset import PatchDataset, SampleStore, View, split_views
from ..data.layouts import LAYOUTS, read_descriptor
from ..data.masks import ENCODINGS, IGNORE, MaskEncoding
from ..data.normalize import Normalizer
from ..device import amp_dtype, autocast, compile_model, resolve_device
from ..errors import ConfigError, DataError, UnetkitError
from ..inference.predictor import Predictor
from ..losses import LOSSES, get_loss
from ..metrics import dice_iou
from ..models import InvalidSizeError, create_model
from ..safety import guard_outputs, sample_files
from ..viz import save_curves
from .distributed import DistContext, init_distributed, spawn

__all__ = ["RUN_FILES", "TrainResult", "TrainingInterrupted", "train"]

log = logging.getLogger(__name__)

RUN_FILES = ("best.pt", "last.pt", "config.yaml", "metrics.csv", "curves.png")
CSV_FIELDS = (
    "epoch",
    "train_loss",
    "val_ce",
    "val_dice",
    "val_iou",
    "lr",
    "seconds",
    "val_seconds",
    "data_wait",
)


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_score: float  # best validation Dice
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


def train(
    data: str | Path,
    out: str | Path,
    config: RunConfig | str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    epochs: int | None = None,
    nproc: int = 1,
) -> TrainResult:
    """Train a U-Net on a paired-folder dataset and write a run directory.

    Args:
        data: dataset folder (``DATA/images`` + ``DATA/masks``).
        out: run directory to create (``best.pt``, ``last.pt``, ``config.yaml``, ``metrics.csv``, ``tb/``,
            ``curves.png``).
        config: a :class:`RunConfig`, a YAML file, or ``None`` for the defaults.
        overwrite: replace an existing run in ``out``.
        progress: show a progress bar.
        resume: continue the run in ``out`` from ``out/last.pt`` with its own settings (``config`` must be
            ``None``): model, optimiser, scheduler, epoch and step, early-stopping state and random streams are
            restored, so the result is identical to an uninterrupted run.
        epochs: override ``train.epochs`` (with ``resume``: extend a finished run).
        nproc: train data-parallel in this many processes on this machine (``torch.distributed``: gloo on
            CPUs, NCCL on GPUs, one process per GPU); ``train.batch_size`` is the global batch, split between
            them. Under ``torchrun`` (``WORLD_SIZE`` set) every process calls ``train`` and joins the group.

    Example:
        >>> result = train("nuclei/", "run/", RunConfig(train=TrainConfig(epochs=5)))
        >>> result.best_checkpoint
        PosixPath('run/best.pt')
    """
    out = Path(out)
    payload = None
    if resume:
        if config is not None or overwrite:
            raise ConfigError(
                "--resume continues a run with its own settings: give no --config or --overwrite"
            )
        payload = _load_resume(out)
        cfg = RunConfig.from_dict(payload["training"]["config"], source=f"{out / 'last.pt'}")
    else:
        cfg = config if isinstance(config, RunConfig) else (load_config(config) if config else RunConfig())
        cfg = dataclasses.replace(cfg)  # never mutate the caller's object
    if epochs is not None:
        cfg.train = dataclasses.replace(cfg.train, epochs=epochs)
    check_config(cfg)
    device = resolve_device(cfg.train.device)
    launch = nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1
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

    # Data: every file is checked before any compute is spent, and before the run folder is made.
    if read_descriptor(data).get("spatial_dims") == 3 and cfg.model.spatial_dims == 2:
        log.info("%s/dataset.yaml says the samples are volumes: training a 3-D network", data)
        cfg.model = dataclasses.replace(cfg.model, spatial_dims=3)
    volumes = cfg.model.spatial_dims == 3
    report = check_dataset(
        data, cfg.data, num_classes=cfg.model.num_classes, in_channels=cfg.model.in_channels, volumes=volumes
    )
    report.raise_if_problems()
    guard_outputs(sample_files(report.samples), out, [out / name for name in RUN_FILES])
    for note in report.notes:
        log.info("%s", note)
    encoding = report.encoding
    assert encoding is not None and report.in_channels is not None
    in_channels = report.in_channels
    num_classes = _num_classes(cfg.model.num_classes, encoding)
    cfg.model = dataclasses.replace(cfg.model, in_channels=in_channels, num_classes=num_classes)
    cfg.data = dataclasses.replace(  # record what was resolved from the data
        cfg.data,
        layout=report.layout,
        mask_encoding=encoding.name,
        class_values=list(encoding.values) if encoding.values else None,
        class_colors=[list(c) for c in encoding.colors] if encoding.colors else None,
        class_names=encoding.names,
        ignore_index=encoding.ignore_value,
    )
    normalizer = report.normalizer(cfg.data)
    if launch:  # everything is checked: start the processes, each of which runs this function
        if payload is None:
            _check_run_dir(out, overwrite)
        run = functools.partial(
            train, data, out, config, overwrite=overwrite, progress=progress, resume=resume, epochs=epochs
        )
        return spawn(nproc, run)
    ctx, device = init_distributed(device)
    if payload is None and ctx.is_main:
        _prepare_run_dir(out, overwrite)
    ctx.barrier()

    store = SampleStore(
        report.samples,
        encoding,
        normalizer,
        in_channels,
        cfg.data.cache_mb,
        weights=(cfg.data.w0, cfg.data.sigma, cfg.data.weight_balance) if cfg.data.weight_map else None,
        volumes=volumes,
    )
    train_views, val_views, note = split_views(
        store, [shape[0] for shape in report.shapes], cfg.data.val_fraction, cfg.train.seed
    )
    log.info("%s", note)

    torch.manual_seed(cfg.train.seed)
    model_kw = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k != "name"}
    try:
        model = create_model(cfg.model.name, **model_kw).to(device)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model: {exc}") from None
    patch = cfg.data.patch_size
    if volumes:
        patches = [_patch_sizes(model, p) for p in (cfg.data.patch_depth or patch, patch, patch)]
        patch_in, patch_out = tuple(p[0] for p in patches), tuple(p[1] for p in patches)
    else:
        patch_in, patch_out = _patch_sizes(model, patch)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "training %s (%s parameters) on %s, %d training / %d validation images, patches %s→%s",
        cfg.model.name,
        f"{n_params:,}",
        device,
        len(train_views),
        len(val_views),
        patch_in,
        patch_out,
    )

    loss_fn = get_loss(cfg.train.loss, num_classes, cfg.train.class_weights)
    dataset = PatchDataset(
        store,
        train_views,
        report.shapes,
        patch_in,
        patch_out,
        cfg.train.steps_per_epoch * cfg.train.batch_size,
        augment=Augmenter(
            flips=cfg.data.augment,
            elastic=cfg.data.elastic,
            elastic_sigma=cfg.data.elastic_sigma,
            elastic_points=cfg.data.elastic_points,
            rotate=cfg.data.rotate,
            scale=cfg.data.scale,
            intensity=cfg.data.intensity,
            noise=cfg.data.noise,
            blur=cfg.data.blur,
        ),
        fg_fraction=cfg.data.fg_fraction,
        seed=cfg.train.seed,
    )
    if cfg.train.sync_bn and ctx.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = _optimizer(model, cfg)
    total_steps = cfg.train.epochs * cfg.train.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(cfg.train.schedule, cfg.train.warmup, total_steps)
    )
    forward: torch.nn.Module = model
    if ctx.enabled:  # gradients all-reduced (averaged) over the ranks during backward
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        forward = compile_model(forward)  # weights are shared: checkpoints save `model`
    use_scaler = cfg.train.amp and amp_dtype(device) == torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    preprocessing = {
        "in_channels": in_channels,
        "num_classes": num_classes,
        "normalization": normalizer.to_dict(),
        "encoding": encoding.to_dict(),
        "class_names": encoding.names,
        # the dataset description, whole: how this model's truth was found and read
        "dataset": {k: getattr(cfg.data, k) for k in DATASET_KEYS},
    }
    meta = {"patch_in": patch_in, "patch_out": patch_out, "data": str(data), "split": note}
    # The loop's own state: everything `last.pt` must hold for an exact resume.
    st = {
        "epoch": 0,
        "step_in_epoch": 0,
        "epoch_losses": [],
        "history": [],
        "best_score": -1.0,
        "best_epoch": 0,
    }
    if payload is not None:
        model.load_state_dict(payload["state_dict"])
        saved = payload["state"]
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"])
        st = {k: saved[k] for k in st}
        log.info("resuming %s after epoch %d (step %d of the next)", out, st["epoch"], st["step_in_epoch"])
    history: list[dict[str, float]] = st["history"]
    if ctx.is_main:
        cfg.to_yaml(out / "config.yaml")

    def save_last() -> None:
        if not ctx.is_main:
            return
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            **st,
        }
        save_checkpoint(
            out / "last.pt",
            model,
            model_name=cfg.model.name,
            preprocessing=preprocessing,
            training={
                **meta,
                "config": cfg.to_dict(),
                "epoch": st["epoch"],
                "best_val_dice": st["best_score"],
                "best_epoch": st["best_epoch"],
            },
            state=state,
        )

    from torch.utils.tensorboard import SummaryWriter  # imported here: it is slow to import

    # On resume, events of epochs after the checkpoint (logged before a kill) are purged.
    writer = None
    if ctx.is_main:  # one writer: rank 0
        writer = SummaryWriter(
            log_dir=str(out / "tb"), purge_step=st["epoch"] + 1 if payload is not None else None
        )
        _write_csv(out / "metrics.csv", history)  # rewritten from the checkpoint's history on resume
    stopped_early = False
    last_val = "-" if not history else f"{history[-1]['val_dice']:.3f}"
    done = st["epoch"] * cfg.train.steps_per_epoch + st["step_in_epoch"]
    bar = tqdm(
        total=total_steps,
        initial=done,
        disable=not (progress and ctx.is_main),
        unit="step",
        dynamic_ncols=True,
    )
    batch = cfg.train.batch_size // ctx.world  # this rank's share of the global batch
    stop = _StopRequest()
    try:
        for epoch in range(st["epoch"] + 1, cfg.train.epochs + 1):
            t0 = time.perf_counter()
            bar.set_description(f"epoch {epoch}/{cfg.train.epochs}")
            dataset.set_epoch(epoch)
            model.train()
            # Patches are a pure function of (seed, epoch, index): resuming mid-epoch starts at the next index.
            loader = DataLoader(
                dataset,
                batch_size=batch,
                sampler=_rank_indices(st["step_in_epoch"], cfg.train.steps_per_epoch, batch, ctx),
                num_workers=cfg.train.num_workers,
                pin_memory=device.type == "cuda",
                drop_last=True,
                generator=torch.Generator().manual_seed(cfg.train.seed + epoch),  # never the global stream
            )
            # data_wait: the share of the training steps' time spent waiting for the next batch (starvation)
            wait, t_ready = 0.0, time.perf_counter()
            for x, y, *w in loader:
                wait += time.perf_counter() - t_ready
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                weight = w[0].to(device, non_blocking=True) if w else None
                target = y[:, None] if num_classes == 1 else y.long()
                with autocast(device, cfg.train.amp):
                    logits = forward(x)
                loss = loss_fn(logits.float(), target, weight)
                aux = getattr(model, "aux_logits", None)  # deep supervision (unet++): mean over all heads
                if aux:
                    loss = (loss + sum(loss_fn(a.float(), target, weight) for a in aux)) / (len(aux) + 1)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss became {loss.item()} at epoch {epoch}: lower --lr (now {cfg.train.lr:g}); {out} "
                        "keeps config.yaml and metrics.csv of this attempt (train again with --overwrite)"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                st["epoch_losses"].append(loss.item())
                st["step_in_epoch"] += 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(st['epoch_losses'][-20:]):.3f}", val_dice=last_val)
                if stop.requested:
                    raise KeyboardInterrupt
                t_ready = time.perf_counter()
            train_seconds = time.perf_counter() - t0
            t_val = time.perf_counter()
            val = _validate(
                model,
                preprocessing,
                store,
                val_views,
                device,
                cfg.train.amp,
                tile=max(patch_in) if volumes else 512,
                ctx=ctx,
            )
            loss_sum, loss_n = ctx.sum([float(np.sum(st["epoch_losses"])), len(st["epoch_losses"])])
            row = {
                "epoch": epoch,
                "train_loss": loss_sum / loss_n,
                **val,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t0,
                "val_seconds": time.perf_counter() - t_val,
                "data_wait": wait / max(train_seconds, 1e-9),
            }
            history.append(row)
            st.update(epoch=epoch, step_in_epoch=0, epoch_losses=[])
            if row["val_dice"] > st["best_score"]:
                st["best_score"], st["best_epoch"] = row["val_dice"], epoch
            if st["best_epoch"] == epoch and ctx.is_main:
                save_checkpoint(
                    out / "best.pt",
                    model,
                    model_name=cfg.model.name,
                    preprocessing=preprocessing,
                    training={**meta, "config": cfg.to_dict(), "epoch": epoch, "val_dice": row["val_dice"]},
                )
            save_last()
            if writer is not None:  # rank 0
                _write_csv(out / "metrics.csv", history)
                for key, tag in (
                    ("train_loss", "loss/train"),
                    ("val_ce", "loss/val_ce"),
                    ("val_dice", "dice/val"),
                    ("val_iou", "iou/val"),
                    ("lr", "lr"),
                    ("data_wait", "time/data_wait_fraction"),
                ):
                    writer.add_scalar(tag, row[key], epoch)
                writer.flush()
                save_curves(history, out / "curves.png")
            last_val = f"{row['val_dice']:.3f} (best {st['best_score']:.3f} @ {st['best_epoch']})"
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_dice=last_val)
            log.debug("epoch %d: %s", epoch, row)
            if stop.requested:
                raise KeyboardInterrupt
            if epoch - st["best_epoch"] >= cfg.train.patience:
                stopped_early = True
                log.info("early stopping: no better validation Dice for %d epochs", cfg.train.patience)
                break
            spent = sum(h["seconds"] for h in history)
            budget = cfg.train.time_budget
            if budget and epoch < cfg.train.epochs and spent + spent / len(history) > budget:
                stopped_early = True
                log.info(
                    "time budget: %.0f s of training spent of %.0f s; another epoch would overrun it",
                    spent,
                    budget,
                )
                break
    except KeyboardInterrupt:
        bar.close()
        save_last()  # the exact position, mid-epoch included
        raise TrainingInterrupted(
            f"interrupted during epoch {st['epoch'] + 1} at step {st['step_in_epoch']}; {out / 'last.pt'} holds "
            f"this point. Continue with: unetkit train {data} --resume {out}"
        ) from None
    finally:
        stop.restore()
        bar.close()
        if writer is not None:
            writer.close()
        ctx.close()
    best_score, best_epoch = st["best_score"], st["best_epoch"]
    return TrainResult(out, out / "best.pt", out / "last.pt", best_score, best_epoch, history, stopped_early)


class _StopRequest:
    """Ctrl-C during training is deferred to the end of the current step, so the saved position always
    matches the saved weights; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after this step (Ctrl-C again to stop at once)")

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class TrainingInterrupted(UnetkitError):
    """Ctrl-C during training: ``last.pt`` was saved at the exact position; the message says how to resume."""


def _load_resume(out: Path) -> dict[str, Any]:
    for stale in out.glob(".*.pt.*.tmp"):  # a write cut short by a kill; the real file is intact
        stale.unlink()
    last = out / "last.pt"
    if not last.is_file():
        raise DataError(
            f"--resume {out}: no {last.name} there; give the folder of an earlier `unetkit train` run"
        )
    payload = load_checkpoint(last)
    if "torch_rng" not in payload.get("state", {}):
        raise DataError(f"--resume {last}: holds no training state to resume from")
    return payload


def _write_csv(path: Path, history: list[dict[str, float]]) -> None:
    """metrics.csv rewritten whole from the history, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for row in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _validate(
    model: torch.nn.Module,
    preprocessing: dict[str, Any],
    store: SampleStore,
    views: list[View],
    device: torch.device,
    amp: bool,
    tile: int = 512,
    ctx: DistContext | None = None,
) -> dict[str, float]:
    """Tiled prediction of each validation image; mean Dice, IoU and cross-entropy over images.

    Unlabelled (ignored) pixels are left out; with several classes, Dice and IoU are averaged over the
    foreground classes. Distributed: each rank predicts its share of the images; the means are over all.
    """
    ctx = ctx or DistContext()
    predictor = Predictor(model, preprocessing, device=device, amp=amp, tile=tile)
    dices, ious, losses = [], [], []
    for view in views[ctx.rank :: ctx.world]:
        image, target, *_ = view.read(store)
        probs = predictor.predict_proba(image, view.name, prepared=True)
        labels = predictor.to_labels(probs)
        valid = target != IGNORE
        t = np.where(valid, target, 0)
        if probs.shape[0] == 1:
            p_true = np.where(t == 1, probs[0], 1 - probs[0])
            d, i = dice_iou(labels[valid], t[valid])
        else:
            p_true = np.take_along_axis(probs, t[None].astype(np.int64), 0)[0]
            scores = [dice_iou(labels[valid] == c, t[valid] == c) for c in range(1, probs.shape[0])]
            d, i = float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))
        losses.append(float(-np.log(np.clip(p_true[valid], 1e-7, 1)).mean()) if valid.any() else 0.0)
        dices.append(d)
        ious.append(i)
    model.train()
    ce, dice, iou, n = ctx.sum([sum(losses), sum(dices), sum(ious), len(dices)])
    return {"val_ce": ce / n, "val_dice": dice / n, "val_iou": iou / n}


def _rank_indices(step: int, steps: int, batch: int, ctx: DistContext) -> list[int] | range:
    """Patch indices this rank draws from ``step`` on: rank r takes the r-th ``batch``-sized slice of every global
    batch of ``batch x world`` patches, so together the ranks see what one process would."""
    if not ctx.enabled:
        return range(step * batch, steps * batch)
    size = batch * ctx.world
    return [s * size + ctx.rank * batch + i for s in range(step, steps) for i in range(batch)]


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "poly", "constant")


def _optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    t = cfg.train
    params = model.parameters()
    if t.optimizer == "sgd":  # the paper: SGD with momentum 0.99
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)


def _schedule(name: str, warmup: int, total: int):
    """Learning-rate factor per step: linear warm-up, then cosine or poly (0.9) decay to 1%, or constant."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if name == "cosine":
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))
        if name == "poly":
            return max(0.01, (1 - progress) ** 0.9)
        return 1.0

    return factor


def _num_classes(requested: int | None, encoding: MaskEncoding) -> int:
    """Output channels: one sigmoid channel for two classes unless two softmax channels are asked for."""
    classes = encoding.num_classes
    if requested is None:
        return 1 if classes == 2 else classes
    if requested == classes or (requested == 1 and classes == 2):
        return requested
    raise ConfigError(
        f"model.num_classes {requested} does not fit the '{encoding.name}' masks, which have {classes} classes "
        f"{encoding.names}; use --num-classes {classes}" + (" or 1" if classes == 2 else "")
    )


def _patch_sizes(model: torch.nn.Module, patch: int) -> tuple[int, int]:
    """Network input and target sizes for a requested patch size (input size)."""
    if model.padding == "same":  # type: ignore[union-attr]
        return patch, patch
    geometry = model.geometry  # type: ignore[union-attr]
    patch_in = geometry.fit(patch)
    if patch_in != patch:
        log.info(
            "data.patch_size %d is not a valid input size for a padding='valid' U-Net; using %d",
            patch,
            patch_in,
        )
    try:
        return patch_in, geometry.output_size(patch_in)
    except InvalidSizeError as exc:
        raise ConfigError(f"data.patch_size: {exc}") from None


def check_config(cfg: RunConfig) -> None:
    """Reject bad settings by name before anything is read or computed."""
    t, d, m = cfg.train, cfg.data, cfg.model
    checks = [
        (t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}"),
        (t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}"),
        (t.steps_per_epoch >= 1, f"train.steps_per_epoch must be >= 1, got {t.steps_per_epoch}"),
        (t.lr > 0, f"train.lr must be > 0, got {t.lr}"),
        (t.patience >= 1, f"train.patience must be >= 1, got {t.patience}"),
        (
            t.time_budget is None or t.time_budget > 0,
            f"train.time_budget must be > 0 seconds, got {t.time_budget}",
        ),
        (t.num_workers >= 0, f"train.num_workers must be >= 0, got {t.num_workers}"),
        (
            d.patch_size >= 2**m.depth,
            f"data.patch_size {d.patch_size} is smaller than 2**depth = {2**m.depth}",
        ),
        (
            d.layout in ("auto", *LAYOUTS),
            f"data.layout {d.layout!r} is unknown; choose auto or one of {LAYOUTS}",
        ),
        (
            d.mask_encoding in ("auto", *ENCODINGS),
            f"data.mask_encoding {d.mask_encoding!r} is unknown; choose auto or one of {ENCODINGS}",
        ),
        (d.cache_mb >= 0, f"data.cache_mb must be >= 0, got {d.cache_mb}"),
        (
            t.optimizer in OPTIMIZERS,
            f"train.optimizer {t.optimizer!r} is unknown; choose one of {OPTIMIZERS}",
        ),
        (t.schedule in SCHEDULES, f"train.schedule {t.schedule!r} is unknown; choose one of {SCHEDULES}"),
        (t.warmup >= 0, f"train.warmup must be >= 0 steps, got {t.warmup}"),
        (0 <= t.momentum < 1, f"train.momentum must be in [0, 1), got {t.momentum}"),
        (0 <= d.fg_fraction <= 1, f"data.fg_fraction must be in [0, 1], got {d.fg_fraction}"),
        (
            min(d.rotate, d.scale, d.intensity, d.noise, d.blur, d.elastic_sigma) >= 0,
            "augmentation strengths must be >= 0",
        ),
        (d.scale < 1, f"data.scale must be < 1, got {d.scale}"),
        (m.num_classes is None or m.num_classes >= 1, f"model.num_classes must be >= 1, got {m.num_classes}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    Normalizer(d.normalization, d.norm_low, d.norm_high, d.norm_scale)  # raises ConfigError with the fix
    if d.weight_map and t.loss == "dice":
        raise ConfigError(
            "data.weight_map weights the cross-entropy term; use a loss with one (ce, bce, ce_dice, bce_dice)"
        )
    if d.weight_map and (d.w0 < 0 or d.sigma <= 0):
        raise ConfigError(f"data.w0 must be >= 0 and data.sigma > 0, got w0={d.w0}, sigma={d.sigma}")
    if m.num_classes is not None:
        get_loss(t.loss, m.num_classes)
    elif t.loss not in ("auto", *LOSSES):
        get_loss(t.loss, 1)


def _check_run_dir(out: Path, overwrite: bool) -> list[str]:
    """The run files already in ``out``; an error if there are some and ``overwrite`` is off."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: exists and is not a folder")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise DataError(
            f"--out {out}: already holds a run ({', '.join(existing)}); pass --overwrite to replace it "
            "or choose another folder"
        )
    return existing


def _prepare_run_dir(out: Path, overwrite: bool) -> None:
    existing = _check_run_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in existing:
            (out / name).unlink()
        tb = out / "tb"
        if tb.is_dir():
            for f in tb.iterdir():
                if f.is_file() and f.name.startswith("events.out.tfevents"):
                    f.unlink()
