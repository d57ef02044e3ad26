"""The built-in ``nuclei`` model on the style-shift suite (``make bench-pretrained``): prints tables; never a
timed test.

Every figure is measured on the suite (``unetkit.data.domains``): generated imaging domains held out from all
training data, each with a pool of 5 annotated images and 8 test images. Per domain:

1. zero-shot: each built-in version (``nuclei@1``, ``nuclei@2``, ``nuclei``) on the test images, plain and with
   ``--diameter auto``; and on unseen images of the training family; instance F1 at IoU 0.5, DSB 2018 score, AJI;
2. size: the typical object diameter ``--diameter auto`` estimates from the model's first pass against the
   same estimate on the true masks (one estimate everywhere: ``data.checks.typical_diameter``);
3. fine-tuning from the built-in model on the first 1, 2 and 5 pool images for 1 and 2 minutes, and training
   from scratch on them for 2 and 5 minutes, each as a user runs it: ``unetkit train DATA [--init nuclei]
   --time-budget B`` (the plan made on the fly and counted in the budget), then ``evaluate`` on the test images.

Each cell is appended to ``OUT/results.jsonl`` as it is measured; a rerun with the same ``--out`` skips the cells
there (``--domains``/``--images``/``--fine-tune``/``--scratch`` for fewer). About 30 minutes per domain on 2
cores, so about 3.5 hours for the suite.

``--variants 'NAME=FLAGS;...'`` trains every cell once more per variant with those flags added to the command
(``aug=--scale 0.2 --intensity 0.2``): how the plan's choices for tiny datasets were measured.

``--seeds N`` trains every cell with ``--seed 0`` to ``N - 1`` (keys of seed S > 0 end in ``|sS``) and the tables
give the mean over the seeds measured, each seed's F1 beside it: one held-out region of one image has a dozen
objects, and a single run of a 1-image cell moves by several hundredths from seed to seed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCORES = ("f1", "dsb_score", "aji")


def main() -> None:
    from unetkit.data.domains import DOMAINS, POOL

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", default=",".join(DOMAINS), help="suite domains (default: all)")
    parser.add_argument("--images", default="1,2,5", help=f"training image counts, at most {POOL}")
    parser.add_argument("--fine-tune", default="1,2", help="fine-tuning budgets in minutes")
    parser.add_argument("--scratch", default="2,5", help="from-scratch budgets in minutes")
    parser.add_argument(
        "--models", default="nuclei@1,nuclei@2,nuclei", help="built-in models scored zero-shot"
    )
    parser.add_argument("--variants", default="", help="NAME=FLAGS;...: extra flags for every training cell")
    parser.add_argument(
        "--seeds", type=int, default=1, help="train every cell with seeds 0..N-1 (default: 1)"
    )
    parser.add_argument("--out", help="keep data, runs and results.jsonl here (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="unetkit-bench-pretrained-"))
    work.mkdir(parents=True, exist_ok=True)
    book = Results(work / "results.jsonl")
    domains = [d for d in args.domains.split(",") if d]
    images = [int(v) for v in args.images.split(",") if v]
    models = [m for m in args.models.split(",") if m]
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    variants = {"": []} | {
        k.strip(): v.split() for k, _, v in (item.partition("=") for item in args.variants.split(";") if item)
    }
    _machine()
    print(f"work in {work}\n", flush=True)
    for name in domains:
        measure_domain(
            name, work, book, models, images, _minutes(args.fine_tune), _minutes(args.scratch), variants,
            args.seeds,
        )  # fmt: skip
    family(work, book, models)
    report(book, domains, models, images, _minutes(args.fine_tune), _minutes(args.scratch), list(variants),
           args.seeds)  # fmt: skip
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)


class Results:
    """The cells measured so far, by key; each new one appended to the file as it is measured."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cells: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                self.cells[row["key"]] = row

    def get(self, key: str) -> dict[str, Any] | None:
        return self.cells.get(key)

    def seeded(self, key: str, seeds: int) -> dict[str, Any] | None:
        """The cell ``key`` averaged over the seeds measured of ``seeds`` (``f1s``: each seed's F1, in order)."""
        rows = [r for s in range(seeds) if (r := self.get(key + (f"|s{s}" if s else ""))) is not None]
        if not rows:
            return None
        mean = {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in SCORES}  # as each cell is recorded
        return mean | {"f1s": [r["f1"] for r in rows]}

    def put(self, key: str, row: dict[str, Any]) -> dict[str, Any]:
        row = {"key": key, **row}
        self.cells[key] = row
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        return row


