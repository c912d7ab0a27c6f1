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

# The main job: default data → tokenizer → pretrain → SFT → evaluation → runs/quickstart/report.md
# (about 11 minutes on a 2-core CPU).
demo: install
	$(BIN)/minimind quickstart --out runs/quickstart

bench: install
	$(BIN)/python benchmarks/model_step.py
	$(BIN)/python benchmarks/data_pipeline.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/decode.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
