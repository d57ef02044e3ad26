"""Explicit intensity normalisation, recorded in the checkpoint and applied identically at predict time.

Never "divide by 255 if the maximum exceeds 1": each scheme is chosen by name and its statistics are stored.
- ``percentile`` (default): per image and channel, the ``low`` and ``high`` percentiles map to 0 and 1
  (robust to hot pixels and to 8/16-bit data; as StarDist and Cellpose). Values outside are not clipped.
- ``fixed``: divide by ``scale`` (255: the Keras tutorial's scaling of 8-bit images).
- ``dataset``: subtract the training set's per-channel mean, divide by its standard deviation (both
  measured by the data check and stored).
- ``minmax``: per image minimum → 0, maximum → 1. ``zscore``: per image zero mean, unit variance.
- ``none``: values as stored.

``invert`` (prediction's ``--invert``, never recorded): dark objects on a bright background are read as a model of
bright objects expects them: each scheme's mapping negated about its own statistics (``percentile``: the high
percentile of the negated image maps to 1, so a bright-field background falls where a fluorescence one lies).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..config import NORMALIZATIONS
from ..errors import ConfigError

__all__ = [
    "BRIGHT_BACKGROUND",
    "FLUORESCENCE_BACKGROUND",
    "METHODS",
    "Normalizer",
    "background_position",
    "normalize",
    "other_way_round",
]

#: where an image's median pixel lies in its 1-99.8 percentile range above which its background looks bright:
#: measured on 104 generated fluorescence images (the built-in model's family, the style-shift suite) and the
#: same images inverted, the median passed it on 1 of the first and 103 of the second
BRIGHT_BACKGROUND = 0.5
#: how far apart an image's background position and a model's must lie (besides opposite sides of
#: ``BRIGHT_BACKGROUND``) to be called the other way round: images of one kind near the middle (phase contrast)
#: differ by less
POLARITY_MARGIN = 0.35
#: the built-in fluorescence model's: the median over its family's 48 validation images (5-95%: 0.01-0.23)
FLUORESCENCE_BACKGROUND = 0.10


def background_position(plane: np.ndarray, max_pixels: int = 1 << 20) -> float:
    """Where the median pixel of ``plane`` (one channel, any dimensions) lies in its 1-99.8 percentile range, 0 to 1,
    on a regular subsample of at most about ``max_pixels``: low where the background is dark (fluorescence), high
    where it is bright (bright-field)."""
    values = np.asarray(plane, np.float32).ravel()
    values = values[:: max(1, values.size // max_pixels)]
    lo, mid, hi = np.percentile(values, [1.0, 50.0, 99.8])
    return float((mid - lo) / (hi - lo)) if hi > lo else 0.0


def other_way_round(position: float, learnt: float) -> bool:
    """Whether an image whose background lies at ``position`` (:func:`background_position`) is the other way round
    from a model's training images (``learnt``, their median): on opposite sides of ``BRIGHT_BACKGROUND`` and
    ``POLARITY_MARGIN`` apart."""
    opposite = (position > BRIGHT_BACKGROUND) != (learnt > BRIGHT_BACKGROUND)
    return opposite and abs(position - learnt) > POLARITY_MARGIN


METHODS = NORMALIZATIONS


@dataclass(frozen=True)
class Normalizer:
    method: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    scale: float = 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: read the image with its intensities reversed (see the module docstring); not part of the record
    invert: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"data.normalization {self.method!r} is unknown; choose one of {', '.join(METHODS)}"
            )
        if self.method == "percentile" and not 0 <= self.low < self.high <= 100:
            raise ConfigError("data.norm_low and norm_high must satisfy 0 <= low < high <= 100")
        if self.method == "fixed" and self.scale <= 0:
            raise ConfigError(f"data.norm_scale must be > 0, got {self.scale}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Normalise a ``(C, H, W)`` image; returns float32."""
        return self.apply(image, self.statistics(image))

    def statistics(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(offset, scale)`` (float32, shape ``(C,)``) of a ``(C, ...)`` image.

        For an image too large to hold in memory, pass a regular subsample of it (as
        :meth:`unetkit.data.lazy.ImageSource.subsample` reads): per-image statistics are then estimated from
        it and applied to every tile, so tiles share one normalisation.
        """
        if not self.invert:
            return self._of(image)
        if self.method in ("fixed", "dataset"):  # 0..scale reversed within itself; reflected about the mean
            offset, scale = self._of(image)
            return (scale if self.method == "fixed" else offset), -scale
        # (x - offset) / scale of the negated image, as (x - offset') / scale' of the image
        offset, scale = self._of(-np.asarray(image, np.float32))
        return -offset, -scale

    def _of(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = image.shape[0]
        if self.method == "none":
            return np.zeros(c, np.float32), np.ones(c, np.float32)
        if self.method == "fixed":
            return np.zeros(c, np.float32), np.full(c, self.scale, np.float32)
        if self.method == "dataset":
            if self.mean is None or self.std is None or len(self.mean) != c:
                raise ConfigError(
                    "normalization 'dataset' needs per-channel mean/std measured on the training set"
                )
            lo = np.asarray(self.mean, np.float32)
            return lo, np.maximum(np.asarray(self.std, np.float32), 1e-8)
        flat = np.asarray(image, np.float32).reshape(c, -1)
        if self.method == "percentile":
            lo, hi = np.percentile(flat, [self.low, self.high], axis=1)
        elif self.method == "minmax":
            lo, hi = flat.min(axis=1), flat.max(axis=1)
        else:
            lo, hi = flat.mean(axis=1), flat.mean(axis=1) + flat.std(axis=1)
        scale = np.where(hi - lo > 1e-8, hi - lo, 1.0)
        return np.asarray(lo, np.float32), np.asarray(scale, np.float32)

    @staticmethod
    def apply(image: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """``(image - offset) / scale`` per channel, as float32 (a new array)."""
        offset, scale = stats
        expand = (slice(None),) + (None,) * (image.ndim - 1)
        x = image.astype(np.float32, copy=True)
        x -= offset[expand]
        x /= scale[expand]
        return x

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("invert")  # how one prediction reads its images, not how the model was trained
        d["mean"] = list(self.mean) if self.mean is not None else None
        d["std"] = list(self.std) if self.std is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls(
            method=d["method"],
            low=d.get("low", 1.0),
            high=d.get("high", 99.8),
            scale=d.get("scale", 255.0),
            mean=tuple(d["mean"]) if d.get("mean") is not None else None,
            std=tuple(d["std"]) if d.get("std") is not None else None,
        )


def normalize(
    image: np.ndarray, method: str = "percentile", low: float = 1.0, high: float = 99.8
) -> np.ndarray:
    """Normalise a ``(C, H, W)`` image per channel with a per-image method (see :class:`Normalizer`)."""
    return Normalizer(method, low, high)(image)
