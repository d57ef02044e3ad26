"""The U-Net paper's weight maps (Ronneberger et al. 2015, Eq. 2) and separation borders.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

``w_c`` balances the class frequencies; ``d1`` and ``d2`` are the distances of a background pixel to the
nearest and second-nearest object, so the narrow background gaps between touching objects get the largest
weights (≈ w_c + w0 on a gap of zero width). Paper defaults: ``w0 = 10``, ``sigma = 5`` px.

Distances are computed per object inside a local window only (the object's box grown by the distance beyond
which the term is below ``eps``), never as one full-image transform per object.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

#: the target value of unlabelled pixels: weight 0, left out of the loss and the metrics
IGNORE = 255


__all__ = [
    "IGNORE",
    "class_balance",
    "count_touching_pairs",
    "separate_touching",
    "separation_weights",
    "touching_pairs",
    "weight_map",
]


def separate_touching(labels: np.ndarray, gap: int = 2) -> np.ndarray:
    """Instance labels with background gaps between touching objects (the paper's separation borders).

    ``gap=2`` removes the contact pixels on both sides (a two-pixel gap), ``gap=1`` only on the side of
    the lower label (one pixel). Objects that touch nothing are unchanged.
    """
    if gap not in (1, 2):
        raise ValueError(f"gap must be 1 or 2, got {gap}")
    footprint = ndi.generate_binary_structure(2, 1)
    big = np.iinfo(labels.dtype).max if np.issubdtype(labels.dtype, np.integer) else labels.max() + 1
    hi = ndi.grey_dilation(labels, footprint=footprint, mode="nearest")  # largest label around
    lo = ndi.grey_erosion(
        np.where(labels == 0, big, labels), footprint=footprint, mode="nearest"
    )  # smallest object
    fg = labels > 0
    touching = fg & (hi > labels) if gap == 1 else fg & ((hi > labels) | (lo < labels))
    out = labels.copy()
    out[touching] = 0
    return out


def separation_weights(
    labels: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    eps: float = 1e-3,
    *,
    contacts: bool = False,
) -> np.ndarray:
    """``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` on background pixels (0 on objects), float32 ``(H, W)``.

    ``contacts``: also on object pixels (there ``d1 = 0`` and ``d2`` is the distance to the nearest other
    object), for the 3-class border target, where touching objects have no background between them: the
    weight then falls on both sides of each contact, which the border class must mark.
    ``eps``: contributions below this are dropped, which bounds each object's window. Fewer than two objects:
    all zeros.
    """
    h, w = labels.shape
    reach = sigma * math.sqrt(2 * math.log(max(w0 / eps, 1.0 + 1e-9)))  # d1 + d2 beyond this adds < eps
    margin = math.ceil(reach)
    d1 = np.full((h, w), np.inf, np.float32)
    d2 = np.full((h, w), np.inf, np.float32)
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        win = tuple(
            slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, (h, w), strict=True)
        )
        dist = ndi.distance_transform_edt(labels[win] != i).astype(np.float32)
        a, b = d1[win], d2[win]
        d2[win] = np.minimum(b, np.maximum(a, dist))
        d1[win] = np.minimum(a, dist)
    total = d1 + d2
    out = np.zeros((h, w), np.float32)
    near = np.isfinite(total) & ((labels == 0) | contacts)
    out[near] = w0 * np.exp(-(total[near] ** 2) / (2 * sigma**2))
    return out


def class_balance(target: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-pixel weights ``w_c`` that make every present class weigh the same in total: class ``k`` gets
    ``N / (K * n_k)`` (``N`` labelled pixels, ``K`` classes present). Ignored pixels get 0."""
    valid = target != IGNORE
    counts = np.bincount(target[valid].ravel(), minlength=num_classes)[:num_classes].astype(np.float64)
    present = counts > 0
    per_class = np.zeros(num_classes, np.float64)
    per_class[present] = counts.sum() / (present.sum() * counts[present])
    out = np.zeros(target.shape, np.float32)
    out[valid] = per_class[target[valid]]
    return out


def weight_map(
    labels: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    balance: bool = True,
    contacts: bool = False,
) -> np.ndarray:
    """The paper's Eq. 2 for a target made from instance ``labels``: class balance + separation term.

    ``balance=False``: ``w_c = 1`` (the separation term alone on top of plain cross-entropy), for losses that
    balance the classes already (a Dice term). Pixels whose target is ignored get weight 0.
    """
    wc = class_balance(target, num_classes) if balance else np.ones(target.shape, np.float32)
    w = wc + separation_weights(labels, w0, sigma, contacts=contacts)
    w[target == IGNORE] = 0
    return w


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """The distinct pairs ``(low, high)`` of labels that touch (face neighbours, any number of dimensions)
    without background between them."""
    pairs: set[tuple[int, int]] = set()
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)[:-1]
        b = np.moveaxis(labels, axis, 0)[1:]
        m = (a != b) & (a > 0) & (b > 0)
        lo = np.minimum(a[m], b[m]).astype(np.int64)
        hi = np.maximum(a[m], b[m]).astype(np.int64)
        pairs.update(zip(lo.tolist(), hi.tolist(), strict=True))
    return pairs


def count_touching_pairs(labels: np.ndarray) -> int:
    """Number of distinct pairs of labels that touch (4-connectivity) without background between them."""
    return len(touching_pairs(labels))
