"""Issue 17 (part): hostile files and faults get one line and exit 2, never a traceback, a hang or a damaged input."""

import os
import resource
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from unetkit import read_image, write_image
from unetkit.cli.main import main
from unetkit.config import read_yaml
from unetkit.errors import ConfigError, DataError
from unetkit.inference.writers import remove_stale_work

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("bcdefgh", "cdefghi", strict=True)
)


def test_yaml_alias_bombs_and_non_utf8_are_refused_quickly(tmp_path, capsys, tiny_data):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 1000
    with pytest.raises(ConfigError, match="aliases"):
        read_yaml(bomb, "--config")
    data = tmp_path / "data"
    write_image(data / "images" / "a.png", np.zeros((8, 8), np.uint8))
    write_image(data / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    (data / "dataset.yaml").write_text(BOMB)
    for args in (["check-data", str(data)], ["train", str(tiny_data), "--config", str(bomb)],
                 ["check-data", str(tiny_data), "--class-map", str(bomb)]):  # fmt: skip
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "aliases" in err and len(err) < 1200  # one line, never the expanded document
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        read_yaml(latin, "--class-map")


def test_nan_and_complex_pixels_are_refused_before_anything_is_written(tmp_path, tiny_run, capsys):
    for name, arr in (
        ("nan.tif", np.where(np.eye(32, dtype=bool), np.nan, 1.0).astype(np.float32)),
        ("complex.tif", (np.ones((32, 32)) + 1j).astype(np.complex64)),
    ):
        folder = tmp_path / name
        folder.mkdir()
        tifffile.imwrite(folder / name, arr)
        rc = main(["predict", str(tiny_run.run_dir), str(folder), "--out", str(tmp_path / f"out-{name}")])
        err = capsys.readouterr().err
        assert rc == 2 and name in err and not (tmp_path / f"out-{name}").exists()
        assert "NaN" in err or "complex" in err


def test_a_full_disk_is_one_line_and_the_debug_flag_shows_the_traceback(tmp_path, tiny_run, unetkit_exe):
    noise = np.random.default_rng(0).integers(
        0, 255, (128, 128), dtype=np.uint8
    )  # an overlay that won't compress
    write_image(tmp_path / "in" / "a.png", noise)
    out = tmp_path / "out"
    cmd = [
        unetkit_exe,
        "predict",
        str(tiny_run.run_dir),
        str(tmp_path / "in"),
        "--out",
        str(out),
        "--overlay",
    ]

    def small_files():  # RLIMIT_FSIZE: writes past 4 KiB fail as on a full disk (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=small_files)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "write elsewhere (--out)" in proc.stderr
    for f in out.iterdir():  # what is there is complete (the temporary file was removed)
        assert not f.name.startswith(".") and read_image(f).shape[:2] == (128, 128)
    debug = [cmd[0], "--debug", *cmd[1:], "--overwrite"]
    proc = subprocess.run(debug, capture_output=True, text=True, preexec_fn=small_files)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path, tiny_data, unetkit_exe):
    """Issue 31: torch's zip writer reports a short write as a RuntimeError (a traceback); now the disk fault."""

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    run = tmp_path / "run"
    cmd = [unetkit_exe, "train", str(tiny_data), "--out", str(run), "--no-plan", "--epochs", "1",
           "--steps-per-epoch", "1", "--patch", "48", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=small_files)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "best.pt: the disk is full" in proc.stderr
    assert not [f for f in run.iterdir() if f.name.startswith(".") and f.name.endswith(".tmp")]


def test_stale_work_folders_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".big.work.{int(dead.stdout)}.x1y2"
    live = tmp_path / f".big.work.{os.getpid()}.a9b8"
    user = tmp_path / ".my.work.notes"  # not unetkit's pattern: never touched
    for d in (stale, live, user):
        d.mkdir()
    assert remove_stale_work(tmp_path) == [stale]
    assert live.is_dir() and user.is_dir() and not stale.exists()


def _tampered(tiny_run, tmp_path, name, change):
    import torch

    payload = torch.load(tiny_run.run_dir / "best.pt", weights_only=True)
    change(payload)
    path = tmp_path / name
    torch.save(payload, path)
    return path


def test_tampered_checkpoints_are_refused_before_allocation(tmp_path, tiny_run, capsys):
    import zipfile

    import torch

    def nan_weights(p):
        key = next(k for k, v in p["state_dict"].items() if v.is_floating_point())
        p["state_dict"][key] = torch.full_like(p["state_dict"][key], float("nan"))

    cases = {
        "nan.pt": (nan_weights, "NaN or infinity"),
        "deep.pt": (lambda p: p["model"]["hparams"].update(depth=50), "depth=50"),
        "patch.pt": (lambda p: p["training"]["config"]["data"].update(patch_size=10**6), "training patch"),
    }
    write_image(tmp_path / "in" / "a.png", np.zeros((16, 16), np.uint8))
    for name, (change, message) in cases.items():
        model = _tampered(tiny_run, tmp_path, name, change)
        rc = main(["predict", str(model), str(tmp_path / "in"), "--out", str(tmp_path / f"o-{name}")])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    bomb = tmp_path / "bomb.pt"  # a compressed record: would inflate before torch could refuse it
    with zipfile.ZipFile(tiny_run.run_dir / "best.pt") as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    assert main(["predict", str(bomb), str(tmp_path / "in"), "--out", str(tmp_path / "o-bomb")]) == 2
    assert "compressed" in capsys.readouterr().err


