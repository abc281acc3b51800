"""The ScienceWorld JVM's life: capped heap, a real crash and a real hang end the episode as
failed and the next reset works, and no JVM outlives close(), garbage collection, interpreter
exit, SIGTERM or SIGKILL of its Python process."""

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from env_adapters import make_game
from env_adapters.sciworld.simulator import live_pids

REPO = Path(__file__).resolve().parents[2]


def jvm_running(pid: int) -> bool:
    """True while ``pid`` is a live (non-zombie) py4j JVM."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return b"py4j.GatewayServer" in cmdline and state != "Z"


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not jvm_running(pid):
            return True
        time.sleep(0.1)
    return False


def test_heap_cap_reaches_the_jvm():
    game = make_game("sciworld", jvm_heap="300m")
    try:
        game.reset("boil", 0)
        cmdline = Path(f"/proc/{game.jvm_pid}/cmdline").read_bytes().split(b"\0")
        assert b"-Xmx300m" in cmdline and b"--die-on-broken-pipe" in cmdline
        assert 50e6 < game.jvm_resident_bytes() < 600e6
    finally:
        game.close()


def test_killed_jvm_fails_the_episode_and_the_next_reset_works():
    game = make_game("sciworld")
    try:
        game.reset("boil", 0)
        assert game.step("teleport to kitchen").valid_action
        pid = game.jvm_pid
        os.kill(pid, signal.SIGKILL)  # a real crash
        state = game.step("look around")
        assert state.done and not state.won and state.valid_action
        assert "killed by SIGKILL" in state.info["failure"] and str(pid) in state.info["failure"]
        assert game.step("look around").done  # stays over until reset
        fresh = game.reset("boil", 0)
        assert fresh.info["jvm_restarts"] == 1 and game.jvm_pid != pid
        assert game.step("teleport to kitchen").observation == "You teleport to the kitchen."
        assert not jvm_running(pid)
    finally:
        game.close()


def test_hung_jvm_times_out_is_killed_and_replaced():
    game = make_game("sciworld", step_timeout=2.0)
    try:
        game.reset("boil", 0)
        pid = game.jvm_pid
        os.kill(pid, signal.SIGSTOP)  # a real hang: the JVM stops answering
        start = time.time()
        state = game.step("look around")
        assert time.time() - start < 8
        assert state.done and not state.won and "timed out after 2 s" in state.info["failure"]
        assert wait_gone(pid)
        game.reset("boil", 1)
        assert game.step("look around").valid_action and game.jvm_restarts == 1
    finally:
        game.close()


def test_crash_during_action_listing_surfaces_at_the_next_step():
    game = make_game("sciworld")
    try:
        game.reset("boil", 0)
        os.kill(game.jvm_pid, signal.SIGKILL)
        assert game.admissible_actions() is None and game.actions_prompt() is None
        state = game.step("look around")
        assert state.done and "failure" in state.info
    finally:
        game.close()


def test_close_and_garbage_collection_kill_the_jvm():
    game = make_game("sciworld")
    game.reset("boil", 0)
    pid = game.jvm_pid
    game.close()
    game.close()
    assert not jvm_running(pid) and pid not in live_pids()
    game = make_game("sciworld")
    game.reset("boil", 0)
    pid = game.jvm_pid
    del game
    gc.collect()
    assert wait_gone(pid, 5)


def test_java_objects_collected_after_close_do_not_call_the_dead_jvm(caplog):
    game = make_game("sciworld")
    game.reset("boil", 0)
    server = game._simulator.server  # a py4j proxy that tells the JVM when it is collected
    game.close()
    del server
    gc.collect()
    assert not [r for r in caplog.records if r.name.startswith("py4j")]


def test_kill_all_runs_inside_the_registry_lock():
    """A SIGTERM handler or a finalizer may interrupt this thread inside the registry's lock; run in a
    child so that a deadlock fails the test instead of hanging the session."""
    code = (
        "from env_adapters import make_game\n"
        "from env_adapters.sciworld import simulator\n"
        "game = make_game('sciworld')\n"
        "game.reset('boil', 0)\n"
        "pid = game.jvm_pid\n"
        "with simulator._LIVE_LOCK:\n"
        "    simulator.kill_all()\n"
        "print(pid, simulator.live_pids())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pid, live = out.stdout.split(maxsplit=1)
    assert live.strip() == "[]" and wait_gone(int(pid))


CHILD = """
import faulthandler, signal, sys, time
from env_adapters import make_game
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent asks for stacks if we hang
game = make_game("sciworld")
game.reset("boil", 0)
print(game.jvm_pid, flush=True)
sys.stdin.readline()  # go on only once the parent has seen the JVM (no race on a loaded machine)
if sys.argv[1] == "sleep":
    time.sleep(120)
"""


def start_child(mode: str, stderr_path: Path) -> tuple[subprocess.Popen, int]:
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, mode],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    pid = int(child.stdout.readline())
    assert jvm_running(pid)
    child.stdin.write("go\n")
    child.stdin.flush()
    return child, pid


def wait_child(child: subprocess.Popen, stderr_path: Path, seconds: float) -> int:
    """The child's exit code; if it outlives ``seconds``, fail with its thread stacks and stderr."""
    try:
        return child.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGUSR1)
        time.sleep(2)
        child.kill()
        child.wait()
        pytest.fail(f"the child outlived {seconds:g} s; its stacks and stderr:\n{stderr_path.read_text()}")


def test_no_jvm_left_after_interpreter_exit_without_close(tmp_path):
    child, pid = start_child("exit", tmp_path / "stderr")
    code = wait_child(child, tmp_path / "stderr", 60)
    assert code == 0, (tmp_path / "stderr").read_text()
    assert wait_gone(pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_jvm_left_when_the_python_process_is_signalled(sig, tmp_path):
    child, pid = start_child("sleep", tmp_path / "stderr")
    child.send_signal(sig)
    code = wait_child(child, tmp_path / "stderr", 30)
    assert code == -sig, (tmp_path / "stderr").read_text()  # the default outcome of the signal is kept
    assert wait_gone(pid), f"JVM {pid} outlived its Python process"
