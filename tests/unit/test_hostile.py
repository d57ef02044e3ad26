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

    index = write_report(
        evaluate(tmp_path / "pred", tmp_path / "gt", data_config=DataConfig()), tmp_path / "report"
    )
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


def test_a_file_name_cannot_become_a_spreadsheet_formula(tmp_path):
    """Issue 31: evaluate --csv wrote names raw; `=cmd|' -C calc'!A0` ran as a formula when opened."""
    import csv

    import numpy as np

    from unetkit import evaluate, write_image

    lab = np.zeros((32, 32), np.uint8)
    lab[4:12, 4:12] = 255
    for folder in ("pred", "gt"):
        for name in ("=cmd|' -C calc'!A0", "+1", "@SUM(A1)", "plain"):
            write_image(tmp_path / folder / f"{name}.png", lab)
    rows = list(csv.reader(open(evaluate(tmp_path / "pred", tmp_path / "gt").write_csv(tmp_path / "s.csv"))))
    names = [r[0] for r in rows[1:-1]]
    assert sorted(names) == sorted(["'=cmd|' -C calc'!A0", "'+1", "'@SUM(A1)", "plain"])
    assert rows[-1][0] == "mean"


def test_yaml_nested_deeper_than_any_description_is_one_line(tmp_path):
    from unetkit import ConfigError
    from unetkit.config import read_yaml

    deep = tmp_path / "deep.yaml"
    deep.write_text("model: " + "[" * 100_000 + "]" * 100_000)  # was a RecursionError traceback
    with pytest.raises(ConfigError, match="nested more than 64 levels"):
        read_yaml(deep, "--config")


def _package_zip(path, members):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("rdf.yaml", "type: model\nformat_version: 0.5.4\n")
        for info, data in members:
            z.writestr(info, data)
    return path


def test_package_archives_are_bounded_by_ratio_links_and_checksums(tmp_path):
    import stat
    import zipfile

    from unetkit import CheckpointError
    from unetkit.inference.bioimageio import load_package

    bomb = _package_zip(tmp_path / "bomb.zip", [("weights.onnx", bytes(50 * 2**20))])  # 50 MiB of zeros
    with pytest.raises(CheckpointError, match="inflates .*-fold .* a zip bomb"):
        load_package(bomb)
    link = zipfile.ZipInfo("weights.onnx")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        load_package(_package_zip(tmp_path / "link.zip", [(link, "/etc/passwd")]))
    damaged = _package_zip(tmp_path / "crc.zip", [(zipfile.ZipInfo("weights.onnx"), b"A" * 4096)])  # stored
    raw = bytearray(damaged.read_bytes())
    at = raw.index(b"A" * 4096)
    raw[at + 100] = ord("B")  # one flipped byte: the CRC no longer matches
    damaged.write_bytes(bytes(raw))
    from unetkit.inference.writers import temp_root

    before = set(temp_root().glob("*"))
    with pytest.raises(CheckpointError, match="cannot be unpacked"):
        load_package(damaged)
    assert set(temp_root().glob("*")) == before  # nothing left behind


def test_a_package_larger_than_the_free_disk_is_refused_before_unpacking(tmp_path, monkeypatch):
    """Issue 31 leftover: an incompressible member within the 4 GiB bound was unpacked whatever the free space."""
    import collections
    import shutil

    from unetkit import CheckpointError
    from unetkit.inference.bioimageio import load_package
    from unetkit.inference.writers import temp_root

    package = _package_zip(tmp_path / "big.zip", [("weights.onnx", np.random.default_rng(0).bytes(2**20))])
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20)
    )  # a nearly full disk
    before = set(temp_root().glob("*"))
    with pytest.raises(CheckpointError, match=r"big.zip: unpacks to 0.00 GiB, and .* has 0.00 GiB free"):
        load_package(package)
    assert set(temp_root().glob("*")) == before  # nothing unpacked, nothing left behind


def test_a_package_unpacked_by_a_killed_process_is_swept_on_the_next_start(tmp_path, monkeypatch):
    from unetkit.inference import writers
    from unetkit.inference.bioimageio import _folder

    base = writers.temp_root()
    dead = 2**22 + 1  # above Linux's largest process id: no such process
    stale = base / f".package.work.{dead}.abc"  # as a SIGKILLed process leaves it
    stale.mkdir()
    (stale / "weights.onnx").write_bytes(b"x")
    monkeypatch.setattr(writers, "_TEMP_ROOT", [])  # as in a new process
    folder = _folder(_package_zip(tmp_path / "ok.zip", []))
    assert not stale.exists() and folder.is_dir() and folder.parent == base


