"""``unetkit predict``: segment images of any size with a trained checkpoint."""

from __future__ import annotations

import argparse

from ..config import PredictConfig
from ..inference.api import predict_files

DEFAULTS = PredictConfig()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images with a trained model",
        description=(
            "Segment images of any size, tile by tile with mirrored context at the borders, and write "
            "OUT/NAME.png per input (0/255 for a binary model, class indices otherwise) with the input's "
            "height and width."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint written by 'unetkit train' (RUN/best.pt)")
    p.add_argument("inputs", metavar="IMAGE_OR_DIR", nargs="+", help="image files or folders of images")
    p.add_argument("--out", "-o", required=True, help="folder for the masks")
    p.add_argument(
        "--save-probs", action="store_true", help="also write NAME_probs.tif (float32 probabilities)"
    )
    p.add_argument(
        "--tile",
        type=int,
        default=DEFAULTS.tile,
        help=f"network input size per tile (default: {DEFAULTS.tile})",
    )
    p.add_argument(
        "--halo", type=int, help="context pixels discarded at tile borders (default: 32 for padded nets)"
    )
    p.add_argument(
        "--batch",
        type=int,
        default=DEFAULTS.batch_size,
        help=f"tiles per forward pass (default: {DEFAULTS.batch_size})",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULTS.threshold,
        help=f"foreground probability threshold of a binary model (default: {DEFAULTS.threshold})",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average over 8 flips/rotations (8x the time)",
    )
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--overwrite", action="store_true", help="replace existing masks in OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = predict_files(
        args.model,
        args.inputs,
        args.out,
        save_probs=args.save_probs,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        tile=args.tile,
        halo=args.halo,
        batch_size=args.batch,
        threshold=args.threshold,
        device=args.device,
        tta=args.tta,
    )
    print(f"wrote {len(results)} mask(s) to {args.out}")
    return 0
