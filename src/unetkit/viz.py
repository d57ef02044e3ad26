"""Pictures people would rather see than read: overlays and training curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .atomic import atomic_path

__all__ = ["contour_overlay", "heatmap", "outlined_crop", "overlay_panel", "save_curves"]

TRUTH = np.array([60, 220, 60], np.float32)  # green
PRED = np.array([230, 60, 230], np.float32)  # magenta
FP = np.array([255, 70, 50], np.float32)  # red: predicted, not true
FN = np.array([60, 140, 255], np.float32)  # blue: true, missed
DOUBT = np.array([255, 220, 0], np.float32)  # a doubtful object's outline


def gray_rgb(image: np.ndarray) -> np.ndarray:
    img = image.astype(np.float32)
    if img.ndim == 3:
        img = img[..., :3].mean(-1) if img.shape[-1] in (3, 4) else img[..., 0]
    lo, hi = np.percentile(img, [1, 99.8])
    img = np.clip((img - lo) / max(hi - lo, 1e-8), 0, 1) * 255
    return np.repeat(img[..., None], 3, axis=-1)


def tint(rgb: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    out = rgb.copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * colour
    return out


def outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` next to a pixel outside it (4-neighbours), on every side."""
    m = mask.astype(bool)
    edge = np.zeros_like(m)
    edge[:-1] |= m[:-1] != m[1:]
    edge[1:] |= m[1:] != m[:-1]
    edge[:, :-1] |= m[:, :-1] != m[:, 1:]
    edge[:, 1:] |= m[:, 1:] != m[:, :-1]
    return edge & m


def outlined_crop(
    image: np.ndarray, labels: np.ndarray, label: int, side: int = 96, neighbours: bool = False
) -> np.ndarray | None:
    """Object ``label`` of ``labels`` on its ``image`` (2-D, or colour), outlined two pixels wide in yellow (seen
    at thumbnail size), in a square crop at least ``side`` pixels wide around it; ``neighbours``: the other
    objects in the crop outlined thinly in grey. None when the label is absent."""
    ys, xs = np.nonzero(labels == label)
    if not len(ys):
        return None
    half = max(side // 2, (max(ys.max() - ys.min(), xs.max() - xs.min()) + 1) // 2 + 8)
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    window = (slice(max(0, cy - half), cy + half), slice(max(0, cx - half), cx + half))
    picture = gray_rgb(np.asarray(image)[window])
    around = np.asarray(labels)[window]
    if neighbours:
        from skimage.segmentation import find_boundaries

        picture[find_boundaries(np.where(around == label, 0, around), mode="inner")] = 150
    from scipy import ndimage as ndi

    picture[ndi.binary_dilation(outline(around == label))] = DOUBT
    return np.clip(picture, 0, 255).astype(np.uint8)


def overlay_panel(
    image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, title: str = ""
) -> np.ndarray:
    """Side-by-side RGB panel: image | truth (green) | prediction (magenta) | errors (red FP, blue FN).

    ``truth`` may be ``None`` (prediction only). Returns ``uint8 (H + caption, k * W, 3)``.
    """
    base = gray_rgb(image)
    panels = [("image", base)]
    p = pred.astype(bool)
    if truth is not None:
        t = truth.astype(bool)
        panels.append(("truth", tint(base, t, TRUTH)))
    pr = tint(base, p, PRED)
    pr[outline(p)] = PRED
    panels.append(("prediction", pr))
    if truth is not None:
        err = tint(tint(base, p & ~t, FP, 0.7), t & ~p, FN, 0.7)
        panels.append(("errors: FP red, FN blue", err))
    h, w = base.shape[:2]
    gap, caption = 4, 16
    canvas = np.full((h + caption, len(panels) * (w + gap) - gap, 3), 255, np.uint8)
    for i, (_, rgb) in enumerate(panels):
        canvas[caption:, i * (w + gap) : i * (w + gap) + w] = np.clip(rgb, 0, 255).astype(np.uint8)
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    for i, (label, _) in enumerate(panels):
        text = f"{title}  {label}" if i == 0 and title else label
        draw.text((i * (w + gap) + 2, 2), text, fill=(0, 0, 0))
    return np.asarray(pil)


def contour_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.25) -> np.ndarray:
    """An ``(H, W[, C])`` image with each object of ``labels`` (instances, or class indices) lightly tinted in
    its own colour and its contour drawn: the quick look at a prediction. Returns ``uint8 (H, W, 3)``."""
    from skimage.segmentation import find_boundaries

    base = gray_rgb(image)
    labels = np.asarray(labels)
    if labels.max() == 0:
        return base.astype(np.uint8)
    # a fixed pseudo-random colour per label, bright enough to see on dark or light images
    rng = np.random.default_rng(12345)
    palette = rng.integers(40, 256, size=(int(labels.max()) + 1, 3)).astype(np.float32)
    colours = palette[labels]
    inside = labels > 0
    out = base.copy()
    out[inside] = (1 - alpha) * out[inside] + alpha * colours[inside]
    edge = find_boundaries(labels, mode="inner")
    out[edge] = colours[edge]
    return np.clip(out, 0, 255).astype(np.uint8)


def save_curves(history: Sequence[dict[str, float]], path: str | Path, best: int | None = None) -> Path:
    """Loss and validation Dice/IoU (and objects' PQ) per epoch as a PNG (matplotlib, no display needed);
    ``best``: the epoch of best.pt (default: the best validation Dice)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.6))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="training loss (patches)")
    if any("val_ce" in h for h in history):
        ax1.plot(epochs, [h.get("val_ce", np.nan) for h in history], "o-", label="validation cross-entropy")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    # legends under the plots: inside them they covered a curve (three validation lines fill the right one)
    ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=9, frameon=False)
    ax1.grid(alpha=0.3)
    ax2.plot(epochs, [h["val_dice"] for h in history], "o-", label="validation Dice")
    ax2.plot(epochs, [h["val_iou"] for h in history], "o-", label="validation IoU")
    if any("val_pq" in h for h in history):
        ax2.plot(epochs, [h.get("val_pq", np.nan) for h in history], "o-", label="validation PQ (objects)")
    if best is None:
        best = int(epochs[int(np.argmax([h["val_dice"] for h in history]))])
    ax2.axvline(best, color="gray", ls="--", lw=1, label=f"best (epoch {best})")
    ax2.set_xlabel("epoch")
    low = min(h[k] for h in history for k in ("val_iou", "val_dice", "val_pq") if k in h)
    ax2.set_ylim(max(0.0, low - 0.05), 1.0)
    ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=9, frameon=False)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def heatmap(values: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """A float map as an RGB uint8 picture (matplotlib's 'magma' colour map, 0 → black)."""
    from matplotlib import colormaps

    top = float(vmax if vmax is not None else max(float(values.max()), 1e-8))
    rgba = colormaps["magma"](np.clip(values / top, 0, 1))
    return (rgba[..., :3] * 255).astype(np.uint8)
