"""How prediction tiles an image (``make bench-tiling``): the network's measured context, and the default plan
against tiles of a fixed size overlapping by a quarter; prints tables, never a timed test.

1. **Context**: the built-in model on 1024² images of seven styles (four of its training family, three suite
   domains), one pass over the whole image against a pass over its central 512² crop: by distance from the
   crop's edge, the 99.9th percentile of the largest class-probability difference and the share of pixels whose
   class changes. Where both reach zero is how far the network looks; what a tile's edge loses is the rest.
2. **Sizes**: ``Predictor.from_pretrained("nuclei")`` with the default plan (``overlap=None``: tiles overlap by
   twice the context whatever their size, each image its own fewest tiles within the pixels of one batch)
   against ``overlap=0.25`` (tiles of 512, batch 4, as before): tiles, median time of alternated runs, and the
   share of mask pixels that differ.
3. **End to end**: ``unetkit predict nuclei`` on a 4096² image in a fresh process per run, alternated, with and
   without ``--instances``: wall time, peak RSS, the mask's differing pixels and the objects' agreement (F1 at
   IoU 0.5 between the two plans' instances).
4. **Pass size by measurement** (``--passes``): ``unetkit predict nuclei --engine auto`` measures the engines and
   the pass size on its first run (in a fresh cache: its measurement is printed); then, on the 4096² image,
   fresh processes alternated, ``--engine auto`` (its engine and measured pass bound) against the same engine
   and precision with the default bound (one batch of 4 × 512²): wall time and the mask's differing pixels.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def context_profile(distances: list[int]) -> None:
    import torch

    from unetkit import Predictor, synth_nuclei
    from unetkit.data.domains import DOMAINS
    from unetkit.data.synthetic import style_of

    images = [synth_nuclei(1024, np.random.SeedSequence([77, i]), style_of("random", np.random.SeedSequence([77, i, 1])))[0] for i in range(4)]  # fmt: skip
    images += [synth_nuclei(1024, np.random.SeedSequence([78, k]), DOMAINS[d].params)[0] for k, d in enumerate(("uneven", "defocus", "large"))]  # fmt: skip
    predictor = Predictor.from_pretrained("nuclei", precision="float32")
    net = predictor.executor.model
    yy, xx = np.mgrid[:512, :512]
    ring = np.minimum(np.minimum(yy, 511 - yy), np.minimum(xx, 511 - xx))
    worst = np.zeros(len(distances))
    flips = np.zeros(len(distances))
    for image in images:
        x = torch.from_numpy(predictor.prepare(image))[None]
        with torch.inference_mode():
            whole = torch.softmax(net(x), 1)[0, :, 256:768, 256:768].numpy()
            crop = torch.softmax(net(x[..., 256:768, 256:768].contiguous()), 1)[0].numpy()
        diff = np.abs(crop - whole).max(0)
        changed = crop.argmax(0) != whole.argmax(0)
        for j, d in enumerate(distances):
            worst[j] = max(worst[j], float(np.percentile(diff[ring == d], 99.9)))
            flips[j] += changed[ring == d].mean() / len(images)
    print("\n## The built-in model's context: a 512² crop against the whole 1024² image (7 images)\n")
    print("| px from the crop's edge | 99.9th percentile of the probability difference (worst image) | pixels changing class (mean) |")  # fmt: skip
    print("|---:|---:|---:|")
    for d, w, f in zip(distances, worst, flips, strict=True):
        print(f"| {d} | {w:.3f} | {f:.3%} |")


def sizes(shapes: list[tuple[int, int]], rounds: int) -> None:
    from unetkit import Predictor, synth_nuclei
    from unetkit.device import tune_allocator

    tune_allocator()
    plans = {"default": Predictor.from_pretrained("nuclei"), "0.25": Predictor.from_pretrained("nuclei", overlap=0.25)}  # fmt: skip
    print("\n## Default plan vs tiles of 512 overlapping by a quarter (Predictor, in one process)\n")
    print("| image | default: tiles x side, batch | overlap 0.25: tiles x side | default | overlap 0.25 | speed-up | pixels differing |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|")
    for shape in shapes:
        image = synth_nuclei(shape, 1)[0]
        times: dict[str, list[float]] = {k: [] for k in plans}
        masks = {k: p.predict(image) for k, p in plans.items()}  # also warms up
        for _ in range(rounds):
            for k, p in plans.items():
                t0 = time.perf_counter()
                p.predict(image)
                times[k].append(time.perf_counter() - t0)
        t = {k: float(np.median(v)) for k, v in times.items()}
        cells = []
        for k in plans:
            ex = plans[k].executor
            sides = ex._tile_sides(shape)
            cells.append(f"{len(ex.plan(shape))} x {'x'.join(map(str, sides))}" + (f", batch {ex.batch_for(sides)}" if k == "default" else ""))  # fmt: skip
        print(f"| {shape[0]}x{shape[1]} | {cells[0]} | {cells[1]} | {t['default']:.2f} s | {t['0.25']:.2f} s | "
              f"{t['0.25'] / t['default']:.2f}x | {np.mean(masks['default'] != masks['0.25']):.4%} |")  # fmt: skip


def end_to_end(size: int, rounds: int, work: Path) -> None:
    """Run first, while this process is small: a child's peak RSS starts at its parent's when it forks."""
    import tifffile
    from hostile import run  # bench/hostile.py: a command's exit code, wall time and peak RSS

    from unetkit import synth_nuclei
    from unetkit.data.io import read_image
    from unetkit.metrics.instance import match_instances

    image = work / "big.tif"
    tifffile.imwrite(image, synth_nuclei(size, 0)[0])
    print(f"\n## End to end: unetkit predict nuclei on a {size}² image (fresh process per run, {rounds} rounds alternated)\n")  # fmt: skip
    print("| run | default plan | overlap 0.25 | speed-up | peak RSS default / 0.25 |")
    print("|---|---:|---:|---:|---:|")
    for instances in (False, True):
        seen: dict[str, list[tuple[float, float]]] = {"default": [], "0.25": []}
        for _ in range(rounds):
            for plan in seen:
                out = work / f"{plan}-{instances}"
                cmd = [sys.executable, "-m", "unetkit", "predict", "nuclei", str(image), "--out", str(out), "--no-progress", "--overwrite"]  # fmt: skip
                cmd += (["--overlap", "0.25"] if plan == "0.25" else []) + (
                    ["--instances"] if instances else []
                )
                rc, wall, peak, err = run(cmd)  # the child's own wall time and peak RSS (wait4)
                if rc:
                    raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
                seen[plan].append((wall, peak))
        med = {k: (float(np.median([w for w, _ in v])), max(m for _, m in v)) for k, v in seen.items()}
        print(f"| {'--instances' if instances else 'mask'} | {med['default'][0]:.1f} s | {med['0.25'][0]:.1f} s | "
              f"{med['0.25'][0] / med['default'][0]:.2f}x | {med['default'][1]:.0f} / {med['0.25'][1]:.0f} MiB |")  # fmt: skip
    a, b = (read_image(work / f"{k}-False" / "big.png") for k in ("default", "0.25"))
    print(f"\nmask pixels differing: {np.mean(a != b):.4%}")
    la, lb = (read_image(work / f"{k}-True" / "big_instances.tif") for k in ("default", "0.25"))
    s = match_instances(lb, la)
    print(f"objects: {s.n_true} (overlap 0.25) vs {s.n_pred} (default); F1@0.5 between them {s.f1():.4f}, F1@0.9 {s.f1(0.9):.4f}")  # fmt: skip


def passes(size: int, rounds: int, work: Path) -> None:
    """``--engine auto``'s measured pass bound against its engine with the default one (see the docstring)."""
    import json
    import os
    import subprocess

    import tifffile
    from hostile import run

    from unetkit import synth_nuclei
    from unetkit.data.io import read_image

    image = work / "big.tif"
    if not image.is_file():
        tifffile.imwrite(image, synth_nuclei(size, 0)[0])
    os.environ["UNETKIT_CACHE_DIR"] = str(work / "cache")  # a fresh measurement, inherited by every child
    small = work / "small.tif"
    tifffile.imwrite(small, synth_nuclei(256, 1)[0])
    first = [sys.executable, "-m", "unetkit", "predict", "nuclei", str(small), "--out", str(work / "first"), "--engine", "auto", "--no-progress"]  # fmt: skip
    t0 = time.perf_counter()
    said = subprocess.run(first, capture_output=True, text=True, check=True).stderr
    print(
        f"\n## Pass size by measurement: the first --engine auto run ({time.perf_counter() - t0:.1f} s, measuring)\n"
    )
    for line in said.splitlines():
        if "engine:" in line or "tiles:" in line:
            print(f"- {line.split(' - ')[-1].strip()}")
    (entry,) = [
        v for k, v in json.loads((work / "cache" / "engines.json").read_text()).items() if "|pass " not in k
    ]
    engine, precision = entry["engine"], entry["precision"]
    arms = {"auto": ["--engine", "auto"], "default bound": ["--engine", engine, "--precision", precision]}
    print(f"\n| {size}² image, fresh processes, {rounds} rounds | wall time | peak RSS |\n|---|---:|---:|")
    seen: dict[str, list[tuple[float, float]]] = {k: [] for k in arms}
    for _ in range(rounds):
        for arm, flags in arms.items():
            cmd = [sys.executable, "-m", "unetkit", "predict", "nuclei", str(image), "--out", str(work / arm), "--no-progress", "--overwrite", *flags]  # fmt: skip
            rc, wall, peak, err = run(cmd)
            if rc:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
            seen[arm].append((wall, peak))
    for arm, runs in seen.items():
        walls = ", ".join(f"{w:.1f}" for w, _ in runs)
        print(f"| {arm} ({' '.join(arms[arm])}) | {float(np.median([w for w, _ in runs])):.1f} s ({walls}) | {max(m for _, m in runs):.0f} MiB |")  # fmt: skip
    a, b = (read_image(work / k / "big.png") for k in arms)
    print(f"\nmask pixels differing between the two bounds: {np.mean(a != b):.4%}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=4096, help="side of the end-to-end image (0: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated runs per setting")
    parser.add_argument("--no-context", action="store_true", help="skip the context profile")
    parser.add_argument("--passes", action="store_true", help="only the pass size by measurement (4.)")
    args = parser.parse_args()
    from unetkit.device import cpu_summary

    print(f"CPU: {cpu_summary()}")
    if args.passes:
        with tempfile.TemporaryDirectory(prefix="unetkit-bench-passes-") as tmp:
            passes(args.size or 4096, args.rounds, Path(tmp))
        return
    if args.size:
        with tempfile.TemporaryDirectory(prefix="unetkit-bench-tiling-") as tmp:
            end_to_end(args.size, args.rounds, Path(tmp))
    if not args.no_context:
        context_profile(list(range(0, 129, 8)))
    sizes([(256, 256), (520, 696), (1024, 1024), (1500, 1500), (2048, 2048)], args.rounds)


if __name__ == "__main__":
    main()
