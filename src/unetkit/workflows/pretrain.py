"""The recipe of the built-in models (``make pretrained``): generate their data, train, ship, score.

Each registry entry (``unetkit/pretrained/registry.yaml``) holds its recipe: the synthetic data (generator
style, count, size, seed), the run configuration (fixed epochs and steps, not a time budget, so a rerun does
the same work) and the fixed evaluation sets. :func:`build_pretrained` follows it and writes the shipped file
(the best checkpoint's weights in half precision, the recipe and the generator's style version recorded in it),
then its sha256, size, scores and run time into the registry. :func:`score_pretrained` is the scoring the
registry's numbers come from; the tests call it to check the shipped file still earns them.

Run: ``python -m unetkit.workflows.pretrain nuclei`` (``make pretrained``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..atomic import atomic_write_bytes, atomic_write_text
from ..checkpoint import load_checkpoint, preprocessing_of
from ..config import FINDING_KEYS, RunConfig
from ..data.checks import object_diameters, typical_diameter
from ..data.domains import DOMAINS, synthesize_domain
from ..data.io import read_image
from ..data.spec import DESCRIPTOR
from ..data.synthetic import STYLE_VERSION, synthesize_dataset
from ..device import tune_allocator
from ..errors import ConfigError
from ..pretrained import REGISTRY, file_sha256, read_registry
from ..version import __version__
from .evaluate import evaluate_model
from .train import train

__all__ = ["build_pretrained", "rescore_pretrained", "score_pretrained", "score_suite", "ship_checkpoint"]

log = logging.getLogger(__name__)

#: the scores a registry entry records for each evaluation set
SCORES = ("f1", "dsb_score", "aji")


def score_pretrained(
    model: str | Path, dataset: dict[str, Any], work: str | Path, *, progress: bool = False, **predict: Any
) -> dict[str, float]:
    """Instance F1@0.5, DSB score and AJI of ``model`` on the synthetic set ``dataset`` (style, n, size, seed),
    generated under ``work``; ``predict``: options of :func:`predict_files` (e.g. ``diameter="auto"``)."""
    work = Path(work)
    data = synthesize_dataset(
        work / "data", n=int(dataset["n"]), size=int(dataset["size"]), seed=int(dataset["seed"]),
        style=str(dataset.get("style", "default")), overwrite=True,
    )  # fmt: skip
    ev = evaluate_model(
        model, data, work / "pred", mode="instance", overwrite=True, progress=progress, **predict
    )
    return {k: round(float(ev.mean[k]), 4) for k in SCORES}


def score_suite(
    model: str | Path,
    work: str | Path,
    *,
    domains: tuple[str, ...] | None = None,
    progress: bool = False,
    **predict: Any,
) -> dict[str, dict[str, float]]:
    """:func:`score_pretrained`'s scores of ``model`` on the test images of every domain of the style-shift
    suite (:mod:`unetkit.data.domains`; ``domains`` for fewer), generated under ``work`` (kept: a second call
    reuses them), and their ``mean`` over the domains. ``predict``: options of :func:`predict_files`."""
    work = Path(work)
    out: dict[str, dict[str, float]] = {}
    for name in domains or tuple(DOMAINS):
        test = work / f"{name}-test"
        if not (test / DESCRIPTOR).is_file():
            synthesize_domain(name, test, "test", overwrite=True)
        ev = evaluate_model(
            model, test, work / f"pred-{name}", mode="instance", overwrite=True, progress=progress, **predict
        )
        out[name] = {k: round(float(ev.mean[k]), 4) for k in SCORES}
    out["mean"] = {k: round(float(np.mean([out[d][k] for d in out])), 4) for k in SCORES}
    return out


def diameter_range(data: str | Path, share: float = 0.1) -> list[float]:
    """The object sizes a model trained on ``data`` saw: the ``share`` and ``1 - share`` quantiles over the
    images of each image's typical object diameter (px; the estimate ``--diameter auto`` makes,
    :func:`~unetkit.data.checks.typical_diameter`). ``predict --diameter`` leaves sizes inside alone."""
    medians = []
    for mask in sorted((Path(data) / "masks").iterdir()):
        typical = typical_diameter(object_diameters(read_image(mask)))
        if typical is not None:
            medians.append(typical)
    if not medians:
        raise ConfigError(f"{data}: no objects in the masks; the recipe's data cannot train a model")
    lo, hi = np.quantile(medians, [share, 1 - share])
    return [round(float(lo), 1), round(float(hi), 1)]


def ship_checkpoint(
    best: str | Path, dest: str | Path, name: str, recipe: dict[str, Any], sizes: list[float] | None = None
) -> Path:
    """The shipped form of a run's best checkpoint: weights in half precision, no optimiser state, the recipe and
    the generator's style version recorded under ``pretrained``, the range of object sizes it learnt (``sizes``,
    see :func:`diameter_range`) in its preprocessing; written atomically."""
    payload = load_checkpoint(best)
    pre = preprocessing_of(payload, best)  # in its current form, whichever unetkit wrote the run
    dataset = {k: v for k, v in (pre.dataset or {}).items() if k in FINDING_KEYS}
    ranged = (float(sizes[0]), float(sizes[1])) if sizes is not None else pre.object_diameter_range
    # its backgrounds are its card's (modality: fluorescence): not recorded, so the recipe still makes the
    # shipped files bit for bit
    payload["preprocessing"] = replace(
        pre, dataset=dataset, object_diameter_range=ranged, background=None
    ).to_dict()
    payload["state_dict"] = {
        k: v.half() if v.is_floating_point() else v for k, v in payload["state_dict"].items()
    }
    payload["state"] = {}
    training = payload.get("training") or {}
    payload["training"] = {
        k: training[k] for k in ("best_epoch", "best_score", "epochs", "steps") if k in training
    }
    style = str(recipe.get("data", {}).get("style", ""))
    payload["pretrained"] = {
        "name": name,
        "recipe": recipe,
        "style_version": int(style.rpartition("@")[2]) if "@" in style else STYLE_VERSION,
        "unetkit_version": __version__,
        "weights": "float16",
    }
    buffer = io.BytesIO()  # not the temporary file: torch.save names the archive's records after the file
    torch.save(payload, buffer)
    atomic_write_bytes(Path(dest), buffer.getvalue())
    return Path(dest)


def build_pretrained(
    name: str,
    *,
    registry: str | Path = REGISTRY,
    out_dir: str | Path | None = None,
    work: str | Path | None = None,
    keep: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Follow the recipe of the registry entry ``name``: generate its data, train, write the shipped file into
    ``out_dir`` (default: beside the registry), score it on the entry's evaluation sets and record sha256, bytes,
    scores and run time in the registry. ``overrides``: recipe values to replace (``{"data": {"n": 8}}``, for
    tests). ``work``: where the temporary folder goes. ``keep``: a folder that keeps the generated data and the
    run (``KEEP/NAME``) instead: a build that was stopped resumes there where it stopped, with the same result
    as an uninterrupted build. Returns the updated entry."""
    registry = Path(registry)
    book = read_registry(registry)
    entry = (book.get("models") or {}).get(name)
    if entry is None:
        raise ConfigError(
            f"{name}: no entry in {registry}; add one (see the nuclei entry) before building it"
        )
    recipe = _merged(entry["recipe"], overrides or {})
    out_dir = Path(out_dir) if out_dir is not None else registry.parent
    cfg = RunConfig.from_dict(recipe["config"], source=f"{registry}: {name}.recipe.config")
    if "select_by" not in recipe["config"].get("train", {}):
        # a recipe chooses its best epoch by validation Dice unless it says otherwise: the shipped models were
        # chosen so (version 3, a fine-tune on instance masks, before those followed the objects' PQ), and the
        # recipe each file records stays the registry's, so `make pretrained` rebuilds them bit for bit
        cfg.train = replace(cfg.train, select_by="dice")
    with _build_folder(name, recipe, work, keep) as folder:
        data, run = folder / "data", folder / "run"
        d = recipe["data"]
        if not (folder / DATA_DONE).is_file():
            synthesize_dataset(
                data, n=int(d["n"]), size=int(d["size"]), seed=int(d["seed"]), style=str(d["style"]),
                overwrite=True,
            )  # fmt: skip
            (folder / DATA_DONE).touch()
        if (run / "last.pt").is_file():
            log.info("%s: resuming the build in %s", name, folder)
            result = train(data, run, progress=progress, resume=True)
        else:
            log.info(
                "%s: training by its recipe (%d epochs of %d steps)",
                name,
                cfg.train.epochs,
                cfg.train.steps_per_epoch,
            )
            result = train(data, run, cfg, progress=progress, overwrite=True)
        sizes = diameter_range(data)
        shipped = ship_checkpoint(result.best_checkpoint, out_dir / entry["file"], name, recipe, sizes)
        minutes = max([row.get("elapsed", 0.0) for row in result.history] or [0.0]) / 60
        entry.update(_scores(shipped, recipe, folder, progress))
    entry.update(
        sha256=file_sha256(shipped),
        bytes=shipped.stat().st_size,
        runtime=f"{minutes:.0f} min to train on {torch.get_num_threads()} CPU threads (unetkit {__version__}, "
        f"torch {torch.__version__})",
    )
    if overrides:
        entry["recipe"] = recipe
    _write_registry(registry, book)
    log.info("%s: %s (%d bytes), scores %s", name, shipped, entry["bytes"], entry["scores"])
    return dict(entry)


