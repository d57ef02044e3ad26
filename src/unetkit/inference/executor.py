"""The stream executor: normalised windows in, blended class probabilities out, in bounded memory.

A :class:`TileExecutor` owns the network as it runs (device, precision, memory layout, folded batch norms,
compilation) and the tile geometry. Tiles are read lazily from the image (a NumPy array or an on-disk
:class:`~unetkit.data.lazy.ImageSource`), normalised, batched by a prefetch thread while the model runs, and
accumulated into a band of rows that holds one row of tiles; rows that no later tile touches are final and
handed to a callback. Memory is therefore bounded by the tile batch and the image *width*, never by its height.
It knows nothing of checkpoints, rescaling or what the probabilities mean (see :mod:`.predictor`).
"""

from __future__ import annotations

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

from ..config import BLENDS, DEFAULT_TILE, PRECISIONS, PredictConfig, check_values
from ..data.lazy import ImageSource
from ..data.normalize import Normalizer
from ..device import autocast, compile_model, cpu_has_native_bf16, resolve_device
from ..errors import ConfigError, DataError
from ..memory import available_memory
from ..models.blocks import fold_batch_norms
from .blending import BLEND_MODES, importance_map
from .tiling import Tile, plan_blend_tiles, plan_tiles, read_window

__all__ = ["MAX_TILES", "RowsCallback", "Stats", "TileExecutor", "available_memory", "resolve_precision"]

assert BLENDS == (*BLEND_MODES, "crop"), "config.BLENDS lists the blending modes and crop"

RowsCallback = Callable[[int, int, np.ndarray], None]
#: per-channel normalisation ``(offset, scale)``
Stats = tuple[np.ndarray, np.ndarray]