def test_demo_overwrite_never_removes_what_the_demo_did_not_write(tmp_path):
    from unetkit.workflows.demo import run_demo

    mine = tmp_path / "data" / "my_measurements.csv"
    mine.parent.mkdir(parents=True)
    mine.write_text("cell,area\n1,42\n")
    with pytest.raises(DataError, match="not written by unetkit demo"):
        run_demo(tmp_path, overwrite=True, progress=False)
    assert mine.read_text() == "cell,area\n1,42\n"


# Linux keeps a process's peak resident memory across exec (the mm it leaves at exec counts): a child forked
# from this pytest process, which grows past 1 GiB over the suite, would report pytest's peak. A small Python
# forks the command instead and reports its wait4 peak.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def _run_measured(cmd):
    """Run a command; its exit code, stderr and peak resident memory in MiB (its own, via wait4)."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True)
    rc, peak_kib = (int(v) for v in proc.stdout.split())
    return rc, proc.stderr, peak_kib / 1024


BOMBS = {
    "wide.zarr": (64, 20_000_000),  # the row of tiles alone would need over 100 GiB
    "huge.zarr": (2**20, 2**20),  # 1 terapixel: 30 million tiles
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_declared_size_bombs_are_refused_in_bounded_memory(name, tmp_path, tiny_run, unetkit_exe):
    import zarr

    path = tmp_path / name  # declared, never written: a zarr array of fill values
    zarr.open_array(str(path), mode="w", shape=BOMBS[name], chunks=(64, 4096), dtype="uint8")
    before = md5s(path)
    rc, err, peak = _run_measured(
        [unetkit_exe, "predict", str(tiny_run.run_dir), str(path), "--out", str(tmp_path / "o")]
    )
    assert rc == 2 and "--dask" in err and "Traceback" not in err, err
    assert peak < 1024, f"{peak:.0f} MiB"  # refused from the declared size, before allocation
    assert md5s(path) == before and not (tmp_path / "o").exists()


def md5s(folder):
    import hashlib

    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_garbage_and_altered_onnx_files_are_refused(tmp_path, tiny_run, capsys):
    pytest.importorskip("onnx", reason="the [onnx] extra is not installed")
    write_image(tmp_path / "in" / "a.png", np.zeros((16, 16), np.uint8))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 10)
    assert main(["predict", str(bad), str(tmp_path / "in"), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable ONNX file" in capsys.readouterr().err
    # issue 31: metadata that says the graph is shallower than it is was found only when a tile failed (or not at
    # all): the graph now runs once on the smallest input its metadata allows, before any image is read
    import json

    import onnx

    from unetkit.workflows.export import export_model

    good = export_model(tiny_run.best_checkpoint, tmp_path / "good.onnx", "onnx").path
    proto = onnx.load(str(good))
    for prop in proto.metadata_props:
        if prop.key == "unetkit.model":
            spec = json.loads(prop.value)
            assert spec["hparams"]["depth"] > 1
            spec["hparams"]["depth"] = 1
            prop.value = json.dumps(spec)
    shallow = tmp_path / "shallow.onnx"
    onnx.save(proto, str(shallow))
    assert main(["predict", str(shallow), str(tmp_path / "in"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "metadata" in err and "export it again" in err and not (tmp_path / "o2").exists(), err


def test_an_output_folder_that_cannot_be_written_is_found_before_any_compute(tmp_path, tiny_run, capsys):
    write_image(tmp_path / "in" / "a.png", np.zeros((16, 16), np.uint8))
    out = "/sys/unetkit-no-such-output"  # sysfs: no folder can be made there, even by root
    rc = main(["predict", str(tiny_run.run_dir), str(tmp_path / "in"), "--out", out, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and out in err and "Traceback" not in err and "predict a.png" not in err, err


def test_checkpoint_metadata_that_contradicts_its_network_is_refused(tmp_path, tiny_run, capsys):
    def contradict(p):
        p["preprocessing"]["num_classes"] = p["model"]["hparams"]["num_classes"] + 2

    model = _tampered(tiny_run, tmp_path, "altered.pt", contradict)
    write_image(tmp_path / "in" / "a.png", np.zeros((16, 16), np.uint8))
    assert main(["predict", str(model), str(tmp_path / "in"), "--out", str(tmp_path / "o")]) == 2
    assert "altered" in capsys.readouterr().err


def test_sigterm_stops_predict_cleanly_and_leaves_no_work_folder(tmp_path, tiny_run, unetkit_exe):
    import signal
    import time

    for i in range(200):
        write_image(
            tmp_path / "in" / f"im{i:03d}.png",
            np.random.default_rng(i).integers(0, 255, (128, 128), np.uint8),
        )
    out = tmp_path / "out"
    cmd = [
        unetkit_exe,
        "predict",
        str(tiny_run.run_dir),
        str(tmp_path / "in"),
        "--out",
        str(out),
        "--format",
        "zarr",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("im*.zarr"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # as timeout, SLURM and Kubernetes stop a job
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert 3 <= len(list(out.glob("im*.zarr"))) < 200
    assert not list(out.glob(".*.work.*"))  # the work folder of the image in progress was removed
