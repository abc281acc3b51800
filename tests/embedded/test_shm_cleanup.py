"""The exit clean-up removes a run's orphaned shared-memory segments and nothing a live process uses."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import psutil

from verl_epo.embedded import shm_cleanup
from verl_epo.embedded.shm_cleanup import (
    SETTLE_S,
    SHM_DIR,
    ExitCleanup,
    remove_orphaned_segments,
    segment_holders,
    segments,
)


def test_removes_only_unused_segments_of_ours(tmp_path):
    names = ["psm_mapped", "psm_orphan", "sem.mp-orphan", "verl_weights_orphan", "123-tp:0-[0-1]-cpushm_0",
             "someone_elses", "psm_fresh"]
    for name in names:
        (tmp_path / name).write_bytes(b"\0" * 4096)
    past = time.time() - 60
    for name in names[:-1]:
        os.utime(tmp_path / name, (past, past))
    with open(tmp_path / "psm_mapped", "r+b") as f, mmap.mmap(f.fileno(), 4096):
        assert {p.name for p in segments(0, tmp_path)} == set(names[:5])  # the fresh one is not settled yet
        removed = remove_orphaned_segments(0, tmp_path)
    assert sorted(removed) == sorted(["psm_orphan", "sem.mp-orphan", "verl_weights_orphan", "123-tp:0-[0-1]-cpushm_0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["psm_fresh", "psm_mapped", "someone_elses"]
    # created before the run started: not this run's
    os.utime(tmp_path / "psm_mapped", (past, past))
    assert remove_orphaned_segments(time.time() - 30, tmp_path) == []


def test_a_semaphore_mapped_under_its_temporary_name_is_in_use(tmp_path):
    """glibc's sem_open maps a file under a temporary name, then links it to the real one and removes
    the temporary: the mapping names a file that no longer exists; the inode is what matches."""
    temporary, real = tmp_path / "sem.Xy12ab", tmp_path / "sem.mp-live"
    temporary.write_bytes(b"\0" * 4096)
    past = time.time() - 60
    with open(temporary, "r+b") as f, mmap.mmap(f.fileno(), 4096):
        os.link(temporary, real)
        temporary.unlink()
        os.utime(real, (past, past))
        assert remove_orphaned_segments(0, tmp_path) == []
    assert remove_orphaned_segments(0, tmp_path) == ["sem.mp-live"]


def test_a_segment_written_a_moment_ago_is_waited_for_only_when_asked(tmp_path):
    """vLLM writes its message queues until it is killed: right after, the segment looks fresh."""
    (tmp_path / "psm_just_written").write_bytes(b"\0" * 4096)
    assert remove_orphaned_segments(0, tmp_path) == []  # it might be another process's, not mapped yet
    started = time.time()
    assert remove_orphaned_segments(0, tmp_path, wait_to_settle=True) == ["psm_just_written"]
    assert time.time() - started < SETTLE_S + 1


def test_a_driver_of_a_ray_start_cluster_waits_for_the_processes_holding_its_segments(monkeypatch):
    """Joined to a cluster from `ray start`, the driver has no Ray processes of its own: the job's
    vLLM processes are the raylet's and end after the driver is done. Here a process that is not
    our child maps a segment and then ends without removing it (as a killed vLLM engine does); the
    exit clean-up must wait for it and then remove the segment."""
    name = f"psm_test_{uuid.uuid4().hex[:8]}"
    path = SHM_DIR / name
    holder = (
        "import mmap, time\n"
        f"f = open({str(path)!r}, 'w+b'); f.write(bytes(4096)); f.flush()\n"
        "m = mmap.mmap(f.fileno(), 4096); time.sleep(4)\n"
    )
    # a stand-in for a Ray client joined to a running cluster (no raylet among our children);
    # tests/e2e/test_train_two_nodes.py checks the same with a real `ray start` cluster
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(is_initialized=lambda: True, shutdown=lambda: None))
    cleanup = ExitCleanup()
    # through a shell that exits at once: the holder is re-parented, so it is not our child
    subprocess.run(["sh", "-c", f'"{sys.executable}" -c "$0" >/dev/null 2>&1 &', holder], check=True)
    try:
        deadline = time.monotonic() + 10
        while name not in segment_holders() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert name in segment_holders(), "the holder never mapped its segment"
        started = time.monotonic()
        cleanup.run()
        assert not path.exists(), "the segment outlived the process that held it"
        assert time.monotonic() - started > 1.0, "the clean-up did not wait for the holder"
    finally:
        path.unlink(missing_ok=True)


def test_a_child_that_outlives_the_wait_is_killed(monkeypatch):
    """A Ray worker can hang for good in its exit handler (a deadlock in Ray's core worker, seen in
    the e2e suite); the driver's clean-up ends what is still alive after the wait."""
    monkeypatch.setattr(shm_cleanup, "EXIT_WAIT_S", 0.5)
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    stuck = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                                    "signal.SIG_IGN); time.sleep(60)"])
    try:
        started = time.monotonic()
        ExitCleanup().run()
        assert not psutil.pid_exists(stuck.pid) or psutil.Process(stuck.pid).status() == psutil.STATUS_ZOMBIE, \
            "the stuck child was not killed"
        assert time.monotonic() - started < 10
    finally:
        stuck.kill()
