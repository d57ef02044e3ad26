"""Paired augmentation: one random draw, applied identically to image, target and weight map.

Geometric (one resampling pass, so a patch is interpolated once):
- the paper's elastic deformation: random displacements on a coarse ``points x points`` grid (3x3) with
  ``sigma`` pixels standard deviation (10), interpolated per pixel with cubic splines — the scheme of the
  ``elasticdeform`` package, whose wheel does not import under NumPy 2, written here with SciPy;
- free rotation (uniform in ±``rotate`` degrees) and scaling (uniform in 1 ± ``scale``).
Images are resampled with cubic splines, targets with nearest neighbour, weight maps linearly. The patch is cut
from a larger window of the real image, so no artificial border enters it.

Intensity (image only): brightness, contrast and gamma (``intensity`` strength), Gaussian noise (``noise``
standard deviation, in normalised units) and Gaussian blur (sigma up to ``blur``).

Every draw comes from the ``numpy.random.Generator`` passed in: augmentation is seeded and reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["Augmenter"]


@dataclass(frozen=True)
class Augmenter:
    flips: bool = True  # flips and 90-degree rotations
    elastic: bool = False
    elastic_sigma: float = 10.0
    elastic_points: int = 3
    rotate: float = 0.0  # degrees
    scale: float = 0.0  # fraction
    intensity: float = 0.0
    noise: float = 0.0
    blur: float = 0.0

    @property
    def geometric(self) -> bool:
        return self.elastic or self.rotate > 0 or self.scale > 0

    def context(self, size: int) -> int:
        """Extra pixels to read around a patch of ``size`` so that resampling never leaves the real image."""
        if not self.geometric:
            return 0
        reach = size * (math.sqrt(2) * (1 + self.scale) - 1) / 2 if self.rotate or self.scale else 0
        return math.ceil(reach + (4 * self.elastic_sigma if self.elastic else 0)) + 2

    def coordinates(self, rng: np.random.Generator, size: int, pad: int) -> np.ndarray:
        """Sampling coordinates ``(2, size, size)`` into a window of ``size + 2 * pad`` pixels."""
        grid = np.mgrid[0:size, 0:size].astype(np.float64)
        centre = (size - 1) / 2
        rel = grid - centre
        if self.rotate or self.scale:
            angle = math.radians(rng.uniform(-self.rotate, self.rotate)) if self.rotate else 0.0
            zoom = rng.uniform(1 - self.scale, 1 + self.scale) if self.scale else 1.0
            c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
            rel = np.stack([c * rel[0] - s * rel[1], s * rel[0] + c * rel[1]])
        coords = rel + centre + pad
        if self.elastic:
            n = self.elastic_points
            coarse = rng.normal(0.0, self.elastic_sigma, size=(2, n, n))
            at = np.linspace(0, n - 1, size)
            yy, xx = np.meshgrid(at, at, indexing="ij")
            for axis in range(2):  # cubic-spline interpolation of the coarse grid to every pixel
                coords[axis] += ndi.map_coordinates(coarse[axis], [yy, xx], order=3, mode="nearest")
        return coords

    def __call__(
        self, rng: np.random.Generator, image: np.ndarray, labels: list[np.ndarray], margin: int, pad: int
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Augment an image window ``(C, P + 2m + 2pad, ...)`` and label windows of the same extent.

        Returns the image patch ``(C, P + 2m, P + 2m)`` and label patches ``(P, P)`` (``m = margin``).
        """
        size_in = image.shape[-1] - 2 * pad
        if self.geometric:
            coords = self.coordinates(rng, size_in, pad)
            image = np.stack(
                [ndi.map_coordinates(ch, coords, order=3, mode="mirror") for ch in image]
            ).astype(np.float32)
            inner = coords[:, margin : size_in - margin, margin : size_in - margin]
            labels = [
                ndi.map_coordinates(a, inner, order=0 if a.dtype == np.uint8 else 1, mode="mirror").astype(
                    a.dtype
                )
                for a in labels
            ]
        else:
            image = image[..., pad : image.shape[-2] - pad, pad : image.shape[-1] - pad]
            labels = [
                a[margin + pad : a.shape[0] - margin - pad, margin + pad : a.shape[1] - margin - pad]
                for a in labels
            ]
        if self.flips:
            k = int(rng.integers(4))
            flip = rng.random() < 0.5
            image, labels = np.rot90(image, k, axes=(-2, -1)), [np.rot90(a, k) for a in labels]
            if flip:
                image, labels = image[..., ::-1], [a[..., ::-1] for a in labels]
        if self.intensity or self.noise or self.blur:
            image = self._intensity(rng, np.array(image, np.float32))
        return image, labels

    def volume(
        self, rng: np.random.Generator, image: np.ndarray, labels: list[np.ndarray], margin: tuple[int, ...]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Augment a volume patch ``(C, *P_in)`` and its label patches (same extent); labels come back cropped
        by ``margin`` per axis (the target of a valid network).

        3-D augmentation: an elastic deformation (the paper's scheme in 3-D: random displacements on a coarse
        ``elastic_points``³ grid, ``elastic_sigma`` voxels, cubic interpolation to every voxel; image cubic,
        labels nearest, mirrored at the patch border), a flip along z, then the 8 in-plane flips/rotations,
        then the intensity changes. Rotation and scaling are in-plane options of 2-D training only.
        """
        size = image.shape[1:]
        if self.elastic:
            n = self.elastic_points
            coarse = rng.normal(0.0, self.elastic_sigma, size=(3, n, n, n))
            at = np.meshgrid(*(np.linspace(0, n - 1, s) for s in size), indexing="ij")
            coords = np.indices(size, dtype=np.float64)
            for axis in range(3):
                coords[axis] += ndi.map_coordinates(coarse[axis], at, order=3, mode="nearest")
            image = np.stack(
                [ndi.map_coordinates(ch, coords, order=3, mode="mirror") for ch in image]
            ).astype(np.float32)
            labels = [
                ndi.map_coordinates(a, coords, order=0 if a.dtype == np.uint8 else 1, mode="mirror").astype(
                    a.dtype
                )
                for a in labels
            ]
        crop = tuple(slice(m, s - m) for m, s in zip(margin, size, strict=True))
        labels = [a[crop] for a in labels]
        if self.flips:
            if rng.random() < 0.5:
                image, labels = image[:, ::-1], [a[::-1] for a in labels]
            k = int(rng.integers(4))
            image, labels = np.rot90(image, k, axes=(-2, -1)), [np.rot90(a, k, axes=(-2, -1)) for a in labels]
            if rng.random() < 0.5:
                image, labels = image[..., ::-1], [a[..., ::-1] for a in labels]
        if self.intensity or self.noise or self.blur:
            image = self._intensity(rng, np.array(image, np.float32))
        return image, labels

    def _intensity(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        spatial = tuple(range(1, x.ndim))  # per channel, over the whole patch (2-D or 3-D)
        if self.intensity:
            a = self.intensity
            mean = x.mean(axis=spatial, keepdims=True)
            std = x.std(axis=spatial, keepdims=True) + 1e-6
            x = (x - mean) * rng.uniform(1 - a, 1 + a) + mean + rng.uniform(-a, a) * std
            lo, hi = x.min(axis=spatial, keepdims=True), x.max(axis=spatial, keepdims=True)
            span = np.maximum(hi - lo, 1e-6)
            x = lo + span * ((x - lo) / span) ** math.exp(rng.uniform(-a, a))
        if self.blur and rng.random() < 0.5:
            sigma = rng.uniform(0, self.blur)
            x = np.stack([ndi.gaussian_filter(ch, sigma) for ch in x])
        if self.noise:
            x = x + rng.normal(0, rng.uniform(0, self.noise), size=x.shape).astype(np.float32)
        return x.astype(np.float32)
