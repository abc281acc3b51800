"""Helpers of the reliability tests: finding and waiting for real processes (psutil), given to
tests as the ``procs`` fixture (test folders share no importable helper module)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import psutil
import pytest


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: Iterable[int], within: float = 15.0) -> list[int]:
    """Wait until none of ``pids`` runs; returns those still running after ``within`` seconds."""
    pids = list(pids)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


def jvm_children(pid: int) -> list[int]:
    """PIDs of the ScienceWorld JVMs (py4j gateways) below process ``pid``."""
    try:
        found = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p.pid for p in found if _is_jvm(p)]


def _is_jvm(proc: psutil.Process) -> bool:
    try:
        return "py4j.GatewayServer" in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below ``pid``."""
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if alive(p.pid)]
    except psutil.NoSuchProcess:
        return []


class _Procs:
    alive = staticmethod(alive)
    wait_gone = staticmethod(wait_gone)
    jvm_children = staticmethod(jvm_children)
    descendants = staticmethod(descendants)


@pytest.fixture
def procs() -> type[_Procs]:
    """The process helpers above."""
    return _Procs