#: the context a 2-D network gets at an image's border (mirrored) and, by default, at every tile's edge (each
#: tile reaches this far into its neighbours), in pooling cells of the network: 64 px at depth 4. Measured with
#: the built-in model on 1024² images of seven styles (one pass over the whole image against a 512² crop of it):
#: at a tile's edge 5% of pixels change class, 0.43% at 32 px from it, 0.18% at 64, none from 88 px on; blended
#: with the neighbour's Gaussian weights, a 4096² mask differs from the 25%-overlap plan's on 0.006% of pixels
#: (``make bench-tiling``)
BORDER_CELLS = 4
#: the overlap of tiles of ``tile`` pixels when the network's context does not set it (3-D, crop, ``--overlap``)
FIXED_OVERLAP = 0.25
MAX_TILES = 10_000_000  # tiles of one image in one process (the tile list is built before the first tile)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bfloat16 on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX), where it runs a
    U-Net about twice as fast as float32; float32 elsewhere (on CUDA, ``amp`` chooses mixed precision)."""
    if precision != "auto":
        return precision
    if device.type == "cpu":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return "float32"


class TileExecutor:
    """Run ``model`` over an image tile by tile (see the module's docstring).

    Padded (``"same"``) networks see overlapping ``tile`` x ``tile`` tiles (neighbours overlap by
    ``overlap`` x ``tile`` pixels, and the image is mirror-extended by half that at its borders) whose
    outputs are averaged with an importance map (``blend``: ``gaussian``, ``taper`` or ``constant``), or, with
    ``blend="crop"``, cut at the middle of each overlap. ``overlap=None`` (the default) for 2-D blending: the
    overlap is what the network needs, its context (:data:`BORDER_CELLS` pooling cells) on each side of a
    seam, whatever the tile, and each image gets the fewest tiles of at most the pixels of one batch of
    ``tile`` x ``tile`` (``batch_size`` of them), as small as cover it: on a 4096² image a quarter fewer
    pixels computed than tiles of ``tile`` overlapping by a quarter (:meth:`auto_sides`); ``pass_pixels``, when given,
    replaces that bound (``--engine auto`` measures it: :func:`~.engines.choose_pass`). Unpadded
    (``"valid"``) networks get each output tile's exact context, mirrored outside the image; tiles start on the pooling grid, so their tiled output
    equals a full-image pass exactly. ``channels_last``, ``fuse`` and ``compile`` change the model in place:
    only for models the caller owns.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        in_channels: int,
        device: str | torch.device,
        tile: int | None,
        overlap: float | None,
        blend: str | None,
        batch_size: int,
        amp: bool,
        precision: str,
        channels_last: bool,
        prefetch: int,
        fuse: bool,
        compile: bool,
        pass_pixels: int | None = None,
    ) -> None:
        check_values("predict", {"overlap": overlap, "tile": tile, "batch_size": batch_size}, PredictConfig)
        if blend is not None and blend not in BLENDS:
            raise ConfigError(f"--blend {blend!r} is unknown; choose one of {', '.join(BLENDS)}")
        tile = DEFAULT_TILE if tile is None else tile  # a bare network records no training patch
        if precision not in PRECISIONS:
            raise ConfigError(f"--precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.in_channels = int(in_channels)
        self.batch_size = int(batch_size)
        self.amp = amp
        self.precision = resolve_precision(precision, self.device)
        owned = any(True for _ in self.model.parameters())
        # channels-last is the layout oneDNN and cuDNN convolve fastest; it converts the model's weights in
        # place, so only models the caller owns (from_checkpoint) are converted, never a training model
        self.memory_format: torch.memory_format | None = None
        if channels_last and owned:
            fmt = torch.channels_last if getattr(model, "spatial_dims", 2) == 2 else torch.channels_last_3d
            self.model = self.model.to(memory_format=fmt)  # type: ignore[call-overload]
            self.memory_format = fmt
        if fuse and owned:  # folding batch norms into the convolutions also changes the model in place
            fold_batch_norms(self.model)
        self.compiled = bool(compile)
        if self.compiled:
            self.model = compile_model(self.model)
        self.prefetch = max(0, int(prefetch))
        self.num_classes: int = model.num_classes  # type: ignore[assignment]
        self.spatial_dims: int = getattr(model, "spatial_dims", 2)
        net: Any = model
        self.overlap = FIXED_OVERLAP if overlap is None else float(overlap)
        depth: int = model.depth  # type: ignore[assignment]
        self.align = 2**depth
        self.margin: int = model.margin  # type: ignore[assignment]
        if net.padding == "valid":
            self.blend = "crop"
            self.halo = 0
            self.tile_in = net.geometry.fit(tile)
            self.core = net.output_size(self.tile_in)
        else:
            self.blend = blend or "gaussian"
            self.tile_in = max(self.align, tile // self.align * self.align)
            # half an overlap, on the pooling grid: where the crop blend cuts tiles
            self.halo = -(-round(self.overlap * self.tile_in / 2) // self.align) * self.align
            self.core = self.tile_in - 2 * self.halo
            if self.blend == "crop" and self.core < self.align:
                raise ConfigError(
                    f"--tile {tile} with --overlap {overlap} leaves no tile core; use a larger --tile"
                )
        # mirrored context at the image border (blend plans only): for 2-D networks BORDER_CELLS pooling cells
        # whatever the tile, so an image one tile covers is segmented alike at every --tile. Measured with the
        # built-in model on 256² images of the style-shift suite: without context (--tile 256, the tile of a
        # model fine-tuned on 128² patches) F1@0.5 0.904 on `uneven` and 0.954 on `dim16`, with 64 px (--tile
        # 512) 0.924 and 0.959. Volumes keep half an overlap: each axis's context multiplies their compute, and
        # it was not measured there.
        self.context = self.halo if self.spatial_dims != 2 else BORDER_CELLS * self.align
        #: the bound of one forward pass's pixels in the default plan: ``pass_pixels`` (``--engine auto``
        #: measures it), else those of ``batch_size`` tiles of ``tile``
        self.pass_pixels = int(pass_pixels) if pass_pixels else self.tile_in**2 * self.batch_size
        self.max_side = max(self.align, math.isqrt(self.pass_pixels) // self.align * self.align)
        #: tiles sized per image, overlapping by the network's context (``overlap=None``, 2-D blending, and
        #: tiles large enough to leave room beside the seams)
        self.auto = (
            overlap is None
            and self.spatial_dims == 2
            and self.blend != "crop"
            and self.max_side >= 4 * self.context
        )

    # -- sizes ------------------------------------------------------------------------------------------
    def check_size(
        self, shape: tuple[int, ...], name: str | Path, max_memory_gib: float | None = None
    ) -> None:
        """Refuse, before anything is allocated, an image whose streaming needs more than ``max_memory_gib``
        GiB (default: half the memory available now) or more than :data:`MAX_TILES` tiles. Memory grows with
        the image's width (one full-width row of tiles is held), not its height."""
        if not shape or min(shape) < 1:
            raise DataError(f"{name}: {'x'.join(map(str, shape))} pixels: an image without pixels")
        tiles = self._tile_count(shape)
        if tiles > MAX_TILES:
            raise DataError(
                f"{name}: {'x'.join(map(str, shape))} pixels make {tiles:,} tiles (at most {MAX_TILES:,} in one "
                "process): use --dask to split it into chunks, or a larger --tile"
            )
        network = self.network_bytes(shape)
        need = self.streamed_bytes(shape) + network
        limit = max_memory_gib * 2**30 if max_memory_gib is not None else available_memory() / 2
        if network > limit:
            raise DataError(
                f"{name}: a batch of {min(self.batch_for(self._tile_sides(shape)), tiles)} tile(s) of {'x'.join(map(str, self._tile_sides(shape)))} pixels needs at "
                f"least {network / 2**30:.1f} GiB inside the network, more than {limit / 2**30:.1f} GiB "
                f"({'--max-memory-gib' if max_memory_gib is not None else 'half the available memory'}); use a "
                "smaller --tile or --batch"
            )
        if need > limit:
            raise DataError(
                f"{name}: {'x'.join(map(str, shape))} pixels: one row of tiles needs {need / 2**30:.1f} GiB, more "
                f"than {limit / 2**30:.1f} GiB ({'--max-memory-gib' if max_memory_gib is not None else 'half the available memory'}); "
                "use --dask (chunks in both directions), a smaller --tile, or raise --max-memory-gib"
            )

    def streamed_bytes(self, shape: tuple[int, ...]) -> int:
        """Bytes that grow with an image of spatial ``shape`` when it is streamed: one full-width row of tiles
        (input, probability sums and weights, classes). The network's own working memory comes on top."""
        if self.auto:  # the bound of every image at least this tall: grows with the image, never falls
            rows = min(self.max_side, -(-(shape[0] + 2 * self.context) // self.align) * self.align)
        else:
            rows = self._tile_sides(shape)[0]
        return rows * math.prod(shape[1:]) * 4 * (2 * (self.num_classes + 1) + self.in_channels + 1)

    def network_bytes(self, shape: tuple[int, ...]) -> int:
        """A lower bound of the network's own memory for one batch of the tiles an image of spatial ``shape``
        gets: the first level's two feature maps of every tile in the batch, float32 (the input channels
        alone for a model whose width is not recorded: an ONNX file)."""
        width = int((getattr(self.model, "hparams", None) or {}).get("base_channels") or self.in_channels)
        sides = self._tile_sides(shape)
        return 2 * 4 * width * math.prod(sides) * min(self.batch_for(sides), self._tile_count(shape))

    def _tile_count(self, shape: tuple[int, ...]) -> int:
        """About how many tiles an image of spatial ``shape`` gets (without planning them)."""
        if self.auto:
            return math.prod(count for _, count in self.auto_sides(shape))
        step = max(1, self.core if self.blend == "crop" else round(self.tile_in * (1 - self.overlap)))
        return math.prod(max(1, -(-n // step)) for n in shape)

    def auto_sides(self, shape: tuple[int, ...]) -> list[tuple[int, int]]:
        """Per axis of an image of spatial ``shape``, the side and number of the tiles of the default plan: the
        axis and its border context (:attr:`context` on each side) covered by the fewest tiles of at most
        :attr:`max_side` pixels that overlap by twice the context, each as small as that allows (on the
        pooling grid). A 4096-pixel axis at depth 4 (context 64, at most 1024) gets 5 tiles of 960 pixels
        where tiles of 512 overlapping by 128 take 11; an 880-pixel axis one tile of 1008."""
        seam = 2 * self.context
        sides = []
        for n in shape:
            need = n + 2 * self.context
            count = 1 if need <= self.max_side else -(-(need - seam) // (self.max_side - seam))
            side = -(-(need + (count - 1) * seam) // count)
            sides.append((-(-side // self.align) * self.align, count))
        return sides

    def batch_for(self, sides: tuple[int, ...]) -> int:
        """Tiles per forward pass for tiles of ``sides``: ``batch_size``, or with the default plan as many as
        fit the pixels of ``batch_size`` tiles of ``tile`` (at least one)."""
        if not self.auto:
            return self.batch_size
        return max(1, self.pass_pixels // math.prod(sides))

    def _tile_sides(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The largest tile the plan makes for an image of spatial ``shape``, per axis: an axis one tile covers
        gets one tile of its length and the border context on both sides (smaller than ``tile`` on small images,
        larger by at most twice the context on images of about a tile), a longer one tiles of ``tile``."""
        if self.blend == "crop":
            return (self.tile_in,) * len(shape)
        if self.auto:
            return tuple(side for side, _ in self.auto_sides(shape))
        whole = [-(-(n + 2 * self.context) // self.align) * self.align for n in shape]
        return tuple(w if n <= self.tile_in else self.tile_in for n, w in zip(shape, whole, strict=True))

    def plan(self, shape: tuple[int, ...]) -> list[Tile]:
        """The tiles for an image of spatial ``shape`` (row-major order)."""
        if self.blend == "crop":
            return plan_tiles(shape, self._core_for(shape), self.halo, self.margin, self.align)
        sides = list(self._tile_sides(shape))
        # the default plan: neighbours overlap by twice the context, whatever their side
        overlap = [2 * self.context / s for s in sides] if self.auto else self.overlap
        return plan_blend_tiles(shape, sides, overlap, [self.context] * len(shape), self.align)

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

    # -- running ----------------------------------------------------------------------------------------
    def stream(
        self,
        source: np.ndarray | ImageSource,
        emit: RowsCallback,
        stats: Stats,
        *,
        tta: bool = False,
        progress: bool = False,
        name: str | Path = "image",
        on_tiles: Callable[[int, int], None] | None = None,
    ) -> None:
        """Predict a ``(C, H, W)`` image or ``(C, D, H, W)`` volume (array or lazy source, raw pixels, normalised
        with ``stats``) and hand final probability rows (slices) to ``emit(y0, y1, probs)`` in order (``probs``:
        ``(num_classes, y1 - y0, *rest)`` float32). ``on_tiles(done, total)`` after every batch of tiles (a
        GUI's progress bar; an exception it raises, e.g. on Cancel, stops the run there)."""
        spatial = tuple(source.shape[1:])
        h, rest = spatial[0], spatial[1:]
        tiles = self.plan(spatial)
        rows = _group_rows(tiles)
        height = max(t.axes[0].write_stop - t.axes[0].write_start for t in tiles)
        band = _Band(self.num_classes, height, rest)
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
                for t, p in zip(batch, self.forward(inputs, tta), strict=True):
                    band.add(t, p, self._weights(p.shape[1:], t))
                    key = id(t.axes[0])
                    pending[key] -= 1
                    if pending[key] == 0:  # this row of tiles is done: rows above the next row are final
                        band.release(next_start[key], emit)
                bar.update(len(batch))
                done += len(batch)
                if on_tiles is not None:
                    on_tiles(done, len(tiles))
        finally:
            bar.close()
        if band.top != h:  # pragma: no cover - the plan covers every row
            raise RuntimeError(f"tiling left rows {band.top}..{h} unwritten")

    def predict_region(
        self,
        source: np.ndarray | ImageSource,
        region: tuple[tuple[int, int], ...],
        stats: Stats,
        *,
        tta: bool = False,
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
        for batch, inputs in self._batches(source, tiles, stats):
            for t, p in zip(batch, self.forward(inputs, tta), strict=True):
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
        self, source: np.ndarray | ImageSource, tiles: list[Tile], stats: Stats
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
            for batch in _batched(tiles, self.batch_for(self._tile_sides(tuple(source.shape[1:])))):
                yield batch, np.stack([next(it) for _ in batch])

        return _prefetched(produce(), self.prefetch) if self.prefetch else produce()

    @torch.inference_mode()
    def forward(self, inputs: np.ndarray, tta: bool = False) -> np.ndarray:
        """Class probabilities of a batch of normalised tiles; ``tta``: averaged over the 8 flips and
        90-degree rotations."""
        x = torch.from_numpy(inputs).to(self.device)
        if not tta:
            return self.activate(self._logits(x)).cpu().numpy()
        total: Any = None
        for k in range(4):
            for flip in (False, True):
                view = torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))
                p = torch.rot90(self.activate(self._logits(view.contiguous())), -k, dims=(-2, -1))
                p = p.flip(-1) if flip else p
                total = p if total is None else total + p
        return (total / 8).cpu().numpy()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        if self.precision == "bfloat16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.model(x).float()
        with autocast(self.device, self.amp):
            return self.model(x).float()

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits → probabilities: sigmoid for one output channel, softmax over classes otherwise."""
        return torch.sigmoid(logits) if self.num_classes == 1 else torch.softmax(logits, dim=1)


class _Band:
    """The rows of probability sums and weights that one row of tiles writes to: final rows are handed on
    (``release``) and the band moves down the image."""

    def __init__(self, num_classes: int, height: int, rest: tuple[int, ...]) -> None:
        self.acc = np.zeros((num_classes, height, *rest), np.float32)
        self.wsum = np.zeros((height, *rest), np.float32)
        self.height = height
        self.top = 0  # image row (volume slice) of acc[:, 0]

    def add(self, t: Tile, p: np.ndarray, weight: np.ndarray | None) -> None:
        ay = t.axes[0]
        where = (
            slice(ay.write_start - self.top, ay.write_stop - self.top),
            *(slice(a.write_start, a.write_stop) for a in t.axes[1:]),
        )
        part = p[(slice(None), *t.crop)]
        if weight is None:
            self.acc[(slice(None), *where)] += part
            self.wsum[where] += 1
        else:
            self.acc[(slice(None), *where)] += part * weight
            self.wsum[where] += weight

    def release(self, stop: int, emit: RowsCallback) -> None:
        """Hand rows ``top..stop`` (final: no later tile reaches them) to ``emit`` and shift the band."""
        if stop <= self.top:
            return
        n, height = stop - self.top, self.height
        emit(self.top, stop, self.acc[:, :n] / self.wsum[:n])
        self.acc[:, : height - n] = self.acc[:, n:].copy()
        self.wsum[: height - n] = self.wsum[n:].copy()
        self.acc[:, height - n :] = 0
        self.wsum[height - n :] = 0
        self.top = stop


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
