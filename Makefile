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

# The main job. Until the trainer's quickstart lands: the default data, tokenized once, and a fresh
# minimind-3 model directory (weights + tokenizer) that generates text.
demo: install
	$(BIN)/minimind data build-default --out runs/data
	$(BIN)/minimind data prepare --stage sft --data runs/data/sft.jsonl --tokenizer src/minimind/tokenizer/default --out runs/prepared/sft
	$(BIN)/minimind init --preset minimind-3 --out runs/demo/minimind-3 --seed 0
	$(BIN)/minimind info --model runs/demo/minimind-3
	$(BIN)/minimind generate --model runs/demo/minimind-3 --prompt "To be, or not to be" --max-new-tokens 16 --temperature 0

bench: install
	$(BIN)/python benchmarks/model_step.py
	$(BIN)/python benchmarks/data_pipeline.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
