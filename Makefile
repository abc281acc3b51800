# verl-epo: every install step lives here, so a fresh clone needs only `make test` or `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
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
