"""The built-in ``nuclei`` model (``make bench-pretrained``): prints tables; never a timed test.

1. Zero-shot: instance F1 at IoU 0.5 and the DSB 2018 score of the shipped model on its registry's evaluation
   sets: ``validation`` (the training style family, unseen images) and ``style_shift`` (held-out generator
   styles: nuclei larger, cameras noisier or backgrounds hazier than training ever drew), plain and with
   ``--diameter auto``.
2. Fine-tuning vs scratch, the way a user runs them: one user "domain" (a single held-out style: every image
   of it shares its generator settings), 1, 2 and 5 annotated 384² images, and
   ``unetkit train DATA --time-budget B ...`` from scratch (learning rate 1e-3) vs the same with
   ``--init nuclei`` (2e-4, the fine-tuning default), B = 1, 2, 5 minutes. Both arms train the built-in model's
   architecture, border target, patches and batch, 10 steps per epoch at a constant rate, and stop before an epoch
   that would pass the budget (``--no-plan``: a plan's measured run would not fit in one minute, and neither arm
   should pay for one). Every model predicts the same 8 unseen images of the domain. The last table: for each
   image count, the shortest budget at which the fine-tuned model reaches the from-scratch 5-minute F1, and its
   share of the 5 minutes.

About 50 minutes on 2 cores (18 training runs, the fine-tuned ones often stopping early, plus scoring); ``--budgets``/``--images`` for fewer.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", default="1,2,5", help="training image counts (default: 1,2,5)")
    parser.add_argument("--budgets", default="1,2,5", help="time budgets in minutes (default: 1,2,5)")
    parser.add_argument(
        "--domain-seed", type=int, default=0, help="which held-out style is the user's domain"
    )
    parser.add_argument("--test-n", type=int, default=8)
    parser.add_argument("--keep", help="keep data and runs in this folder")
    args = parser.parse_args()

    import numpy as np

    from unetkit import evaluate_model, synthesize_dataset
    from unetkit.data.synthetic import style_of
    from unetkit.pretrained import get_pretrained, pretrained_path
    from unetkit.workflows.pretrain import score_pretrained

    images = [int(v) for v in args.images.split(",")]
    budgets = [float(v) for v in args.budgets.split(",")]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="unetkit-bench-pretrained-"))
    model = get_pretrained("nuclei")
    assert model is not None
    weights = pretrained_path("nuclei")
    print(f"built-in model: {weights} ({model.bytes / 1e6:.1f} MB), work in {work}\n", flush=True)

    print("## Zero-shot (the shipped model, no training on these images)\n")
    print("| set | images | --diameter | F1@0.5 | DSB score | AJI |\n|---|---:|---|---:|---:|---:|")
    for set_name, spec in model.recipe["evaluation"].items():
        for diameter in (None, "auto"):
            t0 = time.perf_counter()
            s = score_pretrained(weights, spec, work / f"zero-{set_name}-{diameter}", diameter=diameter)
            print(
                f"| {set_name} ({spec['style']} styles) | {spec['n']} | {diameter or 'none'} | {s['f1']:.3f} | "
                f"{s['dsb_score']:.3f} | {s['aji']:.3f} |  <!-- {time.perf_counter() - t0:.0f} s -->",
                flush=True,
            )

    style = style_of("held-out", np.random.SeedSequence([args.domain_seed, 77]))
    assert style is not None
    print(
        f"\n## Fine-tuning vs from scratch on one held-out style (domain seed {args.domain_seed}: nuclei radius "
        f"{style.radius[0]:.0f}-{style.radius[1]:.0f} px, {style.photons[0]:.0f}-{style.photons[1]:.0f} photons, "
        f"haze {style.haze[1]:.2f}, {style.bits}-bit)\n",
        flush=True,
    )
    test = synthesize_dataset(
        work / "domain-test", n=args.test_n, size=384, seed=90_000, params=style, overwrite=True
    )
    pool = synthesize_dataset(
        work / "domain-pool", n=max(images), size=384, seed=80_000, params=style, overwrite=True
    )
    zero = evaluate_model(weights, test, work / "domain-zero", mode="instance", progress=False)
    auto = evaluate_model(
        weights, test, work / "domain-zero-auto", mode="instance", progress=False, diameter="auto"
    )
    rows = [("built-in, no training", 0, 0.0, zero.mean["f1"], zero.mean["dsb_score"], 0.0)]
    print("| start | images | budget | F1@0.5 | DSB score | wall s |\n|---|---:|---:|---:|---:|---:|")
    print(f"| built-in (zero-shot) | 0 | 0 | {zero.mean['f1']:.3f} | {zero.mean['dsb_score']:.3f} | 0 |")
    print(
        f"| built-in, --diameter auto | 0 | 0 | {auto.mean['f1']:.3f} | {auto.mean['dsb_score']:.3f} | 0 |",
        flush=True,
    )
    unetkit = (sys.executable, "-m", "unetkit")
    recipe = model.recipe["config"]
    same = [  # both arms: the built-in model's architecture, patches and batch; only the start and the rate differ
        *("--no-plan", "--epochs", "1000", "--steps-per-epoch", "10", "--schedule", "constant"),
        *("--arch", recipe["model"]["arch"], "--depth", str(recipe["model"]["depth"])),
        *("--base-channels", str(recipe["model"]["base_channels"]), "--target", "border"),
        *(
            "--patch-size",
            str(recipe["data"]["patch_size"]),
            "--batch-size",
            str(recipe["train"]["batch_size"]),
        ),
        *("--device", "cpu", "--no-progress", "--overwrite"),
    ]
    for n in images:
        data = _subset(pool, work / f"data-{n}", n)
        for budget in budgets:
            for arm in ("scratch", "init nuclei"):
                tag = f"{'init' if arm != 'scratch' else 'scratch'}-{n}-{budget:g}"
                cmd = [
                    *(*unetkit, "train", str(data), "--time-budget", f"{budget * 60:.0f}s"),
                    *("--out", str(work / f"run-{tag}"), *same),
                ]
                if arm != "scratch":
                    cmd += ["--init", "nuclei"]
                t0 = time.perf_counter()
                _run(cmd)
                seconds = time.perf_counter() - t0
                ev = evaluate_model(
                    work / f"run-{tag}", test, work / f"pred-{tag}", mode="instance", progress=False
                )
                rows.append((arm, n, budget, ev.mean["f1"], ev.mean["dsb_score"], seconds))
                print(
                    f"| {arm} | {n} | {budget:g} min | {ev.mean['f1']:.3f} | {ev.mean['dsb_score']:.3f} | "
                    f"{seconds:.0f} |",
                    flush=True,
                )

    longest = max(budgets)
    print(f"\n## Time for the fine-tuned model to reach the from-scratch {longest:g}-minute F1\n")
    print(
        f"| images | scratch F1 at {longest:g} min | fine-tuned: first budget reaching it | share of {longest:g} min |"
    )
    print("|---:|---:|---|---:|")
    for n in images:
        target = next(r[3] for r in rows if r[0] == "scratch" and r[1] == n and r[2] == longest)
        reached = [r for r in rows if r[0] == "init nuclei" and r[1] == n and r[3] >= target]
        first = min(reached, key=lambda r: r[2], default=None)
        if zero.mean["f1"] >= target:
            print(f"| {n} | {target:.3f} | 0 min (zero-shot F1 {zero.mean['f1']:.3f}) | 0 |")
        elif first is None:
            print(f"| {n} | {target:.3f} | not reached within {longest:g} min | — |")
        else:
            print(f"| {n} | {target:.3f} | {first[2]:g} min (F1 {first[3]:.3f}) | {first[2] / longest:.2f} |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")


def _subset(pool: Path, dest: Path, n: int) -> Path:
    """The first ``n`` images of ``pool`` and their masks, copied with its dataset.yaml into ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True)
        for path in sorted((pool / sub).iterdir())[:n]:
            shutil.copy2(path, dest / sub / path.name)
    shutil.copy2(pool / "dataset.yaml", dest / "dataset.yaml")
    return dest


if __name__ == "__main__":
    main()