def test_hyper_parameters_that_describe_a_giant_network_are_refused_before_it_is_built():
    """Issue 31: depth 8 and base 1024 are inside the bounds, but describe ~7,600 GiB of weights: building the
    network first (to load the weights into it) was killed for memory. Counted on the meta device instead."""
    from unetkit import CheckpointError
    from unetkit.checkpoint import build_model, load_checkpoint
    from unetkit.pretrained import pretrained_path

    payload = load_checkpoint(pretrained_path("nuclei"))
    payload["model"]["hparams"].update(depth=8, base_channels=1024)
    with pytest.raises(CheckpointError, match=r"describe a network of [\d,]+ values \(needs 7[\d.]+ GiB\)"):
        build_model(payload, "giant.pt")
    payload["model"]["hparams"].update(depth=4, base_channels=32)  # the right size, but not these weights
    with pytest.raises(CheckpointError):
        build_model(payload, "altered.pt")


TAMPERED = {  # issue 31: each was a KeyError/TypeError/AttributeError traceback, or ran (exit 0)
    "preprocessing": (lambda p: p.__setitem__("preprocessing", "x"), "preprocessing is str"),
    "normalization": (lambda p: p["preprocessing"].__setitem__("normalization", "x"), "normalization is str"),
    "in_channels": (lambda p: p["preprocessing"].pop("in_channels"), "in_channels is missing"),
    "model.name": (lambda p: p["model"].__setitem__("name", 5), "model.name is int"),
    "encoding": (lambda p: p["preprocessing"].__setitem__("encoding", {"name": 7}), "preprocessing.encoding"),
    "encoding vs head": (
        lambda p: p["preprocessing"].__setitem__("encoding", {"name": "classes", "values": [0, 1, 2, 3, 4]}),
        r"\(classes, 5 classes\) does not fit its network's 3 output channel",
    ),
}


@pytest.mark.parametrize("field", list(TAMPERED))
def test_tampered_checkpoint_metadata_is_refused_naming_the_field(tmp_path, field):
    import copy

    import torch

    from unetkit import CheckpointError
    from unetkit.checkpoint import load_checkpoint
    from unetkit.pretrained import pretrained_path

    payload = copy.deepcopy(torch.load(pretrained_path("nuclei"), weights_only=True))
    mutate, message = TAMPERED[field]
    mutate(payload)
    torch.save(payload, tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "t.pt")


def test_unreadable_layouts_are_refused_with_what_was_found(tmp_path):
    import tifffile

    from unetkit import DataError, Predictor, synthesize_dataset
    from unetkit.data.checks import check_dataset
    from unetkit.data.io import count_planes, read_image

    hyper = tmp_path / "five.tif"  # time and z: which planes are the images? (its 2nd channel was "alpha")
    tifffile.imwrite(hyper, np.zeros((2, 3, 2, 32, 32), np.uint8), imagej=True)
    for read in (count_planes, read_image):
        with pytest.raises(DataError, match=r"a 5-D TIFF \(axes TZCYX, shape \(2, 3, 2, 32, 32\)\)"):
            read(hyper)
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((6, 32, 32), np.uint8))  # one stack axis: still a stack
    assert count_planes(tmp_path / "stack.tif") == 6
    with pytest.raises(DataError, match="0x0 pixels: an image without pixels"):  # was an IndexError
        Predictor.from_pretrained("nuclei").check_size((0, 0), "empty.npy")
    data = synthesize_dataset(tmp_path / "ds", n=2, size=32, seed=1)
    (data / "dataset.yaml").write_text("images_dir: images\nmasks_dir: images\n")
    with pytest.raises(DataError, match="is the images folder"):  # images were read as their own masks
        check_dataset(data)


def test_a_package_description_may_use_aliases_but_not_an_alias_bomb(tmp_path):
    """rdf.yaml files use aliases (PyYAML writes them for a repeated size); an alias bomb under `type:` hung
    the error message that printed it. Aliases are allowed there, their expansion counted and bounded."""
    from unetkit.config import read_yaml

    ok = tmp_path / "rdf.yaml"
    ok.write_text("size: &s {min: 64, step: 16}\ninputs: [{size: *s}, {size: *s}]\ntype: model\n")
    assert read_yaml(ok, "rdf", aliases=True)["inputs"][1]["size"] == {"min": 64, "step": 16}
    with pytest.raises(ConfigError, match="aliases"):
        read_yaml(ok, "--config")  # a configuration never needs them
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        prev, name = chr(96 + i), chr(97 + i)
        levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\ntype: *j\n")  # 9^10 values once written out
    with pytest.raises(ConfigError, match="expand to more than 1,000,000 values"):
        read_yaml(bomb, "rdf", aliases=True)


