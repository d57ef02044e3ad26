"""Tiled prediction of images of any size with a trained model, in bounded memory.

Tiles are read lazily from the image (a NumPy array or an on-disk :class:`~unetkit.data.lazy.ImageSource`),
normalised, batched by a prefetch thread while the model runs, and accumulated into a band of rows that
holds one row of tiles; rows that no later tile touches are final and handed to a callback. Memory is
therefore bounded by the tile batch and the image *width*, never by its height.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import build_model, load_checkpoint, resolve_model_path
from ..config import BLENDS, DEFAULT_TILE, ENGINES, MIN_DEFAULT_TILE, PRECISIONS, PredictConfig
from ..data.io import channel_indices, to_channels_first
from ..data.lazy import ImageSource
from ..data.masks import MaskEncoding
from ..data.normalize import Normalizer
from ..device import autocast, compile_model, cpu_has_native_bf16, resolve_device
from ..errors import CheckpointError, ConfigError, DataError
from ..models.blocks import fold_batch_norms
from ..pretrained import pretrained_path
from .bioimageio import is_package, load_package
from .blending import BLEND_MODES, importance_map
from .objects import ObjectSums, confidence_maps, object_table
from .postprocess import Split, first_pixel_order, instances_from_classes, measured_split
from .scale import (
    NEGLIGIBLE,
    estimate_diameter,
    factor_for,
    parse_diameter,
    rescale,
    resize_to,
    target_diameter,
)
from .tiling import Tile, plan_blend_tiles, plan_tiles, read_window
from .writers import process_temp

__all__ = ["BLENDS", "ENGINES", "PRECISIONS", "Predictor", "default_tile", "resolve_precision"]

log = logging.getLogger(__name__)

assert BLENDS == (*BLEND_MODES, "crop"), "config.BLENDS lists the blending modes and crop"
#: the defaults of every Predictor setting: the CLI's (`unetkit predict`), one source
_DEFAULTS = PredictConfig()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bfloat16 on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX), where it runs a
    U-Net about twice as fast as float32; float32 elsewhere (on CUDA, ``amp`` chooses mixed precision)."""
    if precision != "auto":
        return precision
    if device.type == "cpu":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return "float32"


RowsCallback = Callable[[int, int, np.ndarray], None]


MAX_TILE = 16384  # the largest tile side a checkpoint may ask for
MAX_TILES = 10_000_000  # tiles of one image in one process (the tile list is built before the first tile)


