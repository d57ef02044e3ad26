"""The built-in models: the shipped file is what its registry says (sha256, size, half precision, recipe), loads
safely, and is found by name wherever a MODEL is taken; a damaged or altered file is refused."""

from __future__ import annotations

import shutil

import pytest
import torch

from unetkit.checkpoint import build_model, load_checkpoint, resolve_model_path
from unetkit.data.synthetic import STYLE_VERSION
from unetkit.errors import CheckpointError
from unetkit.inference import Predictor
from unetkit.pretrained import REGISTRY, file_sha256, get_pretrained, list_pretrained, pretrained_path


def test_the_shipped_nuclei_model_matches_its_registry_entry():
    model = get_pretrained("nuclei")
    assert model is not None and model.path.is_file()
    assert file_sha256(model.path) == model.sha256
    assert model.path.stat().st_size == model.bytes <= 10 * 2**20  # the wheel stays light
    assert {"validation", "style_shift"} <= set(model.scores)
    assert model.licence and model.limits and model.trained_on and model.runtime


def test_the_shipped_file_loads_safely_with_half_precision_weights_and_its_recipe():
    path = pretrained_path("nuclei")
    payload = load_checkpoint(path)  # weights_only: no code can run
    floats = [t for t in payload["state_dict"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    info = payload["pretrained"]
    assert info["name"] == "nuclei" and info["style_version"] == STYLE_VERSION
    assert info["recipe"] == get_pretrained("nuclei").recipe
    net = build_model(payload, path)
    assert next(net.parameters()).dtype == torch.float32  # computed in float32 on the CPU
    assert payload["preprocessing"]["in_channels"] == 1 and payload["preprocessing"]["object_diameter"] > 0


def test_a_model_is_found_by_name_and_a_name_that_is_also_a_folder_here_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("nuclei") == pretrained_path("nuclei")
    assert resolve_model_path("pretrained:nuclei") == pretrained_path("nuclei")
    (tmp_path / "nuclei" / "images").mkdir(parents=True)  # a user's data folder called "nuclei"
    with pytest.raises(CheckpointError, match="pretrained:nuclei"):
        resolve_model_path("nuclei")
    assert resolve_model_path("pretrained:nuclei") == pretrained_path("nuclei")
    with pytest.raises(CheckpointError, match="no such model"):
        resolve_model_path("./nuclei-run")  # a path, never a name
    with pytest.raises(CheckpointError, match="no built-in model of that name"):
        Predictor.from_pretrained("bright-field")


def test_an_altered_or_missing_weight_file_is_refused_before_it_is_read(tmp_path):
    registry = tmp_path / "registry.yaml"
    shutil.copy(REGISTRY, registry)
    copy = tmp_path / "nuclei.pt"
    shutil.copy(pretrained_path("nuclei"), copy)
    assert pretrained_path("nuclei", registry) == copy
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        pretrained_path("nuclei", registry)
    copy.unlink()
    with pytest.raises(CheckpointError, match="not in this installation"):
        pretrained_path("nuclei", registry)


def test_a_second_model_is_a_data_only_addition(tmp_path):
    registry = tmp_path / "registry.yaml"
    text = REGISTRY.read_text()
    entry = (
        text[text.index("  nuclei:") :]
        .replace("  nuclei:", "  he-nuclei:", 1)
        .replace("file: nuclei.pt", "file: he.pt")
    )
    registry.write_text(text + entry)
    shutil.copy(pretrained_path("nuclei"), tmp_path / "he.pt")
    assert [m.name for m in list_pretrained(registry)] == ["nuclei", "he-nuclei"]
    assert pretrained_path("he-nuclei", registry) == tmp_path / "he.pt"
