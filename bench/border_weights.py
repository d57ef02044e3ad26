"""Does the paper's training recipe separate touching nuclei better? (``make bench-borders``)

The same U-Net is trained twice on the built-in synthetic nuclei with many touching clusters, under the same
budget (epochs x steps x batch, same seed): once with plain cross-entropy, once with the paper's separation
borders (2-pixel gaps cut between touching nuclei) and weighted cross-entropy (w0 = 10, sigma = 5). Objects
on held-out images are the connected components of the predicted foreground class (grown back by one pixel for
the model trained with gaps) and are matched to the true nuclei one-to-one by IoU. Prints object-level F1 at IoU
0.5 and the Data Science Bowl mean average precision over IoU 0.5:0.05:0.95.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unetkit import DataConfig, ModelConfig, Predictor, RunConfig, TrainConfig, read_image, train
from unetkit.data.layouts import paired_folders
from unetkit.data.synthetic import SynthParams, count_touching_pairs, synthesize_dataset
from unetkit.inference.postprocess import label_instances
from unetkit.metrics import match_instances

CROWDED = SynthParams(nuclei_per_mpx=150.0, clusters_per_mpx=200.0, cluster_size=(3, 6))


def evaluate_objects(checkpoint: Path, test: Path, grow: float) -> dict[str, float]:
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    f1, ap, n_pred, n_true = [], [], 0, 0
    for s in paired_folders(test):
        truth = read_image(s.mask)
        objects = label_instances(predictor.predict(read_image(s.image)), (1,), grow=grow)
        scores = match_instances(truth, objects)
        f1.append(scores.f1(0.5))
        ap.append(scores.mean_ap())
        n_pred += scores.n_pred
        n_true += scores.n_true
    return {"f1": float(np.mean(f1)), "map": float(np.mean(ap)), "pred": n_pred, "true": n_true}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--n-train", type=int, default=24)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="keep the data and runs here (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="unetkit-borders-"))
    train_dir = synthesize_dataset(
        root / "train", n=args.n_train, size=256, seed=args.seed, params=CROWDED, overwrite=True
    )
    test_dir = synthesize_dataset(
        root / "test", n=args.n_test, size=256, seed=args.seed + 10_000, params=CROWDED, overwrite=True
    )
    touching = sum(count_touching_pairs(read_image(s.mask)) for s in paired_folders(test_dir))
    nuclei = sum(int(read_image(s.mask).max()) for s in paired_folders(test_dir))

    base = RunConfig(
        model=ModelConfig(base_channels=16, depth=4, num_classes=2),
        data=DataConfig(patch_size=128, mask_encoding="instances"),
        train=TrainConfig(
            epochs=args.epochs,
            steps_per_epoch=args.steps,
            batch_size=8,
            lr=2e-3,
            loss="ce",
            patience=args.epochs + 1,
            seed=args.seed,
        ),
    )
    paper = dataclasses.replace(
        base, data=dataclasses.replace(base.data, border_gap=2, weight_map=True, w0=10.0, sigma=5.0)
    )
    rows = []
    for name, cfg, grow in (("plain cross-entropy", base, 0.0), ("paper: borders + weighted CE", paper, 1.0)):
        t0 = time.perf_counter()
        result = train(
            train_dir, root / name.split(":")[0].replace(" ", "-"), cfg, overwrite=True, progress=False
        )
        minutes = (time.perf_counter() - t0) / 60
        scores = evaluate_objects(result.last_checkpoint, test_dir, grow)
        rows.append((name, scores, minutes, result.history[-1]["val_dice"]))

    print(
        f"held-out: {args.n_test} images 256x256, {nuclei} nuclei, {touching} touching pairs; "
        f"budget: {args.epochs} epochs x {args.steps} steps x batch 8, patch 128, same U-Net and seed"
    )
    print(
        f"| {'training':<30} | F1 @ IoU 0.5 | mAP 0.5:0.95 | objects found / true | pixel Dice (val) | minutes |"
    )
    print(f"|{'-' * 32}|--------------|--------------|----------------------|------------------|---------|")
    for name, s, minutes, dice in rows:
        print(
            f"| {name:<30} | {s['f1']:12.3f} | {s['map']:12.3f} | {s['pred']:>9} / {s['true']:<8} | "
            f"{dice:16.3f} | {minutes:7.1f} |"
        )


if __name__ == "__main__":
    main()
