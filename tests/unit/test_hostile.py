"""Issue 17 (part): hostile files and faults get one line and exit 2, never a traceback, a hang or a damaged input."""

import numpy as np
import pytest

from unetkit import DataConfig, evaluate, read_image, synth_nuclei, write_image
from unetkit.cli.main import main
from unetkit.data.masks import parse_class_map
from unetkit.errors import ConfigError


def test_class_map_values_outside_what_a_mask_holds_are_refused():
    for bad in ({0: "bg", 70000: "x"}, [{"name": "bg", "value": 0}, {"name": "x", "value": -1}]):
        with pytest.raises(ConfigError, match="outside 0..65535"):
            parse_class_map(bad, "--class-map m.yaml")


def test_a_file_name_cannot_inject_script_into_the_report(tmp_path):
    name = "a' onerror='alert(1)"
    truth = np.zeros((16, 16), np.uint8)
    truth[4:9, 4:9] = 255
    write_image(tmp_path / "gt" / f"{name}.png", truth)
    write_image(tmp_path / "pred" / f"{name}.png", truth)
    from unetkit.workflows.report import write_report

    index = write_report(evaluate(tmp_path / "pred", tmp_path / "gt", data=DataConfig()), tmp_path / "report")
    html = index.read_text()
    assert "' onerror=" not in html and "onerror='alert" not in html


def test_instance_labels_near_2_to_the_32_cost_no_more_than_small_ones(tmp_path):
    from unetkit.data.masks import MaskEncoding, compact_labels
    from unetkit.data.synthetic import SynthParams

    dense = SynthParams(radius=(4.0, 7.0), nuclei_per_mpx=2500, clusters_per_mpx=1200)
    data = tmp_path / "data"
    for i in range(3):
        image, labels = synth_nuclei((48, 56), i, dense)
        big = np.where(labels > 0, labels.astype(np.uint32) + (2**32 - 1000), 0).astype(np.uint32)
        write_image(data / "images" / f"a{i}.png", image)
        write_image(data / "masks" / f"a{i}.tif", big)
    small = synth_nuclei((48, 56), 0, dense)[1]
    huge = np.where(small > 0, small.astype(np.int64) + 2**32 - 1000, 0)
    assert np.array_equal(compact_labels(huge), small)  # the same objects, numbered 1..N
    enc = MaskEncoding("instances", target="border")
    assert enc.weights(huge, enc.encode(huge), 10.0, 5.0).shape == huge.shape  # no array of 2^32 entries
    args = ["train", str(data), "--out", str(tmp_path / "run"), "--mask-encoding", "instances", "--target", "border",
            "--weight-map", "--epochs", "1", "--steps-per-epoch", "1", "--batch", "2", "--patch", "32",
            "--base-channels", "2", "--depth", "1", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(args) == 0  # planning (on the fly, no measured run) and weight maps included


def test_a_pickled_npy_is_never_unpickled_and_says_what_to_do(tmp_path):
    from unetkit.errors import DataError as UserDataError

    np.save(tmp_path / "cell_seg.npy", {"masks": np.zeros((4, 4))}, allow_pickle=True)  # as Cellpose saves
    with pytest.raises(UserDataError, match="never unpickles"):
        read_image(tmp_path / "cell_seg.npy")
