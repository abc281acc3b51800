"""The exit clean-up removes a run's orphaned shared-memory segments and nothing a live process uses."""

from __future__ import annotations

import mmap
import os
import time

from verl_epo.embedded.shm_cleanup import SETTLE_S, remove_orphaned_segments, segments


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
