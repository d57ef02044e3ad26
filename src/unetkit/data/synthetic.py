"""Built-in synthetic fluorescence nuclei: the embedded default dataset.

Images look like a nuclear stain (DAPI/Hoechst) under a wide-field microscope: elliptical nuclei of varied
size, eccentricity, orientation and brightness with slightly irregular outlines, clusters of touching
nuclei, a textured (chromatin-like) interior, an uneven background, optical blur and Poisson (shot) plus
Gaussian (read) noise. Every image comes with its instance labels. Generation is deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..atomic import atomic_write_text
from ..errors import DataError
from ..memory import available_memory
from .io import write_image, write_volume
from .spec import DESCRIPTOR
from .weights import count_touching_pairs, touching_pairs

__all__ = [
    "STYLES",
    "STYLE_VERSION",
    "SynthParams",
    "count_touching_pairs",
    "random_style",
    "style_of",
    "synth_nuclei",
    "synth_nuclei_3d",
    "synthesize_dataset",
    "touching_pairs",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthParams:
    """Knobs of the generator (defaults resemble DSB 2018 fluorescence crops at 256x256)."""

    radius: tuple[float, float] = (6.0, 13.0)  # semi-major axis range, px
    aspect: tuple[float, float] = (0.6, 1.0)  # minor / major axis
    nuclei_per_mpx: float = 250.0  # isolated nuclei per megapixel (~16 in 256x256)
    clusters_per_mpx: float = 75.0  # clusters per megapixel (~5 in 256x256)
    cluster_size: tuple[int, int] = (2, 5)  # nuclei per cluster
    brightness: tuple[float, float] = (0.35, 1.0)
    blur_sigma: tuple[float, float] = (0.8, 1.6)
    photons: tuple[float, float] = (40.0, 250.0)  # photons at brightness 1: sets the shot noise
    read_noise: tuple[float, float] = (0.005, 0.03)
    background: tuple[float, float] = (0.03, 0.12)
    haze: tuple[float, float] = (0.0, 0.0)  # out-of-focus light: the nuclei blurred widely, times this
    bits: int = 8  # 8: uint8 (signal x 200); 12 or 16: uint16 (4095 or 65535 full scale)
    # Off by default (the default images stay what they were); the randomised styles turn them on:
    irregularity: float = (
        0.0  # extra outline harmonics (lobed, kidney-like, irregular nuclei), share of the radius
    )
    overlap: float = 0.3  # the largest share of a clustered nucleus that may lie under earlier ones
    additive: bool = False  # overlapping nuclei add their light (wide-field), the earlier one keeps the label
    dividing_per_mpx: float = 0.0  # dividing nuclei per megapixel: two bright daughter halves side by side
    texture: float = 0.0  # extra chromatin granularity and dark nucleoli, share of the brightness
    cytoplasm: float = 0.0  # faint cell bodies around the nuclei (structured background), share of brightness
    debris_per_mpx: float = 0.0  # small unlabelled bright specks (debris, micronuclei under the minimum size)
    # Version 3, off by default and drawn from a stream of their own (earlier styles' images stay bit for bit):
    sheet: float = 0.0  # share of the image covered by confluent sheets of packed, touching nuclei
    mitotic_per_mpx: float = 0.0  # condensed chromosomes: small, bright, jagged metaphase plates (objects)
    apoptotic_per_mpx: float = 0.0  # pyknotic (small, very bright) and fragmented (2-4 bright bodies) nuclei
    chromocenters: float = 0.0  # bright chromocenters and nucleoli inside the nuclei, share of the brightness
    depth_blur: float = (
        0.0  # extra blur (sigma, px) of the most out-of-focus nuclei: each lies at its own depth
    )
    vignetting: float = 0.0  # the light falls off towards the field's edge, by this share at the corners
    illumination: float = 0.0  # uneven excitation: a smooth random field spanning exp(+-illumination)
    offset: float = 0.0  # the camera's dark level, share of its full scale
    full_scale: float = 0.0  # the share of the camera's range that brightness 1 reaches (0: 200/255 or 0.78)
    hot_pixels_per_mpx: float = 0.0  # the camera's hot pixels: single bright pixels, never objects


def synth_nuclei(
    shape: int | tuple[int, int] = 256,
    seed: int | np.random.SeedSequence = 0,
    params: SynthParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its instance labels.

    Returns ``(image, labels)``: ``image`` is ``uint8 (H, W)``; ``labels`` is ``uint16 (H, W)`` with 0 for
    background and 1..N for nuclei (touching nuclei share borders without a background gap).

    Example:
        >>> image, labels = synth_nuclei((128, 160), seed=3)
    """
    p = params or SynthParams()
    h, w = (shape, shape) if isinstance(shape, int) else shape
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.default_rng(seq)
    # The optional features draw from their own stream, so the default images are unchanged by them.
    extra = np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, 7919)))
    v3 = np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, 7927)))
    labels = np.zeros((h, w), np.uint16)
    signal = np.zeros((h, w), np.float32)
    # Chromatin texture: smoothed noise, mean 1, shared by all nuclei.
    texture = ndi.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 1.2)
    texture = 1.0 + 0.6 * texture / (texture.std() + 1e-6) * 0.35

    mpx = h * w / 1e6
    nuclei: list[tuple[float, float, float]] = []  # (y, x, radius) of placed nuclei

    def place(cy: float, cx: float, max_overlap: float, stream: np.random.Generator = rng) -> bool:
        a = stream.uniform(*p.radius)
        b = a * stream.uniform(*p.aspect)
        ok = _draw(
            labels,
            signal,
            texture,
            rng,
            cy,
            cx,
            a,
            b,
            stream.uniform(0, np.pi),
            stream.uniform(*p.brightness),
            len(nuclei) + 1,
            max_overlap,
            _outline(extra, p.irregularity),
            p.additive,
        )
        if ok:
            nuclei.append((cy, cx, a))
        return ok

    if (
        p.sheet > 0
    ):  # confluent sheets first: a monolayer of nuclei on a jittered hexagonal grid, touching, hardly overlapping
        for cy, cx in _sheet_sites(v3, h, w, p):
            place(cy, cx, max_overlap=0.1, stream=v3)
    for _ in range(rng.poisson(p.nuclei_per_mpx * mpx)):
        for _attempt in range(10):
            if place(rng.uniform(0, h), rng.uniform(0, w), max_overlap=0.0):
                break
    for _ in range(rng.poisson(p.clusters_per_mpx * mpx)):
        start = len(nuclei)
        for _attempt in range(10):
            if place(rng.uniform(0, h), rng.uniform(0, w), max_overlap=0.0):
                break
        else:
            continue
        for _ in range(int(rng.integers(p.cluster_size[0], p.cluster_size[1] + 1)) - 1):
            for _attempt in range(12):
                cy, cx, r = nuclei[int(rng.integers(start, len(nuclei)))]
                angle = rng.uniform(0, 2 * np.pi)
                dist = r + rng.uniform(*p.radius) * rng.uniform(0.55, 0.9)
                if place(cy + dist * np.sin(angle), cx + dist * np.cos(angle), max_overlap=p.overlap):
                    break
    if p.dividing_per_mpx > 0:
        _dividing(labels, signal, texture, extra, p, len(nuclei) + 1, extra.poisson(p.dividing_per_mpx * mpx))
    if p.mitotic_per_mpx > 0 or p.apoptotic_per_mpx > 0:
        _condensed(labels, signal, texture, v3, p, int(labels.max()) + 1, mpx)
    if p.texture > 0:  # granular chromatin and dark nucleoli
        grain = ndi.gaussian_filter(extra.standard_normal((h, w)).astype(np.float32), extra.uniform(0.7, 2.0))
        grain /= grain.std() + 1e-6
        spots = ndi.gaussian_filter((extra.random((h, w)) < 0.004).astype(np.float32), 1.5)
        spots /= spots.max() + 1e-6
        signal *= np.clip(1.0 + p.texture * (0.5 * grain - 1.2 * spots), 0.15, None)
    if p.chromocenters > 0:
        signal += _chromocenters(labels, signal, v3, p)
    if p.cytoplasm > 0 or p.debris_per_mpx > 0:
        signal += _structured_background(labels, signal, extra, p)

    # Optics and camera: uneven background, blur, shot noise, read noise.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * xx / w + np.sin(theta) * yy / h).astype(np.float32)
    # Low-frequency blotches: coarse noise, smoothly up-sampled (cheap at any image size).
    coarse = rng.standard_normal((max(2, h // 32), max(2, w // 32))).astype(np.float32)
    blotches = _upsampled(coarse, h, w)
    blotches = blotches[:h, :w] / (np.abs(blotches).max() + 1e-6)
    background = rng.uniform(*p.background) * (1.0 + 0.5 * ramp + 0.3 * blotches)
    if p.haze[1] > 0:  # light from out-of-focus nuclei: the signal blurred widely
        background = background + rng.uniform(*p.haze) * ndi.gaussian_filter(signal, 4 * max(p.radius))
    sigma = rng.uniform(*p.blur_sigma)
    if p.depth_blur > 0:  # each nucleus at its own depth: the deeper, the more blurred
        clean = _depth_blurred(labels, signal, v3, sigma, p.depth_blur) + background
    else:
        clean = ndi.gaussian_filter(signal, sigma) + background
    if p.vignetting > 0 or p.illumination > 0:
        clean *= _illumination(v3, h, w, p)
    photons = rng.uniform(*p.photons)
    noisy = rng.poisson(np.clip(clean, 0, None) * photons).astype(np.float32) / photons
    noisy += rng.normal(0.0, rng.uniform(*p.read_noise), size=(h, w)).astype(np.float32)
    top = 255 if p.bits == 8 else 2**p.bits - 1  # values clip at the camera's full scale
    if p.full_scale > 0:
        counts = noisy * (p.full_scale * top)
    else:  # the scales of versions 1 and 2, computed as they were (their images stay bit for bit)
        counts = noisy * 200.0 if p.bits == 8 else noisy * 0.78 * top
    if p.offset > 0:
        counts += p.offset * top
    if p.hot_pixels_per_mpx > 0:
        hot = v3.integers(0, h * w, v3.poisson(p.hot_pixels_per_mpx * mpx))
        counts.ravel()[hot] += v3.uniform(0.2, 1.0, hot.size) * top
    return np.clip(counts, 0, top).astype(np.uint8 if p.bits == 8 else np.uint16), labels


def _draw(
    labels: np.ndarray,
    signal: np.ndarray,
    texture: np.ndarray,
    rng: np.random.Generator,
    cy: float,
    cx: float,
    a: float,
    b: float,
    angle: float,
    brightness: float,
    label: int,
    max_overlap: float,
    outline: tuple[np.ndarray, np.ndarray] | None = None,
    additive: bool = False,
) -> bool:
    """Rasterise one nucleus unless it overlaps existing ones by more than ``max_overlap`` of its area.

    ``outline``: extra harmonics of the edge (amplitudes, phases for harmonics 2, 3, ...); ``additive``: where
    it lies under an earlier nucleus, its light adds to that nucleus's (which keeps the label)."""
    h, w = labels.shape
    r = int(np.ceil(a * 1.15)) + 1
    y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
    x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
    if y0 >= y1 or x0 >= x1:
        return False
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / a
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / b
    rho = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    # Slightly irregular outline: low-frequency modulation of the radius.
    k = rng.integers(2, 5)
    edge = 1.0 + 0.07 * np.cos(k * phi + rng.uniform(0, 2 * np.pi)) + 0.04 * np.cos((k + 1) * phi)
    if outline is not None:
        for harmonic, (amp, phase) in enumerate(zip(*outline, strict=True), start=2):
            edge = edge + amp * np.cos(harmonic * phi + phase)
        edge = np.clip(edge, 0.45, None)
    inside = rho <= edge
    area = int(inside.sum())
    if area < 12:
        return False
    region = labels[y0:y1, x0:x1]
    taken = inside & (region > 0)
    if taken.sum() > max_overlap * area:
        return False
    new = inside & ~taken  # the earlier nucleus stays in front where they overlap
    region[new] = label
    dome = 0.8 + 0.2 * np.clip(1.0 - (rho / edge) ** 2, 0, 1)
    light = brightness * dome * texture[y0:y1, x0:x1]
    signal[y0:y1, x0:x1][new] = light[new]
    if additive:
        signal[y0:y1, x0:x1][taken] += light[taken]
    return True


def _outline(rng: np.random.Generator, irregularity: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Random edge harmonics 2..6 whose amplitudes fall off with the harmonic (None when ``irregularity`` is 0)."""
    if irregularity <= 0:
        return None
    amps = irregularity * rng.uniform(0, 1, 5) / np.arange(1, 6) ** 0.8
    return amps, rng.uniform(0, 2 * np.pi, 5)


def _dividing(
    labels: np.ndarray,
    signal: np.ndarray,
    texture: np.ndarray,
    rng: np.random.Generator,
    p: SynthParams,
    label: int,
    count: int,
) -> None:
    """Dividing nuclei: two small, bright, elongated daughters side by side along their short axis, touching
    or just apart (anaphase to telophase); each daughter is its own object."""
    h, w = labels.shape
    for _ in range(count):
        a = rng.uniform(*p.radius) * 0.7
        b = a * rng.uniform(0.45, 0.7)
        cy, cx, angle = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, np.pi)
        gap = b * rng.uniform(1.0, 1.6)
        bright = min(1.6, rng.uniform(*p.brightness) * 1.4)
        for side in (-1, 1):
            oy, ox = side * gap * np.cos(angle), -side * gap * np.sin(angle)  # along the short axis
            if _draw(labels, signal, texture, rng, cy + oy, cx + ox, a, b, angle, bright, label, 0.02):
                label += 1


def _upsampled(coarse: np.ndarray, h: int, w: int) -> np.ndarray:
    """Coarse noise smoothly up-sampled (cubic) to at least ``(h, w)``: blotches, regions, light fields at any
    image size."""
    return ndi.zoom(
        coarse, (h / coarse.shape[0], w / coarse.shape[1]), order=3, grid_mode=True, mode="nearest"
    )


def _sheet_sites(rng: np.random.Generator, h: int, w: int, p: SynthParams) -> list[tuple[float, float]]:
    """Centres of a confluent sheet: a jittered hexagonal grid, spaced by the nuclei's size, inside a smooth
    random region covering ``p.sheet`` of the image."""
    a = float(np.mean(p.radius))
    spacing = 2.0 * a * float(np.sqrt(np.mean(p.aspect))) * rng.uniform(0.95, 1.1)
    coarse = rng.standard_normal((max(2, h // 48), max(2, w // 48)))
    field = _upsampled(coarse, h, w)
    region = field[:h, :w] >= np.quantile(field, 1.0 - min(p.sheet, 1.0))
    theta = rng.uniform(0, np.pi / 3)
    c, s = np.cos(theta), np.sin(theta)
    n = int(max(h, w) * 1.5 / spacing) + 2
    sites = []
    for i in range(-n, n + 1):
        for j in range(-n, n + 1):
            u, v = (j + 0.5 * (i % 2)) * spacing, i * spacing * np.sqrt(3) / 2
            y = h / 2 + s * u + c * v + rng.normal(0, 0.12 * spacing)
            x = w / 2 + c * u - s * v + rng.normal(0, 0.12 * spacing)
            if 0 <= y < h and 0 <= x < w and region[int(y), int(x)]:
                sites.append((float(y), float(x)))
    rng.shuffle(sites)
    return sites


def _condensed(
    labels: np.ndarray,
    signal: np.ndarray,
    texture: np.ndarray,
    rng: np.random.Generator,
    p: SynthParams,
    label: int,
    mpx: float,
) -> None:
    """Condensed chromatin, each piece an object: mitotic figures (metaphase plates: thin, jagged, about twice
    as bright as an interphase nucleus) and apoptotic nuclei (pyknotic: small, round, very bright; or fragmented
    into 2-4 bright bodies close together)."""
    h, w = labels.shape
    bright = float(np.mean(p.brightness))
    for _ in range(rng.poisson(p.mitotic_per_mpx * mpx)):
        a = rng.uniform(*p.radius) * rng.uniform(0.6, 0.9)
        amps = np.array([0.25, 0.2, 0.15, 0.1, 0.08]) * rng.uniform(0.5, 1.0, 5)
        ok = _draw(labels, signal, texture, rng, rng.uniform(0, h), rng.uniform(0, w), a,
                   a * rng.uniform(0.2, 0.35), rng.uniform(0, np.pi), min(2.0, 2.0 * bright), label, 0.0,
                   (amps, rng.uniform(0, 2 * np.pi, 5)))  # fmt: skip
        label += int(ok)
    for _ in range(rng.poisson(p.apoptotic_per_mpx * mpx)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(*p.radius)
        pieces = 1 if rng.random() < 0.5 else int(rng.integers(2, 5))
        size = r * (rng.uniform(0.35, 0.55) if pieces == 1 else rng.uniform(0.22, 0.35))
        for _piece in range(pieces):
            at = rng.uniform(0, 2 * np.pi)
            dist = 0.0 if pieces == 1 else r * rng.uniform(0.4, 0.9)
            ok = _draw(labels, signal, texture, rng, cy + dist * np.sin(at), cx + dist * np.cos(at), size,
                       size * rng.uniform(0.8, 1.0), 0.0, min(2.0, 2.2 * bright), label, 0.0)  # fmt: skip
            label += int(ok)


def _chromocenters(
    labels: np.ndarray, signal: np.ndarray, rng: np.random.Generator, p: SynthParams
) -> np.ndarray:
    """Bright spots inside the nuclei (chromocenters, bright nucleoli): a few per nucleus, sized by the
    nucleus."""
    h, w = labels.shape
    fg = labels > 0
    if not fg.any():
        return np.zeros((h, w), np.float32)
    r = float(np.mean(p.radius))
    density = 4.0 / (np.pi * r * r)  # about four spots per nucleus
    points = (rng.random((h, w)) < density) & fg
    sigma = max(1.0, 0.1 * r)
    spots = ndi.gaussian_filter(points.astype(np.float32), sigma) * (2 * np.pi * sigma * sigma)  # peaks of 1
    spots = np.minimum(spots, 1.5)
    level = float(np.median(signal[fg]))
    return (p.chromocenters * level * spots * fg).astype(np.float32)


def _depth_blurred(
    labels: np.ndarray, signal: np.ndarray, rng: np.random.Generator, sigma: float, extra: float
) -> np.ndarray:
    """The signal with each nucleus blurred by its depth: in-focus ones by ``sigma``, the deepest by ``sigma +
    extra`` (three depth layers; most nuclei near focus); light outside the nuclei stays in focus."""
    depth = rng.random(int(labels.max()) + 1) ** 2
    depth[0] = 0.0
    layer = np.minimum((depth * 3).astype(np.int64), 2)[labels]
    out = np.zeros_like(signal)
    for k in range(3):
        part = np.where(layer == k, signal, 0.0).astype(np.float32)
        if part.any():
            out += ndi.gaussian_filter(part, sigma + extra * k / 2)
    return out


def _illumination(rng: np.random.Generator, h: int, w: int, p: SynthParams) -> np.ndarray:
    """A multiplicative light field: vignetting (a quadratic fall-off from an off-centre optical axis) times a
    smooth random excitation field."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7)
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (h * h / 4 + w * w / 4)
    field = np.clip(1.0 - p.vignetting * r2, 0.05, None)
    if p.illumination > 0:
        coarse = rng.standard_normal((3, 3)).astype(np.float32)
        smooth = _upsampled(coarse, h, w)[:h, :w]
        smooth /= np.abs(smooth).max() + 1e-6
        field = field * np.exp(p.illumination * smooth)
    return field.astype(np.float32)


def _structured_background(
    labels: np.ndarray, signal: np.ndarray, rng: np.random.Generator, p: SynthParams
) -> np.ndarray:
    """Unlabelled light: faint cell bodies around the nuclei and small bright specks of debris."""
    h, w = labels.shape
    extra = np.zeros((h, w), np.float32)
    fg = labels > 0
    if p.cytoplasm > 0 and fg.any():
        reach = 1.2 * float(np.mean(p.radius))
        dist = ndi.distance_transform_edt(~fg)
        body = np.clip(1.0 - dist / (2.5 * reach), 0, 1) * (~fg)
        mottle = ndi.gaussian_filter(rng.random((h, w)).astype(np.float32), max(1.0, reach / 3))
        mottle = mottle / (mottle.max() + 1e-6)
        level = float(np.median(signal[fg])) if fg.any() else 1.0
        extra += (p.cytoplasm * level * body * (0.5 + mottle)).astype(np.float32)
    for _ in range(rng.poisson(p.debris_per_mpx * h * w / 1e6)):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        r = rng.uniform(0.6, 1.6)
        extra[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3] += (
            rng.uniform(0.3, 1.2)
            * _speck(r)[max(0, 2 - y) : 5 - max(0, y + 3 - h), max(0, 2 - x) : 5 - max(0, x + 3 - w)]
        )
    return extra


def _speck(radius: float) -> np.ndarray:
    yy, xx = np.mgrid[-2:3, -2:3]
    return np.exp(-(yy**2 + xx**2) / (2 * radius**2)).astype(np.float32)


def synth_nuclei_3d(
    shape: tuple[int, int, int] = (32, 128, 128),
    seed: int = 0,
    *,
    density: float = 60.0,
    radius: tuple[float, float] = (5.0, 9.0),
    z_spacing: float = 1.0,
    touching: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic nuclear-stain volume ``(D, H, W)`` uint8 and its instance labels (uint16).

    Ellipsoidal nuclei (``radius`` range in x/y pixels; z radii divided by ``z_spacing`` for stacks whose
    slices are further apart than their pixels), about ``density`` per 10⁶ voxels, a share ``touching`` of
    them placed against a neighbour; textured interiors, uneven background, anisotropic blur, Poisson plus
    Gaussian noise. Deterministic for a seed; nuclei are drawn in order, so later ones own shared voxels.
    """
    rng = np.random.default_rng(seed)
    d, h, w = shape
    n = max(1, round(density * d * h * w / 1e6))
    labels = np.zeros(shape, np.uint16)
    zz, yy, xx = np.ogrid[:d, :h, :w]
    centres: list[np.ndarray] = []
    for k in range(1, n + 1):
        r = rng.uniform(*radius, size=3) * np.array([1 / z_spacing, 1.0, 1.0]) * rng.uniform(0.85, 1.15, 3)
        if centres and rng.random() < touching:  # against a neighbour: touching clusters
            c = centres[rng.integers(len(centres))] + rng.normal(0, 1, 3) * r * 1.2
        else:
            c = rng.uniform([0, 0, 0], shape)
        centres.append(c)
        lo = np.maximum(np.floor(c - r - 1), 0).astype(int)
        hi = np.minimum(np.ceil(c + r + 2), shape).astype(int)
        if (hi <= lo).any():
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        inside = (
            ((zz[box[0]] - c[0]) / r[0]) ** 2
            + ((yy[:, box[1]] - c[1]) / r[1]) ** 2
            + ((xx[:, :, box[2]] - c[2]) / r[2]) ** 2
        ) <= 1
        labels[box][inside] = k
    fg = labels > 0
    texture = ndi.gaussian_filter(rng.random(shape).astype(np.float32), 1.2)
    brightness = rng.uniform(0.6, 1.0, n + 1).astype(np.float32)
    signal = np.where(fg, brightness[labels] * (0.75 + 0.5 * texture), 0.0)
    background = 0.08 + 0.05 * ndi.gaussian_filter(rng.random(shape).astype(np.float32), 12)
    clean = ndi.gaussian_filter(signal + background, (1.0 * max(z_spacing, 1.0), 0.8, 0.8))
    noisy = rng.poisson(clean * 120) / 120 + rng.normal(0, 0.02, shape)
    volume = np.clip(noisy / max(float(np.percentile(noisy, 99.9)), 1e-6) * 230, 0, 255).astype(np.uint8)
    return volume, _relabel_sequential(labels)


def _relabel_sequential(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    lut = np.zeros(int(ids.max()) + 1, np.uint16)
    lut[ids] = np.arange(len(ids), dtype=np.uint16)
    return lut[labels]


#: the version of the style family below: recorded with anything trained on it (a change means new data)
STYLE_VERSION = 3
#: the generator styles: ``default`` (:class:`SynthParams`), ``random`` (the training family, version 3),
#: ``random@2`` (version 2, which trained ``nuclei@1``) and ``held-out`` (ranges version 2 never draws: larger
#: nuclei, noisier cameras, more haze). The style-shift suite's domains (:mod:`unetkit.data.domains`) are styles
#: too (``unetkit synth --style few-photons``).
STYLES = ("default", "random", "held-out", "random@2")
#: what version 3 adds to the family, by group (each can be left out: ``random_style(..., without=...)``, the
#: generator's ablation in ``bench/generator_ablation.py``)
FEATURES = ("sizes", "camera", "focus", "illumination", "chromatin", "mitosis", "sheets")
#: version 3 draws at least this many nuclei per megapixel (about 6 in a 256² image), whatever their size
MIN_NUCLEI_PER_MPX = 100.0


def random_style(
    rng: np.random.Generator,
    held_out: bool = False,
    version: int = STYLE_VERSION,
    without: tuple[str, ...] = (),
) -> SynthParams:
    """One style of the domain-randomised family (``version`` 3, or 2: :func:`random_style_v2`).

    Version 3 widens version 2 by the :data:`FEATURES`: ``sizes`` (nuclei 5-80 px across, log-uniform),
    ``camera`` (a dark offset, dim images far below full scale, hot pixels, down to 4 photons at full
    brightness), ``focus`` (nuclei at different depths, blurred by theirs), ``illumination`` (vignetting, uneven
    excitation, haze up to 0.8), ``chromatin`` (bright chromocenters and nucleoli), ``mitosis`` (metaphase plates,
    pyknotic and fragmented apoptotic nuclei) and ``sheets`` (confluent sheets of packed nuclei). ``without``:
    feature groups left out, as version 2 draws them (every value is drawn anyway, so leaving one out changes no
    other)."""
    if version == 2 or held_out:
        return random_style_v2(rng, held_out)
    unknown = set(without) - set(FEATURES)
    if unknown:
        raise DataError(f"unknown generator features {sorted(unknown)}; choose from {', '.join(FEATURES)}")
    base = random_style_v2(rng)
    on = {f: f not in without for f in FEATURES}
    # every value is drawn, in this order, whichever features are on
    aspect = base.aspect[0]
    diameter = float(np.exp(rng.uniform(np.log(5.0), np.log(80.0))))  # equivalent diameter, px
    photons = float(np.exp(rng.uniform(np.log(4.0), np.log(400.0))))
    full_scale = float(np.exp(rng.uniform(np.log(0.1 if base.bits == 8 else 0.01), np.log(0.9))))
    offset = float(rng.uniform(0.0, 0.08)) if rng.random() < 0.5 else 0.0
    full_scale = full_scale if rng.random() < 0.6 else 0.0
    hot = float(rng.uniform(20, 300)) if rng.random() < 0.3 else 0.0
    depth_blur = float(rng.uniform(1.0, 5.0)) if rng.random() < 0.35 else 0.0
    vignetting = float(rng.uniform(0.2, 0.8)) if rng.random() < 0.4 else 0.0
    illumination = float(rng.uniform(0.2, 0.9)) if rng.random() < 0.4 else 0.0
    haze = float(rng.uniform(0.4, 0.8)) if rng.random() < 0.2 else 0.0
    chromocenters = float(rng.uniform(0.3, 1.5)) if rng.random() < 0.3 else 0.0
    mitotic = float(rng.uniform(0.01, 0.08)) if rng.random() < 0.3 else 0.0
    apoptotic = float(rng.uniform(0.01, 0.08)) if rng.random() < 0.3 else 0.0
    sheet = float(rng.uniform(0.3, 0.9)) if rng.random() < 0.25 else 0.0

    radius = diameter / 2 / float(np.sqrt((aspect + 1) / 2))  # semi-major axis of that area
    base_mpx = base.nuclei_per_mpx + 3.5 * base.clusters_per_mpx
    scale = 1.0
    if on[
        "sizes"
    ]:  # the same share of the image covered, but never fewer than MIN_NUCLEI_PER_MPX (no empty images)
        scale = min((radius / float(np.mean(base.radius))) ** 2, base_mpx / MIN_NUCLEI_PER_MPX)
    per_mpx = base_mpx / scale
    return dataclasses.replace(
        base,
        radius=(0.75 * radius, 1.25 * radius) if on["sizes"] else base.radius,
        nuclei_per_mpx=base.nuclei_per_mpx / scale,
        clusters_per_mpx=base.clusters_per_mpx / scale,
        dividing_per_mpx=base.dividing_per_mpx / scale,
        photons=(0.8 * photons, 1.2 * photons) if on["camera"] else base.photons,
        offset=offset * on["camera"],
        full_scale=full_scale * on["camera"],
        hot_pixels_per_mpx=hot * on["camera"],
        depth_blur=depth_blur * on["focus"],
        vignetting=vignetting * on["illumination"],
        illumination=illumination * on["illumination"],
        haze=(0.8 * haze, haze) if on["illumination"] and haze and not base.haze[1] else base.haze,
        chromocenters=chromocenters * on["chromatin"],
        mitotic_per_mpx=per_mpx * mitotic * on["mitosis"],
        apoptotic_per_mpx=per_mpx * apoptotic * on["mitosis"],
        sheet=sheet * on["sheets"],
    )


def random_style_v2(rng: np.random.Generator, held_out: bool = False) -> SynthParams:
    """One style of version 2 of the family: nuclei from ~6 to ~60 px across, sparse to packed clusters,
    dim to saturated, clean confocal to noisy wide-field, flat to hazy backgrounds, 8/12/16-bit; irregular,
    overlapping and dividing nuclei, chromatin textures and nucleoli, cell bodies and debris around them.

    ``held_out``: styles whose centres lie where the training family never draws them: the largest nuclei
    (typical radius 26-32 px; training: 3-20), the noisiest cameras (8-13 photons at full brightness, so every
    image stays under the training family's lowest 16; training: 20-400) and the haziest backgrounds (haze
    0.5-0.8; training: 0-0.4); each held-out style takes at least one of the three."""
    radius = float(np.exp(rng.uniform(np.log(3.0), np.log(20.0))))
    photons = float(np.exp(rng.uniform(np.log(20.0), np.log(400.0))))
    haze = float(rng.uniform(0.0, 0.4)) if rng.random() < 0.5 else 0.0
    if held_out:
        shifted = rng.permutation(3)[: int(rng.integers(1, 4))]
        radius = float(rng.uniform(26.0, 32.0)) if 0 in shifted else radius
        photons = float(rng.uniform(8.0, 13.0)) if 1 in shifted else photons
        haze = float(rng.uniform(0.5, 0.8)) if 2 in shifted else haze
    density = float(np.exp(rng.uniform(np.log(0.1), np.log(0.6))))  # share of the area covered by nuclei
    per_mpx = density * 1e6 / (np.pi * radius**2)
    clustered = float(rng.uniform(0.0, 0.8))
    dim = float(rng.uniform(0.08, 0.5))
    shapes: dict[str, Any] = {  # version 2: shapes, textures and structured backgrounds
        "irregularity": float(rng.uniform(0.0, 0.35)) if rng.random() < 0.6 else 0.0,
        "overlap": float(rng.uniform(0.1, 0.5)),
        "additive": bool(rng.random() < 0.5),
        "dividing_per_mpx": per_mpx * float(rng.uniform(0.0, 0.1)) if rng.random() < 0.5 else 0.0,
        "texture": float(rng.uniform(0.0, 0.8)) if rng.random() < 0.6 else 0.0,
        "cytoplasm": float(rng.uniform(0.05, 0.3)) if rng.random() < 0.35 else 0.0,
        "debris_per_mpx": float(rng.uniform(50, 1500)) if rng.random() < 0.4 else 0.0,
    }
    return SynthParams(
        radius=(0.7 * radius, 1.3 * radius),
        aspect=(float(rng.uniform(0.35, 0.8)), 1.0),
        nuclei_per_mpx=per_mpx * (1 - clustered),
        clusters_per_mpx=per_mpx * clustered / 3.5,
        cluster_size=(2, int(rng.integers(3, 9))),
        brightness=(dim, float(rng.uniform(dim + 0.2, 1.6))),  # above 1: saturates at full scale
        blur_sigma=(0.5, float(rng.uniform(0.8, 3.0))),
        photons=(0.8 * photons, 1.2 * photons),
        read_noise=(0.002, float(rng.uniform(0.005, 0.05))),
        background=(0.01, float(rng.uniform(0.03, 0.3))),
        haze=(0.8 * haze, haze) if haze else (0.0, 0.0),
        bits=int(rng.choice([8, 12, 16])),
        **shapes,
    )


def style_of(style: str, seed: int | np.random.SeedSequence) -> SynthParams | None:
    """The :class:`SynthParams` of ``style`` (one of :data:`STYLES` or a suite domain) for one image (None: the
    default), deterministic for ``seed``."""
    from .domains import DOMAINS  # the suite's domains are built from this module's parameters

    if style in DOMAINS:
        return DOMAINS[style].params
    if style not in STYLES:
        raise DataError(f"--style {style!r} is unknown; choose one of {', '.join((*STYLES, *DOMAINS))}")
    if style == "default":
        return None
    rng = np.random.default_rng(seed)
    return random_style(
        rng, held_out=style == "held-out", version=2 if style == "random@2" else STYLE_VERSION
    )


#: the generator's peak memory per pixel of an image (or voxel of a volume), measured: 0.97 GB for 4096²
SYNTH_BYTES_PER_PIXEL = 64


def synthesize_dataset(
    out: str | Path,
    n: int = 40,
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    *,
    mask_format: str = "png",
    overwrite: bool = False,
    params: SynthParams | None = None,
    depth: int | None = None,
    style: str = "default",
) -> Path:
    """Write ``n`` synthetic images in the paired-folder layout.

    ``OUT/images/synth_000.png`` (uint8) and ``OUT/masks/synth_000.png`` (uint16 instance labels; or
    ``.tif`` with ``mask_format="tif"``). Image ``i`` depends only on ``(seed, i)``. With ``depth``, volumes of
    ``depth`` slices (:func:`synth_nuclei_3d`) written as TIFF z-stacks, and ``dataset.yaml`` says
    ``spatial_dims: 3``. ``style``: ``random`` draws each image's style from the domain-randomised family
    (:func:`random_style`), ``held-out`` from the ranges that family never uses; images are then uint8 or
    uint16 (12- and 16-bit).
    """
    out = Path(out)
    if style != "default" and (params is not None or depth is not None):
        raise DataError("--style draws its own generator settings, for 2-D images: drop params/--depth")
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    if seed < 0:
        raise DataError(f"--seed must be 0 or more, got {seed}")
    if depth is not None and depth < 2:
        raise DataError(f"--depth {depth}: a volume needs at least 2 slices")
    side = (size, size) if isinstance(size, int) else tuple(size)
    pixels = math.prod(side) * (depth or 1)
    if pixels * SYNTH_BYTES_PER_PIXEL > available_memory() / 2:
        raise DataError(
            f"--size {'x'.join(map(str, side))}{f' --depth {depth}' if depth else ''}: generating one image of "
            f"{pixels:,} pixels needs about {pixels * SYNTH_BYTES_PER_PIXEL / 2**30:.0f} GiB, more than half the "
            f"{available_memory() / 2**30:.0f} GiB available; choose a smaller --size (or --depth)"
        )
    if mask_format not in ("png", "tif"):
        raise DataError(f"mask format {mask_format!r} is unknown; choose png or tif")
    if (out / "images").exists() and any((out / "images").iterdir()) and not overwrite:
        raise DataError(
            f"{out}/images already holds files; pass --overwrite to replace them or choose another folder"
        )
    width = len(str(n - 1)) if n > 1000 else 3
    volumes = depth is not None
    for i in range(n):
        name = f"synth_{i:0{width}d}"
        if volumes:
            seed_i = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
            volume, labels = synth_nuclei_3d((depth, *side), seed_i)  # type: ignore[arg-type]
            write_volume(out / "images" / f"{name}.tif", volume, overwrite=True)
            write_volume(out / "masks" / f"{name}.tif", labels, overwrite=True)
        else:
            styled = style_of(style, np.random.SeedSequence([seed, i, 1])) if style != "default" else params
            image, labels = synth_nuclei(size, np.random.SeedSequence([seed, i]), styled)
            write_image(out / "images" / f"{name}.png", image, overwrite=True)
            write_image(out / "masks" / f"{name}.{mask_format}", labels, overwrite=True)
    atomic_write_text(
        out / DESCRIPTOR,
        f"# written by unetkit synth: {'TIFF z-stacks; ' if volumes else ''}masks hold instance labels "
        "(0 = background)\nlayout: paired\nmask_encoding: instances\n"
        + ("spatial_dims: 3\n" if volumes else ""),
    )
    log.info("wrote %d synthetic %s to %s", n, "volumes" if volumes else "images", out)
    return out
