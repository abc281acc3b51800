"""Shared-memory segments a run leaves in /dev/shm, removed when the run's driver exits.

vLLM's engine and worker processes talk through POSIX shared memory (``psm_*``: the message
queues of ``vllm/distributed/device_communicators/shm_broadcast.py``; ``sem.mp-*``: named
semaphores of Python's multiprocessing) and verl's weight sync can leave ``verl_weights_*`` after a
crash. Ray ends those processes with SIGKILL, so their own clean-up never runs and every run left
about 400 MB of segments behind (measured: two ``psm_*`` of 168 MB and 252 MB per vLLM run; with
tensor parallel 2, two more 4 MB ``...-cpushm_*`` buffers of vLLM-CPU's communicator).

The process that starts Ray (the driver: ``python -m verl.trainer.main_ppo``, through
:func:`patch_ray_init`) or vLLM's offline engine (``env_adapters.evaluate``) owns the clean-up
(:func:`install_exit_cleanup`): at its exit (normal end, an exception, Ctrl-C, SIGTERM) it shuts
Ray down, waits for the processes it started to end (a driver that joined a cluster from
``ray start`` started none: it waits for the processes on its node that hold the segments made
since it started, the job's vLLM engines, which the raylet ends after the job), then removes
every segment with one of :data:`PREFIXES` that was created after the clean-up was installed
and that no live process maps or holds open. A segment of a concurrent run is mapped by that
run's live processes, so it is left alone.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
PREFIXES = ("psm_", "sem.mp-", "verl_weights_")
SUFFIX = re.compile(r"-cpushm_\d+$")  # vLLM-CPU's tensor-parallel buffers: "<pid>-tp:0-[0-1]-cpushm_0"
SETTLE_S = 2.0  # younger segments may be another process's, between creating and mapping them
EXIT_WAIT_S = 30.0  # how long the driver waits for Ray's and vLLM's processes to end


def segments(since: float = 0.0, shm_dir: Path = SHM_DIR, settle_s: float = SETTLE_S) -> list[Path]:
    """Segments with one of :data:`PREFIXES` (or vLLM-CPU's :data:`SUFFIX`) modified at or after
    ``since`` (a ``time.time()``) and at least ``settle_s`` seconds ago."""
    settled = time.time() - settle_s
    found = []
    try:
        entries = list(shm_dir.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not (entry.name.startswith(PREFIXES) or SUFFIX.search(entry.name)):
            continue
        try:
            if since <= entry.stat().st_mtime <= settled:
                found.append(entry)
        except OSError:
            continue
    return sorted(found)


def segment_holders(shm_dir: Path = SHM_DIR) -> dict[str, set[int]]:
    """Name under ``shm_dir`` -> the live processes (pids) that map it (``/proc/*/maps``) or hold
    it open.

    Matched by inode, not by name: glibc's ``sem_open`` maps a semaphore under a temporary name and
    then links it to its real one (``sem.mp-*``), so a live semaphore's mapping shows another name.
    """
    pids_by_inode: dict[int, set[int]] = {}
    prefix = str(shm_dir) + "/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        inodes = set()
        try:
            for line in (proc / "maps").read_text().splitlines():
                fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
                if len(fields) == 6 and fields[5].startswith(prefix):
                    inodes.add(int(fields[4]))
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).startswith(prefix):
                    inodes.add(os.stat(fd).st_ino)
        except (OSError, ValueError):
            pass  # the process ended, is not ours to read, or closed an fd while we read them
        for inode in inodes:
            pids_by_inode.setdefault(inode, set()).add(int(proc.name))
    holders = {}
    for entry in shm_dir.iterdir():
        try:
            pids = pids_by_inode.get(entry.stat().st_ino)
        except OSError:
            continue
        if pids:
            holders[entry.name] = pids
    return holders


def segments_in_use(shm_dir: Path = SHM_DIR) -> set[str]:
    """Names under ``shm_dir`` that a live process maps or holds open (:func:`segment_holders`)."""
    return set(segment_holders(shm_dir))


def orphaned_segments(since: float = 0.0, shm_dir: Path = SHM_DIR, settle_s: float = SETTLE_S) -> list[Path]:
    """The :func:`segments` that no live process maps or holds open."""
    candidates = segments(since, shm_dir, settle_s)
    if not candidates:
        return []
    in_use = segments_in_use(shm_dir)
    return [path for path in candidates if path.name not in in_use]


def remove_orphaned_segments(since: float, shm_dir: Path = SHM_DIR, wait_to_settle: bool = False) -> list[str]:
    """Remove segments created at or after ``since`` that no live process uses; returns their names.

    A segment written in the last :data:`SETTLE_S` seconds is skipped: it may be another process's,
    between creating and mapping it. vLLM writes its message queues until the moment it is killed,
    so a caller that has just waited for its own processes to end passes ``wait_to_settle``: the
    call first waits (at most :data:`SETTLE_S`) until those segments have settled.
    """
    if wait_to_settle:
        newest = max((_mtime(path) for path in segments(since, shm_dir, settle_s=0.0)), default=0.0)
        delay = newest + SETTLE_S - time.time()
        if delay > 0:
            time.sleep(min(delay, SETTLE_S) + 0.05)
    removed = []
    for path in orphaned_segments(since, shm_dir):
        try:
            path.unlink()
            removed.append(path.name)
        except FileNotFoundError:
            continue
    if removed:
        logger.info("removed %d orphaned shared-memory segments: %s", len(removed), ", ".join(removed))
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _is_raylet(process: Any) -> bool:
    import psutil

    try:
        return process.name() == "raylet"
    except psutil.Error:
        return False


def _processes(pids: Iterable[int]) -> list[Any]:
    import psutil

    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return found


def _wait_for(processes: Iterable[Any], timeout: float) -> list[Any]:
    """Wait until the processes end, at most ``timeout`` seconds; returns those still alive."""
    import psutil

    try:
        return psutil.wait_procs(list(processes), timeout=timeout)[1]
    except psutil.Error:
        return []


def _kill(processes: list[Any]) -> None:
    """End processes of this run that outlived the wait: a Ray worker can hang for good in its
    exit handler (seen: a deadlock in Ray's core-worker destructor, ``~Publisher`` waiting on a
    mutex the exiting thread holds), holding its memory and segments."""
    import psutil

    for process in processes:
        try:
            logger.warning("killing pid %d (%s): still alive %.0f s after Ray's shutdown",
                           process.pid, process.name(), EXIT_WAIT_S)
            process.kill()
        except psutil.Error:
            continue
    _wait_for(processes, 5.0)


class ExitCleanup:
    """Installed once per process by :func:`install_exit_cleanup`: see the module docstring."""

    def __init__(self) -> None:
        self.started = time.time() - 1.0  # mtime granularity
        self.done = False
        self.previous_sigterm: Any = None

    def run(self) -> None:
        if self.done:
            return
        self.done = True
        import psutil

        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            children = []
        ray = sys.modules.get("ray")
        joined_cluster = False
        if ray is not None and ray.is_initialized():
            joined_cluster = not any(_is_raylet(child) for child in children)
            ray.shutdown()
        _kill(_wait_for(children, EXIT_WAIT_S))
        if joined_cluster:
            # a driver of a cluster started with `ray start`: the job's vLLM processes on this node
            # are the raylet's, ended some seconds after the job; wait for what holds the
            # segments made since this run started (a concurrent run's too, for at most the bound)
            ours = {path.name for path in segments(self.started, settle_s=0.0)}
            holders = {pid for name, pids in segment_holders().items() if name in ours for pid in pids}
            _wait_for(_processes(holders - {os.getpid()}), EXIT_WAIT_S)
        remove_orphaned_segments(self.started, wait_to_settle=True)

    def on_sigterm(self, signum: int, frame: Any) -> None:
        # leave through SystemExit so the atexit hooks (ours, Ray's) run; then die as asked
        previous = self.previous_sigterm
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    def install(self) -> None:
        atexit.register(self.run)
        if threading.current_thread() is threading.main_thread():
            self.previous_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self.on_sigterm)


_exit_cleanup: ExitCleanup | None = None


def install_exit_cleanup(started: float | None = None) -> None:
    """Make this process remove the orphaned segments created since ``started`` (default: now) at
    exit (idempotent)."""
    global _exit_cleanup
    if _exit_cleanup is None:
        _exit_cleanup = ExitCleanup()
        if started is not None:
            _exit_cleanup.started = started
        _exit_cleanup.install()


def patch_ray_init() -> None:
    """The first ``ray.init`` of a process makes it the driver that cleans up at exit."""
    import ray

    original = ray.init
    if getattr(original, "_verl_epo_cpu", False):
        return

    @functools.wraps(original)
    def init(*args: Any, **kwargs: Any) -> Any:
        started = time.time() - 1.0
        context = original(*args, **kwargs)
        # after Ray's init: its core worker installs a C-level SIGTERM handler that ends the
        # process at once, and ours must replace it for the atexit clean-up to run
        install_exit_cleanup(started)
        return context

    init._verl_epo_cpu = True
    ray.init = init  # verl's main_ppo looks ray.init up at call time
