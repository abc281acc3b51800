"""Games in a worker subprocess: a killed or hung worker ends the episode with a reason, the next
reset gets a fresh worker, and no process outlives its owner."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from env_adapters import GameState, TextGame, register_game, task_set
from env_adapters.isolated import GameWorkerError, IsolatedGame

FAULTY = "test-isolated-faulty"
HERE = Path(__file__).resolve().parent
FOREVER = 10**6


@register_game(FAULTY)
class FaultyGame(TextGame):
    """Test-only game. A real game step cannot be made to hang on demand, so this one sleeps
    forever on the action (or task) ``hang``, exits on ``exit``, and can start a grandchild
    process standing in for a game engine's JVM."""

    def __init__(self, grandchild: bool = False) -> None:
        self.helper = subprocess.Popen(["sleep", str(FOREVER)]) if grandchild else None

    def reset(self, task, variation=0, seed=0):
        if task == "hang":
            time.sleep(FOREVER)
        return GameState(observation=f"start {task}")

    def step(self, action):
        if action == "hang":
            time.sleep(FOREVER)
        if action == "exit":
            os._exit(3)
        return GameState(observation=f"echo {action}", done=action == "win", won=action == "win")

    @property
    def task_description(self):
        return "say win"

    def admissible_actions(self):
        return ["win", "wait"]

    def helper_pid(self):
        return self.helper.pid if self.helper else None


def faulty(grandchild: bool = False, **timeouts) -> IsolatedGame:
    return IsolatedGame(FAULTY, {"grandchild": grandchild}, import_modules=[__name__], **timeouts)


def gone(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` no longer runs (an unreaped zombie counts as gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def alfworld():
    game = IsolatedGame("alfworld", {}, step_timeout=30, reset_timeout=60)
    yield game
    game.close()


def test_killed_alfworld_worker_fails_the_episode_and_next_reset_works(alfworld):
    spec = task_set("alfworld/valid-seen-small")[2]
    state = alfworld.reset(spec.task)
    assert "Your task is to" in state.observation and alfworld.task_type == spec.task_type
    plan = alfworld.call("expert_actions")
    assert alfworld.step(plan[0]).valid_action
    first = alfworld.pid
    os.kill(first, signal.SIGKILL)  # a real kill of the engine process, mid-episode
    state = alfworld.step(plan[1])
    assert state.done and not state.won and not state.valid_action
    assert "worker died" in state.info["failure"] and "SIGKILL" in state.info["failure"], state.info
    assert alfworld.step("look").info["failure"]  # the episode stays failed
    assert alfworld.admissible_actions() is None and gone(first)
    state = alfworld.reset(spec.task)
    assert alfworld.pid not in (None, first) and alfworld.restarts == 1
    for action in alfworld.call("expert_actions"):
        state = alfworld.step(action)
    assert state.won and state.done and not state.info


def test_game_errors_are_raised_and_keep_the_worker(alfworld):
    alfworld.reset(task_set("alfworld/train-small")[0].task)
    pid = alfworld.pid
    with pytest.raises(FileNotFoundError, match="ALFWORLD_DATA"):
        alfworld.reset("json_2.1.1/train/nothing/here/game.tw-pddl")
    assert alfworld.pid == pid


def test_hung_step_times_out_kills_the_process_group_and_recovers():
    game = faulty(step_timeout=1.5, grandchild=True)
    try:
        assert game.reset("t").observation == "start t"
        worker, helper = game.pid, game.call("helper_pid")
        assert game.step("wait").observation == "echo wait"
        started = time.monotonic()
        state = game.step("hang")
        assert time.monotonic() - started < 1.5 + 5
        assert state.done and not state.won and state.info["failure"].startswith("timeout")
        assert gone(worker) and gone(helper), "the worker and its grandchild must be killed"
        assert game.reset("again").observation == "start again" and game.pid != worker
        assert game.step("win").won
    finally:
        game.close()


def test_worker_exit_mid_step_is_reported():
    game = faulty(step_timeout=5)
    try:
        game.reset("t")
        state = game.step("exit")
        assert state.done and "exited with code 3" in state.info["failure"]
        assert game.reset("t").observation == "start t"
    finally:
        game.close()


def test_reset_that_hangs_in_a_fresh_worker_too_raises_clear_error():
    game = faulty(reset_timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(GameWorkerError, match="failed in a fresh worker too.*timeout"):
            game.reset("hang")
        assert time.monotonic() - started < 2 * 1.0 + 15  # two attempts, each with a start-up
        assert game.pid is None
    finally:
        game.close()


def test_step_before_reset_and_bad_timeouts_are_errors():
    with pytest.raises(ValueError, match="step_timeout"):
        IsolatedGame(FAULTY, step_timeout=0)
    with pytest.raises(ValueError, match="reset_timeout"):
        IsolatedGame(FAULTY, {}, reset_timeout=None)
    game = faulty()
    with pytest.raises(RuntimeError, match="before reset"):
        game.step("wait")
    game.close()


def test_close_leaves_no_processes():
    game = faulty(grandchild=True)
    game.reset("t")
    worker, helper = game.pid, game.call("helper_pid")
    assert psutil.Process(worker).ppid() == os.getpid()
    game.close()
    game.close()  # twice is fine
    assert game.pid is None and gone(worker) and gone(helper)
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    assert worker not in mine and helper not in mine


PARENT = textwrap.dedent("""
    import signal, sys, time
    # a shell starts background jobs with SIGINT ignored, and children inherit that: act like a
    # program started from a terminal, which Ctrl-C interrupts
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {here!r})
    from env_adapters.isolated import IsolatedGame
    game = IsolatedGame({name!r}, {{"grandchild": True}}, import_modules=["test_isolated"])
    game.reset("t")
    print(game.pid, game.call("helper_pid"), flush=True)
    {then}
""")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL", "exit"])
def test_no_orphans_when_the_parent_ends(how):
    """A parent process is signalled (or just exits without close); its worker and grandchild
    must not survive it."""
    then = "pass" if how == "exit" else f"time.sleep({FOREVER})"
    script = PARENT.format(here=str(HERE), name=FAULTY, then=then)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        worker, helper = map(int, parent.stdout.readline().split())
        if how != "exit":
            parent.send_signal(getattr(signal, how))
        parent.wait(timeout=120)  # generous: a loaded 2-core machine can take long to unwind
        assert gone(worker) and gone(helper), f"orphans after parent {how}"
    finally:
        parent.kill()
