"""A simulated user in the human-in-the-loop cycle (``make bench-review``): prints a table; never a timed test.

On a held-out domain of the style-shift suite (``unetkit.data.domains``), the user has the domain's 5 pool images,
unannotated, and the built-in model. Each round, as a user runs it:

1. ``unetkit predict MODEL POOL --instances`` (the model in use: the built-in one, then each round's);
2. pick 10 objects: ``unetkit review PRED --most 10 --below 1 --images POOL --corrections DIR`` (the least
   confident, not in regions corrected before), or 10 chosen at random (the same count, the comparison arm);
3. the user corrects them: here, every pixel of the round's regions is replaced by the true labels (the truth
   objects the regions touch joined whole), what a careful user would paint;
4. ``unetkit train DIR --init MODEL --time-budget 1m`` on every round so far (validation: objects held out of
   the corrections; ``best.pt`` never below the model it started from);
5. ``evaluate`` the new model on the domain's 8 test images (F1 at IoU 0.5, DSB score, AJI).

Both arms start from the same zero-shot score. About 4 minutes per round and arm on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

SCORES = ("f1", "dsb_score", "aji")


def correct_like_a_user(folder: Path, round_no: int, truth: Path) -> int:
    """Replace the labels of round ``round_no``'s regions in corrections ``folder`` by the true ones (``truth``:
    the pool's masks folder), the truth objects the regions touch joined whole; returns the objects painted."""
    import csv

    from unetkit import read_image, write_image
    from unetkit.workflows.painted import IGNORED

    with open(folder / "review.csv", encoding="utf-8", newline="") as f:
        files = {(r["file"], r["image"], int(r["y_offset"]), int(r["x_offset"])) for r in csv.DictReader(f)
                 if int(r["round"]) == round_no}  # fmt: skip
    painted = 0
    for file, image, y0, x0 in sorted(files):
        path = folder / "masks" / file
        mask = read_image(path).astype(np.uint32)
        region = mask != IGNORED
        true = read_image(next((truth).glob(f"{image}.*"))).astype(np.uint32)
        true = true[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        touched = np.unique(true[region])
        region = ndi.binary_dilation(region | np.isin(true, touched[touched > 0]), iterations=2)
        corrected = np.where(region, true, IGNORED).astype(np.uint32)
        painted += len(np.unique(true[region & (true > 0)]))
        write_image(path, corrected, overwrite=True)
    return painted


def run(cmd: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "unetkit", *cmd, "--no-progress"], capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"unetkit {' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def scores(model: str, test: Path, out: Path) -> dict[str, float]:
    from unetkit import evaluate_model

    ev = evaluate_model(model, test, out, mode="instance", overwrite=True, progress=False)
    return {k: round(float(ev.mean[k]), 4) for k in SCORES}


def arm(
    name: str, work: Path, pool: Path, test: Path, rounds: int, per_round: int, budget: str, seed: int
) -> list:
    from unetkit.workflows.review import all_objects, unreviewed, write_corrections

    model, rows = "nuclei", []
    folder = work / name / "corrections"
    for r in range(1, rounds + 1):
        pred = work / name / f"pred-{r}"
        run(["predict", model, str(pool / "images"), "--instances", "--out", str(pred), "--overwrite"])
        if name == "least-confident":
            out = run(["review", str(pred), "--below", "1", "--most", str(per_round), "--images", str(pool),
                       "--corrections", str(folder)])  # fmt: skip
            assert f"round {r} of corrections" in out, out
        else:
            # by image and label, so the random picks do not depend on the confidence's order
            fresh = sorted(unreviewed(all_objects(pred), folder), key=lambda d: (d.image, d.label))
            chosen = random.Random(seed + r).sample(fresh, min(per_round, len(fresh)))
            assert write_corrections(chosen, pred, pool, folder)[0] == r
        painted = correct_like_a_user(folder, r, pool / "masks")
        runs = work / name / f"run-{r}"
        t0 = time.perf_counter()
        said = run(
            [
                "train",
                str(folder),
                "--init",
                model,
                "--time-budget",
                budget,
                "--out",
                str(runs),
                "--overwrite",
            ]
        )
        wall = time.perf_counter() - t0
        model = str(runs / "best.pt")
        got = scores(model, test, work / name / f"eval-{r}")
        epochs = (runs / "metrics.csv").read_text().splitlines()
        best0 = "at epoch 0 (the starting model)" in said  # no epoch beat the model it started from
        rows.append({"arm": name, "round": r, "objects": painted, "train_s": round(wall, 1),
                     "epochs": len(epochs) - 2, "kept_start": best0, **got})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domain", default="nucleoli", help="a domain of the suite (default: nucleoli)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=10, help="objects corrected per round (default 10)")
    parser.add_argument("--budget", default="1m", help="training budget per round (default 1m)")
    parser.add_argument("--seed", type=int, default=0, help="the random arm's seed")
    parser.add_argument("--out", type=Path, default=Path("bench-review"))
    args = parser.parse_args()

    import torch

    from unetkit.data.domains import synthesize_domain
    from unetkit.device import cpu_summary

    print(f"CPU: {cpu_summary()}; torch {torch.__version__}")
    work = args.out / args.domain
    pool, test = work / "pool", work / "test"
    for split, folder in (("pool", pool), ("test", test)):
        if not (folder / "dataset.yaml").is_file():
            synthesize_domain(args.domain, folder, split, overwrite=True)
    zero = scores("nuclei", test, work / "eval-0")
    print(json.dumps({"arm": "zero-shot", "round": 0, **zero}), flush=True)
    rows = [r for name in ("least-confident", "random") for r in
            arm(name, work, pool, test, args.rounds, args.per_round, args.budget, args.seed)]  # fmt: skip
    print(
        f"\n{args.domain}: {args.per_round} objects corrected per round, retrained {args.budget} from the model in use"
    )
    print(
        "| arm | round | objects painted | F1@0.5 | DSB | AJI | train wall (s) |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    print(f"| zero-shot | 0 | 0 | {zero['f1']:.3f} | {zero['dsb_score']:.3f} | {zero['aji']:.3f} | |")
    for r in rows:
        print(
            f"| {r['arm']} | {r['round']} | {r['objects']} | {r['f1']:.3f} | {r['dsb_score']:.3f} | {r['aji']:.3f} | {r['train_s']} |"
        )
    (work / "results.json").write_text(json.dumps({"zero": zero, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
