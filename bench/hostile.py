"""Hostile inputs and faults through the real CLI (``make bench-hostile``): one row per attack with the command,
its exit code, wall time, peak memory of that process and whether every input stayed byte-identical. Prints a
Markdown table; never a timed test (the tests assert the outcomes: tests/test_hostile.py, test_corpus.py).
About a minute on 2 cores."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def md5s(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        out.update({str(p): hashlib.md5(p.read_bytes()).hexdigest() for p in files})
    return out


def run(cmd: list[str], limit_fsize: int | None = None, term_after: float | None = None):
    def pre():
        if limit_fsize:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=pre)
    if term_after:
        time.sleep(term_after)
        os.kill(proc.pid, signal.SIGTERM)  # not send_signal: it may reap the child before wait4
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - t0, usage.ru_maxrss / 1024, err


def main() -> None:
    import tifffile
    import torch
    import zarr

    from unetkit import (
        DataConfig,
        ModelConfig,
        RunConfig,
        TrainConfig,
        synthesize_dataset,
        train,
        write_image,
    )

    exe = str(Path(sys.executable).with_name("unetkit"))
    work = Path(tempfile.mkdtemp(prefix="unetkit-hostile-"))
    data = synthesize_dataset(work / "data", n=6, size=96, seed=0)
    cfg = RunConfig(
        ModelConfig(base_channels=4, depth=2),
        DataConfig(patch_size=48),
        TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2),
    )
    run_dir = train(data, work / "run", cfg, progress=False).run_dir
    model = str(run_dir / "best.pt")
    d = work / "attacks"
    d.mkdir()
    rng = np.random.default_rng(0)

    # images
    tifffile.imwrite(d / "whole.tif", rng.integers(0, 255, (256, 256), np.uint8))
    raw = (d / "whole.tif").read_bytes()
    (d / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    tifffile.imwrite(d / "header.tif", np.zeros((16, 16), np.uint8))
    with tifffile.TiffFile(d / "header.tif") as tif:
        offs = [tif.pages[0].tags[k].valueoffset for k in ("ImageWidth", "ImageLength", "StripByteCounts")]
    hb = bytearray((d / "header.tif").read_bytes())
    for off, v in zip(offs, (100_000, 100_000, 1_410_065_408), strict=True):
        hb[off : off + 4] = struct.pack("<I", v)
    (d / "header.tif").write_bytes(bytes(hb))
    tifffile.imwrite(d / "nan.tif", np.full((32, 32), np.nan, np.float32))
    tifffile.imwrite(d / "complex.tif", np.ones((32, 32), np.complex64))
    tifffile.imwrite(
        d / "zlib_cut.tif", rng.integers(0, 60000, (256, 256), np.uint16), compression="zlib", tile=(64, 64)
    )
    z = (d / "zlib_cut.tif").read_bytes()
    (d / "zlib_cut.tif").write_bytes(z[: len(z) // 2])
    zarr.open_array(str(d / "wide.zarr"), mode="w", shape=(64, 20_000_000), chunks=(64, 4096), dtype="uint8")
    zarr.open_array(str(d / "huge.zarr"), mode="w", shape=(2**20, 2**20), chunks=(4096, 4096), dtype="uint8")
    # YAML
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    (d / "bomb.yaml").write_text(bomb)
    bomb_data = work / "bomb-data"
    write_image(bomb_data / "images" / "a.png", np.zeros((8, 8), np.uint8))
    write_image(bomb_data / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    (bomb_data / "dataset.yaml").write_text(bomb)
    # checkpoints
    payload = torch.load(model, weights_only=True)
    for name, change in {
        "depth50.pt": lambda p: p["model"]["hparams"].update(depth=50),
        "patch1e6.pt": lambda p: p["training"]["config"]["data"].update(patch_size=10**6),
        "nan.pt": lambda p: p["state_dict"].update(
            {k: torch.full_like(v, float("nan")) for k, v in p["state_dict"].items() if v.is_floating_point()}
        ),
    }.items():
        q = torch.load(model, weights_only=True)
        change(q)
        torch.save(q, d / name)
    import zipfile

    with zipfile.ZipFile(model) as src, zipfile.ZipFile(d / "zip_bomb.pt", "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    (d / "pickle.pt").write_bytes(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.")
    (d / "text_model.yaml").write_text("model: {depth: 2}\n")
    (d / "garbage.onnx").write_bytes(b"garbage" * 10)
    many = work / "many"
    for i in range(300):
        write_image(many / f"im{i:03d}.png", rng.integers(0, 255, (256, 256), np.uint8))
    del payload
    issue31 = _issue31_attacks(exe, work, data, run_dir, model)

    o = lambda k: str(work / f"out-{k}")  # noqa: E731
    attacks = [
        ("image", "truncated TIFF", [exe, "predict", model, str(d / "truncated.tif"), "--out", o(1)], {}),
        ("image", "header claims 100,000²", [exe, "predict", model, str(d / "header.tif"), "--out", o(2)], {}),
        ("image", "truncated zlib TIFF", [exe, "predict", model, str(d / "zlib_cut.tif"), "--out", o(3)], {}),
        ("image", "NaN pixels", [exe, "predict", model, str(d / "nan.tif"), "--out", o(4)], {}),
        ("image", "complex pixels", [exe, "predict", model, str(d / "complex.tif"), "--out", o(5)], {}),
        ("size", "64 x 20,000,000 zarr", [exe, "predict", model, str(d / "wide.zarr"), "--out", o(6)], {}),
        ("size", "2^20 x 2^20 zarr", [exe, "predict", model, str(d / "huge.zarr"), "--out", o(7)], {}),
        ("yaml", "alias bomb as --config", [exe, "train", str(data), "--config", str(d / "bomb.yaml"), "--out", o(8)], {}),
        ("yaml", "alias bomb as dataset.yaml", [exe, "check-data", str(bomb_data)], {}),
        ("yaml", "alias bomb as --class-map", [exe, "check-data", str(data), "--class-map", str(d / "bomb.yaml")], {}),
        ("checkpoint", "pickle payload", [exe, "predict", str(d / "pickle.pt"), str(d / "whole.tif"), "--out", o(9)], {}),
        ("checkpoint", "compressed zip record", [exe, "predict", str(d / "zip_bomb.pt"), str(d / "whole.tif"), "--out", o(10)], {}),
        ("checkpoint", "depth 50", [exe, "predict", str(d / "depth50.pt"), str(d / "whole.tif"), "--out", o(11)], {}),
        ("checkpoint", "patch 10^6", [exe, "predict", str(d / "patch1e6.pt"), str(d / "whole.tif"), "--out", o(12)], {}),
        ("checkpoint", "NaN weights", [exe, "predict", str(d / "nan.pt"), str(d / "whole.tif"), "--out", o(13)], {}),
        ("checkpoint", "YAML given as MODEL", [exe, "predict", str(d / "text_model.yaml"), str(d / "whole.tif"), "--out", o(14)], {}),
        ("checkpoint", "garbage ONNX", [exe, "predict", str(d / "garbage.onnx"), str(d / "whole.tif"), "--out", o(15)], {}),
        ("overwrite", "predict --out = input folder", [exe, "predict", model, str(many), "--out", str(many), "--overwrite"], {}),
        ("overwrite", "evaluate --out DATA/masks", [exe, "evaluate", model, str(data), "--out", str(data / "masks"), "--overwrite"], {}),
        ("overwrite", "export --out = checkpoint", [exe, "export", model, "--out", model, "--overwrite"], {}),
        ("fault", "disk full (RLIMIT_FSIZE 4 KiB)", [exe, "predict", model, str(d / "whole.tif"), "--out", o(16), "--overlay"], {"limit_fsize": 4096}),
        ("fault", "SIGTERM mid-batch", [exe, "predict", model, str(many), "--out", o(17), "--format", "zarr"], {"term_after": 3.0}),
        ("fault", "--lr 1e30", [exe, "train", str(data), "--no-plan", "--lr", "1e30", "--epochs", "1", "--steps-per-epoch", "2", "--patch", "48", "--base-channels", "2", "--depth", "1", "--out", o(18)], {}),
    ]  # fmt: skip
    attacks += issue31
    inputs = [d, data, many, bomb_data, run_dir, work / "i31"]
    print("| category | attack | command | exit | wall | peak RSS | inputs unchanged | message |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for cat, what, cmd, kw in attacks:
        before = md5s(inputs)
        rc, wall, peak, err = run(cmd, **kw)
        same = md5s(inputs) == before
        line = next(
            (ln for ln in err.splitlines() if ln.startswith("unetkit ")),
            err.strip().splitlines()[-1] if err.strip() else "",
        )
        if what == "SIGTERM mid-batch":
            work_left = list(Path(o(17)).glob(".*.work.*")) if Path(o(17)).exists() else []
            line += f" (work folders left: {len(work_left)})"
        print(
            f"| {cat} | {what} | `{cmd[1]}` | {rc} | {wall:.1f} s | {peak:.0f} MiB | {'yes' if same else 'NO'} | {line[:150]} |"
        )


def _issue31_attacks(exe: str, work: Path, data: Path, run_dir: Path, model: str) -> list:
    """Issue 31's surfaces: model packages that run code, output flags aimed at inputs, incomplete or bombed
    stores, tampered checkpoints and descriptions."""
    import copy
    import shutil
    import zipfile

    import tifffile
    import torch
    import yaml
    import zarr

    from unetkit import synth_nuclei, write_image

    d = work / "i31"
    d.mkdir()
    images = d / "images"
    write_image(images / "cells.tif", synth_nuclei((128, 128), seed=1)[0])
    # a TorchScript bioimage.io package whose forward maps the input image read-write and zeroes it
    pkg = d / "evil_pkg"
    pkg.mkdir()
    src = d / "evil_module.py"
    src.write_text(
        "import torch\n"
        "class MapsAFile(torch.nn.Module):\n"
        "    def __init__(self, path: str):\n"
        "        super().__init__()\n"
        "        self.path = path\n"
        "        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)\n"
        "    def forward(self, x):\n"
        "        t = torch.from_file(self.path, shared=True, size=64, dtype=torch.uint8)\n"
        "        t.fill_(0)\n"
        "        return self.conv(x) + t.float().sum()\n"
    )
    sys.path.insert(0, str(d))
    from evil_module import MapsAFile  # type: ignore[import-not-found]

    torch.jit.script(MapsAFile(str(images / "cells.tif"))).save(str(pkg / "weights.pt"))
    size = {"min": 64, "step": 16}
    space = [{"id": a, "type": "space", "size": dict(size)} for a in ("y", "x")]
    halo = [
        {"id": a, "type": "space", "halo": 8, "size": {"tensor_id": "raw", "axis_id": a}} for a in ("y", "x")
    ]
    rdf = {
        "name": "hostile", "format_version": "0.5.4", "type": "model",
        "inputs": [{"id": "raw", "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["raw"]}, *space]}],
        "outputs": [{"id": "p", "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["p"]}, *halo],
                     "postprocessing": [{"id": "sigmoid"}]}],
        "weights": {"torchscript": {"source": "weights.pt", "pytorch_version": "2.13"}},
    }  # fmt: skip
    (pkg / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    alias_pkg = shutil.copytree(pkg, d / "alias_pkg")
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        levels.append(f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 9)}]")
    (alias_pkg / "rdf.yaml").write_text("\n".join(levels) + "\ntype: *j\n")
    with zipfile.ZipFile(d / "ratio.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("rdf.yaml", "type: model\n")
        z.writestr("weights.onnx", bytes(300 * 2**20))
    # stores: missing chunks, a 512² image as one 60000² chunk, a 144 MB .zattrs
    image = synth_nuclei((256, 256), seed=2)[0]
    missing = zarr.open_array(str(d / "missing.zarr"), mode="w", shape=image.shape, chunks=(64, 64), dtype="uint8",
                              zarr_format=2)  # fmt: skip
    missing[:] = image
    for key in ("0.0", "0.1", "1.0", "2.2", "3.3"):
        (d / "missing.zarr" / key).unlink()
    one = zarr.open_array(str(d / "onechunk.zarr"), mode="w", shape=(512, 512), chunks=(60000, 60000),
                          dtype="uint8", zarr_format=2)  # fmt: skip
    one[:] = 1
    big = zarr.open_array(str(d / "bigattrs.zarr"), mode="w", shape=(64, 64), chunks=(64, 64), dtype="uint8",
                          zarr_format=2)  # fmt: skip
    big[:] = 1
    (d / "bigattrs.zarr" / ".zattrs").write_text('{"junk": "' + "x" * 144_000_000 + '"}')
    # checkpoints
    payload = torch.load(model, weights_only=True)
    giant = copy.deepcopy(payload)
    giant["model"]["hparams"].update(depth=8, base_channels=1024)
    torch.save(giant, d / "giant.pt")
    tampered = copy.deepcopy(payload)
    tampered["preprocessing"]["normalization"] = "x"
    torch.save(tampered, d / "tampered.pt")
    # layouts
    (d / "hyper").mkdir()
    tifffile.imwrite(d / "hyper" / "five.tif", np.zeros((2, 3, 2, 64, 64), np.uint8), imagej=True)
    same = shutil.copytree(data, d / "samedirs")
    (same / "dataset.yaml").write_text("images_dir: images\nmasks_dir: images\n")
    o = lambda k: str(work / f"out31-{k}")  # noqa: E731
    img = str(images)
    return [
        ("package", "TorchScript maps the input read-write", [exe, "predict", str(pkg), img, "--out", o(1)], {}),
        ("package", "rdf.yaml alias bomb under type:", [exe, "predict", str(alias_pkg), img, "--out", o(2)], {}),
        ("package", "zip member 300 MiB of zeros", [exe, "predict", str(d / "ratio.zip"), img, "--out", o(3)], {}),
        ("checkpoint", "depth 8, base 1024 (in bounds)", [exe, "predict", str(d / "giant.pt"), img, "--out", o(4)], {}),
        ("checkpoint", "normalization tampered", [exe, "predict", str(d / "tampered.pt"), img, "--out", o(5)], {}),
        ("store", "zarr missing 5 of 16 chunks", [exe, "predict", model, str(d / "missing.zarr"), "--out", o(6)], {}),
        ("store", "512² zarr as one 60000² chunk", [exe, "predict", model, str(d / "onechunk.zarr"), "--out", o(7)], {}),
        ("store", "144 MB .zattrs", [exe, "predict", model, str(d / "bigattrs.zarr"), "--out", o(8)], {}),
        ("layout", "5-D ImageJ TIFF", [exe, "predict", model, str(d / "hyper"), "--out", o(9)], {}),
        ("layout", "masks_dir = images_dir", [exe, "check-data", str(same)], {}),
        ("value", "--threshold nan", [exe, "predict", model, img, "--out", o(10), "--threshold", "nan"], {}),
        ("output", "evaluate --csv GT/masks/x.png", [exe, "evaluate", str(data / "masks"), str(data), "--csv", str(data / "masks" / "x.png")], {}),
        ("output", "evaluate MODEL --csv RUN/best.pt", [exe, "evaluate", str(run_dir), str(data), "--csv", model, "--overwrite"], {}),
        ("output", "plan --out DATA/masks/x.png", [exe, "plan", str(data), "--out", str(data / "masks" / "x.png"), "--overwrite", "--no-measure"], {}),
        ("output", "plan --out DATA/dataset.yaml", [exe, "plan", str(data), "--out", str(data / "dataset.yaml"), "--overwrite", "--no-measure"], {}),
        ("output", "train --init RUN --out RUN", [exe, "train", str(data), "--init", str(run_dir), "--out", str(run_dir), "--overwrite"], {}),
        ("output", "train --out DATA", [exe, "train", str(data), "--out", str(data), "--overwrite"], {}),
        ("output", "predict IMAGES --out IMAGES/pred", [exe, "predict", model, img, "--out", str(images / "pred")], {}),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
