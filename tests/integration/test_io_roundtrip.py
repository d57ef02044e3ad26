"""Property: any valid image or mask written in a supported format reads back unchanged (a PNG of four channels
is RGBA, and its alpha, transparency rather than image data, is dropped when read)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from unetkit import read_image, write_image

FORMATS = {
    ".png": [(np.uint8, None), (np.uint8, 3), (np.uint8, 4), (np.uint16, None)],
    ".tif": [
        (np.uint8, None),
        (np.uint16, None),
        (np.float32, None),
        (np.int32, None),
        (np.uint8, 3),
        (np.uint16, 4),
        (np.float32, 3),
    ],
    ".npy": [(np.uint8, None), (np.uint16, None), (np.float32, None), (np.float64, 3), (np.uint8, 4)],
}
CASES = [(fmt, dtype, ch) for fmt, kinds in FORMATS.items() for dtype, ch in kinds]


@st.composite
def image_case(draw):
    fmt, dtype, channels = draw(st.sampled_from(CASES))
    h, w = draw(st.integers(1, 33)), draw(st.integers(1, 33))
    shape = (h, w) if channels is None else (h, w, channels)
    elements = st.floats(-1e6, 1e6, width=32, allow_nan=False) if np.dtype(dtype).kind == "f" else None
    return fmt, draw(arrays(dtype, shape, elements=elements))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=image_case())
def test_write_then_read_is_identity(tmp_path_factory, case):
    fmt, array = case
    path = tmp_path_factory.mktemp("rt") / f"x{fmt}"
    write_image(path, array)
    back = read_image(path)
    assert back.dtype == array.dtype, (fmt, array.shape)
    rgba = fmt == ".png" and array.ndim == 3 and array.shape[-1] == 4
    np.testing.assert_array_equal(back, array[..., :3] if rgba else array)