def _minutes(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def _machine() -> None:
    import torch

    from unetkit.device import cpu_summary

    print(f"CPU: {cpu_summary()}; torch {torch.__version__}")


def _scores(ev: Any) -> dict[str, float]:
    return {k: round(float(ev.mean[k]), 4) for k in SCORES}


def measure_domain(
    name: str,
    work: Path,
    book: Results,
    models: list[str],
    images: list[int],
    fine: list[float],
    scratch: list[float],
    variants: dict[str, list[str]],
    seeds: int = 1,
) -> None:
    import numpy as np

    from unetkit import evaluate_model, read_image
    from unetkit.data.checks import object_diameters, typical_diameter
    from unetkit.data.domains import synthesize_domain
    from unetkit.inference import Predictor

    test = work / name / "test"
    if not (test / "dataset.yaml").is_file():
        synthesize_domain(name, test, "test", overwrite=True)
    for model in models:
        for diameter in (None, "auto"):
            key = f"{name}|zero|{model}|{diameter or 'none'}"
            if book.get(key) is None:
                ev = evaluate_model(
                    model, test, work / name / "pred" / key.replace("|", "-"), mode="instance",
                    overwrite=True, progress=False, diameter=diameter,
                )  # fmt: skip
                book.put(key, _scores(ev))
        key = f"{name}|size|{model}"
        if book.get(key) is None:
            predictor = Predictor.from_pretrained(model)
            true, found = [], []
            for mask in sorted((test / "masks").iterdir()):
                true.append(typical_diameter(object_diameters(read_image(mask))) or np.nan)
                found.append(predictor.estimate_diameter(read_image(test / "images" / mask.name)) or np.nan)
            error = np.abs(np.array(found) / np.array(true) - 1)
            book.put(key, {"true": float(np.nanmedian(true)), "estimated": float(np.nanmedian(found)),
                           "error": float(np.nanmedian(error)), "worst": float(np.nanmax(error))})  # fmt: skip
    for n in images:
        data = work / name / f"pool-{n}"
        if not (data / "dataset.yaml").is_file():
            synthesize_domain(name, data, "pool", n, overwrite=True)
        arms = [
            (a, b, v)
            for a, budgets in (("init", fine), ("scratch", scratch))
            for b in budgets
            for v in variants
        ]
        for (arm, budget, variant), seed in ((a, s) for a in arms for s in range(seeds)):
            key = (
                f"{name}|{arm}|{n}|{budget:g}"
                + (f"|{variant}" if variant else "")
                + (f"|s{seed}" if seed else "")
            )
            if book.get(key) is not None:
                continue
            tag = key.split("|", 1)[1].replace("|", "-")
            run = work / name / f"run-{tag}"
            copy = work / name / f"data-{tag}"  # each run plans afresh: no plan left by another
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(data, copy)
            cmd = [
                sys.executable,
                "-m",
                "unetkit",
                "train",
                str(copy),
                "--time-budget",
                f"{budget * 60:.0f}s",
            ]
            cmd += ["--out", str(run), "--overwrite", "--no-progress"]
            cmd += ["--init", "nuclei"] if arm == "init" else []
            cmd += variants[variant] + (["--seed", str(seed)] if seed else [])
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if done.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
            split = next((line for line in done.stderr.splitlines() if "time: " in line), "")
            ev = evaluate_model(run, test, work / name / "pred" / key.replace("|", "-"), mode="instance",
                                overwrite=True, progress=False)  # fmt: skip
            metrics = (run / "metrics.csv").read_text().splitlines()
            book.put(key, {**_scores(ev), "wall": round(wall, 1), "split": split.split("time: ")[-1],
                           "epochs": len(metrics) - 1 - (arm == "init"),
                           "best_epoch": _best_epoch(run)})  # fmt: skip
        print(f"{name}: {n} image(s) done", flush=True)


def _best_epoch(run: Path) -> int:
    """The epoch best.pt holds, as best.pt records it (0: the starting model of a fine-tune). Replaying the
    selection from metrics.csv and the log's words got the measure wrong where a log named both."""
    from unetkit.checkpoint import load_checkpoint

    return int(load_checkpoint(run / "best.pt")["training"]["epoch"])


def _family_key(model: str, own: str) -> str:
    """The results key of ``model`` scored on ``own``'s training family (its own: ``family|MODEL``)."""
    return f"family|{model}" + ("" if own == model else f"|on|{own}")


def family(work: Path, book: Results, models: list[str]) -> None:
    """Unseen images of each model's own training family (its registry's validation set)."""
    from unetkit.pretrained import get_pretrained
    from unetkit.workflows.pretrain import score_pretrained

    for model in models:
        for own in models:  # its own family, and each other model's (v2 on v1's family: a like-for-like row)
            key = _family_key(model, own)
            entry = get_pretrained(own)
            if book.get(key) is None and entry is not None:
                spec = entry.recipe["evaluation"]["validation"]
                book.put(key, {**score_pretrained(model, spec, work / "family" / own), "set": spec})
    own = models[-1]
    if book.get(f"family|{own}|visible") is None and (work / "family" / own / "pred").is_dir():
        book.put(f"family|{own}|visible", visibility(work / "family" / own))


#: contrast bins of :func:`visibility`, in standard deviations of the image's noise
CONTRAST_BINS = (0.5, 1.0, 2.0, 4.0)


def _contrasts(image: Any, truth: Any) -> dict[int, float]:
    """Per true object with background around it (at least 5 pixels within 4 px), how much brighter its mean
    is than that background's, in standard deviations of the image's noise (the median absolute deviation
    of its background's high-pass residual, ``image - gaussian(image, 1)``, scaled to a deviation of the
    image)."""
    import numpy as np
    from scipy import ndimage as ndi

    image = np.asarray(image, np.float64)
    residual = image - ndi.gaussian_filter(image, 1.0)
    background = ~ndi.binary_dilation(truth > 0, iterations=2)
    pool = residual[background] if background.sum() > 100 else residual.ravel()
    # 1.6: white noise keeps about 1/1.6 of its deviation in the residual of a sigma-1 Gaussian
    sigma = max(1.4826 * float(np.median(np.abs(pool - np.median(pool)))) * 1.6, 1e-6)
    out = {}
    for label, box in enumerate(ndi.find_objects(truth), start=1):
        if box is None:
            continue
        box = tuple(slice(max(0, a.start - 5), a.stop + 5) for a in box)
        t, i = truth[box], image[box]
        inside = t == label
        ring = ndi.binary_dilation(inside, iterations=4) & ~inside & (t == 0)
        if ring.sum() >= 5:
            out[label] = float((i[inside].mean() - i[ring].mean()) / sigma)
    return out


def visibility(folder: Path) -> dict[str, Any]:
    """What a model misses on its family (``folder``: ``data`` and the ``pred`` of ``score_pretrained``): recall
    by the true objects' contrast (:func:`_contrasts`), and F1@0.5 on the objects at least 0.5 and 1 deviation
    above their surroundings (the others left out, with the predictions lying mostly on them)."""
    import numpy as np
    from scipy import ndimage as ndi

    from unetkit import read_image
    from unetkit.metrics.instance import match_instances

    edges = [-np.inf, *CONTRAST_BINS, np.inf]
    found, total = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1)
    f1: dict[float, list[float]] = {-np.inf: [], 0.5: [], 1.0: []}
    for mask in sorted((folder / "data" / "masks").iterdir()):
        truth = np.asarray(read_image(mask)).astype(np.int64)
        pred = np.asarray(read_image(folder / "pred" / f"{mask.stem}_instances.tif")).astype(np.int64)
        contrast = _contrasts(read_image(folder / "data" / "images" / mask.name), truth)
        scores = match_instances(truth, pred)
        hit = set(scores.overlaps.true_ids[scores._matched(0.5)[0]].tolist())
        for label, c in contrast.items():
            k = int(np.searchsorted(edges, c)) - 1
            total[k] += 1
            found[k] += label in hit
        for least in f1:
            faint = np.isin(truth, [k for k, c in contrast.items() if c < least])
            labels = np.unique(pred[pred > 0])
            on_faint = labels[np.asarray(ndi.mean(faint.astype(float), pred, index=labels)) > 0.5]
            kept = np.where(np.isin(pred, on_faint), 0, pred)
            f1[least].append(match_instances(np.where(faint, 0, truth), kept).f1())
    return {
        "bins": [f"{a:g}..{b:g}" for a, b in itertools.pairwise(edges)],
        "objects": total.astype(int).tolist(),
        "recall": (found / np.maximum(total, 1)).round(4).tolist(),
        "f1": {"all" if k < 0 else f"{k:g}": round(float(np.mean(v)), 4) for k, v in f1.items()},
    }


