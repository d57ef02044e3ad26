import os
import pickle

import pytest
import torch

from unetkit import CheckpointError, UNet, load_checkpoint, save_checkpoint
from unetkit.checkpoint import FORMAT_VERSION, build_model

PREP = {"in_channels": 1, "normalization": {"method": "percentile", "low": 1.0, "high": 99.8}}


def _save(path, **kw):
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4, norm="batch", dropout=0.3, **kw)
    net.train()
    net(torch.randn(4, 1, 44, 44))  # move BatchNorm running statistics away from their initial values
    return net.eval(), save_checkpoint(path, net, model_name="unet", preprocessing=PREP)


def test_round_trip_gives_identical_logits(tmp_path):
    net, path = _save(tmp_path / "m.pt", padding="valid", up="bilinear")
    payload = load_checkpoint(path)
    rebuilt = build_model(payload).eval()
    assert payload["model"]["hparams"]["padding"] == "valid"
    assert payload["preprocessing"] == PREP and payload["unetkit_version"]
    x = torch.randn(2, 1, 44, 60)
    with torch.no_grad():
        assert torch.equal(net(x), rebuilt(x))
    assert os.listdir(tmp_path) == ["m.pt"]  # the atomic write leaves no temporary file


def test_missing_damaged_and_foreign_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such model file"):
        load_checkpoint(tmp_path / "none.pt")
    _, path = _save(tmp_path / "m.pt")
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged.pt: not a readable checkpoint"):
        load_checkpoint(damaged)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_checkpoint(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a unetkit checkpoint"):
        load_checkpoint(foreign)


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_loading_never_runs_pickled_code(tmp_path):
    evil = _Exploit()
    evil.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": "unetkit.checkpoint", "payload": evil}, fh)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    torch.save({"format": "unetkit.checkpoint", "payload": evil}, tmp_path / "evil2.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(tmp_path / "evil2.pt")
    assert not (tmp_path / "pwned").exists()


def test_newer_format_asks_for_an_upgrade(tmp_path):
    _, path = _save(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="upgrade unetkit"):
        load_checkpoint(path)


def test_the_preprocessing_record_is_read_typed_in_one_place_and_written_back_as_stored():
    """Issue 33: checkpoint dictionaries were read by string key in a dozen modules; every reader now gets a
    typed :class:`Preprocessing` (a checkpoint's, an ONNX file's, a package's), checked once. The built-in
    models (written by earlier versions of this format) and a record a newer unetkit extended still load, and
    what is written back is what was stored."""
    from unetkit.checkpoint import Preprocessing, preprocessing_of
    from unetkit.data.masks import MaskEncoding

    for name in ("nuclei", "nuclei@2", "nuclei@1"):  # files written before the type existed (and one after)
        payload = load_checkpoint(name)
        pre = preprocessing_of(payload, name)
        assert pre.in_channels == 1 and pre.normalization["method"] == "percentile"
        assert isinstance(pre.mask_encoding, MaskEncoding) and pre.object_diameter > 0
        stored = payload["preprocessing"]
        written = pre.to_dict()
        # the class names these files stored twice are written once, in the encoding; nothing else changes
        assert "class_names" not in written and written["encoding"]["class_names"] == list(pre.class_names)
        assert {k: written[k] for k in stored if k != "class_names"} == {
            k: list(v) if isinstance(v, tuple) else v for k, v in stored.items() if k != "class_names"
        }
        assert Preprocessing.from_dict(written, name) == pre
    newer = {"in_channels": 2, "normalization": {"method": "zscore"}, "pixel_size_um": 0.65}
    pre = Preprocessing.from_dict(newer, "m.pt")
    assert (
        pre.extra == {"pixel_size_um": 0.65} and pre.to_dict()["pixel_size_um"] == 0.65
    )  # kept, written back
    assert pre.input_scale == 1.0 and pre.mask_encoding.name == "binary" and pre.class_names is None
    assert Preprocessing.from_dict(pre) is pre
    for field, bad in (
        ("object_diameter_range", [7.0]),
        ("in_channels", "1"),
        ("class_names", "ab"),
        ("encoding", {"name": "binary", "class_names": "ab"}),
    ):
        with pytest.raises(CheckpointError, match=f"m.pt: damaged unetkit checkpoint: preprocessing.{field}"):
            Preprocessing.from_dict({**newer, field: bad}, "m.pt")
    with pytest.raises(CheckpointError, match="preprocessing.in_channels is missing"):
        Preprocessing.from_dict({"normalization": {"method": "zscore"}}, "m.pt")
