"""A generated corpus of damaged and deceptive inputs, run through the commands that read them: each is refused
with one line (exit 2) naming the file, and every input is byte-identical afterwards (issue 17, part).
Property-based fuzzing of the image reader and the YAML loader runs with a fixed budget."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
import tifffile

from unetkit import write_image
from unetkit.cli.main import main


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
