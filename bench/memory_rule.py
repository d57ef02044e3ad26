"""Peak memory either side of predict's memory rule (``make bench-memory``): prints one table; never a timed test.

``unetkit predict nuclei IMAGE --instances`` on square synthetic nuclei images just under and just over the size
where the rule (:func:`unetkit.inference.pipeline.streams`) switches from holding an image whole to streaming
it, and either side of the old fixed switch (64 megapixels: 8000² was held whole, 8200² streamed), each in a
fresh process: the path taken, the mask's format, wall time and peak RSS. Issue 32 measured 3.2 GB for 8000²
against 1.3 GB for 8200² under the old switch. About 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def write_image(path: Path, side: int) -> None:
    """A side x side image tiled from 1024² synthetic nuclei images (uncompressed TIFF)."""
    import tifffile

    from unetkit import synth_nuclei

    image = np.zeros((side, side), np.uint8)
    for y in range(0, side, 1024):
        for x in range(0, side, 1024):
            part = synth_nuclei(1024, seed=y * 7 + x)[0]
            image[y : y + 1024, x : x + 1024] = part[: min(1024, side - y), : min(1024, side - x)]
    tifffile.imwrite(path, image)


def child(argv: list[str]) -> None:
    """``unetkit ARGV`` in this fresh process; prints its peak resident memory (VmHWM)."""
    from unetkit.cli.main import main

    code = main(argv)
    hwm = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
    print(json.dumps({"peak_mib": int(hwm.split()[1]) / 1024}))
    raise SystemExit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--sides", default="", help="comma-separated sides (default: around both switches)")
    parser.add_argument("--no-instances", action="store_true", help="semantic masks only")
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return

    from unetkit import Predictor
    from unetkit.inference.outputs import default_format
    from unetkit.inference.pipeline import streams

    instances = not args.no_instances
    predictor = Predictor.from_pretrained("nuclei")
    switch = next(s for s in range(256, 20000, 16) if streams(predictor, (s, s), instances))
    sides = [int(s) for s in args.sides.split(",")] if args.sides else [switch - 96, switch + 96, 8000, 8200]
    from unetkit.device import cpu_summary

    print(
        f"CPU: {cpu_summary()}; the rule switches at {switch}² ({'with' if instances else 'without'} --instances)\n"
    )
    print("| image | path | mask | wall s | peak RSS MiB |")
    print("| --- | --- | --- | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            image = Path(tmp) / f"img{side}.tif"
            write_image(image, side)
            out = Path(tmp) / f"out{side}"
            argv = ["predict", "nuclei", str(image), "--out", str(out), "--no-progress"]
            argv += ["--instances"] if instances else []
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, str(HERE), "--child", *argv], capture_output=True, text=True, check=False
            )
            wall = time.perf_counter() - t0
            if proc.returncode:
                raise SystemExit(f"predict {side}² failed:\n{proc.stderr[-2000:]}")
            peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"]
            path = "streamed" if streams(predictor, (side, side), instances) else "whole"
            mask = default_format(side, side, 1)
            assert (out / f"img{side}.{'png' if mask == 'png' else 'tif'}").is_file()
            print(f"| {side}² ({side * side / 2**20:.1f} MP) | {path} | {mask} | {wall:.1f} | {peak:.0f} |")
            image.unlink()


if __name__ == "__main__":
    main()
