"""``unetkit predict``: segment images of any size with a trained checkpoint."""

from __future__ import annotations

import argparse
import sys

from ..workflows.predict import predict_files
from .common import add_finding_args, add_progress, naming_from_args
from .options import add_options, given_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images of any size with a trained model",
        description=(
            "Segment images of any size tile by tile (overlap-tile with mirrored context at the borders, "
            "Gaussian blending for padded networks), in bounded memory: large TIFF and zarr inputs are read "
            "lazily and large outputs written tile by tile. Writes OUT/NAME.png (or .tif / .zarr) per input "
            "with the input's height and width: 0/255 for a binary model, the training masks' encoding "
            "otherwise."
        ),
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a built-in model by name (nuclei; `unetkit models` lists them), a run folder or checkpoint written "
        "by 'unetkit train' (RUN or RUN/best.pt), a .onnx from 'unetkit export', or a bioimage.io package (.zip or a "
        "folder with rdf.yaml)",
    )
    p.add_argument(
        "inputs",
        metavar="IMAGE_OR_DIR",
        nargs="+",
        help="image files, .zarr arrays, folders of images, or datasets in any layout train takes (their images)",
    )
    p.add_argument("--out", "-o", required=True, help="folder for the results")
    add_options(p, "predict", ("tile", "overlap", "blend", "batch_size", "threshold", "tta"))
    add_options(p, "output", ("instances", "max_memory_gib"))
    add_options(p, "predict", ("min_size", "diameter", "channel", "invert"))
    add_options(p, "output", ("object_context", "format", "level", "overlay", "save_probs"),
                save_probs={"nargs": "?", "const": "float16"})  # fmt: skip
    add_options(p, "predict", ("engine", "precision", "compile", "device"))
    d = p.add_argument_group("distributed (Dask; pip install 'unetkit[dask]')")
    d.add_argument(
        "--dask",
        nargs="?",
        const=True,
        metavar="ADDRESS",
        help="predict on a Dask cluster, chunk by chunk, into OUT/NAME.zarr: the scheduler at ADDRESS "
        "(e.g. tcp://host:8786), or without one a local cluster of --dask-workers processes; inputs and OUT must "
        "be on storage every worker can read and write",
    )
    add_options(d, "output", ("dask_workers", "chunk"))
    add_options(p, "output", ("overwrite", "resume", "skip_bad", "fill_missing_chunks"))
    add_progress(p)
    add_finding_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = predict_files(
        args.model,
        args.inputs,
        args.out,
        layout=args.layout or "auto",
        naming=naming_from_args(args),
        progress=args.progress,
        dask=args.dask,
        **given_options(args, "predict"),
        **given_options(args, "output"),
    )
    objects = [r.objects for r in results if r.objects is not None]
    extra = f", {sum(objects)} object(s)" if objects else ""
    print(f"wrote results for {len(results)} image(s) to {args.out}{extra}")
    if results.skipped:
        print(f"skipped {len(results.skipped)} input(s) that could not be segmented:", file=sys.stderr)
        for line in results.skipped:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0
