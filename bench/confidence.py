"""How much the objects table's confidence can be trusted (``make bench-confidence``): prints tables; never a test.

The built-in model segments the test images of every style-shift domain (:mod:`unetkit.data.domains`, styles it
never saw) and unseen images of its own training family; each predicted object is matched to the truth at IoU 0.5.
Per set: objects, the share that match, the mean confidence, the expected calibration error (10 bins: the
objects-weighted gap between confidence and matched share), the AUC (how often a matched object is more
confident than an unmatched one) and the ranking (the error rate, unmatched share, of the least confident 10% of
objects against the rest's, and their ratio: issue 34 asks for at least 3); then the reliability curve over the
suite. About a minute on 2 cores.

``--fit`` refits the weights of :data:`unetkit.inference.objects.WEIGHTS` the way they were made: a logistic
regression (L2 1e-4) of "matches a true object at IoU 0.5" on the five measurements
(:func:`unetkit.inference.objects.features`), over the objects the model
finds on 48 unseen images of its training family (seed 5000, never a registry or suite set), and prints them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import rankdata


def matched_objects(model: str, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and whether each predicted object matches a true one at IoU 0.5, over a dataset's images."""
    from unetkit import Predictor, read_image
    from unetkit.metrics.instance import match_instances

    predictor = Predictor.from_checkpoint(model)  # a built-in name or a model file
    conf, good = [], []
    for path in sorted((data / "images").glob("*.png")):
        labels, table = predictor.predict_instances(read_image(path), return_table=True)
        false = set(
            match_instances(read_image(data / "masks" / path.name), labels).unmatched(0.5)[1].tolist()
        )
        conf += table["confidence"].tolist()
        good += [int(k) not in false for k in table["label"]]
    return np.array(conf), np.array(good, bool)


def fit(model: str, n: int = 48, seed: int = 5000) -> np.ndarray:
    """The confidence weights, refitted (see the module docstring): intercept, then one per measurement."""
    from scipy.optimize import minimize

    from unetkit import Predictor, read_image
    from unetkit.data.synthetic import synthesize_dataset
    from unetkit.inference.objects import ObjectSums, confidence_maps, features
    from unetkit.metrics.instance import match_instances

    predictor = Predictor.from_checkpoint(model)  # a built-in name or a model file
    rows, good = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize_dataset(Path(tmp) / "fit", n=n, size=256, seed=seed, style="random")
        for path in sorted((data / "images").glob("*.png")):
            image = read_image(path)
            probs = predictor.predict_proba(image)
            classes = predictor.to_labels(probs)
            split = predictor.split(classes.__getitem__, classes.shape)
            labels = predictor.labeller(split)(classes)
            sums = ObjectSums.of(labels, *confidence_maps(probs), None, int(labels.max()),
                                 splittable=predictor.labelling.splittable(classes))  # fmt: skip
            k, measured = features(sums, split.diameter)
            rows.append(measured)
            truth = read_image(data / "masks" / path.name)
            false = set(match_instances(truth, labels).unmatched(0.5)[1].tolist())
            good += [int(label) not in false for label in k]
    a, y = np.concatenate(rows), np.array(good, float)

    def loss(w: np.ndarray) -> float:
        z = a @ w
        return float(np.mean(np.logaddexp(0, z) - y * z) + 1e-4 * np.sum(w[1:] ** 2))

    weights = minimize(loss, np.zeros(a.shape[1]), method="L-BFGS-B").x
    print(f"{len(y)} objects, {y.mean():.1%} matched; WEIGHTS = ({', '.join(f'{w:.2f}' for w in weights)})")
    return weights


def ece(conf: np.ndarray, good: np.ndarray, bins: int = 10) -> float:
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(conf[which == b].mean() - good[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))  # fmt: skip


def auc(conf: np.ndarray, good: np.ndarray) -> float:
    n1, n0 = int(good.sum()), int((~good).sum())
    if not n1 or not n0:
        return float("nan")
    r = rankdata(conf)
    return float((r[good].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def ranking(conf: np.ndarray, good: np.ndarray, share: float = 0.1) -> tuple[float, float, float]:
    """Error rates of the least confident ``share`` of the objects and of the rest, and their ratio."""
    order = np.argsort(conf, kind="stable")
    k = max(1, round(share * len(conf)))
    low, rest = (
        float((~good[order[:k]]).mean()),
        float((~good[order[k:]]).mean()) if len(conf) > k else float("nan"),
    )
    return low, rest, low / rest if rest else float("inf")


def _row(name: str, conf: np.ndarray, good: np.ndarray) -> str:
    low, rest, ratio = ranking(conf, good)
    return (f"| {name} | {len(conf)} | {good.mean():.3f} | {conf.mean():.3f} | {ece(conf, good):.3f} | "
            f"{auc(conf, good):.3f} | {low:.3f} | {rest:.3f} | {ratio:.1f} |")  # fmt: skip


def main() -> None:
    from unetkit.checkpoint import load_checkpoint
    from unetkit.data.domains import DOMAINS, synthesize_domain
    from unetkit.data.synthetic import synthesize_dataset
    from unetkit.device import cpu_summary
    from unetkit.pretrained import get_pretrained

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--fit", action="store_true", help="refit the confidence weights and print them")
    args = parser.parse_args()
    if args.fit:
        fit(args.model)
        return
    print(f"CPU: {cpu_summary()}; model {args.model}\n")
    print(
        "| set | objects | matched | mean confidence | ECE | AUC | error, least confident 10% | error, rest | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    pooled_c, pooled_g = [], []
    with tempfile.TemporaryDirectory() as tmp:
        sets = {name: synthesize_domain(name, Path(tmp) / name, "test") for name in DOMAINS}
        builtin = get_pretrained(args.model)  # else a model file: a built-in model's file records its recipe
        recipe = builtin.recipe if builtin else load_checkpoint(args.model)["pretrained"]["recipe"]
        family = recipe["evaluation"]["validation"]
        sets["its family"] = synthesize_dataset(
            Path(tmp) / "family", n=int(family["n"]), size=int(family["size"]), seed=int(family["seed"]),
            style=str(family.get("style", "default")),
        )  # fmt: skip
        for name, data in sets.items():
            conf, good = matched_objects(args.model, data)
            if name in DOMAINS:
                pooled_c.append(conf)
                pooled_g.append(good)
            print(_row(name, conf, good))
    conf, good = np.concatenate(pooled_c), np.concatenate(pooled_g)
    print(_row("**suite, pooled**", conf, good))
    print("\nReliability over the suite: objects in each confidence bin and the share of them that match\n")
    print("| confidence | objects | mean confidence | matched |")
    print("|---|---:|---:|---:|")
    which = np.minimum((conf * 10).astype(int), 9)
    for b in range(10):
        m = which == b
        if m.any():
            print(
                f"| {b / 10:.1f}-{(b + 1) / 10:.1f} | {int(m.sum())} | {conf[m].mean():.3f} | {good[m].mean():.3f} |"
            )


if __name__ == "__main__":
    main()
