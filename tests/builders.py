"""Test data used by more than one tier: small datasets and inputs written as real files."""

from __future__ import annotations

import numpy as np
import tifffile
import zarr

from unetkit import synth_nuclei, write_image


def instance_dataset_with_errors(tmp_path):
    """A 2-image instance dataset and predictions with one merged pair and one missed object."""
    root = tmp_path / "gt"
    for i in range(2):
        image, labels = synth_nuclei((96, 128), seed=20 + i)
        write_image(root / "images" / f"im{i}.png", image)
        write_image(root / "masks" / f"im{i}.png", labels.astype(np.uint16))
        pred = labels.copy()
        pred[pred == 1] = 0  # object 1 missed
        write_image(tmp_path / "pred" / f"im{i}_instances.tif", pred.astype(np.uint16))
        write_image(tmp_path / "pred" / f"im{i}.png", ((pred > 0) * 255).astype(np.uint8))
    (root / "dataset.yaml").write_text("layout: paired\nmask_encoding: instances\n")
    return root, tmp_path / "pred"


def image_in_every_format(tmp_path):
    image, _ = synth_nuclei((150, 230), seed=7)
    paths = {"png": write_image(tmp_path / "src" / "a.png", image)}
    tifffile.imwrite(tmp_path / "tiled.tif", image, tile=(64, 64), compression="zlib")  # read tile by tile
    tifffile.imwrite(tmp_path / "plain.tif", image)  # memory-mapped
    z = zarr.create_array(str(tmp_path / "img.zarr"), shape=image.shape, chunks=(64, 64), dtype=image.dtype)
    z[:] = image
    np.save(tmp_path / "arr.npy", image)
    paths.update(tiled=tmp_path / "tiled.tif", plain=tmp_path / "plain.tif", zarr=tmp_path / "img.zarr")
    paths["npy"] = tmp_path / "arr.npy"
    return image, paths
