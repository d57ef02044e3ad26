"""Issue 36: ``--engine auto`` measures the engines on this CPU once per model and remembers the choice; the masks
are those of the engine it chose; the ONNX export a measurement made is kept for later runs."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys

import numpy as np

from unetkit import Predictor, synth_nuclei, write_image
from unetkit.inference.engines import AGREEMENT, cache_dir, cached_onnx


def test_engine_auto_measures_once_chooses_the_fastest_and_remembers(tiny_run, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("UNETKIT_CACHE_DIR", str(tmp_path / "cache"))
    image = synth_nuclei((200, 220), seed=3)[0]
    with caplog.at_level(logging.INFO, logger="unetkit"):
        auto = Predictor.from_checkpoint(tiny_run.run_dir, engine="auto")
    said = "\n".join(r.getMessage() for r in caplog.records if "engine" in r.getMessage())
    assert "measured now on this CPU" in said and "tiles/s" in said and "torch float32" in said, said
    cache = json.loads((cache_dir() / "engines.json").read_text())
    (entry,) = [v for k, v in cache.items() if "|pass " not in k]  # the engine's (beside the pass bound's)
    rates, agreement = entry["rates"], entry["agreement"]
    fastest = max((k for k in rates if agreement[k] >= AGREEMENT), key=rates.get)  # of those that agree
    assert f"{entry['engine']} {entry['precision']}" == fastest
    assert (
        "onnxruntime float32" in rates and cached_onnx(tiny_run.best_checkpoint).is_file()
    )  # the [onnx] extra
    assert "openvino float32" in rates  # the [openvino] extra
    chosen = Predictor.from_checkpoint(tiny_run.run_dir, engine=entry["engine"], precision=entry["precision"])
    np.testing.assert_array_equal(auto.predict(image), chosen.predict(image))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unetkit"):
        Predictor.from_checkpoint(tiny_run.run_dir, engine="auto")
    assert any(
        "measured before on this CPU" in r.getMessage() for r in caplog.records
    )  # no second measurement
    (cache_dir() / "engines.json").write_text("{not json")  # damaged: measured again, never an error
    Predictor.from_checkpoint(tiny_run.run_dir, engine="auto")
    assert json.loads((cache_dir() / "engines.json").read_text())


def test_engine_auto_from_the_command_line(tiny_run, tmp_path):
    write_image(tmp_path / "in" / "a.png", synth_nuclei((128, 160), seed=4)[0])
    env = {"UNETKIT_CACHE_DIR": str(tmp_path / "cache")}
    import os

    done = subprocess.run(
        [sys.executable, "-m", "unetkit", "predict", str(tiny_run.run_dir), str(tmp_path / "in"), "--out",
         str(tmp_path / "pred"), "--engine", "auto", "--no-progress"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "engine: " in done.stderr and "the fastest" in done.stderr and (tmp_path / "pred" / "a.png").is_file()
    )


def test_the_openvino_engine_gives_pytorchs_masks_and_says_what_it_needs(tmp_path, monkeypatch):
    """Issue 36: OpenVINO joins as an engine because it won, measured (the built-in model's 512² tiles 1.5-1.9x
    PyTorch eager here): the same classes as PyTorch in the same precision (float32: every pixel within the
    engines' tolerance; bfloat16 as torch's own bfloat16 differs), the same objects; an ONNX file runs on it when
    asked; the precision it cannot compute in, and --compile, refused in one line."""
    import pytest

    from unetkit import ConfigError
    from unetkit.checkpoint import resolve_model_path
    from unetkit.inference.export import OpenVinoModel

    monkeypatch.setenv("UNETKIT_CACHE_DIR", str(tmp_path / "cache"))
    image = synth_nuclei((300, 340), seed=5)[0]
    torch32 = Predictor.from_pretrained("nuclei", engine="torch", precision="float32")
    ov32 = Predictor.from_pretrained("nuclei", engine="openvino", precision="float32")
    assert isinstance(ov32.executor.model, OpenVinoModel) and ov32.executor.model.computes == "float32"
    np.testing.assert_allclose(ov32.predict_proba(image), torch32.predict_proba(image), atol=2e-3)
    classes = torch32.predict(image)
    assert (ov32.predict(image) == classes).mean() >= AGREEMENT
    bf16 = Predictor.from_pretrained("nuclei", engine="openvino", precision="bfloat16")
    assert bf16.executor.model.computes == "bfloat16" and (bf16.predict(image) == classes).mean() >= AGREEMENT
    objects = torch32.predict_instances(image)
    found = ov32.predict_instances(image)
    assert abs(int(found.max()) - int(objects.max())) <= 1  # the same objects, give or take one on an edge
    onnx_file = cached_onnx(resolve_model_path("nuclei"))
    assert onnx_file.is_file()  # the export made once, kept (ONNX Runtime would use the same file)
    from_file = Predictor.from_checkpoint(onnx_file, engine="openvino", precision="float32")
    np.testing.assert_array_equal(from_file.predict(image), ov32.predict(image))
    with pytest.raises(ConfigError, match="--compile applies to the torch engine; OpenVINO"):
        Predictor.from_pretrained("nuclei", engine="openvino", compile=True)


def test_engine_auto_sizes_the_passes_by_measurement_per_model_and_cpu(
    tiny_run, tmp_path, monkeypatch, caplog
):
    """Issue 36: tile and batch chosen by measurement per machine. ``--engine auto`` also times one tile a pass
    of several sides with the engine it chose and bounds the default plan's passes by the side that segments a
    large image fastest; the engine is measured once per model file and CPU, the passes once per network shape
    and CPU, reused, and measured again for another model (engine) or CPU (both); what it chose is a complete recipe (Dask workers run it without measuring); a bound
    the user sets is kept."""
    from unetkit.inference.engines import PASS_SIDES, large_image_rate

    monkeypatch.setenv("UNETKIT_CACHE_DIR", str(tmp_path / "cache"))
    best = tiny_run.best_checkpoint

    def said(path=best, **kwargs):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="unetkit"):
            predictor = Predictor.from_checkpoint(path, **{"engine": "auto", **kwargs})
        return predictor, "\n".join(r.getMessage() for r in caplog.records)

    auto, log = said()
    assert "timing one tile a pass" in log and "tiles: up to" in log and "measured now" in log, log
    cache = json.loads((cache_dir() / "engines.json").read_text())
    (entry,) = [v for k, v in cache.items() if "|pass " in k]
    rates = {int(side): rate for side, rate in entry["rates"].items()}
    assert len(rates) >= 3 and set(rates) <= set(PASS_SIDES)
    side = max(rates, key=lambda s: large_image_rate(s, rates[s], entry["context"]))
    assert entry["side"] == side and auto.executor.pass_pixels == side**2 and auto.executor.max_side == side
    assert auto.chosen["pass_pixels"] == side**2 and {"engine", "precision"} <= set(auto.chosen)
    assert all(s <= side for s, _ in auto.executor.auto_sides((3000, 2500)))  # the plan keeps to the bound
    again, log = said()  # reused: no second measurement
    assert "timing" not in log and log.count("measured before") == 2 and again.executor.pass_pixels == side**2
    mine, _ = said(batch_size=2)  # the user sized the passes: theirs is kept
    assert mine.executor.pass_pixels == mine.executor.tile_in**2 * 2 and "pass_pixels" not in mine.chosen

    image = synth_nuclei((700, 900), seed=3)[0]
    (cache_dir() / "engines.json").unlink()  # no measurement to read: the recipe alone
    worker, log = said(**auto.chosen)
    assert "timing" not in log and not (cache_dir() / "engines.json").exists()
    assert worker.executor.pass_pixels == side**2 and worker.precision == auto.precision
    np.testing.assert_array_equal(auto.predict(image), worker.predict(image))

    said()  # measured again: the cache was gone
    _, log = said()
    assert "timing" not in log
    edited = {k: {**v, "engine": "os.system", "side": 10**9, "rates": "fast"} for k, v in json.loads((cache_dir() / "engines.json").read_text()).items()}  # fmt: skip
    (cache_dir() / "engines.json").write_text(json.dumps(edited))
    edited_run, log = said()  # entries no measurement writes: measured again, never run as they say
    assert log.count("measured now") == 2 and math.isqrt(edited_run.executor.pass_pixels) in PASS_SIDES, log
    kept = json.loads((cache_dir() / "engines.json").read_text())
    sized = {k.rsplit("|pass ", 1)[1] for k, v in kept.items() if "|pass " in k and v["side"] in PASS_SIDES}
    other, log = said(
        tiny_run.run_dir / "last.pt"
    )  # another model file: its engine measured, its shape's passes
    # not when the same engine wins (engines a few % apart may swap from one measurement to the next)
    same = f"{other.chosen['engine']} {other.chosen['precision']}" in sized
    assert "engine: " in log and log.count("measured now") == (1 if same else 2) and "tiles: up to" in log, (
        log
    )
    assert ("timing one tile a pass" in log) != same, log
    shapes = {
        k.split("|", 1)[0] for k in json.loads((cache_dir() / "engines.json").read_text()) if "|pass " in k
    }
    assert len(shapes) == 1, shapes  # the passes are kept per network shape, none per file
    monkeypatch.setattr("unetkit.device.cpu_summary", lambda: "another CPU; 2 threads; AVX2")
    _, log = said()  # another CPU: measured again
    assert log.count("measured now") == 2, log
