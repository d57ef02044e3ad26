"""The paper's weight maps (Eq. 2), separation borders, and the weighted loss."""

import numpy as np

from tests.conftest import TINY_CLI
from unetkit import DataConfig, RunConfig, read_image, synth_nuclei, write_image, write_weight_maps
from unetkit.cli.main import main


def test_weights_command_and_training_with_weight_maps(tmp_path, capsys):
    for i in range(3):
        image, labels = synth_nuclei((64, 64), seed=i)
        write_image(tmp_path / "d" / "images" / f"a{i}.png", image)
        write_image(tmp_path / "d" / "masks" / f"a{i}.png", labels)
    (tmp_path / "d" / "dataset.yaml").write_text("mask_encoding: instances\n")
    assert main(["weights", str(tmp_path / "d"), "--out", str(tmp_path / "w"), "--border-gap", "2"]) == 0
    picture = read_image(tmp_path / "w" / "a0_weights.png")
    values = read_image(tmp_path / "w" / "a0_weights.tif")
    assert picture.shape == (64, 64, 3) and values.dtype == np.float32 and values.max() > 2
    # the largest weight said is over every map (it was the last map's), as the Python API returns it
    largest = max(float(read_image(tmp_path / "w" / f"a{i}_weights.tif").max()) for i in range(3))
    assert f"max weight {largest:.2f}" in capsys.readouterr().out
    cfg = RunConfig(data=DataConfig(border_gap=2, mask_encoding="instances"))
    maps = write_weight_maps(tmp_path / "d", tmp_path / "w2", cfg, progress=False)
    assert (maps.count, maps.max_weight) == (3, largest)
    rc = main(
        [
            "train",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "run"),
            "--weight-map",
            "--border-gap",
            "2",
            "--num-classes",
            "2",
            *TINY_CLI,
        ]
    )
    assert rc == 0
    rc = main(
        ["train", str(tmp_path / "d"), "--out", str(tmp_path / "run2"), "--weight-map", "--loss", "dice"]
    )
    assert rc == 2 and "weight_map weights the cross-entropy" in capsys.readouterr().err
