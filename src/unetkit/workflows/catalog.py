"""What the commands offer, for the CLI's and napari's choices, defaults and listings: the architectures (with
their sizes), the built-in models, the synthetic data (styles, suite domains, the generator), dataset checks and
class maps, and the planning defaults. The CLI and the napari plugin take these from here, so they import only
workflows (the import contracts in pyproject.toml say so)."""

from __future__ import annotations

import torch

from ..data.checks import check_dataset
from ..data.domains import DOMAINS
from ..data.layouts import Naming
from ..data.masks import load_class_map
from ..data.synthetic import STYLES, synth_nuclei, synthesize_dataset
from ..models.registry import create_model, describe_model, list_models
from ..planning import CPU_TRAIN_BUDGET, DEFAULT_BUDGET, PLAN_FILE, parse_duration
from ..pretrained import list_pretrained

__all__ = [
    "CPU_TRAIN_BUDGET",
    "DEFAULT_BUDGET",
    "DOMAINS",
    "PLAN_FILE",
    "SYNTH_STYLES",
    "Naming",
    "architecture_sizes",
    "check_dataset",
    "list_models",
    "list_pretrained",
    "load_class_map",
    "parse_duration",
    "synth_nuclei",
    "synthesize_dataset",
]

#: ``unetkit synth --style``: the generator's styles, then the style-shift suite's domains
SYNTH_STYLES = (*STYLES, *DOMAINS)


def architecture_sizes(base_channels: int, depth: int) -> list[tuple[str, int, int, str]]:
    """Every registered architecture: its name, its parameter counts in 2-D and 3-D at this width and depth (one
    input channel, one output class) and its description. Counted on PyTorch's ``meta`` device: nothing is
    allocated (depth 8, base 1024 would be ~7,600 GiB)."""
    rows = []
    for name in list_models():
        counts = []
        for dims in (2, 3):
            with torch.device("meta"):
                net = create_model(
                    name, base_channels=base_channels, depth=depth, norm="batch", spatial_dims=dims
                )
            counts.append(sum(p.numel() for p in net.parameters()))
        rows.append((name, counts[0], counts[1], describe_model(name)))
    return rows
