"""The built-in models: the shipped file is what its registry says (sha256, size, half precision, recipe), loads
safely, and is found by name wherever a MODEL is taken; a damaged or altered file is refused."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from unetkit.checkpoint import build_model, load_checkpoint, resolve_model_path
from unetkit.data.synthetic import STYLE_VERSION
from unetkit.errors import CheckpointError
from unetkit.inference import Predictor
from unetkit.pretrained import REGISTRY, file_sha256, get_pretrained, list_pretrained, pretrained_path


@pytest.mark.parametrize("name", ["nuclei", "nuclei@2", "nuclei@1"])
def test_each_shipped_nuclei_version_matches_its_registry_entry(name):
    model = get_pretrained(name)
    assert model is not None and model.path.is_file()
    assert file_sha256(model.path) == model.sha256
    assert model.path.stat().st_size == model.bytes <= 10 * 2**20  # the wheel stays light
    assert "validation" in model.scores and ("suite" in model.scores or "style_shift" in model.scores)
    assert model.licence and model.limits and model.trained_on and model.runtime


def _style_version(style: str) -> int:
    return int(style.rpartition("@")[2]) if "@" in style else STYLE_VERSION


@pytest.mark.parametrize("name", ["nuclei", "nuclei@2", "nuclei@1"])
def test_each_shipped_file_loads_safely_with_half_precision_weights_and_its_recipe(name):
    path = pretrained_path(name)
    payload = load_checkpoint(path)  # weights_only: no code can run
    floats = [t for t in payload["state_dict"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    info, entry = payload["pretrained"], get_pretrained(name)
    assert info["name"] == name.partition("@")[0]
    assert info["style_version"] == _style_version(entry.recipe["data"]["style"])  # the family it learnt
    assert info["recipe"]["config"] == entry.recipe["config"]
    assert {k: v for k, v in info["recipe"]["data"].items() if k != "style"} == {
        k: v for k, v in entry.recipe["data"].items() if k != "style"
    }
    net = build_model(payload, path)
    assert next(net.parameters()).dtype == torch.float32  # computed in float32 on the CPU
    assert payload["preprocessing"]["in_channels"] == 1 and payload["preprocessing"]["object_diameter"] > 0


def test_versions_are_named_by_number_and_the_bare_name_is_the_newest():
    newest, second, first = get_pretrained("nuclei"), get_pretrained("nuclei@2"), get_pretrained("nuclei@1")
    assert (newest.version, second.version, first.version) == (3, 2, 1)
    assert len({newest.path, second.path, first.path}) == 3
    assert get_pretrained("nuclei@3") == newest and get_pretrained("pretrained:nuclei@1") == first
    assert get_pretrained("nuclei@4") is None
    assert resolve_model_path("nuclei@1") == pretrained_path("nuclei@1") == first.path


def test_a_model_is_found_by_name_and_a_name_that_is_also_a_folder_here_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("nuclei") == pretrained_path("nuclei")
    assert resolve_model_path("pretrained:nuclei") == pretrained_path("nuclei")
    (tmp_path / "nuclei" / "images").mkdir(parents=True)  # a user's data folder called "nuclei"
    with pytest.raises(CheckpointError, match="pretrained:nuclei"):
        resolve_model_path("nuclei")
    assert resolve_model_path("pretrained:nuclei") == pretrained_path("nuclei")
    # issue 31: a folder called nuclei that holds a model ran in silence; now both readings are named
    (tmp_path / "nuclei" / "best.pt").write_bytes(pretrained_path("nuclei").read_bytes())
    with pytest.raises(
        CheckpointError, match=r"which holds a model\): write pretrained:nuclei .* or ./nuclei"
    ):
        resolve_model_path("nuclei")
    assert resolve_model_path("./nuclei") == Path("nuclei") / "best.pt"
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
        text[text.index("  nuclei:") : text.index("  nuclei@2:")]
        .replace("  nuclei:", "  he-nuclei:", 1)
        .replace("file: nuclei.pt", "file: he.pt")
    )
    registry.write_text(text + entry)
    shutil.copy(pretrained_path("nuclei"), tmp_path / "he.pt")
    assert [m.name for m in list_pretrained(registry)] == ["nuclei", "nuclei@2", "nuclei@1", "he-nuclei"]
    assert pretrained_path("he-nuclei", registry) == tmp_path / "he.pt"


def test_the_readme_never_makes_a_folder_named_like_a_built_in_model():
    """Issue 32 item 9: README's command-line block (now in the docs) made `nuclei/` with `synth` and then ran the built-in model
    `nuclei`, which a folder of that name makes ambiguous (refused)."""
    import re

    root = Path(__file__).resolve().parents[2]
    text = "".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    made = re.findall(r"unetkit synth ([\w./-]+)", text)
    assert made and not [name for name in made if get_pretrained(name) is not None]


def test_diameter_auto_logs_the_factor_it_applies(caplog):
    """Issue 32 item 9: `--diameter auto` logged the estimate, not what it did with it."""
    import logging

    from scipy import ndimage

    from unetkit import synth_nuclei

    image = synth_nuclei((1024, 1024), seed=3)[0]
    small = ndimage.zoom(image, 0.25, order=1)  # nuclei smaller than any the model learnt
    predictor = Predictor.from_pretrained("nuclei", diameter="auto", tta=False)
    with caplog.at_level(logging.INFO, logger="unetkit"):
        predictor.predict(small, name="small.png")
    (line,) = [r.getMessage() for r in caplog.records if "estimated" in r.getMessage()]
    assert "segmented zoomed x1." in line  # enlarged to the learnt sizes, by the factor said
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unetkit"):
        predictor.predict(image[:256, :256], name="plain.png")
    (line,) = [r.getMessage() for r in caplog.records if "estimated" in r.getMessage()]
    assert line.endswith("kept at its scale")


def test_an_unknown_version_of_a_built_in_model_lists_the_versions_there_are():
    """Before: `unetkit predict nuclei@7` said "no such model file or run folder", as for a typo'd path."""
    from unetkit.checkpoint import resolve_model_path
    from unetkit.errors import CheckpointError

    with pytest.raises(
        CheckpointError,
        match=r"nuclei@7: no such version of the built-in model nuclei \(built in: nuclei, nuclei@2, nuclei@1",
    ):
        resolve_model_path("nuclei@7")


