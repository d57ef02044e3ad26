"""``unetkit synth``: write the built-in synthetic nuclei dataset."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..workflows.catalog import DOMAINS, SYNTH_STYLES, synthesize_dataset
from .common import add_progress


def parse_size(text: str) -> int | tuple[int, int]:
    try:
        if "x" in text.lower():
            h, w = (int(v) for v in text.lower().split("x"))
            if h < 16 or w < 16:
                raise ValueError
            return h, w
        size = int(text)
        if size < 16:
            raise ValueError
        return size
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: give N or HxW, each at least 16") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write synthetic fluorescence nuclei with instance labels",
        description="Write OUT/images/NAME.png (uint8) and OUT/masks/NAME.png (uint16 instance labels).",
    )
    p.add_argument("out", metavar="OUT", help="dataset folder to write")
    p.add_argument("--n", type=int, default=40, help="number of images (default: 40)")
    p.add_argument("--size", type=parse_size, default=256, help="N or HxW pixels (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed; image i depends only on (seed, i)")
    p.add_argument(
        "--mask-format", choices=("png", "tif"), default="png", help="mask file format (default: png)"
    )
    p.add_argument(
        "--depth",
        type=int,
        help="make volumes of this many slices (TIFF z-stacks, synth_nuclei_3d) instead of images",
    )
    p.add_argument(
        "--style",
        choices=SYNTH_STYLES,
        default="default",
        help="default: DSB-like fluorescence crops; random: each image drawn from the domain-randomised family "
        "(version 3: nuclei 5-80 px, single to confluent sheets, dim to saturated, few photons to clean, "
        "out of focus, unevenly lit, hazy, 8/12/16-bit cameras; random@2: version 2); held-out: ranges version 2 "
        f"never draws; a domain of the style-shift suite ({', '.join(DOMAINS)}): its fixed setting "
        "(default: default)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace files already in OUT")
    add_progress(p)  # every command takes --no-progress, so scripts can pass it to all
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    out = synthesize_dataset(
        args.out,
        n=args.n,
        size=args.size,
        seed=args.seed,
        mask_format=args.mask_format,
        overwrite=args.overwrite,
        depth=args.depth,
        style=args.style,
    )
    kind = "volumes" if args.depth else "images"
    print(f"wrote {args.n} {kind} to {out}/images and their instance masks to {out}/masks")
    return 0
