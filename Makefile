# Two commands for a fresh machine: `make demo` (set up + run the whole pipeline) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
export FMOLAB_HOME ?= $(CURDIR)/fmolab-work

.PHONY: setup demo test test-all bench clean browser
setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

demo: setup  ## render -> train -> register -> deblur, on local Ray + SQLite MLflow (< 10 min on 2 cores)
	$(BIN)/fmolab demo

test: setup browser  ## the CI suite: fast tests + one real end-to-end run (slow tests excluded)
	$(BIN)/python -m pytest -m "not slow" -q --durations=20

browser:  ## headless Chromium for the report test (apt-get, when missing and run as root)
	@bash scripts/browser.sh

test-all: setup browser  ## everything, including slow tests (multi-node, long training)
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/loader.py && $(BIN)/python benchmarks/model.py && $(BIN)/python benchmarks/train.py && $(BIN)/python benchmarks/train_paired.py && $(BIN)/python benchmarks/render.py && $(BIN)/python benchmarks/storage.py && $(BIN)/python benchmarks/inference.py

clean:
	rm -rf fmolab-work benchmarks/results
