"""Tiled inference on large images (``make bench-tiled``): prints one table; never a timed test.

1. A 4096 x 4096 image through the same small U-Net with unetkit's ``Predictor`` and with MONAI's
   ``sliding_window_inference`` (same tile, overlap, Gaussian blending, batch, threads): wall time and peak
   RSS of each, measured in a fresh process each, and the ratio; plus the largest difference between the
   two probability maps.
2. ``unetkit predict`` on a 20,000 x 20,000 single-channel TIFF (written tile by tile here, never held in
   memory) through the CLI, with ``--instances``: wall time, peak RSS, and the number of objects.

The small U-Net is trained for a minute on the built-in synthetic nuclei first, so that the instance
stage sees a realistic foreground. Needs the ``[bench]`` extra (MONAI) for part 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def small_unet_config():
    from unetkit import RunConfig

    cfg = RunConfig()
    cfg.model.base_channels = 8
    cfg.model.depth = 4
    cfg.data.patch_size = 128
    cfg.train.epochs = 3
    cfg.train.steps_per_epoch = 20
    cfg.train.batch_size = 8
    return cfg


def train_small(work: Path) -> Path:
    from unetkit import synthesize_dataset, train

    data = synthesize_dataset(work / "data", n=16, size=256, seed=0, overwrite=True)
    run = train(data, work / "run", small_unet_config(), progress=False, overwrite=True)
    return run.best_checkpoint


def write_big_tiff(path: Path, size: int, block: int = 2048, tile: int = 512) -> None:
    """A size x size synthetic nuclei image, made in ``block``-sized pieces one band of rows at a time and
    written as a tiled (512 x 512, the usual whole-slide layout), zlib-compressed BigTIFF."""
    import tifffile

    from unetkit import synth_nuclei

    def tiles():
        for y in range(0, size, block):
            band = np.zeros((block, -(-size // tile) * tile), np.uint8)
            for x in range(0, size, block):
                img = synth_nuclei((block, block), seed=(y // block) * 1000 + x // block)[0]
                w = min(block, band.shape[1] - x)
                band[:, x : x + w] = img[:, :w]
            for ty in range(0, min(block, size - y), tile):
                for tx in range(0, size, tile):
                    yield band[ty : ty + tile, tx : tx + tile]

    tifffile.imwrite(
        path,
        data=tiles(),
        shape=(size, size),
        dtype=np.uint8,
        tile=(tile, tile),
        compression="zlib",
        bigtiff=True,
    )


def child(args: argparse.Namespace) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    import torch

    from unetkit import Predictor

    torch.set_num_threads(args.threads)
    predictor = Predictor.from_checkpoint(
        args.checkpoint, device="cpu", tile=args.tile, batch_size=args.batch
    )
    image = np.load(args.image)
    if args.engine == "unetkit":
        t0 = time.perf_counter()
        probs = predictor.predict_proba(image)
        wall = time.perf_counter() - t0
    else:
        from monai.inferers import sliding_window_inference

        x = torch.from_numpy(predictor.prepare(image))[None]
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = sliding_window_inference(
                x, (args.tile, args.tile), args.batch, predictor.model, overlap=args.overlap, mode="gaussian"
            )
            probs = torch.sigmoid(logits)[0].numpy()
        wall = time.perf_counter() - t0
    np.save(args.save, probs.astype(np.float32))
    print(json.dumps({"wall": wall, "peak_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss`` of a child: Linux starts a child's
    maximum at its parent's resident size when it forks, which would hide the child's own figure."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cli(argv: list[str]) -> None:
    """``unetkit ARGV`` in this (fresh) process, exactly as the console script runs it; prints the peak RSS."""
    from unetkit.cli.main import main as unetkit_main

    code = unetkit_main(argv)
    print(json.dumps({"peak_mib": peak_rss_mib()}))
    raise SystemExit(code)


def run_measured(cmd: list[str]) -> tuple[dict, float, str]:
    """Run ``cmd`` (echoing its progress bar): its last JSON line, its wall time, its output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    chunks = []
    for line in proc.stdout:
        chunks.append(line)
        if "%|" in line:
            sys.stderr.write(line)
    code = proc.wait()
    wall = time.perf_counter() - t0
    out = "".join(chunks)
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return (json.loads(lines[-1]) if lines else {}), wall, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cli", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="unetkit")
    parser.add_argument("--checkpoint")
    parser.add_argument("--save")
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=4096, help="side of the comparison image")
    parser.add_argument("--big", type=int, default=20000, help="side of the large image (0: skip)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--work", help="folder for the model and images (default: a temporary one)")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.cli:
        cli(args.cli)
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        ckpt = train_small(work)
        print(f"trained the small U-Net in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        from unetkit import synth_nuclei

        np.save(
            work / "image.npy", synth_nuclei(args.size, 0)[0]
        )  # made here: children measure only inference
        results = {}
        for engine in ("unetkit", "monai"):
            cmd = [sys.executable, str(HERE), "--child", "--engine", engine, "--checkpoint", str(ckpt)]
            cmd += [
                "--save",
                str(work / f"{engine}.npy"),
                "--image",
                str(work / "image.npy"),
                "--tile",
                str(args.tile),
            ]
            cmd += [
                "--overlap",
                str(args.overlap),
                "--batch",
                str(args.batch),
                "--threads",
                str(args.threads),
            ]
            info, _, _ = run_measured(cmd)
            results[engine] = (info["wall"], info["peak_mib"])
        a, b = np.load(work / "unetkit.npy"), np.load(work / "monai.npy")
        diff = np.abs(a - b)
        (tu, ru), (tm, rm) = results["unetkit"], results["monai"]
        mp = args.size**2 / 1e6
        setting = f"{args.size}², tile {args.tile}, overlap {args.overlap}, gaussian, batch {args.batch}"
        rows.append(
            (f"unetkit Predictor, {setting}", f"{tu:.1f} s ({mp / tu:.2f} MP/s)", f"{ru:.0f} MiB", "1.00")
        )
        rows.append(
            (
                "MONAI sliding_window_inference, same",
                f"{tm:.1f} s ({mp / tm:.2f} MP/s)",
                f"{rm:.0f} MiB",
                f"{tm / tu:.2f}x unetkit's time",
            )
        )
        rows.append(
            (
                "|unetkit - MONAI| probability",
                f"mean {diff.mean():.1e}, max {diff.max():.2f}",
                "",
                f"{(diff > 0.01).mean():.2%} of pixels differ by > 0.01 (tile-edge rows, where both "
                "Gaussian maps sit at their 1e-3 floor)",
            )
        )
        if args.big:
            big = work / "big.tif"
            t0 = time.perf_counter()
            write_big_tiff(big, args.big)
            print(f"wrote {big} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            cmd = [sys.executable, str(HERE), "--cli", "predict", str(ckpt), str(big), "--out"]
            cmd += [str(work / "big-out"), "--instances", "--format", "tiff", "--overlay", "--overwrite"]
            info, wall, out = run_measured(cmd)
            rss = info["peak_mib"]
            objects = [ln for ln in out.splitlines() if ln.startswith("wrote")][-1].split(", ")[-1]
            mp = args.big**2 / 1e6
            rows.append(
                (
                    f"unetkit predict {args.big}x{args.big} TIFF --instances --overlay (CLI)",
                    f"{wall:.0f} s ({mp / wall:.2f} MP/s)",
                    f"{rss:.0f} MiB",
                    objects,
                )
            )
    print(f"tiled inference bench: torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs")
    head = ("what", "time", "peak RSS", "notes")
    w = [max(len(str(r[i])) for r in [head, *rows]) for i in range(4)]
    for r in [head, tuple("-" * n for n in w), *rows]:
        print("| " + " | ".join(f"{c!s:<{n}}" for c, n in zip(r, w, strict=True)) + " |")


if __name__ == "__main__":
    main()
