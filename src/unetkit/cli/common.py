"""Options shared by the commands that read a dataset (``train``, ``check-data``, ``plan``, ``weights``,
``evaluate``, ``predict``). Flags of configuration fields come from :mod:`.options` (the fields' own name,
default, choices and help); the few that are not fields (``--config``, ``--class-map``) are written here."""

from __future__ import annotations

import argparse

from ..config import RunConfig, load_config
from ..workflows.catalog import Naming, load_class_map
from .options import add_options, apply_options

#: how a dataset's files are found (every command that reads a dataset, predict included)
FINDING = ("layout", "images_dir", "masks_dir", "mask_pattern", "image_pattern")
#: how its masks are read, and which stored channel of its images (``--channel``)
READING = ("mask_encoding", "ignore_index", "channel")
#: how masks become targets and images are normalised, with the patch size
TARGETS = ("target", "normalization", "norm_low", "norm_high", "norm_scale", "patch_size")
#: the paper's weight maps and separation borders
WEIGHTS = ("border_gap", "weight_map", "w0", "weight_balance", "sigma")


def add_progress(p: argparse.ArgumentParser) -> None:
    """The one progress switch of every long-running command."""
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bars with an ETA (default: on; --no-progress for logs)",
    )


def add_finding_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """How a dataset's files are found (every command that reads a dataset, predict included)."""
    d = p.add_argument_group("dataset and masks")
    add_options(d, "data", FINDING)
    return d


def add_reading_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """How a dataset is found and its masks read (shared by train, check-data, plan, weights and evaluate)."""
    d = add_finding_args(p)
    add_options(d, "data", READING[:1])
    d.add_argument(
        "--class-map",
        metavar="FILE",
        help="YAML/JSON naming the classes: {0: background, 1: cell}, or [{name, value}] (classes), "
        "or [{name, color: '#ff0000'}] (rgb)",
    )
    add_options(d, "model", ("num_classes",))
    add_options(d, "data", READING[1:])
    return d


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with model/data/train sections (see RUN/config.yaml of a run)")
    d = add_reading_args(p)
    add_options(d, "data", TARGETS)
    w = p.add_argument_group("the paper's weight maps and separation borders")
    add_options(w, "data", WEIGHTS)


def config_with_data_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    cfg = base or (load_config(args.config) if args.config else RunConfig())
    return reading_config(args, cfg)  # every data and model flag given


def naming_from_args(args: argparse.Namespace) -> Naming:
    """The folders and name patterns of :func:`add_finding_args`."""
    return Naming(args.images_dir, args.masks_dir, args.image_pattern, args.mask_pattern)


def reading_config(args: argparse.Namespace, cfg: RunConfig) -> RunConfig:
    """``cfg`` with every data and model flag given on the command line (those of :func:`add_reading_args`
    and any other the command has), and the class map read."""
    cfg.data = apply_options(args, cfg.data, "data")
    if args.class_map:
        values, colors, names = load_class_map(args.class_map)
        encoding = args.mask_encoding
        if encoding in (None, "auto") and cfg.data.mask_encoding == "auto" and (values or colors):
            cfg.data.mask_encoding = "rgb" if colors else "classes"
        cfg.data.class_values, cfg.data.class_colors, cfg.data.class_names = values, colors, names
    cfg.model = apply_options(args, cfg.model, "model")
    return cfg
