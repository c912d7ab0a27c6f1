# `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEEPSPEED_VERSION ?= 0.19.8

.PHONY: install browser speech test test-all test-interop interop lint demo demo-vision demo-omni bench clean

install: $(VENV)/.installed

# torch==2.13.0 first: a bare `torch` requirement would pull the multi-GB CUDA build. DeepSpeed (the
# deepspeed.stage strategy) is pure Python here: DS_BUILD_OPS=0 compiles none of its CUDA ops, and
# --no-build-isolation builds it against this torch, not another.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-build-isolation deepspeed==$(DEEPSPEED_VERSION)
	touch $@

# The web page's browser test drives Debian's chromium; install it where apt can (as root or with
# passwordless sudo). Elsewhere the test skips and says why.
browser: $(VENV)/.chromium
$(VENV)/.chromium: | install
	@command -v chromium >/dev/null \
	  || { command -v apt-get >/dev/null && SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ) \
	       && $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: chromium could not be installed; the browser test will skip"
	touch $@

# The speech data is spoken by Debian's espeak-ng; installed the same way (elsewhere its tests skip and say why).
speech: $(VENV)/.espeak
$(VENV)/.espeak: | install
	@command -v espeak-ng >/dev/null \
	  || { command -v apt-get >/dev/null && SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ) \
	       && $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq espeak-ng >/dev/null; } \
	  || echo "note: espeak-ng could not be installed; the speech data tests will skip"
	touch $@

test: install browser speech
	$(BIN)/python -m pytest -q

test-all: install browser speech
	$(BIN)/python -m pytest -q -m 'slow or not slow'

# llama.cpp parity tests: llama-cpp-python has no CPU wheel on PyPI, so build it from its sdist once (4-11 min)
# and keep the wheel (built for this CPU) in $(WHEELS).
LLAMA_CPP_VERSION ?= 0.3.36
WHEELS ?= $(HOME)/.cache/minimind/wheels
interop: $(VENV)/.llama_cpp
$(VENV)/.llama_cpp: | install
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 \
	  || CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip wheel -q --no-deps \
	     --no-binary llama-cpp-python -w $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(BIN)/pip install -q $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	touch $@

test-interop: interop
	$(BIN)/python -m pytest -q -m interop

lint: install
	$(BIN)/ruff check src tests benchmarks

# The main job: default data → tokenizer → pretrain → SFT → report card → runs/quickstart/report.md
# (5–12 minutes on a 2-core CPU: 4.5 on the latest machine, training 3.5 of them; 8–12 on earlier ones).
demo: install
	$(BIN)/minimind quickstart --out runs/quickstart

# The vision job: generated pictures → vision SFT of mini-v → held-out VQA → runs/quickstart-vision/report.md
demo-vision: install
	$(BIN)/minimind quickstart --vision --out runs/quickstart-vision

# The omni job: espeak-ng speech → mini-o hearing and speaking → held-out measures → runs/quickstart-omni/report.md
demo-omni: install speech
	$(BIN)/minimind quickstart --omni --out runs/quickstart-omni

bench: install
	$(BIN)/python benchmarks/model_step.py
	$(BIN)/python benchmarks/data_pipeline.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/decode.py
	$(BIN)/python benchmarks/serve_load.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
