"""Instance labels computed inside the network's graph, for models that travel (bioimage.io packages).

A consumer such as deepImageJ, QuPath or ilastik runs a package's TorchScript or ONNX weights and nothing else:
it cannot run unetkit's SciPy watershed. :class:`UNetInstances` therefore adds a second output to the U-Net,
finished instance labels, built only from tensor operations that TorchScript and ONNX express (shifts, max,
where, gather, scatter-add, cumulative sum), unrolled a fixed number of times so the graph has no loop:

1. the distance transform of the mask (the interior class of a border model, the foreground of a binary one):
   how many erosions each pixel survives, alternating 4- and 8-connected steps, capped at ``reach`` pixels,
   smoothed with a Gaussian of sigma 1 (as unetkit's step smooths the Euclidean one);
2. seeds at its local maxima within ``min_distance`` pixels, numbered by connected components (4-connected,
   as ``scipy.ndimage.label``): every pixel takes the largest "representative" in reach (``H*W - raster
   index``: a component's first pixel wins) by ``iterations`` rounds of a neighbour step, hooking (a
   representative takes the largest label its pixels see) and pointer jumping, which converges in about
   log2 of an object's length rounds (8 on 2048² maze-like masks);
3. flooding from the seeds level by level down the distance (three 4-connected steps per level, the first
   object wins a pixel two reach at once), then seed-less pieces as objects of their own; objects under
   ``min_size`` pixels dropped; a border model's objects grown ``grow`` pixels over the predicted border,
   never into background;
4. labels renumbered 1..N in raster order of each object's first pixel (unetkit's numbering).

On the built-in model's validation images (16 synthetic 256² images) the in-graph labels score F1@0.5
0.845 against unetkit's SciPy step's 0.841 (style-shifted set: 0.304 against 0.292).

Exact per tile, not across tiles: a consumer that cuts a large image into tiles gets objects cut and numbered
per tile. Objects longer than the rounds reach (thin spirals) can be split in two.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .unet import UNet

__all__ = ["UNetInstances", "instance_labels"]


def _shifted(x: torch.Tensor, value: int) -> list[torch.Tensor]:
    """The 4 neighbours of every pixel of ``x`` (N, 1, H, W), ``value`` beyond the image edge."""
    p = F.pad(x, (1, 1, 1, 1), value=value)
    return [p[:, :, :-2, 1:-1], p[:, :, 2:, 1:-1], p[:, :, 1:-1, :-2], p[:, :, 1:-1, 2:]]


def _neighbour_max(x: torch.Tensor) -> torch.Tensor:
    a, b, c, d = _shifted(x, 0)
    return torch.maximum(torch.maximum(a, b), torch.maximum(c, d))


def _erode(mask: torch.Tensor, steps: int) -> torch.Tensor:
    """4-connected erosion; the image edge does not erode (objects cut by the edge keep their size)."""
    for _ in range(steps):
        x = mask.to(torch.uint8)
        a, b, c, d = _shifted(x, 1)
        mask = (x * a * b * c * d) > 0
    return mask


def _flat(ids: torch.Tensor) -> torch.Tensor:
    return ids.reshape(ids.shape[0], -1)


def _jump(ids: torch.Tensor) -> torch.Tensor:
    """Every labelled pixel adopts its representative's label when larger (pointer jumping)."""
    flat = _flat(ids)
    n = flat.shape[1]
    hop = flat.gather(1, (n - flat).clamp(0, n - 1))
    return torch.where(flat > 0, torch.maximum(flat, hop), flat).reshape(ids.shape)


def _components(mask: torch.Tensor, iterations: int) -> torch.Tensor:
    """Representatives (int64, 0 = background) of the 4-connected components of ``mask`` (N, 1, H, W)."""
    flat = _flat(mask)
    n = flat.shape[1]
    order = torch.arange(n, 0, -1, device=mask.device, dtype=torch.int64).expand(flat.shape[0], n)
    ids = torch.where(flat, order, torch.zeros_like(order)).reshape(mask.shape)
    for _ in range(iterations):
        ids = _jump(_jump(_hook(ids, torch.where(mask, torch.maximum(ids, _neighbour_max(ids)), ids))))
    return ids