def test_zarr_stores_are_bounded_before_anything_is_decompressed(tmp_path):
    """Issue 31: a 512² image stored as one 60000² chunk (inflated to 3.4 GiB), a 144 MB .zattrs, a multiscales
    path outside the store: each refused from the metadata."""
    import json

    import zarr

    from unetkit import DataError
    from unetkit.data.lazy import ZARR_MAX_METADATA, open_image

    one = zarr.open_array(str(tmp_path / "one.zarr"), mode="w", shape=(512, 512), chunks=(60000, 60000),
                          dtype="uint8", zarr_format=2)  # fmt: skip
    with pytest.raises(DataError, match=r"chunks of 60000x60000 \(3\.4 GiB each, for an array of 512x512\)"):
        open_image(tmp_path / "one.zarr")
    assert not any(p.name == "0.0" for p in (tmp_path / "one.zarr").iterdir())  # nothing was written or read
    del one
    big = zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=(8, 8), chunks=(8, 8), dtype="uint8",
                          zarr_format=2)  # fmt: skip
    big[:] = 1
    (tmp_path / "big.zarr" / ".zattrs").write_text(json.dumps({"junk": "x" * (ZARR_MAX_METADATA + 1)}))
    with pytest.raises(DataError, match="bytes of metadata"):
        open_image(tmp_path / "big.zarr")
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=(8, 8), dtype="uint8")
    group.attrs["multiscales"] = [{"datasets": [{"path": "../big.zarr"}], "axes": ["y", "x"]}]
    with pytest.raises(DataError, match="points outside the store"):
        open_image(tmp_path / "out.zarr")


def test_an_instances_file_of_another_size_is_named_not_a_traceback(tmp_path):
    """Issue 31: a NAME_instances file of another size beside the predictions was a ValueError traceback."""
    from unetkit import DataError

    lab = np.zeros((32, 32), np.uint8)
    lab[4:12, 4:12] = 255
    write_image(tmp_path / "gt" / "a.png", lab)
    write_image(tmp_path / "pred" / "a.png", lab)
    write_image(tmp_path / "pred" / "a_instances.tif", np.ones((10, 10), np.uint16))
    with pytest.raises(DataError, match=r"a_instances\.tif: objects of 10x10 pixels for a truth of 32x32"):
        evaluate(tmp_path / "pred", tmp_path / "gt", mode="instance")


def test_only_a_decoders_complaint_is_called_damaged_and_skipped(tmp_path, monkeypatch):
    """Issue 33 item 5: every exception while reading became "damaged or truncated" (and --skip-bad skipped the
    file): a machine's fault (memory, permissions, I/O) or a bug now propagates as what it is."""
    import errno

    import PIL.Image

    from unetkit import DataError, predict_files
    from unetkit.data.io import decoding_error

    assert decoding_error(OSError("image file is truncated")) and decoding_error(SyntaxError("broken PNG"))
    assert not decoding_error(OSError(errno.EIO, "Input/output error"))
    assert not decoding_error(PermissionError(errno.EACCES, "Permission denied"))
    assert not decoding_error(MemoryError()) and not decoding_error(TypeError("a bug"))
    import imagecodecs

    with pytest.raises(Exception) as codec:
        imagecodecs.zlib_decode(b"garbage")  # a codec's own exception class (a RuntimeError): its complaint
    assert decoding_error(codec.value)
    assert not decoding_error(RuntimeError("a bug")) and not decoding_error(
        FileNotFoundError(errno.ENOENT, "x")
    )
    image = synth_nuclei((64, 64), 0)[0]
    good, cut = write_image(tmp_path / "in" / "a.png", image), tmp_path / "in" / "b.png"
    cut.write_bytes(good.read_bytes()[:200])  # a real truncated PNG: damaged, and skipped with --skip-bad
    with pytest.raises(DataError, match="damaged or truncated"):
        read_image(cut)
    done = predict_files("nuclei", [good, cut], tmp_path / "out", skip_bad=True, progress=False)
    assert [r.source for r in done] == [good] and "b.png" in done.skipped[0]

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(PIL.Image, "open", no_memory)  # the machine fails, not the file
    with pytest.raises(MemoryError):
        read_image(good)
    with pytest.raises(MemoryError):
        predict_files("nuclei", [good], tmp_path / "out2", skip_bad=True, progress=False)


def test_a_bug_is_one_line_naming_the_file_that_holds_its_traceback(tmp_path, monkeypatch, capsys):
    """Issue 33 item 5: anything that is neither the user's mistake nor a fault of the machine is a bug: one line
    that says so and where the traceback was kept, exit code 1 (not 2, a user's error)."""
    import re
    from pathlib import Path

    import unetkit.cli.synth

    def broken(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(unetkit.cli.synth, "run", broken)
    assert main(["synth", str(tmp_path / "d"), "--n", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error (TypeError: unsupported operand" in err
    kept = Path(re.search(r"the traceback is in (\S+)", err).group(1))
    assert "Traceback (most recent call last)" in kept.read_text() and "def broken" not in err
    kept.unlink()
