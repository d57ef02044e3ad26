"""Object scale: a U-Net segments objects near the size it learnt. ``--diameter D`` rescales an image whose
objects are about ``D`` pixels across to the model's training scale (``Preprocessing.object_diameter``, the
median object diameter of its training masks), predicts, and maps the probabilities back to the image's own
size; ``--diameter auto`` estimates ``D`` from a first pass (the median diameter of the objects it finds).

A model trained on many scales (the built-in ones) records the range it segments well instead
(``Preprocessing.object_diameter_range``): images whose objects lie inside it are left as they are, others
are brought to the nearest end of it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from ..data.checks import object_diameters, typical_diameter
from ..data.resample import zoom_image
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..checkpoint import Preprocessing

__all__ = ["Rescaling", "estimate_diameter", "parse_diameter", "rescale", "resize_to", "target_diameter"]

#: channels-first pixels → their class probabilities, on their own grid
Run = Callable[[np.ndarray], np.ndarray]
#: probabilities → the typical object diameter in them (None: no objects)
Find = Callable[[np.ndarray], "float | None"]

log = logging.getLogger(__name__)

#: scale factors closer to 1 than this are not worth a resampling
NEGLIGIBLE = 0.05
#: the largest rescaling ``--diameter`` applies either way (beyond it the image, or the objects, vanish)
MAX_FACTOR = 8.0


def parse_diameter(value: str | float | None) -> float | str | None:
    """``--diameter``: None, "auto", or a positive number of pixels."""
    if value is None or value == "auto":
        return value
    try:
        d = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"--diameter {value!r}: give the objects' diameter in pixels, e.g. 17, or auto"
        ) from None
    if not 0 < d < 1e5:
        raise ConfigError(f"--diameter must be a positive number of pixels, got {value}")
    return d


def factor_for(diameter: float, trained: float) -> float:
    """How much to zoom an image whose objects are ``diameter`` px so they become ``trained`` px."""
    factor = trained / diameter
    if not 1 / MAX_FACTOR <= factor <= MAX_FACTOR:
        raise ConfigError(
            f"--diameter {diameter:g}: the model learnt objects of {trained:g} px; rescaling by {factor:.3g} is "
            f"beyond 1/{MAX_FACTOR:g}..{MAX_FACTOR:g}"
        )
    return factor


def target_diameter(
    diameter: float, trained: float, trained_range: tuple[float, float] | list[float] | None = None
) -> float:
    """The object size to bring ``diameter`` to: ``trained``, or with a recorded ``trained_range`` the nearest
    size inside it (``diameter`` itself when it lies inside)."""
    if not trained_range:
        return trained
    lo, hi = float(trained_range[0]), float(trained_range[1])
    return min(max(diameter, lo), hi)


#: a channels-first image ``(C, *spatial)`` zoomed by a factor in its spatial axes (linear)
rescale = zoom_image


def resize_to(probs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Probabilities ``(C, *spatial)`` resampled to the spatial ``shape`` (linear), back on the image's grid."""
    factors = [t / s for t, s in zip(shape, probs.shape[1:], strict=True)]
    out = ndi.zoom(probs, (1, *factors), order=1, mode="nearest", grid_mode=True)
    if out.shape[1:] != tuple(shape):  # zoom rounds sizes: pad or cut the last row/column
        pad = [(0, 0)] + [(0, max(0, t - s)) for t, s in zip(shape, out.shape[1:], strict=True)]
        out = np.pad(out, pad, mode="edge")[(slice(None), *(slice(0, t) for t in shape))]
    return out.astype(np.float32, copy=False)


def estimate_diameter(labels: np.ndarray, volume: bool = False) -> float | None:
    """The typical equivalent diameter of the objects in ``labels`` (:func:`~unetkit.data.checks.typical_diameter`:
    the median weighted by object area); None when there are no objects."""
    return typical_diameter(object_diameters(labels, volume), volume)


