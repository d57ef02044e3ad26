"""Overlap-tile geometry, kept pure: no model, no I/O.

A tile has a *read window* (the network's input: its output window plus context on every side, which may
reach beyond the image, where it is filled by mirroring, paper Fig. 2) and a *write window* (the part of
the image this tile is responsible for). Write windows partition the image: every pixel is written exactly
once, from inside its tile's valid (non-halo) region.

Per axis, with ``core`` the number of output pixels a tile keeps, ``halo`` extra output pixels computed and
discarded at each side (to hide border effects of padded networks), and ``margin`` the context a
``valid`` network consumes: the read window is ``[s - halo - margin, s + core + halo + margin)``. Tile starts
``s`` are multiples of ``align`` (``2**depth`` keeps every tile on the same pooling grid as a full-image
pass), spaced by the largest multiple of ``align`` not above ``core``. This *crop* plan is used for valid
networks (their tiled output equals a full-image pass exactly) and on request for padded ones.

:func:`plan_blend_axis` is the *blend* plan for padded networks: overlapping tiles of one size, spaced
evenly so that the first starts up to ``context`` pixels before the image and the last ends flush as far
after it; each tile writes its whole output, weighted by an importance map
(:mod:`unetkit.inference.blending`), and overlapping writes are averaged.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from ..data.windows import read_window, reflect_indices

__all__ = [
    "AxisTile",
    "Tile",
    "plan_axis",
    "plan_blend_axis",
    "plan_blend_tiles",
    "plan_tiles",
    "read_window",
    "reflect_indices",
]


@dataclass(frozen=True)
class AxisTile:
    read_start: int  # network input window, image coordinates (may be < 0 or > length)
    read_stop: int
    write_start: int  # image pixels this tile writes
    write_stop: int
    crop_start: int  # where write_start lies in the network's output for this tile


@dataclass(frozen=True)
class Tile:
    """One N-D tile: the product of one :class:`AxisTile` per spatial axis."""

    axes: tuple[AxisTile, ...]

    @property
    def read(self) -> tuple[tuple[int, int], ...]:
        return tuple((a.read_start, a.read_stop) for a in self.axes)

    @property
    def write(self) -> tuple[slice, ...]:
        return tuple(slice(a.write_start, a.write_stop) for a in self.axes)

    @property
    def crop(self) -> tuple[slice, ...]:
        return tuple(slice(a.crop_start, a.crop_start + a.write_stop - a.write_start) for a in self.axes)


def plan_axis(length: int, core: int, halo: int = 0, margin: int = 0, align: int = 1) -> list[AxisTile]:
    """Tiles along one axis of ``length`` pixels (see the module docstring for the terms)."""
    if length < 1 or core < 1 or halo < 0 or margin < 0 or align < 1:
        raise ValueError(f"bad tiling: length={length} core={core} halo={halo} margin={margin} align={align}")
    step = max(align, core // align * align)
    if step > core:
        raise ValueError(f"tile core {core} is smaller than the alignment {align}")
    count = 1 if length <= core else -(-(length - core) // step) + 1
    starts = [i * step for i in range(count)]
    # Split each overlap in the middle so that write windows partition [0, length).
    bounds = [0] + [(starts[i + 1] + starts[i] + core) // 2 for i in range(count - 1)] + [length]
    context = halo + margin
    return [
        AxisTile(
            read_start=s - context,
            read_stop=s + core + context,
            write_start=bounds[i],
            write_stop=bounds[i + 1],
            crop_start=bounds[i] - s + halo,
        )
        for i, s in enumerate(starts)
    ]


def plan_blend_axis(
    length: int, size: int, overlap: float, context: int = 0, align: int = 1
) -> list[AxisTile]:
    """Overlapping tiles of ``size`` pixels (network input = output) along an axis of ``length`` pixels.

    The image is covered by the fewest tiles whose neighbours overlap by at least ``overlap * size`` pixels,
    spaced evenly. Where that grid leaves room, up to ``context`` pixels of mirrored context are added at both
    image borders (never an extra tile for it): the first tile starts at ``-c`` and the last ends flush with
    ``length + c`` (to within ``align``), ``c <= context``. Tile starts are multiples of ``align`` (``context``
    and ``size`` must be), so every tile sits on the pooling grid of a full-image pass: a padded U-Net is only
    shift-equivariant by multiples of ``2**depth``. Each tile writes its part inside the image.
    """
    if length < 1 or size < 1 or context < 0 or not 0 <= overlap < 1 or align < 1:
        raise ValueError(
            f"bad tiling: length={length} size={size} overlap={overlap} context={context} align={align}"
        )
    if context % align or size % align:
        raise ValueError(f"context {context} and size {size} must be multiples of align {align}")
    # in units of align; rounded first, so an overlap of 128 / 960 steps 832 pixels, not int(831.99...)
    step = max(1, int(round(size * (1 - overlap), 6)) // align)

    def last_start(c: int) -> int:  # (last tile start + c) in units of align
        return max(0, -(-(length + c - size) // align) + c // align)

    def count(c: int) -> int:
        return 1 if last_start(c) == 0 else -(-last_start(c) // step) + 1

    c = context
    while c > 0 and count(c) > count(0):
        c -= align
    n, last = count(c), last_start(c)
    starts = [align * round(i * last / (n - 1)) - c if n > 1 else -c for i in range(n)]
    tiles = []
    for s in starts:
        lo, hi = max(0, s), min(length, s + size)
        tiles.append(AxisTile(s, s + size, lo, hi, lo - s))
    return tiles


def plan_tiles(
    shape: Sequence[int], core: Sequence[int], halo: int = 0, margin: int = 0, align: int = 1
) -> list[Tile]:
    """All crop-plan tiles of an image of spatial ``shape`` (row-major order)."""
    per_axis = [plan_axis(n, c, halo, margin, align) for n, c in zip(shape, core, strict=True)]
    return [Tile(axes) for axes in itertools.product(*per_axis)]


def plan_blend_tiles(
    shape: Sequence[int],
    size: Sequence[int],
    overlap: float | Sequence[float],
    context: Sequence[int],
    align: int = 1,
) -> list[Tile]:
    """All blend-plan tiles of an image of spatial ``shape`` (row-major order); ``overlap`` for every axis or
    one per axis."""
    overlaps = [overlap] * len(shape) if isinstance(overlap, (int, float)) else list(overlap)
    per_axis = [
        plan_blend_axis(n, s, o, c, align) for n, s, o, c in zip(shape, size, overlaps, context, strict=True)
    ]
    return [Tile(axes) for axes in itertools.product(*per_axis)]
