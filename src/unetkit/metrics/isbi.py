"""The ISBI 2012 EM segmentation challenge's metrics (Arganda-Carreras et al. 2015, Jain et al. 2010).

Segments are the 4-connected components of the foreground (cells; boundaries are background, label 0).
Rand and information scores are *foreground-restricted*: only pixels on a true segment count (label 0 of
the ground truth is ignored), with p_ij the number of such pixels in true segment i and predicted segment j
(predicted background is a segment of its own), s_i = Σ_j p_ij, t_j = Σ_i p_ij:

- pixel error = fraction of pixels whose binary label differs;
- V_Rand = Σ p_ij² / (½ Σ s_i² + ½ Σ t_j²), computed on pixel pairs (each sum minus the pixel count), the
  harmonic mean of the Rand split and merge scores; Rand error = 1 - V_Rand (scikit-image's
  ``adapted_rand_error``, which it equals to float precision);
- V_Info = 2 I(S;T) / (H(S) + H(T)), the harmonic mean of the information-theoretic split score I/H(S) and
  merge score I/H(T); the conditional entropies H(T|S) and H(S|T) (in bits, their sum is the variation of
  information) equal scikit-image's ``variation_of_information(truth, pred, ignore_labels=[0])``, which
  returns them in the order (H(S|T), H(T|S)));
- warping error (Jain et al. 2010): the ground truth is warped towards the prediction by flipping *simple*
  pixels only (pixels whose flip changes no topology: foreground 4-connected, background 8-connected) for
  as long as any disagreeing pixel is simple; the warping error is the fraction of pixels that still
  disagree. Each remaining disagreement is a topological error, classified by what flipping it would do to
  the warped truth: a **split** (the prediction cuts a true object), a **merger** (it joins two), an added or
  a missed object, or a hole.

:func:`isbi_scores` thresholds a probability map at several levels and reports each metric at its best
level, as the challenge did (without the challenge's boundary thinning).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

__all__ = ["ISBI_THRESHOLDS", "isbi_scores", "pixel_error", "rand_info_scores", "warping_error"]

ISBI_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.1, 1.0, 0.1), 1))


def pixel_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of pixels whose foreground/background label differs."""
    return float(np.mean(np.asarray(pred, bool) != np.asarray(truth, bool)))


