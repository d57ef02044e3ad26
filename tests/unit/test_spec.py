"""The dataset description (``DATA/dataset.yaml``) read and checked in one place: typed values, and every wrong
value refused naming the file and the key before any image is read (issue 33 item 3; before, a wrong value was
ignored, or crashed check-data with a TypeError)."""

from __future__ import annotations

import dataclasses

import pytest

from unetkit import DataConfig, synthesize_dataset
from unetkit.config import DATASET_KEYS
from unetkit.data.checks import check_dataset, resolve_encoding
from unetkit.data.layouts import detect_layout, load_layout
from unetkit.data.spec import DESCRIPTOR_KEYS, DatasetSpec
from unetkit.errors import DataError


def test_a_description_reads_to_typed_values(tmp_path):
    (tmp_path / "dataset.yaml").write_text(
        "layout: paired\nimages_dir: raw\nmask_encoding: classes\nclasses: {0: background, 128: nucleus}\n"
        "ignore_index: 255\nspatial_dims: 3\nspacing: [2, 0.5, 0.5]\n"
    )
    spec = DatasetSpec.read(tmp_path)
    assert (spec.layout, spec.images_dir, spec.masks_dir, spec.mask_encoding) == (
        "paired",
        "raw",
        None,
        "classes",
    )
    assert (spec.class_values, spec.class_names, spec.class_colors) == (
        (0, 128),
        ("background", "nucleus"),
        None,
    )
    assert (spec.ignore_index, spec.spatial_dims, spec.spacing, spec.volumes) == (
        255,
        3,
        (2.0, 0.5, 0.5),
        True,
    )
    assert spec.path == tmp_path / "dataset.yaml"
    assert spec.gives("class_values") and spec.gives("ignore_index") and not spec.gives("mask_pattern")
    colours = tmp_path / "rgb"
    colours.mkdir()
    (colours / "dataset.yaml").write_text(
        "classes:\n- {name: bg, color: '#000000'}\n- {name: t, color: [255, 0, 0]}\n"
    )
    assert DatasetSpec.read(colours).class_colors == ((0, 0, 0), (255, 0, 0))


def test_no_description_is_an_empty_one(tmp_path):
    assert DatasetSpec.read(tmp_path) == DatasetSpec()
    assert DatasetSpec.read(tmp_path / "list.csv") == DatasetSpec()  # a list of samples has none
    (tmp_path / "dataset.yaml").write_text("# nothing said\n")
    assert DatasetSpec.read(tmp_path) == DatasetSpec(path=tmp_path / "dataset.yaml")


def test_every_dataset_field_of_the_configuration_has_its_place_in_the_description():
    names = {f.name for f in dataclasses.fields(DatasetSpec)}
    assert set(DATASET_KEYS) <= names and set(DATASET_KEYS) <= {
        f.name for f in dataclasses.fields(DataConfig)
    }
    assert "classes" in DESCRIPTOR_KEYS and "target" not in DESCRIPTOR_KEYS


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("layout: foo", "layout: 'foo' is not one of paired"),
        ("layout: [paired]", r"layout: \['paired'\] is not one of"),
        ("mask_encoding: labels", "mask_encoding: 'labels' is not one of binary"),
        ("images_dir: 3", "images_dir: expected a folder name"),
        ("mask_pattern: 7", "mask_pattern: expected a folder name or pattern"),
        ("ignore_index: abc", "ignore_index: expected the mask value of unlabelled pixels"),
        ("ignore_index: -1", "ignore_index: expected"),
        ("ignore_index: true", "ignore_index: expected"),
        ("spatial_dims: '3'", r"spatial_dims: expected 2 \(images\) or 3 \(volumes\), got '3'"),
        ("spatial_dims: 4", "spatial_dims: expected 2"),
        ("spacing: abc", "spacing: expected a list of 2 or 3 positive numbers"),
        ("spacing: [1, 0]", "spacing: expected a list"),
        ("classes: 5", "classes: expected a mapping"),
        ("target: border", "target describes how to train, not the data; remove it and pass --target"),
        ("colour: red", r"unknown key\(s\) \['colour'\]"),
        ("- paired", "expected a mapping of keys among"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_file_and_the_key_before_any_image_is_read(tmp_path, line, said):
    data = synthesize_dataset(tmp_path / "d", n=2, size=32, seed=1)
    (data / "dataset.yaml").write_text(line + "\n")
    with pytest.raises(DataError, match=f"^{data / 'dataset.yaml'}: {said}"):
        DatasetSpec.read(data)
    # the commands' readers all refuse it the same way: the layout, the data check, the encoding
    for read in (
        lambda: detect_layout(data),
        lambda: check_dataset(data),
        lambda: resolve_encoding(DataConfig(), data, {}, None),
    ):
        with pytest.raises(DataError, match="dataset.yaml: "):
            read()


def test_the_description_and_the_flags_agree_on_one_precedence(tmp_path):
    data = synthesize_dataset(tmp_path / "d", n=2, size=32, seed=1)  # describes itself: paired, instances
    (data / "pictures").mkdir()
    for image in (data / "images").iterdir():
        (data / "pictures" / image.name).write_bytes(image.read_bytes())
    (data / "dataset.yaml").write_text("images_dir: pictures\nmask_encoding: instances\nignore_index: 7\n")
    layout = load_layout(data)
    assert layout.name == "paired" and {s.image.parent.name for s in layout.samples} == {"pictures"}
    enc = resolve_encoding(DataConfig(), data, {}, None)
    assert (enc.name, enc.ignore_value) == ("instances", 7)
    flags = resolve_encoding(DataConfig(mask_encoding="binary", ignore_index=9), data, {}, None)
    assert (flags.name, flags.ignore_value) == ("binary", 9)  # flags > dataset.yaml
