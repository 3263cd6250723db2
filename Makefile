# Two commands on a fresh machine: `make demo` and `make test`. Both create or update .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export YOLO_OFFLINE := 1
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint typecheck pytest install-runtime install-dev browser demo-bundle bench \
	bench-index bench-live bench-scene bench-swap bench-hailo bench-synth synth-preview soak clean \
	backgrounds demo-bundle-full

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Runtime only: what a Pi gets.
$(VENV)/.runtime-stamp: pyproject.toml setup.py edge/recognize/_obb.c | $(BIN)/python
	$(PIP) install -q -e .
	touch $@

# Everything: training extra (torch, ultralytics, ...) and dev tools.
$(VENV)/.dev-stamp: pyproject.toml setup.py edge/recognize/_obb.c | $(BIN)/python
	$(PIP) install -q -e '.[train,dev]'
	touch $@ $(VENV)/.runtime-stamp

install-runtime: $(VENV)/.runtime-stamp
install-dev: $(VENV)/.dev-stamp

# Debian's chromium for the web page test (Playwright's own browser download cannot work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will skip"; \
	  else echo "chromium missing and not root: browser tests will skip"; fi; }

demo: $(VENV)/.runtime-stamp
	$(BIN)/cardedge serve --bundle models/demo --source synthetic:reference_db/demo --host 127.0.0.1 --port 8080

lint: $(VENV)/.dev-stamp
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev-stamp
	$(BIN)/mypy --strict edge/

pytest: $(VENV)/.dev-stamp browser
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

# Quick path (under 60 minutes on 2 CPU cores): procedural backgrounds, a 20-epoch 320 px detector.
demo-bundle: $(VENV)/.dev-stamp
	$(BIN)/cardedge-train demo-bundle --out models/demo --reference reference_db/demo

# Full path: real backgrounds and the long detector run (about a day on 2 CPU cores, minutes on a
# GPU); run it again after an interruption and the detector resumes from its last.pt.
demo-bundle-full: backgrounds
	$(BIN)/cardedge-train demo-bundle --full --out models/demo --reference reference_db/demo

# Real photographs and material textures (Debian packages, free licences) for the detector's
# world, gathered into data/backgrounds/<family>/ (about 190 MB; needs root for apt).
BACKGROUND_PACKAGES := plasma-workspace-wallpapers mate-backgrounds nexuiz-textures gnome-backgrounds
backgrounds: $(VENV)/.dev-stamp
	@dpkg -s $(BACKGROUND_PACKAGES) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(BACKGROUND_PACKAGES) >/dev/null; \
	  else echo "run as root (or sudo apt-get install $(BACKGROUND_PACKAGES))"; exit 1; fi; }
	$(BIN)/cardedge-train synth backgrounds --out data/backgrounds

bench: $(VENV)/.dev-stamp
	$(BIN)/cardedge bench --bundle models/demo

bench-index: $(VENV)/.dev-stamp
	$(BIN)/python benchmarks/index_recall.py

bench-live: $(VENV)/.runtime-stamp
	$(BIN)/cardedge bench --live --bundle models/demo --source 'synthetic:reference_db/demo?fast' --seconds 20

bench-scene: $(VENV)/.runtime-stamp
	$(BIN)/python benchmarks/scene_load.py --bundle models/demo --source synthetic:reference_db/demo --seconds 10

bench-swap: $(VENV)/.dev-stamp
	$(BIN)/python benchmarks/swap_under_load.py

soak: $(VENV)/.runtime-stamp
	$(BIN)/python benchmarks/soak.py --bundle models/demo --source synthetic:reference_db/demo --minutes 30

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build edge/recognize/_obb.*.so

bench-hailo: $(VENV)/.dev-stamp
	$(BIN)/python benchmarks/hailo_live.py --bundle models/demo --seconds 20

bench-synth: $(VENV)/.dev-stamp
	$(BIN)/python benchmarks/synth_speed.py

synth-preview: $(VENV)/.dev-stamp
	$(BIN)/python -m training.synth preview --out docs/synth-preview.jpg
