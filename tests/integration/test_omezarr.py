"""OME-Zarr in and out: ``predict --format ome-zarr`` writes the image with its labels (mask, instances) as
multiscale OME-Zarr, read back here with the ``ome-zarr`` library's own reader; ``predict --level N`` reads an
OME-Zarr input at a resolution level, and the results lie where that level lay (pixel size, offset)."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit import DataError, predict_files, read_image, synth_nuclei, write_image
from unetkit.cli.main import main

pytest.importorskip("ome_zarr", reason="the [ome-zarr] extra is not installed")
zarr = pytest.importorskip("zarr")
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402
from ome_zarr.writer import write_image as write_ome_image  # noqa: E402


def _read_back(path):
    """name → list of levels (NumPy), and name → the level transformations, as the ome-zarr reader sees them."""
    levels, placement = {}, {}
    for node in Reader(parse_url(str(path)))():
        name = node.metadata.get("name")
        if node.data:
            levels[name] = [np.asarray(d) for d in node.data]
            placement[name] = node.metadata.get("coordinateTransformations")
    return levels, placement


def test_results_are_an_ome_zarr_image_with_multiscale_labels(tmp_path):
    image = synth_nuclei((601, 1100), seed=4)[0]  # odd height; two levels (the shorter side keeps 256)
    write_image(tmp_path / "in" / "cells.png", image)
    common = [
        "predict",
        "nuclei",
        str(tmp_path / "in"),
        "--instances",
        "--no-progress",
        "--precision",
        "float32",
    ]
    assert main([*common, "--out", str(tmp_path / "ome"), "--format", "ome-zarr"]) == 0
    assert main([*common, "--out", str(tmp_path / "png")]) == 0
    levels, placement = _read_back(tmp_path / "ome" / "cells.ome.zarr")
    assert set(levels) == {"image", "mask", "instances"}
    np.testing.assert_array_equal(levels["image"][0], image)  # the image as the model saw it
    np.testing.assert_array_equal(
        levels["mask"][0], read_image(tmp_path / "png" / "cells.png")
    )  # same encoding
    np.testing.assert_array_equal(
        levels["instances"][0], read_image(tmp_path / "png" / "cells_instances.tif")
    )
    for name in ("mask", "instances"):
        assert [lv.shape for lv in levels[name]] == [(601, 1100), (301, 550)]
        np.testing.assert_array_equal(levels[name][1], levels[name][0][::2, ::2])  # no invented label value
        assert placement[name][1] == [{"type": "scale", "scale": [2.0, 2.0]},
                                      {"type": "translation", "translation": [0.0, 0.0]}]  # fmt: skip
    assert set(np.unique(levels["mask"][0])) <= {0, 255}
    # every object's row of the objects table rides on the label image (OME-NGFF image-label properties)
    import csv

    import zarr

    attrs = zarr.open_group(str(tmp_path / "ome" / "cells.ome.zarr" / "labels" / "instances"), mode="r").attrs
    node = attrs.asdict().get("ome", attrs.asdict())
    props = {p["label-value"]: p for p in node["image-label"]["properties"]}
    rows = list(csv.DictReader(open(tmp_path / "ome" / "cells_objects.csv", encoding="utf-8")))
    assert set(props) == set(np.unique(levels["instances"][0])) - {0} == {int(r["label"]) for r in rows}
    first = rows[0]  # the least confident object, the same in both
    assert abs(props[int(first["label"])]["confidence"] - float(first["confidence"])) < 1e-3
    assert props[int(first["label"])]["area"] == int(first["area"])
    # a result exists: refused without --overwrite, replaced whole with it
    assert main([*common, "--out", str(tmp_path / "ome"), "--format", "ome-zarr"]) != 0
    assert main([*common, "--out", str(tmp_path / "ome"), "--format", "ome-zarr", "--overwrite"]) == 0


def test_a_large_image_streams_into_the_same_ome_zarr(tmp_path):
    image = synth_nuclei((520, 700), seed=6)[0]
    write_image(tmp_path / "in" / "big.tif", image)
    kw = dict(format="ome-zarr", instances=True, progress=False, precision="float32")
    predict_files("nuclei", [tmp_path / "in"], tmp_path / "whole", **kw)
    predict_files("nuclei", [tmp_path / "in"], tmp_path / "streamed", max_pixels_in_memory=1 << 16, **kw)
    whole, _ = _read_back(tmp_path / "whole" / "big.ome.zarr")
    streamed, _ = _read_back(tmp_path / "streamed" / "big.ome.zarr")
    for name in ("image", "mask", "instances"):
        for a, b in zip(whole[name], streamed[name], strict=True):
            np.testing.assert_array_equal(a, b)
    assert not list((tmp_path / "streamed").glob(".unetkit*"))  # the work folder is gone


def test_an_ome_zarr_input_is_read_at_the_chosen_level_and_results_lie_where_it_lay(tmp_path):
    image = synth_nuclei((1024, 1024), seed=9)[0]
    source = tmp_path / "slide.ome.zarr"
    write_ome_image(image, zarr.open_group(str(source), mode="w"), scale_factors=[2, 4], axes="yx",
                    scale={"y": 0.25, "x": 0.25}, axes_units={"y": "micrometer", "x": "micrometer"})  # fmt: skip
    inputs, in_place = _read_back(source)
    level1 = inputs["image"][1]
    args = ["predict", "nuclei", str(source), "--level", "1", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main([*args, "--format", "ome-zarr", "--precision", "float32"]) == 0
    write_image(tmp_path / "l1" / "slide.tif", level1)  # the same pixels as a plain file
    assert main(["predict", "nuclei", str(tmp_path / "l1"), "--out", str(tmp_path / "plain"), "--no-progress",
                 "--precision", "float32"]) == 0  # fmt: skip
    levels, placement = _read_back(tmp_path / "out" / "slide.ome.zarr")
    assert levels["mask"][0].shape == level1.shape == (512, 512)
    np.testing.assert_array_equal(levels["mask"][0], read_image(tmp_path / "plain" / "slide.png"))
    assert placement["image"][0] == in_place["image"][1]  # 0.5 um pixels, offset 0.125 um: level 1's own
    assert placement["mask"][0] == in_place["image"][1]
    group = zarr.open_group(str(tmp_path / "out" / "slide.ome.zarr"), mode="r")
    assert [a.get("unit") for a in group.attrs["ome"]["multiscales"][0]["axes"]] == ["micrometer"] * 2
    with pytest.raises(DataError, match=r"levels are 0: 1024x1024, 1: 512x512, 2: 256x256"):
        predict_files("nuclei", [source], tmp_path / "x", level=3, progress=False)
    with pytest.raises(DataError, match="reads OME-Zarr images"):
        predict_files("nuclei", [tmp_path / "l1" / "slide.tif"], tmp_path / "x", level=1, progress=False)
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_what_ome_zarr_labels_cannot_hold_is_refused_with_the_fix(tmp_path, capsys):
    write_image(tmp_path / "in" / "a.png", synth_nuclei((64, 64), seed=1)[0])
    args = ["predict", "nuclei", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--format", "ome-zarr"]
    assert main([*args, "--save-probs"]) != 0
    assert "use --format zarr or tiff with --save-probs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_zarr_input_with_missing_chunks_is_refused_not_read_as_zeros(tmp_path, capsys):
    """Issue 31: an unfinished copy (chunks missing) was segmented as if its missing parts were empty, exit 0."""
    import shutil

    import zarr

    image = synth_nuclei((256, 256), seed=5)[0]
    store = tmp_path / "in" / "cells.zarr"
    arr = zarr.open_array(str(store), mode="w", shape=image.shape, chunks=(64, 64), dtype=image.dtype)
    arr[:] = image
    chunk_files = sorted(
        p for p in store.rglob("*") if p.is_file() and p.name not in ("zarr.json", ".zarray")
    )
    assert len(chunk_files) == 16
    for p in chunk_files[:5]:  # the copy stopped early
        p.unlink()
    common = ["predict", "nuclei", str(store), "--no-progress", "--precision", "float32"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "5 of 16 chunks are missing" in err and "--fill-missing-chunks" in err
    assert not (tmp_path / "a").exists()
    assert main([*common, "--out", str(tmp_path / "b"), "--skip-bad"]) == 1  # skipped, listed, exit 1
    assert not list((tmp_path / "b").glob("cells*"))
    assert main([*common, "--out", str(tmp_path / "c"), "--fill-missing-chunks"]) == 0  # the user's choice
    assert (tmp_path / "c" / "cells.png").exists()
    # unetkit's own OME-Zarr results store every chunk of the image (an all-dark one included): read back whole
    dark = np.zeros((300, 300), np.uint8)
    write_image(tmp_path / "dark" / "dark.png", dark)
    shutil.rmtree(tmp_path / "c")
    assert main(["predict", "nuclei", str(tmp_path / "dark"), "--out", str(tmp_path / "c"),
                 "--format", "ome-zarr", "--no-progress"]) == 0  # fmt: skip
    again = ["predict", "nuclei", str(tmp_path / "c" / "dark.ome.zarr"), "--out", str(tmp_path / "d")]
    assert main([*again, "--no-progress"]) == 0
