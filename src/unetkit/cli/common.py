"""Options shared by commands that read a dataset (``train``, ``check-data``)."""

from __future__ import annotations

import argparse

from ..config import RunConfig, load_config, replace
from ..data.layouts import LAYOUTS
from ..data.masks import ENCODINGS, TARGETS, load_class_map
from ..data.normalize import METHODS


def add_finding_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """How a dataset's files are found (every command that reads a dataset, predict included)."""
    d = p.add_argument_group("dataset and masks")
    d.add_argument("--layout", choices=("auto", *LAYOUTS), help="dataset layout (default: auto, detected)")
    d.add_argument(
        "--images-dir", metavar="DIR", help="paired layout: the image folder in DATA (default: images/)"
    )
    d.add_argument(
        "--masks-dir",
        metavar="DIR",
        help="paired layout: the mask folder in DATA (default: masks/, labels/, gt/ ...)",
    )
    d.add_argument(
        "--mask-pattern",
        help="mask file name around the image's, e.g. '{stem}_gt' or 'mask_{stem}' (default: the same name, or "
        "a known suffix/prefix: _mask, _label, _cp_masks, mask_ ...)",
    )
    d.add_argument(
        "--image-pattern", help="image file name around the part shared with the mask, e.g. 'img_{stem}'"
    )
    return d


def add_reading_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """How a dataset is found and its masks read (shared by train, check-data, plan, weights and evaluate)."""
    d = add_finding_args(p)
    d.add_argument(
        "--mask-encoding",
        choices=("auto", *ENCODINGS),
        help="how masks are read (default: auto: DATA/dataset.yaml, the layout, or 0/x masks as binary; never a guess)",
    )
    d.add_argument(
        "--class-map",
        metavar="FILE",
        help="YAML/JSON naming the classes: {0: background, 1: cell}, or [{name, value}] (classes), "
        "or [{name, color: '#ff0000'}] (rgb)",
    )
    d.add_argument(
        "--num-classes", type=int, help="number of classes (classes encoding); output channels of the model"
    )
    d.add_argument(
        "--ignore-index", type=int, help="mask value of unlabelled pixels, left out of loss and metrics"
    )
    return d


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with model/data/train sections (see RUN/config.yaml of a run)")
    d = add_reading_args(p)
    d.add_argument(
        "--target", choices=TARGETS, help="instance masks: foreground (default) or border (3 classes)"
    )
    d.add_argument(
        "--normalization",
        choices=METHODS,
        help="percentile (default, 1-99.8 per image), fixed (/--norm-scale), dataset (mean/std), minmax, zscore, none",
    )
    d.add_argument("--norm-scale", type=float, help="fixed normalization: divide by this (default: 255)")
    d.add_argument(
        "--patch", type=int, help="training patch size = network input size in pixels (default: 256)"
    )
    w = p.add_argument_group("the paper's weight maps and separation borders")
    w.add_argument(
        "--border-gap",
        type=int,
        choices=(0, 1, 2),
        help="instances: cut a 1- or 2-pixel background gap between touching objects (default: 0)",
    )
    w.add_argument(
        "--weight-map",
        action=argparse.BooleanOptionalAction,
        help="weight the cross-entropy per pixel: class balance + w0*exp(-(d1+d2)^2/(2 sigma^2)) (default: off, "
        "or the plan's)",
    )
    w.add_argument("--w0", type=float, help="weight map: separation weight (default: 10, as the paper)")
    w.add_argument(
        "--weight-balance",
        action=argparse.BooleanOptionalAction,
        help="weight map: the paper's class-balance term w_c (default: on; --no-weight-balance: w_c = 1)",
    )
    w.add_argument("--sigma", type=float, help="weight map: decay in pixels (default: 5, as the paper)")


def config_with_data_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    cfg = base or (load_config(args.config) if args.config else RunConfig())
    cfg = reading_config(args, cfg)
    cfg.data = replace(
        cfg.data,
        target=args.target,
        normalization=args.normalization,
        norm_scale=args.norm_scale,
        patch_size=args.patch,
        border_gap=args.border_gap,
        weight_map=args.weight_map,
        w0=args.w0,
        sigma=args.sigma,
        weight_balance=args.weight_balance,
    )
    return cfg


def naming_from_args(args: argparse.Namespace):
    """The folders and name patterns of :func:`add_finding_args`."""
    from ..data.layouts import Naming

    return Naming(args.images_dir, args.masks_dir, args.image_pattern, args.mask_pattern)


def reading_config(args: argparse.Namespace, cfg: RunConfig) -> RunConfig:
    """``cfg`` with the options of :func:`add_reading_args` applied."""
    values = colors = names = None
    if args.class_map:
        values, colors, names = load_class_map(args.class_map)
    encoding = args.mask_encoding
    if encoding in (None, "auto") and cfg.data.mask_encoding == "auto" and (values or colors):
        encoding = "rgb" if colors else "classes"
    cfg.data = replace(
        cfg.data,
        layout=args.layout,
        images_dir=args.images_dir,
        masks_dir=args.masks_dir,
        image_pattern=args.image_pattern,
        mask_pattern=args.mask_pattern,
        mask_encoding=encoding,
        class_values=values,
        class_colors=colors,
        class_names=names,
        ignore_index=args.ignore_index,
    )
    cfg.model = replace(cfg.model, num_classes=args.num_classes)
    return cfg
