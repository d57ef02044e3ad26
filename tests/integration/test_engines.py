"""Issue 36: ``--engine auto`` measures the engines on this CPU once per model and remembers the choice; the masks
are those of the engine it chose; the ONNX export a measurement made is kept for later runs."""

from __future__ import annotations

import json
import logging
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
    (entry,) = cache.values()
    rates, agreement = entry["rates"], entry["agreement"]
    fastest = max((k for k in rates if agreement[k] >= AGREEMENT), key=rates.get)  # of those that agree
    assert f"{entry['engine']} {entry['precision']}" == fastest
    assert (
        "onnxruntime float32" in rates and cached_onnx(tiny_run.best_checkpoint).is_file()
    )  # the [onnx] extra
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