class Rescaling:
    """How one model's inputs are resampled (``--diameter``, or a model trained with ``--input-scale``) and its
    probabilities mapped back: done whole, in memory. ``run(x)`` gives the probabilities of channels-first
    pixels on their own grid; ``find(probs)`` the typical object diameter in them (None: no objects)."""

    def __init__(self, diameter: float | str | None, preprocessing: Preprocessing) -> None:
        self.diameter = parse_diameter(diameter)
        self.trained_diameter = preprocessing.object_diameter
        self.trained_range = preprocessing.object_diameter_range
        #: the model was trained on images resampled by this factor (``--input-scale``): so are its inputs
        self.input_scale = preprocessing.input_scale
        #: what ``--diameter auto`` found and did on the last image, in words (None: not used)
        self.scaling: str | None = None
        if self.diameter is not None and not self.trained_diameter:
            raise ConfigError(
                "--diameter: this model does not record the size of the objects it learnt (it was trained before "
                "unetkit recorded it); train it again, or drop --diameter"
            )

    @property
    def rescales(self) -> bool:
        """Whether images are resampled before the network and its output mapped back."""
        return self.diameter is not None or self.input_scale != 1

    @property
    def rescaling(self) -> str:
        """What resamples, in words, for messages."""
        if self.diameter is not None:
            return "--diameter"
        return f"this model (trained at --input-scale {self.input_scale:g})"

    def learnt_sizes(self) -> str:
        """The object diameters the model learnt, in words ("7-57.7 px"; "unknown" for a model without them)."""
        if self.trained_range:
            return f"{self.trained_range[0]:g}-{self.trained_range[1]:g} px"
        return f"{self.trained_diameter:.1f} px" if self.trained_diameter else "unknown sizes"

    def proba(self, x: np.ndarray, run: Run, find: Find, name: object = "image") -> np.ndarray:
        """Probabilities of ``x`` zoomed as the model needs (its ``input_scale``, or with ``--diameter`` so its
        objects have the size the model learnt), mapped back onto ``x``'s grid."""
        trained = float(self.trained_diameter or 0)
        diameter = self.diameter
        if diameter is None:  # a model trained on resampled images: its inputs are resampled alike
            return self.at(x, self.input_scale, run)
        if diameter == "auto":
            first, found = self.first_pass(x, run, find)
            if found is None:
                self.scaling = "--diameter auto found no objects; the image was kept at its scale"
                log.info("%s: %s", name, self.scaling)
                return first
            factor = factor_for(found, target_diameter(found, trained, self.trained_range))
            kept = abs(factor / self.input_scale - 1) < NEGLIGIBLE
            self.scaling = (
                f"objects about {found:.1f} px across (estimated); the model learnt {self.learnt_sizes()}: "
                + ("kept at its scale" if kept else f"segmented zoomed x{factor:.3g} (then mapped back)")
            )
            log.info("%s: %s", name, self.scaling)
            return first if kept else self.at(x, factor, run)
        assert isinstance(diameter, float)
        return self.at(x, factor_for(diameter, target_diameter(diameter, trained, self.trained_range)), run)

    def first_pass(self, x: np.ndarray, run: Run, find: Find) -> tuple[np.ndarray, float | None]:
        """``--diameter auto``'s first pass (at the model's input scale): its probabilities, and the typical
        diameter of the objects it finds on ``x``'s grid (None: no objects)."""
        first = self.at(x, self.input_scale, run)
        return first, find(first)

    @staticmethod
    def at(x: np.ndarray, factor: float, run: Run) -> np.ndarray:
        """Probabilities of ``x`` zoomed by ``factor`` (not when it is within ``NEGLIGIBLE`` of 1), on ``x``'s grid."""
        if abs(factor - 1) < NEGLIGIBLE:
            return run(x)
        return resize_to(run(rescale(x, factor)), tuple(x.shape[1:]))
