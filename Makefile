# `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-all lint demo bench clean

install: $(VENV)/.installed

# torch==2.13.0 first: a bare `torch` requirement would pull the multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m 'slow or not slow'

lint: install
	$(BIN)/ruff check src tests benchmarks

# The main job. Until the quickstart recipe lands: a fresh minimind-3 model directory and a short generation.
demo: install
	$(BIN)/minimind init --preset minimind-3 --out runs/demo/minimind-3 --seed 0
	$(BIN)/minimind info --model runs/demo/minimind-3
	$(BIN)/minimind generate --model runs/demo/minimind-3 --prompt-ids 1 --max-new-tokens 16 --temperature 0

bench: install
	$(BIN)/python benchmarks/model_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