def available_memory() -> float:
    """Bytes of memory available now (MemAvailable), or 8 GiB when the system does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8.0 * 2**30


def default_tile(payload: dict[str, Any], minimum: int = MIN_DEFAULT_TILE) -> int:
    """Tile size for a checkpoint: its training patch size, at least ``minimum`` (fewer, larger tiles are
    cheaper; a fully convolutional net trained on 128-pixel patches segments 256-pixel tiles as well). Not more
    by default: measured on CPUs (``bench/peers.py``), 512² tiles one per pass ran no faster per FLOP than four
    of 256², and their coarser grid computes more overlap on most image sizes."""
    cfg = (payload.get("training") or {}).get("config") or {}
    patch = (cfg.get("data") or {}).get("patch_size") or DEFAULT_TILE
    if not isinstance(patch, int) or not 1 <= patch <= MAX_TILE:
        raise CheckpointError(
            f"the checkpoint declares a training patch of {str(patch)[:40]} pixels (at most {MAX_TILE}): damaged "
            "or not made by unetkit; pass --tile to choose the tile size"
        )
    return max(int(patch), minimum)


class Predictor:
    """A model plus its preprocessing, applied tile by tile to images of any size.

    Padded (``"same"``) networks see overlapping ``tile`` x ``tile`` tiles (neighbours overlap by
    ``overlap`` x ``tile`` pixels, and the image is mirror-extended by half that at its borders) whose
    outputs are averaged with a Gaussian importance map (``blend``: ``gaussian``, ``taper`` or ``constant``),
    or, with ``blend="crop"``, cut at the middle of each overlap. Unpadded (``"valid"``) networks, the
    paper's, get each output tile's exact context, mirrored outside the image (paper Fig. 2); tiles start
    on the pooling grid, so their tiled output equals a full-image pass exactly.

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
        preprocessing: dict[str, Any],
        *,
        device: str | torch.device = _DEFAULTS.device,
        tile: int | None = _DEFAULTS.tile,
        overlap: float = _DEFAULTS.overlap,
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
    ) -> None:
        if not 0 <= overlap < 1:
            raise ConfigError(f"--overlap must be in [0, 1), got {overlap}")
        if blend is not None and blend not in BLENDS:
            raise ConfigError(f"--blend {blend!r} is unknown; choose one of {', '.join(BLENDS)}")
        tile = DEFAULT_TILE if tile is None else tile  # a bare network records no training patch
        if tile < 1 or batch_size < 1:
            raise ConfigError(f"--tile and --batch must be positive, got {tile} and {batch_size}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.preprocessing = dict(preprocessing)
        self.diameter = parse_diameter(diameter)
        self.trained_diameter: float | None = self.preprocessing.get("object_diameter")
        self.trained_range: list[float] | None = self.preprocessing.get("object_diameter_range")
        #: what ``--diameter auto`` found and did on the last image, in words (None: not used)
        self.scaling: str | None = None
        #: the model was trained on images resampled by this factor (``--input-scale``): so are its inputs
        self.input_scale = float(self.preprocessing.get("input_scale") or 1.0)
        if self.diameter is not None and not self.trained_diameter:
            raise ConfigError(
                "--diameter: this model does not record the size of the objects it learnt (it was trained before "
                "unetkit recorded it); train it again, or drop --diameter"
            )
        if not isinstance(self.preprocessing.get("normalization"), dict):
            raise CheckpointError(
                "the model has no record of how its images were normalised (preprocessing.normalization): "
                "not a checkpoint of a training run; use RUN/best.pt"
            )
        try:
            self.normalizer = Normalizer.from_dict(self.preprocessing["normalization"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the model's preprocessing.normalization is damaged ({str(exc)[:120]})"
            ) from None
        self.batch_size = int(batch_size)
        self.threshold = float(threshold)
        if not 0.0 <= self.threshold <= 1.0:  # NaN too: every comparison with it is false (all background)
            raise ConfigError(f"--threshold {threshold}: give a probability between 0 and 1, e.g. 0.5")
        self.tta = tta
        self.amp = amp
        if precision not in PRECISIONS:
            raise ConfigError(f"--precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
        self.precision = resolve_precision(precision, self.device)
        # channels-last is the layout oneDNN and cuDNN convolve fastest; it converts the model's weights in
        # place, so only models the predictor owns (from_checkpoint) are converted, never a training model
        if channels_last and any(True for _ in self.model.parameters()):
            fmt = torch.channels_last if getattr(model, "spatial_dims", 2) == 2 else torch.channels_last_3d
            self.model = self.model.to(memory_format=fmt)  # type: ignore[call-overload]
            self._memory_format: torch.memory_format | None = fmt
        else:
            self._memory_format = None
        # folding batch norms into the convolutions also changes the model in place: owned models only
        if fuse and any(True for _ in self.model.parameters()):
            fold_batch_norms(self.model)
        self.compiled = bool(compile)
        if self.compiled:
            self.model = compile_model(self.model)
        self.prefetch = max(0, int(prefetch))
        if min_size is not None and not 0 <= min_size < 2**31:
            raise ConfigError(
                f"--min-size {min_size}: give a number of pixels (0 keeps every object), or leave it out"
            )
        #: objects under this many pixels are dropped (None: a tenth of the image's typical object)
        self.min_size = None if min_size is None else int(min_size)
        self.overlap = float(overlap)
        self.num_classes: int = model.num_classes  # type: ignore[assignment]
        self.spatial_dims: int = getattr(model, "spatial_dims", 2)
        depth: int = model.depth  # type: ignore[assignment]
        self.align = 2**depth
        self.margin: int = model.margin  # type: ignore[assignment]
        net: Any = model
        if net.padding == "valid":
            if blend not in (None, "crop"):
                log.info("a valid (unpadded) network is tiled exactly; --blend %s is not needed", blend)
            self.blend = "crop"
            self.halo = 0
            self.tile_in = net.geometry.fit(tile)
            self.core = net.output_size(self.tile_in)
        else:
            self.blend = blend or "gaussian"
            self.tile_in = max(self.align, tile // self.align * self.align)
            # context mirrored at the image border: half an overlap, on the pooling grid
            self.halo = -(-round(self.overlap * self.tile_in / 2) // self.align) * self.align
            self.core = self.tile_in - 2 * self.halo
            if self.blend == "crop" and self.core < self.align:
                raise ConfigError(
                    f"--tile {tile} with --overlap {overlap} leaves no tile core; use a larger --tile"
                )

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs: Any) -> Predictor:
        """Load a checkpoint written by :func:`unetkit.train` (safe loading, see ``load_checkpoint``).

        ``tile`` defaults to the checkpoint's training patch size (at least 256; 512 when it records none)."""
        path = resolve_model_path(path)
        if is_package(path):
            return cls._from_package(path, **kwargs)
        engine = kwargs.pop("engine", None) or "torch"
        if engine not in ENGINES:
            raise ConfigError(f"--engine {engine!r} is unknown; choose one of {', '.join(ENGINES)}")
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if Path(path).suffix.lower() == ".onnx" or engine == "onnxruntime":
            if kwargs.get("compile"):
                raise ConfigError(
                    "--compile applies to the torch engine; ONNX Runtime optimises its own graph"
                )
            if kwargs.get("precision") == "bfloat16":
                raise ConfigError(
                    "--precision bfloat16 applies to the torch engine; ONNX Runtime runs the float32 graph"
                )
            kwargs["precision"] = "float32"  # what ONNX Runtime computes in (no autocast around it)
            from .export import OnnxModel, write_exported

            if Path(path).suffix.lower() != ".onnx":  # a checkpoint: export it (verified) to a temporary file
                payload = load_checkpoint(path)
                path = write_exported(
                    build_model(payload, path).eval(), payload, process_temp("onnx") / "model.onnx", "onnx"
                ).path
            model: nn.Module = OnnxModel(path)
            payload = {"training": model.training_info, "preprocessing": model.preprocessing}
        else:
            payload = load_checkpoint(path)
            model = build_model(payload, path)
            kwargs.setdefault("channels_last", True)  # the predictor owns this model
            kwargs.setdefault("fuse", True)
        if kwargs.get("tile") is None:
            kwargs["tile"] = default_tile(payload)
        return cls(model, payload["preprocessing"], **kwargs)

    @classmethod
    def _from_package(cls, path: Path, **kwargs: Any) -> Predictor:
        """A bioimage.io package (see :mod:`unetkit.inference.bioimageio`): tiles of at least its minimum size,
        overlapping by at least twice its output halo, which is cropped (unetkit's own packages: blended as their
        checkpoints are)."""
        if (kwargs.pop("engine", None) or "torch") != "torch" or kwargs.get("compile"):
            raise ConfigError("a bioimage.io package runs its own weights: drop --engine and --compile")
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        model, preprocessing = load_package(path)
        step = model.size_multiples[0]
        tile = max(int(kwargs.get("tile") or DEFAULT_TILE), model.min_size)
        kwargs["tile"] = -(-tile // step) * step
        if model.halo and not model.ours:  # the spec's halo: output to discard at tile edges, not to blend
            kwargs.setdefault("blend", "crop")
        kwargs["overlap"] = max(
            float(kwargs.get("overlap", _DEFAULTS.overlap)), min(0.9, 2 * model.halo / kwargs["tile"])
        )
        return cls(model, preprocessing, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str = "nuclei", **kwargs: Any) -> Predictor:
        """A built-in model by name (``unetkit models`` lists them), shipped in the package and checked against
        its registered sha256; nothing is downloaded. Options as :meth:`from_checkpoint`.

        Example:
            >>> labels = Predictor.from_pretrained("nuclei").predict_instances(image)
        """
        return cls.from_checkpoint(pretrained_path(name), **kwargs)

    @property
    def in_channels(self) -> int:
        return int(self.preprocessing["in_channels"])

    @property
    def encoding(self) -> MaskEncoding:
        """The training masks' encoding: predicted class indices are written back in it."""
        return MaskEncoding.from_dict(self.preprocessing.get("encoding") or {"name": "binary"})

    def prepare(self, image: np.ndarray, name: str | Path = "image") -> np.ndarray:
        """Raw ``(H, W[, C])`` image (``(D, H, W[, C])`` volume for a 3-D model) → normalised float32
        ``(C, ...)``, exactly as in training."""
        return self.normalizer(self.channels_first(image, name))

    def channels_first(self, image: np.ndarray, name: str | Path = "image") -> np.ndarray:
        """Raw pixels, channels last (or none) → ``(C, *spatial)`` with the model's input channels."""
        image = np.asarray(image)
        if self.spatial_dims == 2:
            return to_channels_first(image, self.in_channels, name)
        if image.ndim not in (3, 4):
            raise DataError(
                f"{name}: a 3-D model segments volumes (D, H, W) or (D, H, W, C); got shape {image.shape}"
            )
        arr = image[None] if image.ndim == 3 else np.moveaxis(image, -1, 0)
        index = channel_indices(arr, self.in_channels, name)
        return arr if index == list(range(arr.shape[0])) else arr[index]

    # -- whole images in memory ------------------------------------------------------------------------
    def predict_proba(
        self,
        image: np.ndarray,
        name: str | Path = "image",
        *,
        prepared: bool = False,
        tta: bool | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Class probabilities ``(C, H, W)`` float32 (``C = 1``: foreground probability of a binary model).

        ``image`` is raw ``(H, W[, C])`` pixels, or with ``prepared=True`` an already normalised ``(C, H, W)``
        array. ``tta`` (default: the predictor's): average over the 8 flips/rotations of every tile.
        """
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
        stats = self.normalizer.statistics(x)
        if not self.rescales:
            return self._proba(x, stats, name, tta, progress)
        return self._rescaled_proba(x, stats, name, tta, progress)

    @property
    def rescales(self) -> bool:
        """Whether images are resampled before the network (``--diameter``, or a model trained with
        ``--input-scale``) and its output mapped back: done whole, in memory."""
        return self.diameter is not None or self.input_scale != 1

    @property
    def rescaling(self) -> str:
        """What resamples, in words, for messages."""
        if self.diameter is not None:
            return "--diameter"
        return f"this model (trained at --input-scale {self.input_scale:g})"

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
        """Predict ``x`` zoomed as the model needs (its ``input_scale``, or with ``--diameter`` so its objects
        have the size the model learnt), mapped back onto ``x``'s grid."""
        trained = float(self.trained_diameter or 0)
        diameter = self.diameter
        if diameter is None:  # a model trained on resampled images: its inputs are resampled alike
            return self._proba_at(x, self.input_scale, stats, name, tta, progress)
        if diameter == "auto":
            first, found = self._first_pass(x, stats, name, tta, progress)
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
            if kept:
                return first
            return self._proba_at(x, factor, stats, name, tta, progress)
        assert isinstance(diameter, float)
        factor = factor_for(diameter, target_diameter(diameter, trained, self.trained_range))
        return self._proba_at(x, factor, stats, name, tta, progress)

    def learnt_sizes(self) -> str:
        """The object diameters the model learnt, in words ("7-57.7 px"; "unknown" for a model without them)."""
        if self.trained_range:
            return f"{self.trained_range[0]:g}-{self.trained_range[1]:g} px"
        return f"{self.trained_diameter:.1f} px" if self.trained_diameter else "unknown sizes"

    def _first_pass(
        self, x: np.ndarray, stats: Any, name: str | Path, tta: bool | None, progress: bool
    ) -> tuple[np.ndarray, float | None]:
        """``--diameter auto``'s first pass (at the model's input scale): its probabilities, and the typical
        diameter of the objects it finds on ``x``'s grid (None: no objects)."""
        first = self._proba_at(x, self.input_scale, stats, name, tta, progress)
        return first, estimate_diameter(self.instances(self.to_labels(first)), volume=x.ndim == 4)

    def estimate_diameter(self, image: np.ndarray, name: str | Path = "image") -> float | None:
        """The objects' typical diameter in ``image`` (px, on its own grid) as ``--diameter auto`` estimates it:
        the area-weighted median diameter of the objects a first pass finds; None when it finds none.

        Example:
            >>> Predictor.from_pretrained("nuclei").estimate_diameter(image)
            17.3
        """
        x = self.channels_first(image, name)
        return self._first_pass(x, self.normalizer.statistics(x), name, None, False)[1]

    def _proba_at(
        self, x: np.ndarray, factor: float, stats: Any, name: str | Path, tta: bool | None, progress: bool
    ) -> np.ndarray:
        """Probabilities of ``x`` zoomed by ``factor`` (not when it is within ``NEGLIGIBLE`` of 1), on ``x``'s grid."""
        if abs(factor - 1) < NEGLIGIBLE:
            return self._proba(x, stats, name, tta, progress)
        probs = self._proba(rescale(x, factor), stats, name, tta, progress)
        return resize_to(probs, tuple(x.shape[1:]))

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

    def objects(
        self, classes: np.ndarray, probs: np.ndarray, image: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The objects of an image (or volume) held in memory, from its classes and the probabilities they came
        from, and their table; ``image`` channels first as :meth:`channels_first` gives it (the intensity is the
        mean over its channels)."""
        split = self.split(classes.__getitem__, classes.shape)
        labels = self.labeller(split)(classes)
        sure, fg = confidence_maps(probs)
        intensity = np.asarray(image, np.float32).mean(axis=0)
        sums = ObjectSums.of(labels, sure, fg, intensity, int(labels.max()))
        return labels, object_table(sums, split.diameter)

    def instances(self, classes: np.ndarray) -> np.ndarray:
        """Class indices → objects, by the model's target (:func:`~.postprocess.instances_from_classes`), split
        by the size of this image's objects (:func:`~.postprocess.measured_split`), numbered in raster order of
        their first pixel, as block-wise and Dask labelling number them."""
        return self.labeller(self.split(classes.__getitem__, classes.shape))(classes)

    def split(self, read: Callable[[tuple[slice, ...]], np.ndarray], shape: tuple[int, ...]) -> Split:
        """The :class:`~.postprocess.Split` for the image whose classes ``read(slices)`` reads: measured once
        per image, the same in every path."""
        return measured_split(read, tuple(shape), self.instance_method, self.min_size)

    def labeller(self, split: Split) -> Callable[[np.ndarray], np.ndarray]:
        """Classes of (any part of) an image → its objects, with the image's one :meth:`split`."""
        method = self.instance_method
        return lambda classes: first_pixel_order(instances_from_classes(classes, method, split=split))

    @property
    def instance_method(self) -> str:
        """``interior`` (3-class border target), ``watershed`` (binary) or ``components`` (other classes)."""
        if self.encoding.target == "border" and self.num_classes == 3:
            return "interior"
        return "watershed" if self.num_classes in (1, 2) else "components"

    def to_labels(self, probs: np.ndarray) -> np.ndarray:
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

    def check_size(
        self, shape: tuple[int, ...], name: str | Path, max_memory_gib: float | None = None
    ) -> None:
        """Refuse, before anything is allocated, an image whose streaming needs more than ``max_memory_gib``
        GiB (default: half the memory available now) or more than :data:`MAX_TILES` tiles. Memory grows with
        the image's width (one full-width row of tiles is held), not its height."""
        if not shape or min(shape) < 1:
            raise DataError(f"{name}: {'x'.join(map(str, shape))} pixels: an image without pixels")
        step = max(1, self.core if self.blend == "crop" else round(self.tile_in * (1 - self.overlap)))
        tiles = math.prod(max(1, -(-n // step)) for n in shape)
        if tiles > MAX_TILES:
            raise DataError(
                f"{name}: {'x'.join(map(str, shape))} pixels make {tiles:,} tiles (at most {MAX_TILES:,} in one "
                "process): use --dask to split it into chunks, or a larger --tile"
            )
        need = self.streamed_bytes(shape)
        limit = max_memory_gib * 2**30 if max_memory_gib is not None else available_memory() / 2
        if need > limit:
            raise DataError(
                f"{name}: {'x'.join(map(str, shape))} pixels: one row of tiles needs {need / 2**30:.1f} GiB, more "
                f"than {limit / 2**30:.1f} GiB ({'--max-memory-gib' if max_memory_gib is not None else 'half the available memory'}); "
                "use --dask (chunks in both directions), a smaller --tile, or raise --max-memory-gib"
            )

    def streamed_bytes(self, shape: tuple[int, ...]) -> int:
        """Bytes that grow with an image of spatial ``shape`` when it is streamed: one full-width row of tiles
        (input, probability sums and weights, classes). The network's own working memory comes on top."""
        return self.tile_in * math.prod(shape[1:]) * 4 * (2 * (self.num_classes + 1) + self.in_channels + 1)

    # -- the streaming engine --------------------------------------------------------------------------
    def plan(self, shape: tuple[int, ...]) -> list[Tile]:
        """The tiles for an image of spatial ``shape`` (row-major order)."""
        if self.blend == "crop":
            return plan_tiles(shape, self._core_for(shape), self.halo, self.margin, self.align)
        sizes = [min(self.tile_in, -(-(n + 2 * self.halo) // self.align) * self.align) for n in shape]
        return plan_blend_tiles(shape, sizes, self.overlap, [self.halo] * len(shape), self.align)

    def stream(
        self,
        source: np.ndarray | ImageSource,
        emit: RowsCallback,
        *,
        stats: tuple[np.ndarray, np.ndarray] | None = None,
        tta: bool | None = None,
        progress: bool = False,
        name: str | Path = "image",
        on_tiles: Callable[[int, int], None] | None = None,
    ) -> None:
        """Predict a ``(C, H, W)`` image or ``(C, D, H, W)`` volume (array or lazy source, raw pixels) and
        hand final probability rows (slices) to ``emit(y0, y1, probs)`` in order (``probs``:
        ``(num_classes, y1 - y0, *rest)`` float32). ``on_tiles(done, total)`` after every batch of tiles (a
        GUI's progress bar; an exception it raises, e.g. on Cancel, stops the run there).

        ``stats``: per-channel normalisation ``(offset, scale)``; by default measured on a subsample of
        the image (the whole image when it has up to 4 megapixels).
        """
        if stats is None:
            sample = source.subsample() if isinstance(source, ImageSource) else np.asarray(source)
            stats = self.normalizer.statistics(sample)
        spatial = tuple(source.shape[1:])
        h, rest = spatial[0], spatial[1:]
        tiles = self.plan(spatial)
        rows = _group_rows(tiles)
        height = max(t.axes[0].write_stop - t.axes[0].write_start for t in tiles)
        acc = np.zeros((self.num_classes, height, *rest), np.float32)
        wsum = np.zeros((height, *rest), np.float32)
        top = 0  # image row (volume slice) of acc[:, 0]
        use_tta = self.tta if tta is None else tta
        pending = {id(row[0].axes[0]): len(row) for row in rows}
        next_start = {
            id(r[0].axes[0]): (rows[i + 1][0].axes[0].write_start if i + 1 < len(rows) else h)
            for i, r in enumerate(rows)
        }
        bar = tqdm(
            total=len(tiles),
            desc=f"predict {Path(str(name)).name}",
            unit="tile",
            disable=not progress,
            leave=False,
        )
        done = 0
        try:
            for batch, inputs in self._batches(source, tiles, stats):
                probs = self._forward(inputs, use_tta)
                for t, p in zip(batch, probs, strict=True):
                    ay = t.axes[0]
                    weight = self._weights(p.shape[1:], t)
                    where = (
                        slice(ay.write_start - top, ay.write_stop - top),
                        *(slice(a.write_start, a.write_stop) for a in t.axes[1:]),
                    )
                    part = p[(slice(None), *t.crop)]
                    if weight is None:
                        acc[(slice(None), *where)] += part
                        wsum[where] += 1
                    else:
                        acc[(slice(None), *where)] += part * weight
                        wsum[where] += weight
                    key = id(ay)
                    pending[key] -= 1
                    if pending[key] == 0:  # this row of tiles is done: rows above the next row are final
                        stop = next_start[key]
                        if stop > top:
                            n = stop - top
                            emit(top, stop, acc[:, :n] / wsum[:n])
                            acc[:, : height - n] = acc[:, n:].copy()
                            wsum[: height - n] = wsum[n:].copy()
                            acc[:, height - n :] = 0
                            wsum[height - n :] = 0
                            top = stop
                bar.update(len(batch))
                done += len(batch)
                if on_tiles is not None:
                    on_tiles(done, len(tiles))
        finally:
            bar.close()
        if top != h:  # pragma: no cover - the plan covers every row
            raise RuntimeError(f"tiling left rows {top}..{h} unwritten")

    def predict_region(
        self,
        source: np.ndarray | ImageSource,
        region: tuple[tuple[int, int], ...],
        stats: tuple[np.ndarray, np.ndarray],
        *,
        tta: bool | None = None,
    ) -> np.ndarray:
        """Probabilities ``(num_classes, *region sizes)`` of one region (``(start, stop)`` per spatial axis) of a
        ``(C, ...)`` image, equal to the same pixels of :meth:`stream` over the whole image: the region's
        share of the whole image's tiles is run and blended in the same order. The unit of work of distributed
        inference (:mod:`unetkit.inference.distributed`); ``stats`` must be the whole image's."""
        spatial = tuple(source.shape[1:])
        tiles = [
            t
            for t in self.plan(spatial)
            if all(
                a.write_start < r1 and a.write_stop > r0 for a, (r0, r1) in zip(t.axes, region, strict=True)
            )
        ]
        size = tuple(r1 - r0 for r0, r1 in region)
        acc = np.zeros((self.num_classes, *size), np.float32)
        wsum = np.zeros(size, np.float32)
        use_tta = self.tta if tta is None else tta
        for batch, inputs in self._batches(source, tiles, stats):
            for t, p in zip(batch, self._forward(inputs, use_tta), strict=True):
                weight = self._weights(p.shape[1:], t)
                part = p[(slice(None), *t.crop)]
                lo = [max(r0, a.write_start) for a, (r0, _) in zip(t.axes, region, strict=True)]
                hi = [min(r1, a.write_stop) for a, (_, r1) in zip(t.axes, region, strict=True)]
                src = tuple(
                    slice(a - ax.write_start, b - ax.write_start)
                    for a, b, ax in zip(lo, hi, t.axes, strict=True)
                )
                dst = tuple(slice(a - r0, b - r0) for a, b, (r0, _) in zip(lo, hi, region, strict=True))
                if weight is None:
                    acc[(slice(None), *dst)] += part[(slice(None), *src)]
                    wsum[dst] += 1
                else:
                    acc[(slice(None), *dst)] += part[(slice(None), *src)] * weight[src]
                    wsum[dst] += weight[src]
        return acc / wsum

    def _weights(self, out_shape: tuple[int, ...], tile: Tile) -> np.ndarray | None:
        if self.blend == "crop":
            return None
        return importance_map(out_shape, self.blend)[tile.crop]

    def _batches(
        self, source: np.ndarray | ImageSource, tiles: list[Tile], stats: tuple[np.ndarray, np.ndarray]
    ) -> Iterator[tuple[list[Tile], np.ndarray]]:
        rest = tuple(source.shape[2:])

        def windows() -> Iterator[np.ndarray]:
            # One read per row of tiles (as wide as the row's tiles reach, mirrored outside the image), then
            # tiles are cut from it in memory: every stored chunk or strip is decoded once per row of tiles.
            for row in _group_rows(tiles):
                ay = row[0].axes[0]
                lo = [min(t.axes[k].read_start for t in row) for k in range(1, len(rest) + 1)]
                hi = [max(t.axes[k].read_stop for t in row) for k in range(1, len(rest) + 1)]
                band = read_window(source, [(ay.read_start, ay.read_stop), *zip(lo, hi, strict=True)])
                for t in row:
                    cut = (
                        slice(None),
                        slice(None),
                        *(
                            slice(a.read_start - o, a.read_stop - o)
                            for a, o in zip(t.axes[1:], lo, strict=True)
                        ),
                    )
                    yield Normalizer.apply(band[cut], stats)

        def produce() -> Iterator[tuple[list[Tile], np.ndarray]]:
            it = windows()
            for batch in _batched(tiles, self.batch_size):
                yield batch, np.stack([next(it) for _ in batch])

        return _prefetched(produce(), self.prefetch) if self.prefetch else produce()

    @torch.inference_mode()
    def _forward(self, inputs: np.ndarray, tta: bool) -> np.ndarray:
        x = torch.from_numpy(inputs).to(self.device)
        if not tta:
            return self._activate(self._logits(x)).cpu().numpy()
        total: Any = None
        for k in range(4):
            for flip in (False, True):
                view = torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))
                p = torch.rot90(self._activate(self._logits(view.contiguous())), -k, dims=(-2, -1))
                p = p.flip(-1) if flip else p
                total = p if total is None else total + p
        return (total / 8).cpu().numpy()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self._memory_format is not None:
            x = x.contiguous(memory_format=self._memory_format)
        if self.precision == "bfloat16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.model(x).float()
        with autocast(self.device, self.amp):
            return self.model(x).float()

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.num_classes == 1 else torch.softmax(logits, dim=1)

    def _core_for(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Crop plan: per-axis core, as few tiles as the configured core allows, each no larger than needed.

        A 512-pixel axis with a 448-pixel core gets two 256-pixel cores rather than two 448-pixel ones.
        Valid networks keep their configured core (it fixes a valid input size).
        """
        if self.margin > 0:
            return (self.core,) * len(shape)
        cores = []
        for n in shape:
            count = -(-n // self.core)
            per_tile = -(-n // count)
            cores.append(min(self.core, -(-per_tile // self.align) * self.align))
        return tuple(cores)


def _group_rows(tiles: list[Tile]) -> list[list[Tile]]:
    rows: list[list[Tile]] = []
    for t in tiles:
        if rows and rows[-1][0].axes[0] == t.axes[0]:  # by position: tiles may be copies (pickled to workers)
            rows[-1].append(t)
        else:
            rows.append([t])
    return rows


def _batched(items: Iterable[Tile], n: int) -> Iterator[list[Tile]]:
    batch: list[Tile] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


_DONE = object()


def _prefetched(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run ``items`` in a background thread, ``depth`` items ahead; exceptions are re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=work, name="unetkit-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
