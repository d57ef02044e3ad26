"""Post-processing: what a model's class probabilities mean for the user's files.

A :class:`Labelling` turns probabilities into class indices (threshold or argmax), class indices into the mask
written to disk in the encoding of the user's own masks, and into objects (split by the size of each image's
objects, :mod:`.postprocess`) with their table (:mod:`.objects`). It knows no network, no tiles and no files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..data.masks import MaskEncoding
from ..errors import ConfigError
from .objects import ObjectSums, confidence_maps, object_table
from .postprocess import (
    Split,
    first_pixel_order,
    instances_from_classes,
    measured_split,
    split_by_labelling,
)

__all__ = ["Labelling"]


@dataclass(frozen=True)
class Labelling:
    """From a model's probabilities to classes, masks and objects.

    ``num_classes``: the model's output channels (1: a binary model's foreground probability); ``encoding``:
    the training masks' encoding, which masks are written back in; ``threshold``: the foreground probability
    of a binary model's objects; ``min_size``: objects under this many pixels are dropped (None: a tenth of the
    image's typical object); ``workers``: threads labelling an image's parts (its size windows; blocks of an
    image on disk); the labels do not depend on it."""

    num_classes: int
    encoding: MaskEncoding
    threshold: float = 0.5
    min_size: int | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:  # NaN too: every comparison with it is false (all background)
            raise ConfigError(f"--threshold {self.threshold}: give a probability between 0 and 1, e.g. 0.5")
        if self.min_size is not None and not 0 <= self.min_size < 2**31:
            raise ConfigError(
                f"--min-size {self.min_size}: give a number of pixels (0 keeps every object), or leave it out"
            )

    def to_labels(self, probs: np.ndarray) -> np.ndarray:
        """Probabilities ``(C, ...)`` → class indices uint8: 0/1 for a binary model (probability >= threshold),
        else argmax."""
        if self.num_classes == 1:
            return (probs[0] >= self.threshold).astype(np.uint8)
        return probs.argmax(axis=0).astype(np.uint8)

    def to_mask(self, labels: np.ndarray) -> np.ndarray:
        """Class indices → the mask written to disk, in the encoding of the user's masks: 0/255 for binary and
        instance masks (a border model's interior and border together are the object: the internal border
        class never reaches a mask file), class values for class masks, colours for colour masks."""
        if self.num_classes == 1 or self.encoding.name in ("binary", "instances"):
            return (labels > 0).astype(np.uint8) * np.uint8(255)
        return self.encoding.decode(labels)

    @property
    def instance_method(self) -> str:
        """``interior`` (3-class border target), ``watershed`` (binary) or ``components`` (other classes)."""
        if self.encoding.target == "border" and self.num_classes == 3:
            return "interior"
        return "watershed" if self.num_classes in (1, 2) else "components"

    def split(self, read: Callable[[tuple[slice, ...]], np.ndarray], shape: tuple[int, ...]) -> Split:
        """The :class:`~.postprocess.Split` for the image whose classes ``read(slices)`` reads: measured once
        per image, the same in every path."""
        return measured_split(read, tuple(shape), self.instance_method, self.min_size, self.workers)

    def labeller(self, split: Split) -> Callable[[np.ndarray], np.ndarray]:
        """Classes of (any part of) an image → its objects, with the image's one :meth:`split`."""
        method = self.instance_method
        return lambda classes: first_pixel_order(instances_from_classes(classes, method, split=split))

    def instances(self, classes: np.ndarray) -> np.ndarray:
        """Class indices → objects, by the model's target (:func:`~.postprocess.instances_from_classes`), split
        by the size of this image's objects (:func:`~.postprocess.measured_split`), numbered in raster order of
        their first pixel, as block-wise and Dask labelling number them."""
        return self.labeller(self.split(classes.__getitem__, classes.shape))(classes)

    def objects(
        self, classes: np.ndarray, probs: np.ndarray, image: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The objects of an image (or volume) held in memory, from its classes and the probabilities they came
        from, and their table; ``image`` channels first (the intensity is the mean over its channels)."""
        split = self.split(classes.__getitem__, classes.shape)
        labels = self.labeller(split)(classes)
        sure, fg = confidence_maps(probs)
        intensity = np.asarray(image, np.float32).mean(axis=0)
        sums = ObjectSums.of(
            labels, sure, fg, intensity, int(labels.max()), splittable=self.splittable(classes)
        )
        return labels, object_table(sums, split.diameter)

    def splittable(self, classes: np.ndarray) -> np.ndarray | None:
        """See :func:`~.postprocess.split_by_labelling` (what the objects table counts as a labelling's cut)."""
        return split_by_labelling(classes, self.instance_method)
