"""Prediction of images of any size with a trained model: the public face of four parts.

:class:`Predictor` joins a model source (:mod:`.source`: checkpoint, ONNX file, bioimage.io package or built-in
name), the stream executor (:mod:`.executor`: tiles in, blended probabilities out, in bounded memory), the
rescaling of images to the object size the model learnt (``--diameter``, ``--input-scale``; :mod:`.scale`)
and the post-processing (:mod:`.labelling`: thresholds, masks in the user's encoding, objects and their
table). It holds no algorithm of its own beyond the order in which they are called.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import Preprocessing
from ..config import BLENDS, ENGINES, MAX_TILE, PRECISIONS, PredictConfig
from ..data.io import check_pixel_values, read_image, sample_channels, to_channels_first
from ..data.lazy import ImageSource
from ..data.masks import MaskEncoding
from ..data.normalize import (
    BRIGHT_BACKGROUND,
    FLUORESCENCE_BACKGROUND,
    Normalizer,
    background_position,
    other_way_round,
)
from ..errors import CheckpointError, DataError
from ..pretrained import pretrained_path
from .executor import MAX_TILES, RowsCallback, Stats, TileExecutor, available_memory, resolve_precision
from .labelling import Labelling
from .postprocess import Split
from .scale import Rescaling, estimate_diameter
from .source import default_tile, open_model
from .tiling import Tile

__all__ = [
    "BLENDS",
    "ENGINES",
    "MAX_TILE",
    "MAX_TILES",
    "PRECISIONS",
    "Predictor",
    "available_memory",
    "default_tile",
    "resolve_precision",
]

log = logging.getLogger(__name__)

#: the defaults of every Predictor setting: the CLI's (`unetkit predict`), one source
_DEFAULTS = PredictConfig()


def learnt_background(path: str | Path) -> float | None:
    """Where a built-in model's training backgrounds lie, as its card says: a fluorescence model's (dark); None for
    other models (a run's checkpoint records its own: ``preprocessing.background``)."""
    from ..checkpoint import resolve_model_path
    from ..pretrained import list_pretrained

    try:
        where = resolve_model_path(path).resolve()
        entry = next((m for m in list_pretrained() if m.path.resolve() == where), None)
    except (OSError, ValueError, CheckpointError):
        return None
    return FLUORESCENCE_BACKGROUND if entry is not None and "fluorescence" in entry.modality else None


class Predictor:
    """A model plus its preprocessing, applied tile by tile to images of any size.

    Padded (``"same"``) networks see overlapping ``tile`` x ``tile`` tiles (neighbours overlap by
    ``overlap`` x ``tile`` pixels, and the image is mirror-extended by half that at its borders) whose
    outputs are averaged with a Gaussian importance map (``blend``: ``gaussian``, ``taper`` or ``constant``),
    or, with ``blend="crop"``, cut at the middle of each overlap. Unpadded (``"valid"``) networks, the
    paper's, get each output tile's exact context, mirrored outside the image (paper Fig. 2); tiles start
    on the pooling grid, so their tiled output equals a full-image pass exactly (:class:`~.executor.TileExecutor`).
    ``pass_pixels`` bounds the pixels of one forward pass of the default plan (``batch_size`` tiles of ``tile``
    when None; ``engine="auto"`` measures it on the model's first use on a CPU when neither is given).

    ``tta`` averages class probabilities over the 8 flips and 90-degree rotations of every tile before
    thresholding. Tiles are read and normalised by a background thread while the model runs.

    Example:
        >>> predictor = Predictor.from_checkpoint("run/best.pt")
        >>> mask = predictor.predict(image)             # (H, W) uint8 class indices
        >>> probs = predictor.predict_proba(image)      # (C, H, W) float32
        >>> objects = predictor.predict_instances(image)  # (H, W) int32 instance labels
    """

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Preprocessing | dict[str, Any],
        *,
        device: str | torch.device = _DEFAULTS.device,
        tile: int | None = _DEFAULTS.tile,
        overlap: float | None = _DEFAULTS.overlap,
        blend: str | None = _DEFAULTS.blend,
        batch_size: int = _DEFAULTS.batch_size,
        threshold: float = _DEFAULTS.threshold,
        amp: bool = True,
        precision: str = _DEFAULTS.precision,
        channels_last: bool = False,
        tta: bool = _DEFAULTS.tta,
        prefetch: int = 2,
        min_size: int | None = _DEFAULTS.min_size,
        fuse: bool = False,
        compile: bool = _DEFAULTS.compile,
        diameter: float | str | None = _DEFAULTS.diameter,
        channel: int | None = _DEFAULTS.channel,
        pass_pixels: int | None = None,
        invert: bool = _DEFAULTS.invert,
    ) -> None:
        #: the model's record of its inputs and outputs, typed (a checkpoint's, an ONNX file's, a package's)
        self.preprocessing = Preprocessing.from_dict(preprocessing)
        #: resampling to the object size the model learnt (``--diameter``, ``--input-scale``)
        self.rescaler = Rescaling(diameter, self.preprocessing)
        if not isinstance(self.preprocessing.normalization, dict):
            raise CheckpointError(
                "the model has no record of how its images were normalised (preprocessing.normalization): "
                "not a checkpoint of a training run; use RUN/best.pt"
            )
        try:
            self.normalizer = Normalizer.from_dict(self.preprocessing.normalization)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the model's preprocessing.normalization is damaged ({str(exc)[:120]})"
            ) from None
        #: images read with their intensities reversed (``--invert``: dark objects for a model of bright ones)
        self.invert = bool(invert)
        if self.invert:
            self.normalizer = dataclasses.replace(self.normalizer, invert=True)
        #: where the model's training backgrounds lie (0 dark: fluorescence; 1 bright: bright-field), when known
        #: (recorded by its training, or a built-in model's card)
        self.learnt_background: float | None = self.preprocessing.background
        #: per image, what :meth:`statistics` said of its background (see :meth:`statistics`)
        self.polarity: dict[str, str] = {}
        self.tta = tta
        #: the stored channel a one-channel model reads (``--channel``; None: the one it was trained on, in
        #: images of several channels, else by the image's own channels)
        self.channel = None if channel is None else int(channel)
        #: probabilities to classes, masks and objects
        self.labelling = Labelling(
            model.num_classes,  # type: ignore[arg-type]
            self.encoding,
            float(threshold),
            None if min_size is None else int(min_size),
            workers=torch.get_num_threads(),  # the labelling's parts release the GIL: one thread per core
        )
        #: tiles in, probabilities out
        self.executor = TileExecutor(
            model,
            in_channels=self.in_channels,
            device=device,
            tile=tile,
            overlap=overlap,
            blend=blend,
            batch_size=batch_size,
            amp=amp,
            precision=precision,
            channels_last=channels_last,
            prefetch=prefetch,
            fuse=fuse,
            compile=compile,
            pass_pixels=pass_pixels,
        )
        #: what ``--engine auto`` chose (engine, precision, pass bound), for Dask workers to run the same
        self.chosen: dict[str, Any] = {}
        if getattr(model, "padding", "same") == "valid" and blend not in (None, "crop"):
            log.info("a valid (unpadded) network is tiled exactly; --blend %s is not needed", blend)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs: Any) -> Predictor:
        """Load a checkpoint written by :func:`unetkit.train` (safe loading, see ``load_checkpoint``), an ONNX
        file or a bioimage.io package (:func:`~.source.open_model`).

        ``tile`` defaults to the checkpoint's training patch size (at least 256; 512 when it records none)."""
        model, preprocessing, settings = open_model(path, kwargs)
        chosen = settings.pop("chosen", {})
        predictor = cls(model, preprocessing, **settings)
        predictor.chosen = chosen
        if predictor.learnt_background is None:
            predictor.learnt_background = learnt_background(path)
        return predictor

    @classmethod
    def from_pretrained(cls, name: str = "nuclei", **kwargs: Any) -> Predictor:
        """A built-in model by name (``unetkit models`` lists them), shipped in the package and checked against
        its registered sha256; nothing is downloaded. Options as :meth:`from_checkpoint`.

        Example:
            >>> labels = Predictor.from_pretrained("nuclei").predict_instances(image)
        """
        return cls.from_checkpoint(pretrained_path(name), **kwargs)

    # -- the parts' settings, read through the face ------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        return self.executor.model

    @property
    def device(self) -> torch.device:
        return self.executor.device

    @property
    def precision(self) -> str:
        return self.executor.precision

    @property
    def amp(self) -> bool:
        return self.executor.amp

    @property
    def num_classes(self) -> int:
        return self.executor.num_classes

    @property
    def spatial_dims(self) -> int:
        return self.executor.spatial_dims

    @property
    def tile_in(self) -> int:
        """The network's input tile side."""
        return self.executor.tile_in

    @property
    def halo(self) -> int:
        return self.executor.halo

    @property
    def overlap(self) -> float | None:
        """The overlap of neighbouring tiles as a share of a tile; None: the default plan's, twice the
        network's context whatever the tile (:meth:`~.executor.TileExecutor.auto_sides`)."""
        return None if self.executor.auto else self.executor.overlap

    @property
    def threshold(self) -> float:
        return self.labelling.threshold

    @property
    def min_size(self) -> int | None:
        return self.labelling.min_size

    @property
    def in_channels(self) -> int:
        return self.preprocessing.in_channels

    @property
    def encoding(self) -> MaskEncoding:
        """The training masks' encoding: predicted class indices are written back in it."""
        return self.preprocessing.mask_encoding

    def prepare(self, image: np.ndarray, name: str | Path = "image") -> np.ndarray:
        """Raw ``(H, W[, C])`` image (``(D, H, W[, C])`` volume for a 3-D model) → normalised float32
        ``(C, ...)``, exactly as in training."""
        return self.normalizer(self.channels_first(image, name))

    def channels_first(self, image: np.ndarray, name: str | Path = "image") -> np.ndarray:
        """Raw pixels, channels last (or none) → ``(C, *spatial)`` with the model's input channels; what no
        segmentation can be right for (no pixels, NaN, infinity, complex values, a batch of images) is refused
        in one line, as for files."""
        image = np.asarray(image)
        if image.size == 0:
            raise DataError(f"{name}: {'x'.join(map(str, image.shape))} pixels: an image without pixels")
        check_pixel_values(image, name)
        if self.spatial_dims == 2:
            if image.ndim not in (2, 3):
                raise DataError(
                    f"{name}: a 2-D model segments an image (H, W) or (H, W, C); got shape {image.shape}: give "
                    "images one at a time (or files to predict_files)"
                )
            return to_channels_first(image, self.in_channels, name, pick=self._pick(image.shape[2:]))
        if image.ndim not in (3, 4):
            raise DataError(
                f"{name}: a 3-D model segments volumes (D, H, W) or (D, H, W, C); got shape {image.shape}"
            )
        pick = self._pick(image.shape[3:])
        return sample_channels(image, self.in_channels, name, volumes=True, pick=pick)

    def statistics(self, x: np.ndarray, name: str | Path = "image") -> Stats:
        """The normalisation's per-channel ``(offset, scale)`` of raw ``(C, *spatial)`` pixels (or a subsample of
        them). A model that learnt dark backgrounds (fluorescence), given an image whose background looks bright
        (half its pixels in the top half of its range, as in bright-field), or the other way round, says so once
        per image with the fix (``--invert``), and keeps it in :attr:`polarity`: it would find the background as
        objects."""
        stats = self.normalizer.statistics(x)
        if self.learnt_background is not None and not self.invert and str(name) not in self.polarity:
            where = background_position(x[0])
            if other_way_round(where, self.learnt_background):
                looks, learnt, objects = (
                    ("bright", "dark ones (fluorescence)", "dark on a bright background (bright-field, a stained section)")
                    if where > BRIGHT_BACKGROUND
                    else ("dark", "bright ones (bright-field)", "bright on a dark background (fluorescence)")
                )  # fmt: skip
                said = (
                    f"{name}: its background looks {looks} (its median pixel at {where:.0%} of its range) and this "
                    f"model learnt {learnt}: if its objects are {objects}, pass --invert"
                )
                self.polarity[str(name)] = said
                log.warning("%s", said)
        return stats

    def select(self, source: ImageSource) -> ImageSource:
        """``source`` reading the channels this model takes (see :meth:`channels_first`)."""
        stored = () if source.channel_axis is None else (source.array.shape[source.channel_axis],)
        return source.select(self.in_channels, self._pick(stored))

    def _pick(self, stored: tuple[int, ...]) -> int | None:
        """The channel to read of an image with ``stored`` channels (``()``: none, one plane): the one asked
        for, else the one the model was trained on when the image has several (``--channel`` at training)."""
        if self.channel is not None:
            return self.channel
        several = bool(stored) and stored[0] > 1
        return self.preprocessing.channel if several else None

    # -- whole images in memory ------------------------------------------------------------------------
    def predict_proba(
        self,
        image: np.ndarray | str | Path,
        name: str | Path = "image",
        *,
        prepared: bool = False,
        tta: bool | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Class probabilities ``(C, H, W)`` float32 (``C = 1``: foreground probability of a binary model).

        ``image`` is raw ``(H, W[, C])`` pixels (or an image file's path), or with ``prepared=True`` an already
        normalised ``(C, H, W)`` array. ``tta`` (default: the predictor's): average over the 8 flips/rotations
        of every tile.
        """
        if isinstance(image, (str, Path)):  # a file, as predict_files reads it
            name = image
            image = read_image(image)
        if prepared:
            x = np.asarray(image, np.float32)
            stats = (np.zeros(x.shape[0], np.float32), np.ones(x.shape[0], np.float32))
            return self._proba(x, stats, name, tta, progress)
        return self.proba_channels_first(self.channels_first(image, name), name, tta=tta, progress=progress)

    def proba_channels_first(
        self, x: np.ndarray, name: str | Path = "image", *, tta: bool | None = None, progress: bool = False
    ) -> np.ndarray:
        """:meth:`predict_proba` of raw pixels already ``(C, *spatial)`` with the model's channels, rescaled
        to the model's object size first when a ``diameter`` is set."""
        stats = self.statistics(x, name)
        if not self.rescales:
            return self._proba(x, stats, name, tta, progress)
        return self._rescaled_proba(x, stats, name, tta, progress)

    @property
    def rescales(self) -> bool:
        """Whether images are resampled before the network (``--diameter``, or a model trained with
        ``--input-scale``) and its output mapped back: done whole, in memory."""
        return self.rescaler.rescales

    @property
    def rescaling(self) -> str:
        """What resamples, in words, for messages."""
        return self.rescaler.rescaling

    @property
    def scaling(self) -> str | None:
        """What ``--diameter auto`` found and did on the last image, in words (None: not used)."""
        return self.rescaler.scaling

    @property
    def diameter(self) -> float | str | None:
        return self.rescaler.diameter

    @property
    def trained_range(self) -> tuple[float, float] | None:
        return self.rescaler.trained_range

    def learnt_sizes(self) -> str:
        """The object diameters the model learnt, in words ("7-57.7 px"; "unknown" for a model without them)."""
        return self.rescaler.learnt_sizes()

    def _proba(
        self, x: np.ndarray, stats: Any, name: str | Path, tta: bool | None, progress: bool
    ) -> np.ndarray:
        out = np.empty((self.num_classes, *x.shape[1:]), np.float32)

        def keep(y0: int, y1: int, rows: np.ndarray) -> None:
            out[:, y0:y1] = rows

        self.stream(x, keep, stats=stats, tta=tta, progress=progress, name=name)
        return out

    def _rescaled_proba(
        self, x: np.ndarray, stats: Any, name: str | Path, tta: bool | None, progress: bool
    ) -> np.ndarray:
        return self.rescaler.proba(
            x, lambda y: self._proba(y, stats, name, tta, progress), self._diameter_in, name
        )

    def _diameter_in(self, probs: np.ndarray) -> float | None:
        return estimate_diameter(self.instances(self.to_labels(probs)), volume=probs.ndim == 4)

    def estimate_diameter(self, image: np.ndarray, name: str | Path = "image") -> float | None:
        """The objects' typical diameter in ``image`` (px, on its own grid) as ``--diameter auto`` estimates it:
        the area-weighted median diameter of the objects a first pass finds; None when it finds none.

        Example:
            >>> Predictor.from_pretrained("nuclei").estimate_diameter(image)
            17.3
        """
        x = self.channels_first(image, name)
        stats = self.statistics(x, name)
        return self.rescaler.first_pass(
            x, lambda y: self._proba(y, stats, name, None, False), self._diameter_in
        )[1]

    def predict(self, image: np.ndarray, name: str | Path = "image") -> np.ndarray:
        """Class indices ``(H, W)`` uint8: 0/1 for a binary model (probability >= threshold), else argmax."""
        return self.to_labels(self.predict_proba(image, name))

    def predict_instances(
        self, image: np.ndarray, name: str | Path = "image", *, return_table: bool = False
    ) -> Any:
        """Instance labels ``(H, W)`` int32 (0 background, objects 1..N); see :meth:`instances`. With
        ``return_table``: ``(labels, table)``, the table (:mod:`~unetkit.inference.objects`) holding every
        object's confidence, area, centroid, bounding box and mean intensity, one array per column.

        Example:
            >>> labels, table = predictor.predict_instances(image, return_table=True)
            >>> doubtful = table["label"][table["confidence"] < 0.5]  # the objects to check first
        """
        probs = self.predict_proba(image, name)
        classes = self.to_labels(probs)
        if not return_table:
            return self.instances(classes)
        return self.objects(classes, probs, self.channels_first(image, name))

    # -- post-processing (:class:`~.labelling.Labelling`) ---------------------------------------------------
    def objects(
        self, classes: np.ndarray, probs: np.ndarray, image: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """See :meth:`.Labelling.objects`; ``image`` channels first as :meth:`channels_first` gives it."""
        return self.labelling.objects(classes, probs, image)

    def instances(self, classes: np.ndarray) -> np.ndarray:
        """See :meth:`.Labelling.instances`."""
        return self.labelling.instances(classes)

    def split(self, read: Callable[[tuple[slice, ...]], np.ndarray], shape: tuple[int, ...]) -> Split:
        """See :meth:`.Labelling.split`."""
        return self.labelling.split(read, shape)

    def labeller(self, split: Split) -> Callable[[np.ndarray], np.ndarray]:
        """See :meth:`.Labelling.labeller`."""
        return self.labelling.labeller(split)

    @property
    def instance_method(self) -> str:
        """``interior`` (3-class border target), ``watershed`` (binary) or ``components`` (other classes)."""
        return self.labelling.instance_method

    def to_labels(self, probs: np.ndarray) -> np.ndarray:
        """See :meth:`.Labelling.to_labels`."""
        return self.labelling.to_labels(probs)

    def to_mask(self, labels: np.ndarray) -> np.ndarray:
        """See :meth:`.Labelling.to_mask`."""
        return self.labelling.to_mask(labels)

    # -- streaming (:class:`~.executor.TileExecutor`) -------------------------------------------------------
    def check_size(
        self, shape: tuple[int, ...], name: str | Path, max_memory_gib: float | None = None
    ) -> None:
        """See :meth:`.TileExecutor.check_size`."""
        self.executor.check_size(shape, name, max_memory_gib)

    def streamed_bytes(self, shape: tuple[int, ...]) -> int:
        """See :meth:`.TileExecutor.streamed_bytes`."""
        return self.executor.streamed_bytes(shape)

    def plan(self, shape: tuple[int, ...]) -> list[Tile]:
        """The tiles for an image of spatial ``shape`` (row-major order)."""
        return self.executor.plan(shape)

    def stream(
        self,
        source: np.ndarray | ImageSource,
        emit: RowsCallback,
        *,
        stats: Stats | None = None,
        tta: bool | None = None,
        progress: bool = False,
        name: str | Path = "image",
        on_tiles: Callable[[int, int], None] | None = None,
    ) -> None:
        """:meth:`.TileExecutor.stream` with this model's normalisation: ``stats`` (per-channel ``(offset,
        scale)``) by default measured on a subsample of the image (the whole image up to 4 megapixels); ``tta``
        by default the predictor's."""
        if stats is None:
            sample = source.subsample() if isinstance(source, ImageSource) else np.asarray(source)
            stats = self.statistics(sample, name)
        use_tta = self.tta if tta is None else tta
        self.executor.stream(
            source, emit, stats, tta=use_tta, progress=progress, name=name, on_tiles=on_tiles
        )

    def predict_region(
        self,
        source: np.ndarray | ImageSource,
        region: tuple[tuple[int, int], ...],
        stats: Stats,
        *,
        tta: bool | None = None,
    ) -> np.ndarray:
        """See :meth:`.TileExecutor.predict_region` (``tta`` by default the predictor's)."""
        return self.executor.predict_region(source, region, stats, tta=self.tta if tta is None else tta)