def _table(truth_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts p_ij over pixels with truth != 0 (rows: true segments, columns: predicted incl. background)."""
    t = truth_labels.ravel()
    keep = t != 0
    _, ti = np.unique(t[keep], return_inverse=True)
    _, pj = np.unique(pred_labels.ravel()[keep], return_inverse=True)
    _, counts = np.unique(ti.astype(np.int64) * (pj.max() + 1 if pj.size else 1) + pj, return_counts=True)
    # only the non-zero cells matter for every score below; row/column sums come from the marginals
    return counts, np.bincount(ti), np.bincount(pj)


def rand_info_scores(pred_labels: np.ndarray, truth_labels: np.ndarray) -> dict[str, float]:
    """Foreground-restricted V_Rand, Rand error, V_Info and the two conditional entropies (see above)."""
    if pred_labels.shape != truth_labels.shape:
        raise ValueError(
            f"prediction shape {pred_labels.shape} differs from truth shape {truth_labels.shape}"
        )
    p_ij, s_i, t_j = (a.astype(np.float64) for a in _table(truth_labels, pred_labels))
    n = p_ij.sum()
    if n == 0:
        return {
            "v_rand": 1.0,
            "rand_error": 0.0,
            "v_info": 1.0,
            "h_truth_given_pred": 0.0,
            "h_pred_given_truth": 0.0,
        }
    sum_p2 = p_ij @ p_ij - n
    sum_s2 = s_i @ s_i - n
    sum_t2 = t_j @ t_j - n
    split, merge = (sum_p2 / sum_t2 if sum_t2 else 1.0), (sum_p2 / sum_s2 if sum_s2 else 1.0)
    v_rand = 2 * split * merge / (split + merge) if split + merge else 0.0

    def entropy(c: np.ndarray) -> float:
        q = c[c > 0] / n
        return float(-(q * np.log2(q)).sum())

    h_t, h_s, h_ts = entropy(s_i), entropy(t_j), entropy(p_ij)
    mutual = h_t + h_s - h_ts
    v_info = 2 * mutual / (h_t + h_s) if h_t + h_s > 0 else 1.0
    return {
        "v_rand": float(v_rand),
        "rand_error": float(1 - v_rand),
        "v_info": float(v_info),
        "h_truth_given_pred": float(h_ts - h_s),
        "h_pred_given_truth": float(h_ts - h_t),
    }


# -- warping ---------------------------------------------------------------------------------------------

# neighbour k of the 3x3 window (row, col offsets), bit k of the neighbourhood code
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


@lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """For each of the 256 neighbourhoods: T4 (4-connected foreground components 4-adjacent to the centre)
    and T8bar (8-connected background components in the neighbourhood)."""
    t4 = np.zeros(256, np.int8)
    t8b = np.zeros(256, np.int8)
    four = ndi.generate_binary_structure(2, 1)
    eight = ndi.generate_binary_structure(2, 2)
    for code in range(256):
        win = np.zeros((3, 3), bool)
        for k, (dy, dx) in enumerate(_OFFSETS):
            win[1 + dy, 1 + dx] = bool(code >> k & 1)
        fg, _ = ndi.label(win, four)
        t4[code] = len({fg[y, x] for y, x in ((0, 1), (1, 0), (1, 2), (2, 1)) if fg[y, x]})
        bg = ~win
        bg[1, 1] = False
        t8b[code] = ndi.label(bg, eight)[1]
    return t4, t8b


def _codes(w: np.ndarray) -> np.ndarray:
    padded = np.pad(w, 1).astype(np.uint8)
    h, wd = w.shape
    code = np.zeros(w.shape, np.uint8)
    for k, (dy, dx) in enumerate(_OFFSETS):
        code |= padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + wd] << k
    return code


def warping_error(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Warping error and topological error counts of a binary prediction (see the module docstring)."""
    p = np.asarray(pred, bool)
    w = np.asarray(truth, bool).copy()
    if p.shape != w.shape:
        raise ValueError(f"prediction shape {p.shape} differs from truth shape {w.shape}")
    t4, t8b = _tables()
    simple_lut = (t4 == 1) & (t8b == 1)
    yy, xx = np.indices(p.shape)
    fields = [(yy % 3 == a) & (xx % 3 == b) for a in range(3) for b in range(3)]
    while True:
        changed = False
        for field in fields:  # pixels of one field are 3 apart: flipping them together is sequential-safe
            flip = (w != p) & field
            if not flip.any():
                continue
            flip &= simple_lut[_codes(w)]
            if flip.any():
                w[flip] = ~w[flip]
                changed = True
        if not changed:
            break
    wrong = w != p
    code = _codes(w)
    n4 = t4[code]
    add = wrong & p  # the prediction has foreground the warped truth cannot take without changing topology
    remove = wrong & ~p
    kinds = {
        "mergers": add & (n4 >= 2),
        "added_objects": add & (n4 == 0),
        "splits": remove & (n4 >= 2),
        "missed_objects": remove & (n4 == 0),
    }
    kinds["holes"] = wrong & ~np.logical_or.reduce(list(kinds.values()))
    eight = ndi.generate_binary_structure(2, 2)
    out: dict[str, float] = {"warping_error": float(wrong.mean())}
    for name, mask in kinds.items():
        out[name] = float(ndi.label(mask, eight)[1])
    return out


def isbi_scores(
    prediction: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] = ISBI_THRESHOLDS
) -> dict[str, float]:
    """All ISBI 2012 metrics of a foreground probability map (or a binary mask) against a binary truth, each
    at its best threshold (``best_threshold_*`` says which)."""
    truth_fg = np.asarray(truth) != 0
    truth_labels, _ = ndi.label(truth_fg)
    pred = np.asarray(prediction, np.float64)
    if pred.max() > 1:  # a 0/255 mask
        pred = pred / pred.max()
    levels = thresholds if len(np.unique(pred)) > 2 else (0.5,)
    best: dict[str, tuple[float, float]] = {}
    better = {"pixel_error": min, "rand_error": min, "warping_error": min, "v_rand": max, "v_info": max}
    per_level = {}
    for t in levels:
        fg = pred >= t
        scores = {"pixel_error": pixel_error(fg, truth_fg)}
        scores.update(rand_info_scores(ndi.label(fg)[0], truth_labels))
        scores.update(warping_error(fg, truth_fg))
        per_level[t] = scores
        for key, pick in better.items():
            if key not in best or pick(scores[key], best[key][0]) != best[key][0]:
                best[key] = (scores[key], t)
    out = {key: value for key, (value, _) in best.items()}
    out.update({f"best_threshold_{key}": t for key, (_, t) in best.items()})
    at = per_level[best["warping_error"][1]]
    out.update({k: at[k] for k in ("splits", "mergers", "added_objects", "missed_objects", "holes")})
    return out
