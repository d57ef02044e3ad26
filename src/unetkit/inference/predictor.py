"""Tiled prediction of images of any size with a trained model."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import build_model, load_checkpoint
from ..data.io import to_channels_first
from ..data.masks import MaskEncoding
from ..data.normalize import Normalizer
from ..device import autocast, resolve_device
from .tiling import Tile, plan_tiles, read_window

__all__ = ["Predictor"]

log = logging.getLogger(__name__)


class Predictor:
    """A model plus its preprocessing, applied tile by tile to images of any size.

    The network sees tiles of about ``tile`` x ``tile`` pixels; padded (``"same"``) networks get ``halo``
    extra pixels of context per side that are computed and discarded, unpadded (``"valid"``) networks get
    exactly their own margin. Context outside the image is mirrored (paper Fig. 2). Tiles start on the
    network's pooling grid, so a valid network's tiled output equals its output on the whole
    (mirror-extended) image.

    Example:
        >>> predictor = Predictor.from_checkpoint("run/best.pt")
        >>> mask = predictor.predict(image)             # (H, W) uint8 labels
        >>> probs = predictor.predict_proba(image)      # (C, H, W) float32
        >>> probs = predictor.predict_proba(image, tta=True)  # averaged over 8 flips/rotations
    """

    def __init__(
        self,
        model: nn.Module,
        preprocessing: dict[str, Any],
        *,
        device: str | torch.device = "auto",
        tile: int = 512,
        halo: int | None = None,
        batch_size: int = 4,
        threshold: float = 0.5,
        amp: bool = True,
        tta: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.preprocessing = dict(preprocessing)
        self.normalizer = Normalizer.from_dict(self.preprocessing["normalization"])
        self.batch_size = max(1, int(batch_size))
        self.threshold = float(threshold)
        self.tta = tta
        self.amp = amp
        self.num_classes: int = model.num_classes  # type: ignore[assignment]
        depth: int = model.depth  # type: ignore[assignment]
        self.align = 2**depth
        self.margin: int = model.margin  # type: ignore[assignment]
        if model.padding == "valid":
            self.halo = 0
            self.tile_in = model.geometry.fit(tile)  # type: ignore[union-attr]
            self.core = model.output_size(self.tile_in)  # type: ignore[operator]
        else:
            self.halo = 32 if halo is None else int(halo)
            self.tile_in = max(tile, 2 * self.halo + self.align)
            self.tile_in -= self.tile_in % self.align
            self.core = self.tile_in - 2 * self.halo
        if self.core < self.align:
            raise ValueError(f"tile {tile} leaves no room inside a halo of {self.halo}; use a larger --tile")

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs: Any) -> Predictor:
        """Load a checkpoint written by :func:`unetkit.train` (safe loading, see ``load_checkpoint``)."""
        payload = load_checkpoint(path)
        return cls(build_model(payload, path), payload["preprocessing"], **kwargs)

    @property
    def in_channels(self) -> int:
        return int(self.preprocessing["in_channels"])

    @property
    def encoding(self) -> MaskEncoding:
        """The training masks' encoding: predicted class indices are written back in it."""
        return MaskEncoding.from_dict(self.preprocessing.get("encoding") or {"name": "binary"})

    def prepare(self, image: np.ndarray, name: str | Path = "image") -> np.ndarray:
        """Raw ``(H, W[, C])`` image → normalised float32 ``(C, H, W)``, exactly as in training."""
        chw = to_channels_first(np.asarray(image), self.in_channels, name)
        return self.normalizer(chw)

    def to_mask(self, labels: np.ndarray) -> np.ndarray:
        """Class indices → the mask written to disk: 0/255 for a binary model, else the training encoding."""
        if self.num_classes == 1:
            return labels * np.uint8(255)
        return self.encoding.decode(labels)

    def predict_proba(
        self,
        image: np.ndarray,
        name: str | Path = "image",
        *,
        prepared: bool = False,
        tta: bool | None = None,
    ) -> np.ndarray:
        """Class probabilities ``(C, H, W)`` (``C = 1``: foreground probability of a binary model).

        ``tta`` (default: the predictor's ``tta``): average the probabilities over the 8 flips and 90-degree
        rotations of the image (the paper averaged rotated versions), each mapped back, before thresholding.
        """
        x = image if prepared else self.prepare(image, name)
        if not (self.tta if tta is None else tta):
            return self._predict_tiles(x)
        total = np.zeros((self.num_classes, *x.shape[-2:]), np.float64)
        for k in range(4):
            for flip in (False, True):
                view = np.rot90(x[..., ::-1] if flip else x, k, axes=(-2, -1))
                probs = np.rot90(self._predict_tiles(np.ascontiguousarray(view)), -k, axes=(-2, -1))
                total += probs[..., ::-1] if flip else probs
        return (total / 8).astype(np.float32)

    @torch.inference_mode()
    def _predict_tiles(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[-2:]
        out = np.zeros((self.num_classes, h, w), np.float32)
        tiles = plan_tiles((h, w), self._core_for((h, w)), self.halo, self.margin, self.align)
        for batch in _batched(tiles, self.batch_size):
            inputs = np.stack([read_window(x, t.read) for t in batch])
            tensor = torch.from_numpy(inputs).to(self.device)
            with autocast(self.device, self.amp):
                logits = self.model(tensor)
            probs = self._activate(logits.float()).cpu().numpy()
            for t, p in zip(batch, probs, strict=True):
                out[(slice(None), *t.write)] = p[(slice(None), *t.crop)]
        return out

    def predict(self, image: np.ndarray, name: str | Path = "image") -> np.ndarray:
        """Label image ``(H, W)`` uint8: 0/1 for a binary model (probability >= threshold), else argmax."""
        return self.to_labels(self.predict_proba(image, name))

    def to_labels(self, probs: np.ndarray) -> np.ndarray:
        if self.num_classes == 1:
            return (probs[0] >= self.threshold).astype(np.uint8)
        return probs.argmax(axis=0).astype(np.uint8)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.num_classes == 1 else torch.softmax(logits, dim=1)

    def _core_for(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-axis core size: as few tiles as the configured core allows, each no larger than needed.

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


def _batched(items: Iterable[Tile], n: int) -> Iterator[list[Tile]]:
    batch: list[Tile] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