def _hook(ids: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Every pixel takes its ``candidate`` label, and every representative the largest candidate among the pixels
    it represents (so a whole tree joins a larger neighbour at once, not pixel by pixel)."""
    flat, cand = _flat(ids), _flat(candidate)
    n = flat.shape[1]
    slot = torch.where(flat > 0, n - flat, torch.full_like(flat, n))
    best = torch.zeros(flat.shape[0], n + 1, dtype=flat.dtype, device=flat.device)
    best = best.scatter_reduce(1, slot, cand, reduce="amax")[:, :n]
    return torch.maximum(cand, best).reshape(ids.shape)


def _grow(ids: torch.Tensor, within: torch.Tensor, steps: int) -> torch.Tensor:
    """Unlabelled ``within`` pixels take a labelled neighbour's label, ``steps`` times (the first object wins a
    pixel two objects reach at once)."""
    for _ in range(steps):
        ids = torch.where((ids == 0) & within, _neighbour_max(ids), ids)
    return ids


def _sizes_at(ids: torch.Tensor) -> torch.Tensor:
    """The size of the object every pixel belongs to (0 for background)."""
    flat = _flat(ids)
    n = flat.shape[1]
    slot = torch.where(flat > 0, n - flat, torch.full_like(flat, n))  # background counts in slot n
    sizes = torch.zeros(flat.shape[0], n + 1, dtype=torch.int64, device=ids.device)
    sizes = sizes.scatter_add(1, slot, torch.ones_like(flat))
    return sizes.gather(1, slot).reshape(ids.shape)


def _renumber(ids: torch.Tensor) -> torch.Tensor:
    """Representatives → 1..N in raster order of each object's first pixel (int32)."""
    flat = _flat(ids)
    n = flat.shape[1]
    slot = torch.where(flat > 0, n - flat, torch.full_like(flat, n))
    present = torch.zeros(flat.shape[0], n + 1, dtype=torch.int64, device=ids.device)
    present = present.scatter(1, slot, torch.ones_like(flat))[:, :n]
    rank = torch.cumsum(present, dim=1)
    labels = rank.gather(1, slot.clamp(0, n - 1))
    return torch.where(flat > 0, labels, torch.zeros_like(labels)).to(torch.int32).reshape(ids.shape)


def _distance(mask: torch.Tensor, reach: int) -> torch.Tensor:
    """How many erosions each ``mask`` pixel survives, up to ``reach``, alternating 4- and 8-connected
    steps (an octagonal approximation of the Euclidean distance to the background)."""
    dist = mask.to(torch.float32)
    x = mask
    for k in range(reach - 1):
        if k % 2:
            x = (-F.max_pool2d(-x.to(torch.float32), 3, 1, 1)) > 0  # edge: -inf padding never erodes
        else:
            x = _erode(x, 1)
        dist = dist + x.to(torch.float32)
    return dist


def _gaussian(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    r = math.ceil(3 * sigma)
    g = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma * sigma))
    g = g / g.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.reshape(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.reshape(1, 1, -1, 1))


def _watershed(mask: torch.Tensor, min_distance: int, reach: int, iterations: int) -> torch.Tensor:
    """unetkit's distance-transform watershed in tensor operations: seeds at the local maxima (within
    ``min_distance``) of the smoothed distance transform, flooded level by level downwards, then seed-less
    pieces of the mask as objects of their own."""
    dist = _gaussian(_distance(mask, reach)) * mask
    peak = mask & (dist >= 1.0) & (dist >= F.max_pool2d(dist, 2 * min_distance + 1, 1, min_distance))
    ids = _components(peak, iterations)
    for level in range(reach, -1, -1):
        ids = _grow(ids, mask & (dist >= float(level)), 3)
    ids = _grow(ids, mask, 2)
    rest = _components(mask & (ids == 0), iterations)
    return torch.where(ids > 0, ids, rest)


def instance_labels(
    logits: torch.Tensor,
    *,
    method: str,
    threshold: float = 0.5,
    min_size: int = 8,
    grow: int = 2,
    min_distance: int = 3,
    reach: int = 16,
    iterations: int = 10,
) -> torch.Tensor:
    """Network logits ``(N, C, H, W)`` → instance labels ``(N, 1, H, W)`` int32 (see the module docstring).
    ``method``: ``interior`` (3 classes: background, interior, border) or ``watershed`` (binary: one sigmoid
    channel, or two softmax channels); ``threshold``, ``min_size``, ``grow`` and ``min_distance`` as unetkit's
    own instance step; ``reach``: the distance transform's cap (pixels); ``iterations``: rounds of the
    connected-components step."""
    if method == "interior":
        classes = logits.argmax(dim=1, keepdim=True)
        seeds, within = classes == 1, classes > 0
    elif method == "watershed":
        if logits.shape[1] == 1:
            p = min(max(float(threshold), 1e-6), 1 - 1e-6)
            seeds = logits >= math.log(p / (1 - p))
        else:
            seeds = logits.argmax(dim=1, keepdim=True) > 0
        within, grow = seeds, 0
    else:
        raise ValueError(f"in-graph instances support the interior and watershed methods, not {method!r}")
    ids = _watershed(seeds, min_distance, reach, iterations)
    ids = torch.where(_sizes_at(ids) >= min_size, ids, torch.zeros_like(ids))
    ids = _grow(ids, within, grow)
    return _renumber(ids)


class UNetInstances(UNet):
    """A :class:`UNet` whose ``forward`` returns ``(logits, instance labels)``; the same parameters (its
    state dict is the U-Net's). ``instances``: the keyword arguments of :func:`instance_labels`."""

    def __init__(self, *args: Any, instances: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance_kwargs = dict(instances)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        logits = super().forward(x)
        return logits, instance_labels(logits, **self.instance_kwargs)

    def forward_multiples(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`forward` for inputs whose sizes are already multiples of ``size_multiples`` (what the
        exported graphs take)."""
        logits = self._forward(x)
        return logits, instance_labels(logits, **self.instance_kwargs)
