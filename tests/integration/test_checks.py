"""Bad input is refused before any compute, with the offending file named, and leaves no run folder."""

import numpy as np
import pytest
import tifffile

from unetkit import synth_nuclei, write_image
from unetkit.cli.main import main
from unetkit.data.checks import check_dataset
from unetkit.data.synthetic import SynthParams

DENSE = SynthParams(radius=(3.0, 6.0), nuclei_per_mpx=4000, clusters_per_mpx=1000)  # objects even at 32x40


def good(root, n=3, shape=(32, 40)):
    for i in range(n):
        image, labels = synth_nuclei(shape, i, DENSE)
        assert labels.max() > 0  # a good dataset has something to learn
        write_image(root / "images" / f"img{i}.png", image)
        write_image(root / "masks" / f"img{i}.png", ((labels > 0) * 255).astype(np.uint8))
    return root


def zero_byte(root):
    (root / "images" / "img1.png").write_bytes(b"")
    return "img1.png", []


def truncated(root):
    p = root / "images" / "img1.png"
    p.write_bytes(p.read_bytes()[:60])
    return "img1.png", []


def image_without_mask(root):
    (root / "masks" / "img2.png").unlink()
    return "img2.png", []


def mask_without_image(root):
    write_image(root / "masks" / "extra.png", np.zeros((32, 40), np.uint8))
    return "extra.png", []


def size_mismatch(root):
    write_image(root / "masks" / "img0.png", np.zeros((40, 32), np.uint8), overwrite=True)
    return "img0.png", []


def value_outside_classes(root):
    m = np.zeros((32, 40), np.uint8)
    m[:4] = 1
    m[5, 5] = 7
    write_image(root / "masks" / "img1.png", m, overwrite=True)
    for i in (0, 2):
        write_image(root / "masks" / f"img{i}.png", (m == 1).astype(np.uint8), overwrite=True)
    return "img1.png", ["--mask-encoding", "classes", "--num-classes", "2"]


def value_255_in_two_class_set(root):
    for i in range(3):
        m = np.zeros((32, 40), np.uint8)
        m[:4] = 1
        m[8:10] = 255
        write_image(root / "masks" / f"img{i}.png", m, overwrite=True)
    return "--ignore-index 255", ["--mask-encoding", "classes", "--num-classes", "2"]


def rgb_where_indices_expected(root):
    write_image(
        root / "masks" / "img1.png",
        np.dstack([np.eye(32, 40, dtype=np.uint8) * 200] + [np.zeros((32, 40), np.uint8)] * 2),
        overwrite=True,
    )
    return "img1.png", ["--mask-encoding", "classes", "--num-classes", "2"]


def nan_pixels(root):
    (root / "images" / "img1.png").unlink()
    image = np.ones((32, 40), np.float32)
    image[3, 3] = np.nan
    tifffile.imwrite(root / "images" / "img1.tif", image)
    return "img1.tif", []


def mixed_channels(root):
    (root / "images" / "img1.png").unlink()
    np.save(root / "images" / "img1.npy", np.random.default_rng(0).random((32, 40, 5)).astype(np.float32))
    return "img1.npy", []


def duplicate_stems(root):
    tifffile.imwrite(root / "images" / "img0.tif", np.zeros((32, 40), np.uint8))
    return "img0", []


def ambiguous_masks(root):
    for i in range(3):
        m = np.zeros((32, 40), np.uint8)
        m[:4], m[4:8] = 1, 2
        write_image(root / "masks" / f"img{i}.png", m, overwrite=True)
    return "--mask-encoding", []


CASES = [
    zero_byte,
    truncated,
    image_without_mask,
    mask_without_image,
    size_mismatch,
    value_outside_classes,
    value_255_in_two_class_set,
    rgb_where_indices_expected,
    nan_pixels,
    mixed_channels,
    duplicate_stems,
    ambiguous_masks,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_refused_with_the_file_named(tmp_path, capsys, case):
    data = good(tmp_path / "d")
    needle, extra = case(data)
    run = tmp_path / "run"
    rc = main(["check-data", str(data), *extra])
    out = capsys.readouterr()
    assert rc == 1
    assert needle in out.out, out.out
    assert "training would be refused" in out.out
    rc = main(["train", str(data), "--out", str(run), "--epochs", "1", "--no-progress", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "nothing was trained" in err, err
    assert "Traceback" not in err
    assert not run.exists()  # no partial run folder for a later run to trip over


def test_a_good_dataset_passes_with_a_summary(tmp_path, capsys):
    data = good(tmp_path / "d")
    assert main(["check-data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "OK: training would start" in out
    for row in ("samples", "image size", "channels", "mask encoding", "class pixels"):
        assert row in out
    assert "note: " in out and "smaller than the training patch" in out  # 32x40 < 256, padded


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    data = good(tmp_path / "d", n=4)
    zero_byte(data)
    image_without_mask(data)
    mask_without_image(data)
    report = check_dataset(data)
    joined = "\n".join(report.problems)
    assert len(report.problems) == 3
    for name in ("img1.png", "img2.png", "extra.png"):
        assert name in joined
