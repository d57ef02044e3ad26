# The README's commands. Everything a fresh clone needs is installed from the project's files.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The exact torch pin used here: the CPU wheel that lies on this machine's disk (/opt/wheels).
# pyproject.toml only declares a compatible range; never let pip resolve an unpinned torch.
TORCH_PIN   ?= torch==2.13.0
TORCH_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
STAMP  := $(VENV)/.installed


.PHONY: gui-deps
.PHONY: setup setup-bench demo test test-unit test-integration test-slow bench bench-tiled bench-arch bench-peers bench-dask bench-plan bench-borders bench-precision bench-journey bench-hostile bench-memory bench-pretrained bench-ablation bench-confidence bench-review bench-train-profile bench-tiling pretrained lint docs docs-pictures docs-serve clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_LINKS) "$(TORCH_PIN)"
	$(PY) -m pip install --quiet $(TORCH_LINKS) "$(TORCH_PIN)" -e ".[dev,docs,onnx,openvino,dask,bioimageio,ome-zarr,napari]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/unetkit demo --out demo-output --overwrite

# The napari tests need an X server (Xvfb, started by pytest-xvfb) and the X libraries Qt's xcb platform loads, the
# report test a headless Chromium: installed from the OS packages when missing (Debian/Ubuntu, as root), so a fresh
# machine passes `make test`.
GUI_DEBS := xvfb libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 \
	libxcb-xinerama0 libxcb-xkb1 libxcb-cursor0 libxkbcommon-x11-0 libgl1 libegl1 libfontconfig1 libdbus-1-3 \
	chromium-headless-shell

gui-deps:
	@missing=""; for p in $(GUI_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing OS packages for the napari and report tests:$$missing"; \
	    apt-get install -y -q $$missing >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; }; \
	  else echo "the napari and report tests need these OS packages:$$missing (e.g. sudo apt-get install$$missing)"; exit 1; fi; \
	fi

# The three tiers, fastest first: unit (about a minute), integration (real CLI, DDP, Dask, kills), slow.
test: setup gui-deps
	$(PY) -m pytest tests/unit -q
	$(PY) -m pytest tests/integration -q
	$(PY) -m pytest tests/slow -q

test-unit: setup
	$(PY) -m pytest tests/unit -q

test-integration: setup gui-deps
	$(PY) -m pytest tests/integration -q

test-slow: setup
	$(PY) -m pytest tests/slow -q

# Benchmark peers (MONAI) live in the [bench] extra, installed only for benchmarks.
BENCH_STAMP := $(VENV)/.installed-bench
setup-bench: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet $(TORCH_LINKS) "$(TORCH_PIN)" -e ".[dev,docs,onnx,openvino,dask,bioimageio,ome-zarr,napari,bench]"
	touch $(BENCH_STAMP)

bench: setup
	$(PY) bench/run_all.py

# Tiled inference: unetkit vs MONAI sliding_window_inference at 4096², and a 20,000² image (about 15 minutes).
bench-tiled: setup-bench
	$(PY) bench/tiled_inference.py

# unetkit vs MONAI at the same U-Net size: inference, training, attained GFLOP/s vs a measured ceiling.
bench-peers: setup-bench
	$(PY) bench/peers.py

# Dask inference with 1 vs 2 workers, and the 100,000² estimate (about 5 minutes).
bench-dask: setup
	$(PY) bench/dask_inference.py

# The plan (`unetkit train DATA --time-budget 5m`) vs the hand-set demo configuration (about 10 minutes).
bench-plan: setup
	$(PY) bench/plan.py

# A newcomer's journey on four folders (DSB, Cellpose, 3-D stacks, RGB classes): check-data, train, predict,
# evaluate --report (about 45 minutes with the default budget; bench/newcomer.py --extra '--time-budget 2m': 10).
bench-journey: setup
	$(PY) bench/newcomer.py

# Retrain the built-in models by the recipes in src/unetkit/pretrained/registry.yaml (fixed seeds and steps);
# rewrites their weight files, sha256, scores and run time there (nuclei: about 70 minutes on 2 CPU cores).
# KEEP=DIR keeps each build's data and run in DIR: run it again with the same DIR to resume a stopped build.
pretrained: setup
	$(PY) -m unetkit.workflows.pretrain $(if $(KEEP),--keep $(KEEP))

# The built-in nuclei models on the style-shift suite (zero-shot, size estimate), then fine-tuning on 1, 2 and 5
# images from --init nuclei for 1 and 2 minutes vs from scratch for 2 and 5 (about 3.5 hours on 2 cores;
# bench/pretrained.py --images 1 --fine-tune 2 --scratch 5 for the acceptance cells alone, about an hour).
bench-pretrained: setup
	$(PY) bench/pretrained.py

# What each group of the generator's version 3 does for the built-in model: the same network trained on the whole
# family and on the family without one group at a time, scored on the style-shift suite (about 2 hours on 2 cores).
bench-ablation: setup
	$(PY) bench/generator_ablation.py --n 500 --steps 2500 --epochs 10 --arch 16x4,16x5,18x4

# Hostile inputs and faults through the CLI: exit code, time, peak memory, inputs unchanged (about a minute).
bench-hostile: setup
	$(PY) bench/hostile.py

# Peak memory either side of predict's memory rule and of the old 64-megapixel switch (about 4 minutes).
bench-memory: setup
	$(PY) bench/memory_rule.py

# The U-Net family side by side: parameters, GFLOPs, CPU time, Dice after a short budget (about 10 minutes).
bench-arch: setup
	$(PY) bench/architectures.py

# The paper's recipe vs plain cross-entropy on touching nuclei (about 6 minutes on 2 cores).
bench-borders: setup
	$(PY) bench/border_weights.py

# bfloat16 mixed-precision training against float32: speed and accuracy on the demo and border-weights recipes
bench-precision: setup
	$(PY) bench/training_precision.py

# How far the objects table's confidence can be trusted: calibration per style-shift domain (about a minute)
bench-confidence: setup
	$(PY) bench/confidence.py

# where a training step's time goes: forward, backward, optimiser; operators by kind (about 30 s)
bench-train-profile: setup
	$(PY) bench/train_profile.py

# how predict tiles: the network's measured context, the default plan vs fixed 512 tiles overlapping by a quarter,
# a 4096² image end to end (about 6 minutes)
bench-tiling: setup
	$(PY) bench/tiling.py

# the human-in-the-loop cycle with a simulated user: 3 rounds of 10 corrections, 1 minute each (about 25 minutes)
bench-review: setup
	$(PY) bench/review_loop.py --out bench-review

# Style (ruff), the house's layers (import-linter: pyproject's [tool.importlinter]) and types (mypy).
lint: setup
	$(VENV)/bin/ruff check src tests bench docs/hooks
	$(VENV)/bin/ruff format --check src tests bench docs/hooks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The docs site (mkdocs-material; docs/, mkdocs.yml): strict (a broken link or reference fails), offline, into site/.
# The CLI reference and the front page are generated from the code and README.md by docs/hooks/unetkit_docs.py.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	@echo "site/index.html"

# the docs' pictures, taken again by the tests that drive the napari widgets and the report's browser check
docs-pictures: setup gui-deps
	UNETKIT_DOCS_SCREENSHOTS=1 $(PY) -m pytest tests/integration/test_napari.py tests/integration/test_report_browser.py -q

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) demo-output build site *.egg-info src/*.egg-info .pytest_cache
