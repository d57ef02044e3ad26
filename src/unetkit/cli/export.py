"""``unetkit export``: a checkpoint as ONNX or TorchScript, verified against PyTorch, or as a bioimage.io package."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..workflows.bioimageio import export_bioimageio
from ..workflows.export import EXPORT_FORMATS, default_export_path, export_model
from .common import add_progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or TorchScript (dynamic height and width), verified against PyTorch",
        description=(
            "Export MODEL's network with dynamic batch, height and width (multiples of 2**depth, as predict's "
            "tiles are) and check it against PyTorch on two input sizes: the largest absolute difference is "
            "printed and must stay below 1e-4. ONNX files carry the preprocessing, so 'unetkit predict "
            "model.onnx IMAGES --out DIR' runs them on ONNX Runtime. --format bioimageio writes a BioImage "
            "Model Zoo package (spec 0.5: state dict with its architecture, TorchScript and ONNX weights, the "
            "preprocessing, test tensors, a model card and a cover) that deepImageJ, ilastik, QuPath and "
            "bioimageio.core run. Needs the [onnx] extra for ONNX and bioimageio."
        ),
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="checkpoint written by 'unetkit train' (RUN/best.pt), or a built-in model",
    )
    p.add_argument(
        "--format", choices=(*EXPORT_FORMATS, "bioimageio"), default="onnx", help="(default: onnx)"
    )
    p.add_argument("--out", "-o", help="output file (default: MODEL with .onnx, .ts.pt or .bioimageio.zip)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    b = p.add_argument_group("bioimageio package")
    b.add_argument("--name", help="the model's name (default: from the run)")
    b.add_argument("--description", help="one or two sentences (default: generated)")
    b.add_argument("--author", action="append", help="an author's name (repeat for several)")
    b.add_argument("--license", default="MIT", help="an SPDX identifier (default: %(default)s)")
    b.add_argument(
        "--no-instances",
        dest="instances",
        action="store_false",
        help="leave out the second output, instance labels computed inside the graph (border-target and "
        "binary models have it by default)",
    )
    add_progress(p)  # every command takes --no-progress, so scripts can pass it to all
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else default_export_path(args.model, args.format)
    if args.format == "bioimageio":
        package = export_bioimageio(
            args.model,
            out,
            name=args.name,
            description=args.description,
            authors=args.author,
            license=args.license,
            instances=args.instances,
            overwrite=args.overwrite,
        )
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in package.diffs.items() if not k.endswith("labels"))
        if any(k.endswith("labels") for k in package.diffs):
            diffs += "; instance labels differing: " + ", ".join(
                f"{k.split()[0]} {v:.2%}" for k, v in package.diffs.items() if k.endswith("labels")
            )
        print(f"wrote {package.path} ({package.bytes / 1e6:.1f} MB, bioimage.io {package.rdf['format_version']}); "
              f"max |exported - PyTorch|: {diffs}")  # fmt: skip
        return 0
    result = export_model(args.model, out, args.format, overwrite=args.overwrite)
    print(f"wrote {result.path} ({result.format}); max |exported - PyTorch| = {result.max_abs_diff:.2e}")
    return 0
