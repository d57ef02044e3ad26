"""Distributed tiled inference on a real Dask LocalCluster (2 worker processes) over real zarr stores."""

from __future__ import annotations

import numpy as np

from unetkit.inference.distributed import chunk_regions


def test_chunk_regions_cover_the_image_once():
    regions = chunk_regions((300, 260), 96)
    cover = np.zeros((300, 260), int)
    for (y0, y1), (x0, x1) in regions:
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all() and len(regions) == 4 * 3