def report(
    book: Results,
    domains: list[str],
    models: list[str],
    images: list[int],
    fine: list[float],
    scratch: list[float],
    variants: list[str],
    seeds: int = 1,
) -> None:
    from unetkit.data.domains import DOMAINS

    print("\n## Zero-shot: F1@0.5 (DSB score, AJI) on each domain's 8 test images\n")
    head = [f"{m}{' auto' if d else ''}" for m in models for d in (False, True)]
    print("| domain | what differs | " + " | ".join(head) + " |")
    print("|---|---|" + "---:|" * len(head))
    means: dict[str, list[float]] = {h: [] for h in head}
    for name in domains:
        cells = []
        for m in models:
            for d, tag in ((False, "none"), (True, "auto")):
                row = book.get(f"{name}|zero|{m}|{tag}")
                cells.append(
                    "—" if row is None else f"{row['f1']:.3f} ({row['dsb_score']:.3f}, {row['aji']:.3f})"
                )
                if row is not None:
                    means[f"{m}{' auto' if d else ''}"].append(row["f1"])
        print(f"| {name} | {DOMAINS[name].what} | " + " | ".join(cells) + " |")
    print(
        "| **mean** | | "
        + " | ".join(f"**{sum(v) / len(v):.3f}**" if v else "—" for v in means.values())
        + " |"
    )
    print()
    for m in models:
        for own in models:
            row = book.get(_family_key(m, own))
            if row is not None:
                print(f"{m} on unseen images of {own}'s training family ({row['set']['n']} x "
                      f"{row['set']['size']}², style {row['set']['style']}): F1@0.5 {row['f1']:.3f}, "
                      f"DSB {row['dsb_score']:.3f}, AJI {row['aji']:.3f}")  # fmt: skip
    seen = book.get(f"family|{models[-1]}|visible")
    if seen is not None:
        print(f"\n{models[-1]} on its family by the true objects' contrast (mean above the background around them, in "
              "noise deviations): objects and the share found at IoU 0.5\n")  # fmt: skip
        print("| contrast | " + " | ".join(seen["bins"]) + " |")
        print("|---|" + "---:|" * len(seen["bins"]))
        print("| objects | " + " | ".join(str(v) for v in seen["objects"]) + " |")
        print("| found | " + " | ".join(f"{v:.3f}" for v in seen["recall"]) + " |")
        print(f"\nF1@0.5 on every object {seen['f1']['all']:.3f}; on those at least 0.5 deviation above their "
              f"surroundings {seen['f1']['0.5']:.3f}, at least 1: {seen['f1']['1']:.3f}")  # fmt: skip

    print(
        "\n## Size: typical object diameter (px, area-weighted median), true masks vs --diameter auto's estimate\n"
    )
    print("| domain | true | " + " | ".join(f"{m} estimate | {m} error" for m in models) + " |")
    print("|---|---:|" + "---:|---:|" * len(models))
    for name in domains:
        rows = [book.get(f"{name}|size|{m}") for m in models]
        true = next((r["true"] for r in rows if r), None)
        cells = [f"{r['estimated']:.1f} | {r['error']:.0%}" if r else "— | —" for r in rows]
        print(f"| {name} | {true:.1f} | " + " | ".join(cells) + " |" if true else f"| {name} | — |")

    arms = [("init", b, f"fine-tuned {b:g} min") for b in fine] + [
        ("scratch", b, f"scratch {b:g} min") for b in scratch
    ]
    print(
        "\n## Fine-tuning the built-in model vs training from scratch: F1@0.5 (DSB score, AJI) on the test images\n"
    )
    print("| domain | images | zero-shot | " + " | ".join(a[2] for a in arms) + " |")
    print("|---|---:|---:|" + "---:|" * len(arms))
    for name in domains:
        zero = book.get(f"{name}|zero|{models[-1]}|none")
        for n in images:
            cells = []
            for arm, budget, _ in arms:
                row = book.seeded(f"{name}|{arm}|{n}|{budget:g}", seeds)
                cells.append(
                    "—" if row is None else f"{row['f1']:.3f} ({row['dsb_score']:.3f}, {row['aji']:.3f})"
                )
            print(f"| {name} | {n} | {zero['f1']:.3f} | " + " | ".join(cells) + " |" if zero else "")
    print("\n## Acceptance: 1 image, 2-minute fine-tune vs zero-shot and vs scratch 5 minutes\n")
    if seeds > 1:
        print(f"(mean F1 over seeds 0..{seeds - 1} where measured; each seed's in brackets)\n")
    print(
        "| domain | zero-shot | fine-tuned 1 image 2 min | scratch 1 image 5 min | >= zero-shot | > scratch |"
    )
    print("|---|---:|---:|---:|---|---|")
    for name in domains:
        zero = book.get(f"{name}|zero|{models[-1]}|none")
        ft, sc = (book.seeded(f"{name}|{k}", seeds) for k in ("init|1|2", "scratch|1|5"))
        if zero and ft and sc:
            print(f"| {name} | {zero['f1']:.3f} | {_f1s(ft)} | {_f1s(sc)} | "
                  f"{'yes' if ft['f1'] >= zero['f1'] else 'NO'} | {'yes' if ft['f1'] > sc['f1'] else 'NO'} |")  # fmt: skip
    if len(variants) > 1:
        print("\n## Variants: F1@0.5 (DSB score) of the same cells with extra flags (plan: as planned)\n")
        print("| domain | images | arm | " + " | ".join(v or "plan" for v in variants) + " |")
        print("|---|---:|---|" + "---:|" * len(variants))
        for name in domains:
            for n in images:
                for arm, budget, label in arms:
                    rows = [
                        book.get(f"{name}|{arm}|{n}|{budget:g}" + (f"|{v}" if v else "")) for v in variants
                    ]
                    cells = ["—" if r is None else f"{r['f1']:.3f} ({r['dsb_score']:.3f})" for r in rows]
                    print(f"| {name} | {n} | {label} | " + " | ".join(cells) + " |")
    print("\n## Time split of the runs (planning + preparation + training + validation + saving, s)\n")
    for name in domains:
        for n in images:
            for arm, budget, label in arms:
                row = book.get(f"{name}|{arm}|{n}|{budget:g}")
                if row is not None:
                    print(f"- {name}, {n} image(s), {label}: {row['split']}; {row['epochs']} epochs, best "
                          f"epoch {row['best_epoch']}; wall {row['wall']:.0f} s")  # fmt: skip


def _f1s(row: dict[str, Any]) -> str:
    """Mean F1, and each seed's when there are several."""
    each = row["f1s"]
    return f"{row['f1']:.3f}" + (f" ({', '.join(f'{v:.3f}' for v in each)})" if len(each) > 1 else "")


if __name__ == "__main__":
    main()
