"""Everything a run needs before its first step, built from a checked configuration and dataset report:
the sample store and split, the model and its patch sizes, the patch dataset with its augmentation, loss,
optimiser, schedule and scaler; and the ``last.pt``/``best.pt`` payloads that let a run resume exactly."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import StoredModel, save_checkpoint
from ..config import FINDING_KEYS, RunConfig
from ..data.augment import Augmenter
from ..data.checks import DataReport
from ..data.dataset import PatchDataset, SampleStore, View, split_views
from ..data.masks import MaskEncoding
from ..data.normalize import Normalizer
from ..data.resample import scaled_shape
from ..device import amp_dtype, compile_model
from ..errors import ConfigError
from ..losses import get_loss
from ..memory import available_memory
from ..models import InvalidSizeError, create_model
from .distributed import DistContext
from .loop import Step, make_optimizer, make_schedule
from .state import TrainState

__all__ = [
    "FREEZE_NORM_MAX_IMAGES",
    "TrainingSetup",
    "build_training",
    "check_memory",
    "frozen_norm",
    "num_classes_for",
    "patch_sizes",
    "selection_score",
]

log = logging.getLogger(__name__)


@dataclass
class TrainingSetup:
    """The parts of one run, ready to step."""

    cfg: RunConfig
    store: SampleStore
    train_views: list[View]
    val_views: list[View]
    dataset: PatchDataset
    step: Step
    preprocessing: dict[str, Any]  # what a checkpoint needs to rebuild the model's input and output
    meta: dict[str, Any]  # patch sizes, data folder and split, stored with every checkpoint
    patch_in: Any
    volumes: bool
    shapes: list[tuple[int, ...]]  # every sample's spatial shape as the network sees it (after --input-scale)
    score: str = "val_dice"  # what best.pt and early stopping follow (:func:`selection_score`)

    @property
    def model(self) -> torch.nn.Module:
        return self.step.model

    def restore(self, payload: dict[str, Any]) -> TrainState:
        """Weights, optimiser, schedule, scaler and random streams from ``last.pt``: the exact position."""
        step = self.step
        step.model.load_state_dict(payload["state_dict"])
        saved = StoredModel.of(payload).state
        step.optimizer.load_state_dict(saved["optimizer"])
        step.scheduler.load_state_dict(saved["scheduler"])
        step.scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"])
        if step.device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"])
        return TrainState.from_dict(saved)

    def save(self, path: Path, st: TrainState, *, last: bool) -> None:
        """``last.pt`` (with the whole loop state, for ``--resume``) or ``best.pt`` (the model alone)."""
        cfg, step = self.cfg, self.step
        if last:
            state = {
                "optimizer": step.optimizer.state_dict(),
                "scheduler": step.scheduler.state_dict(),
                "scaler": step.scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if step.device.type == "cuda" else None,
                **st.to_dict(),
            }
            training: dict[str, Any] = {"best_val_dice": st.best_score, "best_epoch": st.best_epoch}
            if st.score != "val_dice":  # "best_val_dice" holds the best of what best.pt follows
                training["selected_by"] = st.score
        else:
            state = None
            training = {"val_dice": st.history[-1]["val_dice"]}
            if st.score != "val_dice":
                # what best.pt was chosen by (training.state.SCORES); not "best_score", which a shipped built-in
                # model keeps from its run, and only when not Dice: a recipe's best.pt, and so the file `make
                # pretrained` ships, stays what it was
                training.update(selected_by=st.score, selected_score=st.best_score)
        save_checkpoint(
            path,
            step.model,
            model_name=cfg.model.arch,
            preprocessing=self.preprocessing,
            training={**self.meta, "config": cfg.to_dict(), "epoch": st.epoch, **training},
            state=state,
        )


def num_classes_for(requested: int | None, encoding: MaskEncoding) -> int:
    """Output channels: one sigmoid channel for two classes unless two softmax channels are asked for."""
    classes = encoding.num_classes
    if requested is None:
        return 1 if classes == 2 else classes
    if requested == classes or (requested == 1 and classes == 2):
        return requested
    # instance masks read with the border target (a plan's choice for touching objects) have 3 classes; the
    # paper's 2-class recipe asks for the foreground target
    border = encoding.name == "instances" and classes == 3 and requested in (1, 2)
    raise ConfigError(
        f"model.num_classes {requested} does not fit the '{encoding.name}' masks, which have {classes} classes "
        f"{encoding.names}; use --num-classes {classes}"
        + (" or 1" if classes == 2 else "")
        + (f", or --target foreground for {requested} (background, object)" if border else "")
    )


def patch_sizes(model: Any, patch: int) -> tuple[int, int]:
    """Network input and target sizes for a requested patch size (input size)."""
    if model.padding == "same":
        return patch, patch
    geometry = model.geometry
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


def _augmenter(d: Any) -> Augmenter:
    return Augmenter(
        flips=d.augment,
        elastic=d.elastic,
        elastic_sigma=d.elastic_sigma,
        elastic_points=d.elastic_points,
        rotate=d.rotate,
        scale=d.scale,
        intensity=d.intensity,
        noise=d.noise,
        blur=d.blur,
    )


def _step(model: torch.nn.Module, cfg: RunConfig, device: torch.device, ctx: DistContext) -> Step:
    """The optimiser step: loss, optimiser, per-step schedule, DDP/compile wrapping, gradient scaler."""
    assert cfg.model.num_classes is not None
    if cfg.train.sync_bn and ctx.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    fmt = torch.contiguous_format
    if cfg.model.spatial_dims == 2 and device.type == "cpu":  # the layout oneDNN's kernels prefer
        fmt = torch.channels_last
        model.to(memory_format=fmt)  # type: ignore[call-overload]  # in place, before the optimiser takes the parameters
    optimizer = make_optimizer(model, cfg)
    total_steps = cfg.train.epochs * cfg.train.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, make_schedule(cfg.train.schedule, cfg.train.warmup, total_steps)
    )
    forward: torch.nn.Module = model
    if ctx.enabled:  # gradients all-reduced (averaged) over the ranks during backward
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        forward = compile_model(forward)  # weights are shared: checkpoints save `model`
    use_scaler = cfg.train.amp and amp_dtype(device) == torch.float16
    return Step(
        model=model,
        forward=forward,
        loss_fn=get_loss(cfg.train.loss, cfg.model.num_classes, cfg.train.class_weights),
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda", enabled=use_scaler),
        device=device,
        amp=cfg.train.amp,
        num_classes=cfg.model.num_classes,
        memory_format=fmt,
        cpu_bf16=cfg.model.spatial_dims == 2,
    )


def selection_score(cfg: RunConfig, encoding: MaskEncoding, volumes: bool) -> str:
    """What best.pt and early stopping follow (a metrics.csv column): a fine-tune on instance masks of images, the
    panoptic quality of the held-out objects (``val_pq``): on the few objects of one image, pixel Dice followed
    the border class's pixels, not the objects. Fine-tuned from ``nuclei`` on one image of the style-shift suite
    with its statistics kept (``--freeze-norm``), every epoch of 8 scored a higher F1@0.5 on the test images than
    the start on ``nucleoli``, ``uneven``, ``defocus`` and ``few-photons`` (e.g. ``nucleoli`` 0.871 →
    0.873-0.895) while validation Dice stayed flat or fell (``uneven`` 0.848 → 0.81); the held-out objects' PQ
    rose with it on three of the four. Otherwise (from scratch, where the first epochs find no objects to score,
    and for other masks) validation Dice; ``--select-by`` chooses, and ``pq`` without objects is refused."""
    objects = encoding.name == "instances" and not volumes
    if cfg.train.select_by == "pq" and not objects:
        raise ConfigError(
            "--select-by pq: the panoptic quality of objects needs instance masks of 2-D images; these are "
            f"{encoding.name} masks{' of volumes' if volumes else ''}: use --select-by dice"
        )
    if cfg.train.select_by != "auto":
        return f"val_{cfg.train.select_by}"
    return "val_pq" if cfg.train.init and objects else "val_dice"


#: ``train.freeze_norm auto`` keeps a starting model's batch-norm statistics on at most this many training images
FREEZE_NORM_MAX_IMAGES = 5


def frozen_norm(cfg: RunConfig, images: int, model: torch.nn.Module) -> tuple[bool, str | None]:
    """Whether the batch-norm statistics stay as they are while training (``train.freeze_norm``), and the log
    line saying so (None when the model has no batch norm or nothing needs saying).

    ``auto`` freezes them when fine-tuning (``--init``) on at most ``FREEZE_NORM_MAX_IMAGES`` images: batches of
    patches of one or two images (centred on objects half the time, augmented) have other statistics than whole
    images, so in training mode the starting model normalised its features by them, and their running means
    replaced the model's. Measured on the style-shift suite (``bench/pretrained.py``): one image, `uneven`, the
    built-in model scored validation Dice 0.848 before any step and 0.810 after 50 steps at a learning rate of
    1e-7 (statistics alone), 0.631 after 25 steps at 2e-4; with the statistics kept, 0.830. Over the suite's seven
    domains (one image, 2 minutes) the fine-tuned F1@0.5 was 0.937 kept against 0.935 replaced: better on
    ``defocus`` and ``dim16``, worse on ``few-photons`` (docs/fine-tune.md)."""
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    choice = cfg.train.freeze_norm
    if not has_bn:
        return False, None
    if choice == "on":
        return True, "batch norm: the starting statistics are kept (--freeze-norm on)"
    if choice == "off" or not cfg.train.init:
        return False, None
    if images > FREEZE_NORM_MAX_IMAGES:
        return False, None
    return True, (
        f"batch norm: {cfg.train.init}'s statistics are kept while fine-tuning on {images} image(s) (its scale and "
        "shift train; --freeze-norm off to let batches replace them)"
    )


def _preprocessing(
    cfg: RunConfig,
    encoding: MaskEncoding,
    normalizer: Normalizer,
    object_diameter: float | None,
    background: float | None = None,
) -> dict[str, Any]:
    """What a checkpoint needs to rebuild the model's input and output, how its truth was read, and the scale
    of the objects it learnt (``predict --diameter`` rescales other images to it)."""
    return {
        "object_diameter": object_diameter,  # as the network saw them: after --input-scale
        "input_scale": float(cfg.data.input_scale or 1.0),
        "in_channels": cfg.model.in_channels,
        "num_classes": cfg.model.num_classes,
        "normalization": normalizer.to_dict(),
        # the dataset description, once: how the masks were read (with the class names) and how the data
        # was found (evaluate finds a test set laid out the same way)
        "encoding": encoding.to_dict(),
        "dataset": {k: getattr(cfg.data, k) for k in FINDING_KEYS},
        # --channel: the stored channel it reads, which predict reads too (absent: every channel)
        **({"channel": cfg.data.channel} if cfg.data.channel is not None else {}),
        # where its images' backgrounds lie (0 dark: fluorescence; 1 bright: bright-field): predict says when an
        # image is the other way round
        **({"background": background} if background is not None else {}),
    }


#: what training holds per weight: the weight, its gradient, and the optimiser's state (Adam: two moments;
#: SGD: the momentum)
_COPIES = {"adam": 4, "adamw": 4, "sgd": 3}


def check_memory(cfg: RunConfig, device: torch.device) -> None:
    """Refuse, before anything is allocated, a network or a batch of patches that cannot fit the device's
    memory (the memory available now on a CPU; the GPU's own): the network counted on PyTorch's ``meta``
    device (no memory), held with its gradients and optimiser state, and the first level's two convolution
    outputs for every patch of a batch, kept for the backward pass: a lower bound, so a run that could fit is
    never refused."""
    kw = cfg.model.kwargs()
    kw.update(in_channels=kw.get("in_channels") or 1, num_classes=kw.get("num_classes") or 2)
    try:
        with torch.device("meta"):
            weights = sum(p.numel() for p in create_model(cfg.model.arch, **kw).parameters())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model: {exc}") from None
    d = cfg.data
    pixels = d.patch_size**2 * ((d.patch_depth or d.patch_size) if cfg.model.spatial_dims == 3 else 1)
    network = 4 * weights * _COPIES.get(cfg.train.optimizer, 4)
    activations = 4 * 2 * cfg.train.batch_size * pixels * cfg.model.base_channels
    if device.type == "cuda":
        have, where = float(torch.cuda.get_device_properties(device).total_memory), f"the GPU ({device}) has"
    else:
        have, where = available_memory(), "this machine has"
    if network + activations <= have:
        return
    gib = 2**30
    if network >= activations:
        raise ConfigError(
            f"model: {cfg.model.arch} with base_channels {cfg.model.base_channels} and depth {cfg.model.depth} has "
            f"{weights:,} weights; training holds them with their gradients and optimiser state, at least "
            f"{network / gib:.1f} GiB, and {where} {have / gib:.1f} GiB available: choose fewer --base-channels or "
            "a smaller --depth"
        )
    raise ConfigError(
        f"data: a batch of {cfg.train.batch_size} patch(es) of {d.patch_size} px needs at least "
        f"{activations / gib:.1f} GiB for its first level's activations alone, and {where} {have / gib:.1f} GiB "
        "available: choose a smaller --patch-size or --batch-size"
    )


def build_training(
    cfg: RunConfig,
    report: DataReport,
    normalizer: Normalizer,
    data: str | Path,
    device: torch.device,
    ctx: DistContext,
) -> TrainingSetup:
    """The run's parts from the resolved configuration (``cfg.model.num_classes``/``in_channels`` set) and the
    dataset report (its samples, encoding and shapes)."""
    encoding = report.encoding
    assert encoding is not None and cfg.model.in_channels is not None and cfg.model.num_classes is not None
    volumes = cfg.model.spatial_dims == 3
    # refuses --select-by pq without objects, before any file is read
    score = selection_score(cfg, encoding, volumes)
    scale = float(cfg.data.input_scale or 1.0)
    store = SampleStore(
        report.samples,
        encoding,
        normalizer,
        cfg.model.in_channels,
        cfg.data.cache_mb,
        weights=(cfg.data.w0, cfg.data.sigma, cfg.data.weight_balance) if cfg.data.weight_map else None,
        volumes=volumes,
        input_scale=scale,
        channel=cfg.data.channel,
    )
    shapes = [scaled_shape(tuple(s), scale) for s in report.shapes] if scale != 1 else list(report.shapes)
    train_views, val_views, note = split_views(
        store, [shape[0] for shape in shapes], cfg.data.val_fraction, cfg.train.seed, cfg.data.val_split
    )
    log.info("%s", note)
    torch.manual_seed(cfg.train.seed)
    model_kw = cfg.model.kwargs()
    try:
        model = create_model(cfg.model.arch, **model_kw).to(device)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model: {exc}") from None
    patch = cfg.data.patch_size
    patch_in: Any
    patch_out: Any
    if volumes:
        patches = [patch_sizes(model, p) for p in (cfg.data.patch_depth or patch, patch, patch)]
        patch_in, patch_out = tuple(p[0] for p in patches), tuple(p[1] for p in patches)
    else:
        patch_in, patch_out = patch_sizes(model, patch)
    log.info(
        "training %s (%s parameters) on %s, %d training / %d validation images, patches %s→%s",
        cfg.model.arch,
        f"{sum(p.numel() for p in model.parameters()):,}",
        device,
        len(train_views),
        len(val_views),
        patch_in,
        patch_out,
    )
    dataset = PatchDataset(
        store,
        train_views,
        shapes,
        patch_in,
        patch_out,
        cfg.train.steps_per_epoch * cfg.train.batch_size,
        augment=_augmenter(cfg.data),
        fg_fraction=cfg.data.fg_fraction,
        seed=cfg.train.seed,
    )
    step = _step(model, cfg, device, ctx)
    step.frozen_norm, why = frozen_norm(cfg, len(report.samples), model)
    if why:
        log.info("%s", why)
    diameter = report.object_diameter * scale if report.object_diameter else report.object_diameter
    preprocessing = _preprocessing(cfg, encoding, normalizer, diameter, report.background)
    meta = {
        "patch_in": patch_in,
        "patch_out": patch_out,
        "data": str(data),
        "split": note,
        "validation": _validation_record(store, val_views),
    }
    return TrainingSetup(
        cfg,
        store,
        train_views,
        val_views,
        dataset,
        step,
        preprocessing,
        meta,
        patch_in,
        volumes,
        shapes,
        score,
    )


def _validation_record(store: SampleStore, views: list[View], limit: int = 20) -> list[dict[str, Any]]:
    """Which images (files, pages, rows) validated the run, for what reads the checkpoint later (a bioimage.io
    package's cover shows the model on one of them)."""
    record = []
    for view in views[:limit]:
        sample = store.samples[view.index]
        record.append({"image": str(sample.image), "page": sample.image_page,
                       "rows": list(view.rows) if view.rows else None,
                       "held_out_pixels": int(view.held_out.sum()) if view.held_out is not None else None})  # fmt: skip
    return record
