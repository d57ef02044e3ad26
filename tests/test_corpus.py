"""A generated corpus of damaged and deceptive inputs, run through the commands that read them: each is refused
with one line (exit 2) naming the file, and every input is byte-identical afterwards (issue 17, part).
Property-based fuzzing of the image reader and the YAML loader runs with a fixed budget."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unetkit import read_image, write_image
from unetkit.cli.main import main
from unetkit.config import read_yaml
from unetkit.errors import UnetkitError


def _huge_header(path):
    """A valid 16x16 TIFF whose header is edited to declare 100,000 x 100,000 pixels."""
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        offsets = [tags[k].valueoffset for k in ("ImageWidth", "ImageLength", "StripByteCounts")]
    raw = bytearray(path.read_bytes())
    for off, value in zip(offsets, (100_000, 100_000, 100_000 * 100_000 % 2**32), strict=True):
        raw[off : off + 4] = struct.pack("<I", value)
    path.write_bytes(bytes(raw))


def _truncated_png(path):
    _png(path, np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))
    path.write_bytes(path.read_bytes()[:200])


def _png(path, arr=None):
    write_image(path, np.zeros((24, 24), np.uint8) if arr is None else arr)


CORPUS = {
    "zero_bytes.png": lambda p: p.write_bytes(b""),
    "text_as.png": lambda p: p.write_text("this is not an image\n"),
    "truncated.png": _truncated_png,
    "truncated.tif": lambda p: (
        tifffile.imwrite(p, np.ones((64, 64), np.uint16)),
        p.write_bytes(p.read_bytes()[:3000]),
    ),
    "huge_header.tif": _huge_header,
    "nan.tif": lambda p: tifffile.imwrite(p, np.full((24, 24), np.nan, np.float32)),
    "complex.tif": lambda p: tifffile.imwrite(p, np.ones((24, 24), np.complex64)),
    "five_channels.tif": lambda p: tifffile.imwrite(
        p,
        np.random.default_rng(1).integers(0, 255, (24, 24, 5), np.uint8),
        photometric="minisblack",
        planarconfig="contig",
    ),
    "garbage.npy": lambda p: p.write_bytes(b"\x93NUMPY" + bytes(100)),
    "zero_size.tif": lambda p: tifffile.imwrite(p, np.zeros((0, 5), np.uint8)),
}


def md5s(folder):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_image_through_predict_and_check_data(name, tmp_path, tiny_run, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    CORPUS[name](folder / name)
    before = md5s(folder)
    rc = main(["predict", str(tiny_run.run_dir), str(folder / name), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and name in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    (data / "images" / name).write_bytes((folder / name).read_bytes())
    _png(data / "masks" / f"{name.rsplit('.', 1)[0]}.png")
    rc = main(["check-data", str(data)])
    out = capsys.readouterr().out
    assert rc == 1 and name in out  # listed as a problem, never accepted
    assert md5s(folder) == before  # byte-identical: nothing wrote to the input


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=600), suffix=st.sampled_from([".png", ".tif", ".npy", ".jpg"]))
def test_fuzzed_image_bytes_are_read_or_refused_never_crash(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        arr = read_image(path)
    except UnetkitError:
        return
    assert arr.ndim in (2, 3)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_fuzzed_yaml_is_parsed_or_refused_never_crash(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        read_yaml(path, "--config")
    except UnetkitError:
        pass


@settings(max_examples=80, deadline=None)
@given(
    raw=st.dictionaries(
        st.sampled_from(["model", "data", "train", "extra"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=10),
            st.dictionaries(
                st.sampled_from(["depth", "patch_size", "lr", "epochs", "mask_encoding", "layout", "nonsense"]),
                st.one_of(st.none(), st.integers(-5, 10**9), st.floats(allow_nan=True), st.text(max_size=8),
                          st.lists(st.integers(), max_size=3)),
                max_size=4,
            ),
        ),
        max_size=4,
    )
)  # fmt: skip
def test_fuzzed_configurations_are_accepted_or_refused_by_name(raw):
    from unetkit.config import RunConfig, check_config

    try:
        check_config(RunConfig.from_dict(raw, source="fuzz.yaml"))
    except UnetkitError as exc:
        assert str(exc)  # a message, never a crash of another kind
