"""Is bfloat16 mixed-precision training as accurate as float32, and how much faster? (``make bench-precision``)

Trains the same U-Net with the same seed twice, with ``train.amp`` on (bfloat16 autocast on a CPU with native
bfloat16, the default) and off (float32), on two recipes:

- the demo (``unetkit demo``'s configuration: 40 synthetic 256² images, 12 epochs x 25 steps x batch 8, patch
  128), scored on 8 held-out 288x352 images: pixel Dice and object F1@0.5 (as ``unetkit evaluate``);
- the border-weights bench (the paper's separation borders and weighted cross-entropy on crowded nuclei, see
  ``bench/border_weights.py``), scored as there: object F1@0.5 and the DSB mAP.

Prints one table: training images/s and seconds, the scores, and each difference to float32 (target: within
0.005). On a CPU without native bfloat16 ``amp`` trains in float32 and both rows are the same path.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from border_weights import CROWDED, evaluate_objects

from unetkit import evaluate, predict_files, synthesize_dataset, train
from unetkit.device import cpu_has_native_bf16
from unetkit.workflows.demo import DEMO_CONFIG


def _with_amp(cfg, amp: bool):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp=amp, device="cpu", seed=0))


def _images_per_second(result, cfg) -> float:
    seconds = sum(h["seconds"] - h["val_seconds"] for h in result.history)
    return len(result.history) * cfg.train.steps_per_epoch * cfg.train.batch_size / seconds


def _trained(data: Path, out: Path, cfg) -> tuple:
    """Train (same seed), return (result, images/s of the training steps, seconds of the whole run)."""
    t0 = time.perf_counter()
    result = train(data, out, cfg, overwrite=True, progress=False)
    return result, _images_per_second(result, cfg), time.perf_counter() - t0


def demo_rows(root: Path) -> list[tuple]:
    data = synthesize_dataset(root / "demo" / "data", n=40, size=256, seed=0, overwrite=True)
    test = synthesize_dataset(root / "demo" / "test", n=8, size=(288, 352), seed=10_000, overwrite=True)
    rows = []
    for amp in (False, True):
        result, ips, seconds = _trained(data, root / "demo" / f"run-{amp}", _with_amp(DEMO_CONFIG, amp))
        pred = root / "demo" / f"pred-{amp}"
        predict_files(
            result.best_checkpoint, [test / "images"], pred, progress=False, device="cpu", overwrite=True
        )
        inst = root / "demo" / f"inst-{amp}"
        predict_files(
            result.best_checkpoint,
            [test / "images"],
            inst,
            progress=False,
            device="cpu",
            overwrite=True,
            instances=True,
        )
        dice = evaluate(pred, test).mean["dice"]
        f1 = evaluate(inst, test, mode="instance").mean["f1"]
        rows.append(("demo", amp, ips, seconds, {"pixel Dice": dice, "F1@0.5": f1}))
    return rows


def border_rows(root: Path) -> list[tuple]:
    from unetkit import DataConfig, ModelConfig, RunConfig, TrainConfig

    train_dir = synthesize_dataset(
        root / "borders" / "train", n=24, size=256, seed=0, params=CROWDED, overwrite=True
    )
    test_dir = synthesize_dataset(
        root / "borders" / "test", n=8, size=256, seed=10_000, params=CROWDED, overwrite=True
    )
    paper = RunConfig(
        model=ModelConfig(base_channels=16, depth=4, num_classes=2),
        data=DataConfig(
            patch_size=128, mask_encoding="instances", border_gap=2, weight_map=True, w0=10.0, sigma=5.0
        ),
        train=TrainConfig(epochs=12, steps_per_epoch=25, batch_size=8, lr=2e-3, loss="ce", patience=13),
    )
    rows = []
    for amp in (False, True):
        result, ips, seconds = _trained(train_dir, root / "borders" / f"run-{amp}", _with_amp(paper, amp))
        s = evaluate_objects(result.last_checkpoint, test_dir, 1.0)
        rows.append(
            (
                "border weights",
                amp,
                ips,
                seconds,
                {"F1@0.5": s["f1"], "mAP": s["map"]},
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", help="keep the data and runs here (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="unetkit-precision-"))
    native = cpu_has_native_bf16()
    rows = demo_rows(root) + border_rows(root)
    print(f"native bfloat16 on this CPU: {native} (amp on = {'bfloat16' if native else 'float32'} here)")
    print("| recipe | training | images/s | run seconds | scores | difference to float32 |")
    print("| --- | --- | --- | --- | --- | --- |")
    base: dict[str, tuple] = {}
    for recipe, amp, ips, seconds, scores in rows:
        if not amp:
            base[recipe] = (ips, scores)
        ref_ips, ref = base[recipe]
        what = (
            "float32 (amp off)"
            if not amp
            else ("bfloat16 (amp, default)" if native else "amp on (float32 here)")
        )
        text = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        diff = "" if not amp else ", ".join(f"{k} {scores[k] - ref[k]:+.4f}" for k in scores)
        speed = f"{ips:.1f}" + ("" if not amp else f" ({ips / ref_ips:.2f}x)")
        print(f"| {recipe} | {what} | {speed} | {seconds:.0f} | {text} | {diff} |")


if __name__ == "__main__":
    main()
