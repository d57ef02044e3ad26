"""``unetkit export``: a checkpoint as ONNX or TorchScript, verified against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..workflows.export import EXPORT_FORMATS, export_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or TorchScript (dynamic height and width), verified against PyTorch",
        description=(
            "Export MODEL's network with dynamic batch, height and width (multiples of 2**depth, as predict's "
            "tiles are) and check it against PyTorch on two input sizes: the largest absolute difference is "
            "printed and must stay below 1e-4. ONNX files carry the preprocessing, so 'unetkit predict "
            "model.onnx IMAGES --out DIR' runs them on ONNX Runtime. Needs the [onnx] extra for ONNX."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint written by 'unetkit train' (RUN/best.pt)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="(default: onnx)")
    p.add_argument("--out", "-o", help="output file (default: MODEL with .onnx or .ts.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = Path(args.model)
    out = Path(args.out) if args.out else model.with_suffix(".onnx" if args.format == "onnx" else ".ts.pt")
    result = export_model(model, out, args.format, overwrite=args.overwrite)
    print(f"wrote {result.path} ({result.format}); max |exported - PyTorch| = {result.max_abs_diff:.2e}")
    return 0
