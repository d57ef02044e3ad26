"""``unetkit predict``: segment images of any size with a trained checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from ..config import PredictConfig
from ..inference.writers import FORMATS, PROBS_DTYPES
from ..workflows.predict import predict_files
from .common import add_finding_args, add_progress, naming_from_args
from .options import add_options


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
    p.add_argument(
        "--instances",
        action="store_true",
        help="also write NAME_instances.tif: one label per object (interior components for a 3-class "
        "border model, distance-transform watershed for a binary one)",
    )
    p.add_argument(
        "--max-memory-gib",
        "--max-memory",  # its first name
        type=float,
        metavar="GIB",
        help="refuse an image whose row of tiles needs more memory than this, in GiB, before anything is "
        "allocated (default: half the memory available)",
    )
    add_options(p, "predict", ("min_size", "diameter"))
    p.add_argument(
        "--object-context",
        type=int,
        default=128,
        help="largest object size in pixels that keeps one ID when a large image is labelled in blocks "
        "(default: 128)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="png (default), tiff (tiled, compressed; the default for images over 64 megapixels), zarr "
        "(one NAME.zarr group with mask, probs and instances) or ome-zarr (NAME.ome.zarr: the image as a "
        "multiscale OME-Zarr with mask and instances in its labels group; napari-ome-zarr opens it)",
    )
    p.add_argument(
        "--level",
        type=int,
        metavar="N",
        help="read OME-Zarr inputs at resolution level N of their pyramid (0 = full resolution; the results "
        "have that level's size and pixel size)",
    )
    p.add_argument(
        "--overlay", action="store_true", help="also write NAME_overlay.png: contours on the image"
    )
    p.add_argument(
        "--save-probs",
        nargs="?",
        const="float16",
        choices=PROBS_DTYPES,
        help="also write the probabilities (NAME_probs.tif): float16 (default), float32, or uint8 (p x 255)",
    )
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
    d.add_argument("--dask-workers", type=int, default=2, help="local cluster: worker processes (default: 2)")
    d.add_argument(
        "--chunk",
        type=int,
        help="--dask: pixels per chunk side, one task each (default: 2048; 256 for volumes)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing results in OUT (never an input: refused)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the complete results already in OUT and segment the rest (after a kill or a --skip-bad run)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="go on past inputs that cannot be read or do not fit the model; they are listed at the end and the "
        "exit code is 1",
    )
    p.add_argument(
        "--fill-missing-chunks",
        action="store_true",
        help="read the missing chunks of a zarr input as its fill value (for stores that leave chunks equal to "
        "it unwritten); without it such an input is refused as incomplete",
    )
    add_progress(p)
    add_finding_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = predict_files(
        args.model,
        args.inputs,
        args.out,
        format=args.format,
        save_probs=args.save_probs or False,
        instances=args.instances,
        overlay=args.overlay,
        overwrite=args.overwrite,
        resume=args.resume,
        max_memory_gib=args.max_memory_gib,
        layout=args.layout or "auto",
        naming=naming_from_args(args),
        skip_bad=args.skip_bad,
        fill_missing_chunks=args.fill_missing_chunks,
        progress=args.progress,
        object_context=args.object_context,
        **predictor_options(args),
        dask=args.dask,
        dask_workers=args.dask_workers,
        chunk=args.chunk,
        level=args.level,
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


def predictor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~unetkit.Predictor` settings given on the command line (the rest keep their defaults,
    :class:`~unetkit.config.PredictConfig`'s, the same in Python)."""
    names = [f.name for f in dataclasses.fields(PredictConfig)]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
