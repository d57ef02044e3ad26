"""The ``weights`` workflow: the paper's weight maps (Ronneberger et al. 2015, Eq. 2) of every mask of a
dataset, as values (``NAME_weights.tif``, float32) and as a heat map to look at (``NAME_weights.png``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..config import RunConfig, check_config
from ..data.checks import check_dataset
from ..data.io import write_image
from ..data.layouts import read_sample_mask
from ..safety import guard_outputs, sample_files
from ..viz import heatmap

__all__ = ["WeightMaps", "write_weight_maps"]


@dataclass(frozen=True)
class WeightMaps:
    """What :func:`write_weight_maps` wrote: ``count`` maps into ``out``, the largest weight among them."""

    out: Path
    count: int
    max_weight: float


def write_weight_maps(
    data: str | Path,
    out: str | Path,
    config: RunConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> WeightMaps:
    """Write ``w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2))`` of every mask of ``data`` (any layout
    ``check-data`` reads) into ``out``, with ``config.data``'s reading flags, ``w0``, ``sigma``, class
    balance and border gap. Every file is checked, and no output may be or replace an input, before the first
    map is written."""
    cfg = config or RunConfig()
    check_config(cfg)  # w0, sigma: before any mask is read
    report = check_dataset(data, cfg.data, num_classes=cfg.model.num_classes)
    report.raise_if_problems()
    encoding, out = report.encoding, Path(out)
    assert encoding is not None
    outputs = [out / f"{s.name}_weights.{ext}" for s in report.samples for ext in ("tif", "png")]
    guard_outputs(sample_files(report.samples), out, outputs)
    d, largest = cfg.data, 0.0
    for s in tqdm(report.samples, desc="weights", unit="mask", disable=not progress):
        mask = read_sample_mask(s)
        w = encoding.weights(mask, encoding.encode(mask, s.mask_label), d.w0, d.sigma, d.weight_balance)
        write_image(out / f"{s.name}_weights.tif", w, overwrite=overwrite)
        write_image(out / f"{s.name}_weights.png", heatmap(w), overwrite=overwrite)
        largest = max(largest, float(w.max(initial=0.0)))
    return WeightMaps(out, len(report.samples), largest)
