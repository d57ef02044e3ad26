"""A newcomer's journey on a DSB-style folder (``make bench-journey``): prints one table; never a timed test.

Builds a Data Science Bowl 2018-style dataset from the built-in synthetic nuclei (``ID/images/ID.png`` as
RGBA, ``ID/masks/*.png`` one binary PNG per nucleus; 30 training folders of 256², and a held-out folder of 8
at 288x352 with their masks), then runs exactly what a newcomer types, through the installed ``unetkit``
command, timing each step:

    unetkit check-data DATA
    unetkit train DATA --out RUN              (no flags: the plan made on the fly, 10 minutes on a CPU)
    unetkit predict RUN TEST --out PRED --instances --overlay
    unetkit evaluate PRED TEST --report REPORT

About 12 minutes on 2 cores (the training budget is the default).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def dsb_folder(root: Path, n: int, size, seed: int) -> Path:
    from unetkit import synth_nuclei, write_image

    for i in range(n):
        image, labels = synth_nuclei(size, seed + i)
        sid = f"{seed + i:08x}"
        write_image(
            root / sid / "images" / f"{sid}.png", np.dstack([image, image, image, np.full_like(image, 255)])
        )
        for k in range(1, int(labels.max()) + 1):
            write_image(root / sid / "masks" / f"{sid}_{k:03d}.png", ((labels == k) * 255).astype(np.uint8))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", help="keep everything in this folder")
    parser.add_argument(
        "--extra", nargs="*", default=[], help="extra flags for train (e.g. --time-budget 5m)"
    )
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("unetkit"))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="unetkit-journey-"))
    data = dsb_folder(work / "stage1_train", 30, 256, 0)
    test = dsb_folder(work / "stage1_test", 8, (288, 352), 10_000)
    steps = [
        ("check-data", [exe, "check-data", str(data)]),
        ("train", [exe, "train", str(data), "--out", str(work / "run"), "--no-progress", *args.extra]),
        ("predict", [exe, "predict", str(work / "run"), str(test), "--out", str(work / "pred"), "--instances",
                     "--overlay", "--no-progress"]),
        ("evaluate", [exe, "evaluate", str(work / "pred"), str(test), "--report", str(work / "report")]),
    ]  # fmt: skip
    rows = []
    total = 0.0
    for name, cmd in steps:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        total += dt
        if proc.returncode != 0:
            sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        said = next((ln for ln in lines if ln.startswith("unetkit: training:")), "")
        rows.append((name, dt, said or lines[-1][:120] if lines else ""))
        if name == "evaluate":
            mean = next(ln for ln in proc.stdout.splitlines() if ln.startswith("mean"))
            header = next(ln for ln in proc.stdout.splitlines() if ln.startswith("image"))
    print(f"DSB-style folder: {work}")
    print("| step | wall | what it said |\n| --- | --- | --- |")
    for name, dt, said in rows:
        print(f"| {name} | {dt:.1f} s | {said} |")
    print(f"| total | {total / 60:.1f} min | report: {work / 'report' / 'index.html'} |")
    print(re.sub(r"\s+", " ", header))
    print(re.sub(r"\s+", " ", mean))


if __name__ == "__main__":
    main()
