"""Test helpers: find the processes of one training run, check that it left nothing behind, and
read which weight-sync socket it used.

A test starts the run with ``{marker: tag}`` in its environment; every process it spawns (Ray's,
vLLM's, the games') inherits it, so the run's processes are exactly those that carry it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import psutil

from verl_epo.embedded.shm_cleanup import orphaned_segments


def run_processes(marker: str, tag: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``marker=tag``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(marker) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def describe(procs: list[psutil.Process]) -> str:
    """One line per process: pid and command line."""
    lines = []
    for proc in procs:
        try:
            lines.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
        except psutil.Error:
            lines.append(f"{proc.pid} (gone)")
    return "\n".join(lines)


def assert_nothing_left(marker: str, tag: str, started: float, bound: float, after: str = "the run") -> None:
    """Within ``bound`` seconds no process of the run is alive, and no /dev/shm segment created
    since ``started`` (epoch seconds) is left that no live process uses (a concurrent run's
    segments are in use, so never counted)."""
    deadline = time.monotonic() + bound
    while (left := run_processes(marker, tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"{len(left)} processes outlived {after} by {bound} s:\n{describe(left)}"
    orphans = [p.name for p in orphaned_segments(started, settle_s=0.0)]  # fresh ones too
    assert not orphans, f"{after} left shared-memory segments in /dev/shm: {orphans}"


def weight_sync_socket(out: Path) -> str:
    """The weight-sync socket a finished run used (from its log; rank 0's where each rank of a
    tensor-parallel replica has one), checked to be named the same on the trainer side and the vLLM
    side, with this Ray cluster's token before the job id."""
    log = (out / "train.log").read_text()
    sender = set(re.findall(r"weight-sync socket \(trainer side\): (\S+)", log))
    receiver = set(re.findall(r"weight-sync socket job id \(vLLM side\): (\S+)", log))
    # one trainer-side socket per rank of a replica (two with tensor parallelism 2), one job id
    assert sender and len(receiver) == 1, f"trainer sockets and one vLLM job id expected: {sender} {receiver}"
    (job,) = receiver
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", job), f"no cluster token in the vLLM side's job id {job}"
    for path in sender:
        assert f"rl-colocate-zmq-{job}-replica-" in path, f"the two sides disagree: {path} vs job id {job}"
    return min(sender)
