"""The style-shift suite: generated imaging domains held out from all training data.

Each domain is one fixed generator setting, as one microscope and one preparation give one look to all of their
images, named by what differs from common fluorescence nuclei images. Its images come from seeds that no training
set uses: a pool of 5 annotated images to fine-tune on (the first 1, 2 or 5) and 8 test images. The built-in
models' training family (``unetkit synth --style random``) draws its settings at random from wide ranges; it
never draws a domain's setting as a whole, and never its images. Every claim about the built-in model, fine-tuning
and small budgets is measured on this suite (``make bench-pretrained``).

Example:
    >>> from unetkit.data.domains import DOMAINS, synthesize_domain
    >>> test = synthesize_domain("few-photons", "suite/few-photons-test", "test")
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .synthetic import SynthParams, synthesize_dataset

__all__ = ["DOMAINS", "POOL", "TEST", "Domain", "synthesize_domain"]

log = logging.getLogger(__name__)

#: annotated images a user of the domain has to fine-tune on (subsets: the first 1, 2 or 5), and test images
POOL, TEST = 5, 8


@dataclass(frozen=True)
class Domain:
    """One imaging domain: its generator setting, image size and seeds."""

    name: str
    what: str  # what differs, in words
    params: SynthParams
    size: int
    seed: int  # the pool's seed; the test images' is ``seed + 1``

    def seeds(self, split: str) -> int:
        if split not in ("pool", "test"):
            raise DataError(f"split {split!r}: choose pool or test")
        return self.seed + (split == "test")


def _area(share: float, radius: tuple[float, float], aspect: tuple[float, float]) -> float:
    """Nuclei per megapixel that cover ``share`` of the image."""
    return share * 1e6 / (np.pi * float(np.mean(radius)) ** 2 * float(np.mean(aspect)))


_DOMAINS = (
    Domain(
        "large",
        "large nuclei, 40-80 px across",
        SynthParams(radius=(22.0, 38.0), aspect=(0.7, 1.0), nuclei_per_mpx=_area(0.2, (22, 38), (0.7, 1)),
                    clusters_per_mpx=_area(0.1, (22, 38), (0.7, 1)) / 2.5, cluster_size=(2, 3),
                    brightness=(0.3, 1.0), blur_sigma=(0.8, 1.5), photons=(80.0, 200.0), texture=0.4,
                    irregularity=0.1),
        size=384,
        seed=811_000,
    ),
    Domain(
        "small-dense",
        "small nuclei, 5-8 px across, in confluent sheets",
        SynthParams(radius=(2.8, 4.4), aspect=(0.75, 1.0), nuclei_per_mpx=_area(0.1, (2.8, 4.4), (0.75, 1)),
                    clusters_per_mpx=0.0, sheet=0.7, brightness=(0.35, 1.0), blur_sigma=(0.5, 0.9),
                    photons=(60.0, 150.0)),
        size=256,
        seed=812_000,
    ),
    Domain(
        "few-photons",
        "few photons: 2.5-4 at full brightness on dim nuclei, shot noise dominates (12-bit)",
        SynthParams(radius=(7.0, 12.0), photons=(2.5, 4.0), read_noise=(0.005, 0.02), brightness=(0.3, 0.9),
                    background=(0.02, 0.1), bits=12),
        size=256,
        seed=813_000,
    ),
    Domain(
        "uneven",
        "strong uneven illumination and haze: vignetting 0.95, excitation varying 10-fold, haze 0.6-0.8",
        SynthParams(radius=(6.0, 11.0), vignetting=0.95, illumination=1.2, haze=(0.6, 0.8), brightness=(0.2, 0.8),
                    background=(0.05, 0.25), photons=(60.0, 150.0)),
        size=256,
        seed=814_000,
    ),
    Domain(
        "defocus",
        "out-of-focus blur: sigma 3-4 px, deeper nuclei up to 5 px more (16-bit)",
        SynthParams(radius=(7.0, 12.0), blur_sigma=(3.0, 4.0), depth_blur=5.0, photons=(80.0, 200.0), bits=16),
        size=256,
        seed=815_000,
    ),
    Domain(
        "nucleoli",
        "textured nuclei with bright chromocenters and nucleoli",
        SynthParams(radius=(10.0, 16.0), texture=1.0, chromocenters=2.0, irregularity=0.25,
                    photons=(100.0, 250.0)),
        size=256,
        seed=816_000,
    ),
    Domain(
        "dim16",
        "16-bit and dim: nuclei at about 1% of full scale above a camera offset, read noise, hot pixels",
        SynthParams(radius=(6.0, 11.0), full_scale=0.01, offset=0.0015, hot_pixels_per_mpx=200.0,
                    photons=(15.0, 30.0), read_noise=(0.03, 0.06), bits=16),
        size=256,
        seed=817_000,
    ),
)  # fmt: skip

#: the suite, by name
DOMAINS: dict[str, Domain] = {d.name: d for d in _DOMAINS}


def synthesize_domain(
    name: str, out: str | Path, split: str = "test", n: int | None = None, *, overwrite: bool = False
) -> Path:
    """Write a domain's ``split``: ``"pool"`` (its first ``n`` of :data:`POOL` annotated images: the same images
    for every ``n``) or ``"test"`` (:data:`TEST` images), in the paired layout (``OUT/images``, ``OUT/masks``
    with instance labels)."""
    if name not in DOMAINS:
        raise DataError(f"domain {name!r} is unknown; choose one of {', '.join(DOMAINS)}")
    domain = DOMAINS[name]
    count = POOL if split == "pool" else TEST
    n = count if n is None else n
    if not 1 <= n <= count:
        raise DataError(f"the {split} of a domain holds {count} images; asked for {n}")
    return synthesize_dataset(
        out, n=n, size=domain.size, seed=domain.seeds(split), params=domain.params, overwrite=overwrite
    )
