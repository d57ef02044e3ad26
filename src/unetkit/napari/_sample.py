"""Sample data: the built-in synthetic nuclei (no download), an image and its instance labels."""

from __future__ import annotations

from typing import Any

from ..workflows.catalog import synth_nuclei


def sample_nuclei() -> list[tuple[Any, dict[str, Any], str]]:
    image, labels = synth_nuclei((512, 512), seed=0)
    return [
        (image, {"name": "nuclei"}, "image"),
        (labels, {"name": "nuclei (true labels)", "visible": False}, "labels"),
    ]
