"""Environment faults during a rollout, through the agent loop's own machinery.

Each episode runs as ``TextGameAgentLoop.run`` runs it: settings from an ``env:`` config section
(``env_settings``), a game from the loop's ``GamePool`` (an ``IsolatedGame`` worker process when
``env.isolate=true``), ``play_episode`` on the loop's thread pool, then ``release``. A scripted
policy causes a real fault at turn 2: SIGKILL of the game worker or of ScienceWorld's JVM (a
crash), or SIGSTOP of it (a step that never returns). The episode must end within a bound, failed
with its reason, without the success bonus, and the next episode from the same pool must play.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
from omegaconf import OmegaConf

from env_adapters import task_set
from env_adapters.agent_loop import _EXECUTOR, GamePool, env_settings
from env_adapters.episode import EpisodeResult, EpisodeSettings, play_episode
from env_adapters.prompting import format_action

STEP_TIMEOUT = 4.0  # env.step_timeout of the hang tests (seconds)
FAULT_TURN = 2


class Loop:
    """The agent loop's per-episode path for one ``env:`` section, minus the LLM server."""

    def __init__(self, env: dict[str, Any]) -> None:
        self.settings, self.game_settings = env_settings(OmegaConf.create({"env": env}))
        self.pool = GamePool()
        self.games: list[Any] = []

    def play(self, task, policy) -> tuple[EpisodeResult, Any, float]:
        game = self.pool.acquire(task.game, self.game_settings)
        if game not in self.games:
            self.games.append(game)
        start = time.monotonic()
        try:
            result = asyncio.run(play_episode(game, task, policy(game), self.settings, _EXECUTOR))
        finally:
            self.pool.release(game)
        return result, game, time.monotonic() - start

    def close(self) -> None:
        for game in self.games:
            game.close()


def scripted(action: str, fault=None):
    """A policy factory: always ``action``; at turn 2 first calls ``fault(game)``."""

    def make(game):
        async def policy(messages: list[dict[str, str]], turn: int) -> str:
            if turn == FAULT_TURN and fault is not None:
                fault(game)
            return format_action(action)

        return policy

    return make


def kill_worker(sig: int):
    def fault(game) -> None:
        fault.pids.append(game.pid)
        os.kill(game.pid, sig)

    fault.pids = []
    return fault


def kill_jvm(sig: int, procs):
    """Signal ScienceWorld's JVM: a child of the worker (isolated) or of this process."""

    def fault(game) -> None:
        owner = game.pid if hasattr(game, "pid") else os.getpid()
        jvms = [p for p in procs.jvm_children(owner) if game_owns(game, p)]
        assert len(jvms) == 1, f"expected one JVM for the game, found {jvms}"
        fault.pids.append(jvms[0])
        os.kill(jvms[0], sig)

    fault.pids = []
    return fault


def game_owns(game, pid: int) -> bool:
    return getattr(game, "jvm_pid", pid) == pid  # an in-process game knows its JVM


def check_failed(result: EpisodeResult, settings: EpisodeSettings, reason: str) -> None:
    """Failed with ``reason``, logged as an env failure, no success bonus."""
    assert result.failure is not None and reason in result.failure, result.failure
    assert not result.won
    assert result.summary(settings)["env_failure"] == 1.0
    assert result.summary(settings)["success"] == 0.0
    reward = result.reward(settings)
    assert reward == pytest.approx(-settings.invalid_penalty * result.invalid_actions) and reward <= 0
    assert len(result.turns) <= FAULT_TURN + 2  # ended at the fault, not at the turn limit


def check_clean(result: EpisodeResult) -> None:
    assert result.failure is None, result.failure
    assert result.summary(Loop({}).settings)["env_failure"] == 0.0


SCIWORLD = task_set("sciworld/l0-test-small")[0]
ENV = {"max_turns": 6, "history_turns": 1, "parser": "strict"}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "in-process"])
def test_sciworld_jvm_killed_mid_rollout(isolate, procs):
    """SIGKILL of the JVM at turn 2: the adapter notices the dead JVM, the episode fails with the
    reason, and the next episode from the pool starts a new JVM."""
    loop = Loop({**ENV, "isolate": isolate, "step_timeout": 60})
    fault = kill_jvm(signal.SIGKILL, procs)
    try:
        result, game, seconds = loop.play(SCIWORLD, scripted("look around", fault))
        check_failed(result, loop.settings, "killed by SIGKILL")
        assert seconds < 60 and procs.wait_gone(fault.pids) == []
        again, same, _ = loop.play(SCIWORLD, scripted("look around"))
        check_clean(again)
        assert same is game and len(again.turns) == ENV["max_turns"]
        if isolate:  # the worker survived: only its JVM was replaced
            assert game.restarts == 0
    finally:
        loop.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("name", "task", "action"), [
    ("sciworld", SCIWORLD, "look around"),
    ("alfworld", task_set("alfworld/valid-seen-small")[0], "look"),
], ids=["sciworld", "alfworld"])
def test_isolated_worker_killed_mid_rollout(name, task, action, procs):
    """SIGKILL of the game worker process at turn 2: the episode fails naming the death, the
    worker's children (JVM) die with it, and the pool's next episode gets a fresh worker."""
    loop = Loop({**ENV, "isolate": True, "step_timeout": 60})
    fault = kill_worker(signal.SIGKILL)
    try:
        first, game, seconds = loop.play(task, scripted(action, fault))
        check_failed(first, loop.settings, "worker died")
        assert "SIGKILL" in first.failure and seconds < 60
        assert procs.wait_gone(fault.pids) == []
        again, same, _ = loop.play(task, scripted(action))
        check_clean(again)
        assert same is game and game.restarts == 1 and game.pid not in fault.pids
    finally:
        loop.close()
    assert procs.wait_gone(fault.pids) == []


@pytest.mark.timeout(240)
@pytest.mark.parametrize("target", ["worker", "jvm-isolated", "jvm-in-process"])
def test_sciworld_hang_times_out(target, procs):
    """SIGSTOP (a real hang: the process stops answering) at turn 2 is timed out within
    env.step_timeout (worker) or the game's own step_timeout (JVM), then handled as a crash."""
    isolate = target != "jvm-in-process"
    games = {"sciworld": {"step_timeout": STEP_TIMEOUT}} if target.startswith("jvm") else {}
    # the outer (worker) bound is looser than the JVM's when the JVM is the one hanging
    timeout = STEP_TIMEOUT if target == "worker" else 4 * STEP_TIMEOUT
    loop = Loop({**ENV, "isolate": isolate, "step_timeout": timeout, "games": games})
    fault = kill_worker(signal.SIGSTOP) if target == "worker" else kill_jvm(signal.SIGSTOP, procs)
    timings: list[float] = []

    def timed(make):
        def wrap(game):
            policy = make(game)

            async def timed_policy(messages, turn):
                text = await policy(messages, turn)
                if turn == FAULT_TURN:
                    timings.append(time.monotonic())
                return text

            return timed_policy

        return wrap

    try:
        result, game, _ = loop.play(SCIWORLD, timed(scripted("look around", fault)))
        hung_for = time.monotonic() - timings[0]
        reason = "timeout" if target == "worker" else "timed out"
        check_failed(result, loop.settings, reason)
        assert STEP_TIMEOUT - 0.5 < hung_for < STEP_TIMEOUT + 15, hung_for
        assert procs.wait_gone(fault.pids) == []  # the stopped process was killed, not left behind
        again, same, _ = loop.play(SCIWORLD, scripted("look around"))
        check_clean(again)
        assert same is game
    finally:
        loop.close()