def test_a_shipped_file_stores_the_dataset_description_once_whichever_unetkit_wrote_the_run(tmp_path):
    """Issue 33: the shipped form is canonical: a run whose checkpoint stored the description three times (the
    first built-in file, kept as shipped, was written so) ships with the class names only in the encoding and only the keys that say
    how the files were found, every other record as it was, and loads back to the same typed record."""
    from unetkit.checkpoint import preprocessing_of
    from unetkit.config import FINDING_KEYS
    from unetkit.workflows.pretrain import ship_checkpoint

    old = load_checkpoint("nuclei@1")
    assert "class_names" in old["preprocessing"] and set(old["preprocessing"]["dataset"]) > set(FINDING_KEYS)
    recipe = old["pretrained"]["recipe"]
    shipped = load_checkpoint(
        ship_checkpoint(get_pretrained("nuclei@1").path, tmp_path / "n.pt", "n", recipe)
    )
    pre = shipped["preprocessing"]
    assert "class_names" not in pre and set(pre["dataset"]) == set(FINDING_KEYS)
    assert pre["dataset"] == {k: old["preprocessing"]["dataset"][k] for k in FINDING_KEYS}
    assert preprocessing_of(shipped) == dataclasses.replace(preprocessing_of(old), dataset=pre["dataset"])
    assert pre["object_diameter_range"] == old["preprocessing"]["object_diameter_range"]
    for key, value in old["state_dict"].items():
        assert torch.equal(shipped["state_dict"][key], value)