#: marks a kept build's data as completely written
DATA_DONE = "data.done"


@contextlib.contextmanager
def _build_folder(
    name: str, recipe: dict[str, Any], work: str | Path | None, keep: str | Path | None
) -> Iterator[Path]:
    """Where a build generates its data and trains: a temporary folder under ``work``, or ``KEEP/NAME``,
    stamped with the recipe (a kept build of another recipe is refused, never mixed in)."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix=f"unetkit-pretrain-{name}-", dir=work) as tmp:
            yield Path(tmp)
        return
    folder = Path(keep) / name
    stamp, text = folder / "recipe.json", json.dumps(recipe, sort_keys=True, indent=1)
    if folder.is_dir() and not stamp.is_file() and any(folder.iterdir()):
        raise ConfigError(f"{folder}: exists and is not a build unetkit kept; choose another --keep folder")
    if stamp.is_file() and stamp.read_text(encoding="utf-8") != text:
        raise ConfigError(
            f"{folder}: holds the build of another recipe of {name}; remove the folder or keep this "
            "build somewhere else"
        )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, text)
    yield folder


def rescore_pretrained(
    name: str, *, registry: str | Path = REGISTRY, progress: bool = True
) -> dict[str, Any]:
    """Score the shipped file of the registry entry ``name`` again on its recipe's evaluation sets and record
    the scores (after a change to what unetkit does with a model's output, e.g. how objects are split; the
    weights are not touched: ``make pretrained`` still reproduces them). Returns the updated entry."""
    registry = Path(registry)
    book = read_registry(registry)
    entry = (book.get("models") or {}).get(name)
    if entry is None:
        raise ConfigError(f"{name}: no entry in {registry}")
    shipped = registry.parent / entry["file"]
    with tempfile.TemporaryDirectory(prefix=f"unetkit-rescore-{name}-") as tmp:
        entry.update(_scores(shipped, entry["recipe"], Path(tmp), progress))
    _write_registry(registry, book)
    log.info("%s: scores %s", name, entry["scores"])
    return dict(entry)


def _scores(shipped: Path, recipe: dict[str, Any], tmp: Path, progress: bool) -> dict[str, Any]:
    """The registry's ``scores`` (and ``suite``) of ``shipped`` on ``recipe``'s evaluation sets."""
    scores, suite = {}, {}
    for set_name, spec in (recipe.get("evaluation") or {}).items():
        if set_name == "suite":  # the style-shift suite's domains (spec: true; false: not scored)
            if spec:
                suite = score_suite(shipped, tmp / "suite", progress=progress)
                scores["suite"] = suite.pop("mean")
        else:
            scores[set_name] = score_pretrained(shipped, spec, tmp / set_name, progress=progress)
    return {"scores": scores, **({"suite": suite} if suite else {})}


def _write_registry(registry: Path, book: dict[str, Any]) -> None:
    header = "".join(
        line for line in registry.read_text(encoding="utf-8").splitlines(True) if line.startswith("#")
    )
    atomic_write_text(registry, header + yaml.safe_dump(book, sort_keys=False, width=110, allow_unicode=True))


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unetkit.workflows.pretrain", description="Retrain built-in models by their recipes."
    )
    parser.add_argument("names", nargs="*", help="registry entries (default: every current one, no NAME@N)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--rescore", action="store_true", help="score the shipped files again and record it; no training"
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="keep each build's data and run in DIR/NAME; run again with the same DIR to resume a build that "
        "was stopped (the result is the same as an uninterrupted build's)",
    )
    parser.add_argument(
        "--registry",
        default=str(REGISTRY),
        metavar="FILE",
        help="the registry whose entries to build "
        "(default: unetkit's own); the weight files are written beside it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tune_allocator()  # as the CLI: freed activations stay in the heap (a step ~15% faster; results unchanged)
    # by default the current models; an older version (NAME@N) is kept as shipped unless named
    registry = Path(args.registry)
    names = args.names or [n for n in read_registry(registry).get("models") or {} if "@" not in n]
    if args.rescore:
        for name in names:
            rescore_pretrained(name, registry=registry, progress=not args.no_progress)
        return 0
    for name in names:
        entry = build_pretrained(name, registry=registry, keep=args.keep, progress=not args.no_progress)
        log.info(
            "%s: %s sha256 %s scores %s",
            name,
            registry.parent / entry["file"],
            entry["sha256"],
            entry["scores"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
