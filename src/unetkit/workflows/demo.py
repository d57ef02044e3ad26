"""The demo: built-in synthetic nuclei → train → predict held-out images → evaluate → pictures."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ..data.io import read_image, write_image
from ..data.synthetic import synthesize_dataset
from ..errors import DataError
from ..metrics.results import Evaluation
from ..training import TrainResult
from ..viz import overlay_panel
from .evaluate import evaluate
from .predict import predict_files
from .train import train

__all__ = ["DEMO_CONFIG", "DemoResult", "run_demo"]

log = logging.getLogger(__name__)

DEMO_MANIFEST = ".unetkit-demo.json"  # what the demo writes in --out, so --overwrite removes only that
DEMO_PARTS = ("data", "test", "run", "pred", "overlays", "scores.json")

#: A small U-Net (the Keras tutorial's 16 base channels) that trains in about two minutes on 2 CPU cores.
DEMO_CONFIG = RunConfig(
    model=ModelConfig(base_channels=16, depth=4, norm="batch"),
    data=DataConfig(patch_size=128),
    train=TrainConfig(epochs=12, batch_size=8, steps_per_epoch=25, lr=2e-3, patience=6),
)


@dataclass
class DemoResult:
    out: Path
    training: TrainResult
    evaluation: Evaluation
    overlays: list[Path]
    seconds: float


def run_demo(
    out: str | Path = "demo-output",
    *,
    n_train: int = 40,
    n_test: int = 8,
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> DemoResult:
    """Run the whole pipeline on the built-in synthetic nuclei and write everything under ``out``.

    ``out/data`` (training set, 256x256), ``out/test`` (held-out images of another size, 288x352, never
    seen in training), ``out/run`` (the training run), ``out/pred`` (predicted masks), ``out/overlays``
    (image | truth | prediction | errors) and ``out/scores.json``.
    """
    t0 = time.perf_counter()
    out = Path(out)
    present = [p for p in DEMO_PARTS if (out / p).exists()]
    if present and not overwrite:
        raise DataError(f"--out {out}: already holds demo results ({', '.join(present)}); pass --overwrite")
    manifest = out / DEMO_MANIFEST
    ours = set(json.loads(manifest.read_text())) if manifest.is_file() else set()
    foreign = [p for p in present if p not in ours]
    if foreign:
        raise DataError(
            f"--out {out}: {', '.join(foreign)} were not written by unetkit demo (no record in {DEMO_MANIFEST}); "
            "nothing was removed: choose another --out"
        )
    for p in present:  # --overwrite removes only what an earlier demo wrote here
        target = out / p
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        manifest, json.dumps(list(DEMO_PARTS))
    )  # before anything is written: a killed demo is ours too
    log.info("generating %d training and %d held-out synthetic images", n_train, n_test)
    synthesize_dataset(out / "data", n=n_train, size=256, seed=seed)
    synthesize_dataset(out / "test", n=n_test, size=(288, 352), seed=seed + 10_000)

    overrides: dict[str, Any] = {"device": device, "seed": seed, **({"epochs": epochs} if epochs else {})}
    cfg = dataclasses.replace(DEMO_CONFIG, train=dataclasses.replace(DEMO_CONFIG.train, **overrides))
    result = train(out / "data", out / "run", cfg, progress=progress)

    predict_files(
        result.best_checkpoint, [out / "test" / "images"], out / "pred", progress=progress, device=device
    )
    evaluation = evaluate(out / "pred", out / "test")
    evaluation.write_json(out / "scores.json")

    overlays = []
    for score in evaluation.images:
        image = read_image(out / "test" / "images" / f"{score.name}.png")
        truth = read_image(out / "test" / "masks" / f"{score.name}.png")
        pred = read_image(out / "pred" / f"{score.name}.png")
        panel = overlay_panel(image, truth, pred, title=f"{score.name} Dice {score.dice:.3f}")
        overlays.append(write_image(out / "overlays" / f"{score.name}.png", np.ascontiguousarray(panel)))
    return DemoResult(out, result, evaluation, overlays, time.perf_counter() - t0)
