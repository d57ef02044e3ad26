"""A newcomer's journey on their own folders (``make bench-journey``): prints one table; never a timed test.

Builds four folders from the built-in synthetic nuclei, as users bring them, each with a held-out folder of
another size: a Data Science Bowl 2018 folder (``ID/images/ID.png`` as RGBA, ``ID/masks/*.png`` one binary PNG
per nucleus), a Cellpose folder (``img_001.tif`` + ``img_001_cp_masks.png``), 3-D z-stacks with label stacks
saved by Fiji, and RGB class masks (a colour per class). Then it runs exactly what a newcomer types, with no
flag beyond what docs/data.md asks for and check-data's refusals name (``--spatial-dims 3``
and ``--mask-encoding instances`` for label stacks, ``--class-map`` for colours), through the installed ``unetkit`` command, timing each step:

    unetkit check-data DATA
    unetkit train DATA --out RUN              (no flags: the plan made on the fly, 10 minutes on a CPU)
    unetkit predict RUN TEST --out PRED --instances --overlay
    unetkit evaluate PRED TEST --report REPORT

About 45 minutes on 2 cores with the default training budget; ``--extra '--time-budget 2m'`` for about 15.
"""

from __future__ import annotations

import argparse
import re
import shlex
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


def cellpose_folder(root: Path, n: int, size, seed: int) -> Path:
    """Cellpose-style: ``img_001.tif`` beside ``img_001_cp_masks.png`` (16-bit object labels), one folder."""
    import tifffile

    from unetkit import synth_nuclei, write_image

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, labels = synth_nuclei(size, seed + i)
        tifffile.imwrite(root / f"img_{seed + i:03d}.tif", image.astype(np.uint16) * 40)  # a 12-bit camera
        write_image(root / f"img_{seed + i:03d}_cp_masks.png", labels.astype(np.uint16))
    return root


def volume_folder(root: Path, n: int, shape, seed: int) -> Path:
    """3-D: ``images/NAME.tif`` z-stacks and ``masks/NAME.tif`` label stacks, saved by Fiji (ImageJ ZYX)."""
    import tifffile

    from unetkit import synth_nuclei_3d

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        volume, labels = synth_nuclei_3d(shape, seed=seed + i)
        tifffile.imwrite(root / "images" / f"stack{i:02d}.tif", volume, imagej=True, metadata={"axes": "ZYX"})
        tifffile.imwrite(root / "masks" / f"stack{i:02d}.tif", labels.astype(np.uint16), imagej=True,
                         metadata={"axes": "ZYX"})  # fmt: skip
    return root


CLASS_MAP = """- {name: background, color: "#000000"}
- {name: nucleus, color: "#ff0000"}
- {name: edge, color: "#00ff00"}
"""


def rgb_class_folder(root: Path, n: int, size, seed: int) -> Path:
    """RGB class masks (background black, nucleus red, its edge green) as a painting program saves them."""
    from skimage.segmentation import find_boundaries

    from unetkit import synth_nuclei, write_image

    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    for i in range(n):
        image, labels = synth_nuclei(size, seed + i)
        classes = (labels > 0).astype(np.uint8) + find_boundaries(labels, mode="inner").astype(np.uint8)
        write_image(root / "images" / f"tile{seed + i:03d}.png", image)
        write_image(root / "masks" / f"tile{seed + i:03d}.png", colours[classes])
    return root


def folders(work: Path) -> list[tuple[str, Path, Path, list[str], list[str]]]:
    """(name, training data, held-out data, flags docs/data.md asks for, predict flags)."""
    (work / "classes.yaml").write_text(CLASS_MAP)
    return [
        ("DSB 2018 (ID/images, ID/masks)", dsb_folder(work / "stage1_train", 30, 256, 0),
         dsb_folder(work / "stage1_test", 8, (288, 352), 10_000), [], ["--instances", "--overlay"]),
        ("Cellpose (img_001.tif + _cp_masks.png)", cellpose_folder(work / "cellpose", 24, 256, 0),
         cellpose_folder(work / "cellpose_test", 6, (320, 288), 500), [], ["--instances", "--overlay"]),
        ("3-D z-stacks (images/, masks/)", volume_folder(work / "stacks", 8, (16, 96, 96), 0),
         volume_folder(work / "stacks_test", 3, (16, 96, 96), 100), ["--spatial-dims", "3", "--mask-encoding", "instances"], ["--instances"]),
        ("RGB class masks (images/, masks/)", rgb_class_folder(work / "rgb", 24, 256, 0),
         rgb_class_folder(work / "rgb_test", 6, (256, 320), 700), ["--class-map", str(work / "classes.yaml")],
         ["--overlay"]),
    ]  # fmt: skip


def evaluate_flags(flags: list[str]) -> list[str]:
    """The data flags evaluate takes (it reads volumes as the predictions are, without --spatial-dims)."""
    return [f for i, f in enumerate(flags) if "--spatial-dims" not in flags[max(0, i - 1) : i + 1]]


def run_step(name: str, cmd: list[str]) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return dt, (proc.stdout + proc.stderr).strip().splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", help="keep everything in this folder")
    parser.add_argument(
        "--extra", default="", help="extra flags for train, one string (e.g. '--time-budget 5m')"
    )
    parser.add_argument("--only", help="run the folders whose name contains this (e.g. Cellpose)")
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("unetkit"))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="unetkit-journey-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}; train flags beyond docs/data.md's: {args.extra or 'none'}\n")
    print("| folder | step | wall | what it said |\n| --- | --- | --- | --- |")
    scores = []
    for k, (title, data, test, flags, outputs) in enumerate(folders(work)):
        if args.only and args.only.lower() not in title.lower():
            continue
        run, pred, report = work / f"run{k}", work / f"pred{k}", work / f"report{k}"
        steps = [
            ("check-data", [exe, "check-data", str(data), *flags]),
            ("train", [exe, "train", str(data), "--out", str(run), "--no-progress", *flags, *shlex.split(args.extra)]),
            ("predict", [exe, "predict", str(run), str(test), "--out", str(pred), "--no-progress", *outputs]),
            ("evaluate", [exe, "evaluate", str(pred), str(test), "--report", str(report), "--no-progress",
                          *evaluate_flags(flags)]),
        ]  # fmt: skip
        total = 0.0
        for name, cmd in steps:
            dt, lines = run_step(f"{title}: {name}", cmd)
            total += dt
            said = next((ln for ln in lines if ln.startswith("unetkit: training:")), "")
            said = said or next((ln for ln in lines if "mask encoding" in ln.lower()), "")
            print(f"| {title} | {name} | {dt:.1f} s | {(said or (lines[-1] if lines else ''))[:110]} |")
            if name == "evaluate":
                header = next(ln for ln in lines if ln.startswith("image"))
                mean = next(ln for ln in lines if ln.startswith("mean"))
                scores.append((title, re.sub(r"\s+", " ", header), re.sub(r"\s+", " ", mean)))
        print(f"| {title} | total | {total / 60:.1f} min | report: {report / 'index.html'} |")
    print()
    for title, header, mean in scores:
        print(f"{title}:\n  {header}\n  {mean}")


if __name__ == "__main__":
    main()
