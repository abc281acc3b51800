"""One episode of a text game: reset → (prompt → policy → parse → step) × turns → reward.

Independent of verl: the policy is any async function from chat messages to text, so the same
code runs inside verl's agent loop, in evaluation and when writing expert (SFT) data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from env_adapters.base import GameState, TaskSpec, TextGame
from env_adapters.parsing import PARSER_MODES, parse_action
from env_adapters.prompting import Turn, build_messages

Policy = Callable[[list[dict[str, str]], int], Awaitable[str]]
"""(messages, turn index) -> response text."""

INVALID_FORMAT = (
    "Invalid action: write exactly one action inside <action></action>, chosen from the "
    "admissible actions."
)


@dataclass
class EpisodeSettings:
    """How an episode is played and rewarded (EPO_SPEC: 10 × success, −0.1 per invalid)."""

    max_turns: int = 30
    """Turn limit; an episode still running then is a failure."""
    history_turns: int = 3
    """How many recent turns the prompt shows."""
    success_reward: float = 10.0
    """Reward for completing the task, given at the end."""
    invalid_penalty: float = 0.1
    """Subtracted once per invalid action (unparsable or rejected by the game)."""
    parser: str = "strict"
    """'strict' (only <action> tags) or 'lenient' (see env_adapters.parsing)."""

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError(f"env.max_turns={self.max_turns} must be >= 1")
        if self.history_turns < 0:
            raise ValueError(f"env.history_turns={self.history_turns} must be >= 0")
        if self.invalid_penalty < 0:
            raise ValueError(f"env.invalid_penalty={self.invalid_penalty} must be >= 0")
        if self.parser not in PARSER_MODES:
            raise ValueError(f"env.parser={self.parser!r} must be one of {PARSER_MODES}")


@dataclass
class TurnRecord:
    messages: list[dict[str, str]]
    response: str
    action: str | None
    valid: bool
    observation: str


@dataclass
class EpisodeResult:
    task: TaskSpec
    turns: list[TurnRecord] = field(default_factory=list)
    won: bool = False
    score: float = 0.0
    invalid_actions: int = 0
    failure: str | None = None
    task_type: str = ""
    seconds_in_env: float = 0.0
    error: Exception | None = None
    """The exception that ended the episode (a game, the policy or the loop raised), if any."""

    def reward(self, settings: EpisodeSettings) -> float:
        """The trajectory's reward: success bonus at the end minus the invalid-action penalty."""
        return settings.success_reward * float(self.won) - settings.invalid_penalty * float(
            self.invalid_actions
        )

    def summary(self, settings: EpisodeSettings) -> dict[str, Any]:
        """Per-episode numbers (verl logs numeric ones as ``env/<name>``)."""
        return {
            "success": float(self.won),
            "return": self.reward(settings),
            "score": float(self.score),
            "turns": float(len(self.turns)),
            "invalid_actions": float(self.invalid_actions),
            "env_failure": float(self.failure is not None),
        }


async def play_episode(
    game: TextGame,
    task: TaskSpec,
    policy: Policy,
    settings: EpisodeSettings,
    executor: Executor | None = None,
) -> EpisodeResult:
    """Play one episode of ``task`` on ``game`` with ``policy``.

    Blocking game calls run in ``executor`` so many episodes share one event loop. An exception
    raised by the game, the policy or this loop ends the episode as a failure (``result.failure``
    names it, ``result.error`` holds it; never a success): one broken episode must not stop a run.
    """
    result = EpisodeResult(task=task)
    try:
        await _play(game, task, policy, settings, executor, result)
    except Exception as err:  # any error fails this episode only, with its reason
        result.error = err
        result.won = False
        result.failure = f"{type(err).__name__} at turn {len(result.turns) + 1}: {err}"
    return result


async def _play(game: TextGame, task: TaskSpec, policy: Policy, settings: EpisodeSettings,
                executor: Executor | None, result: EpisodeResult) -> None:
    """The turns of ``play_episode``, recorded in ``result`` as they happen."""
    loop = asyncio.get_running_loop()

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking game call off the event loop (a ScienceWorld action list takes ~40 ms)."""
        start = time.perf_counter()
        try:
            return await loop.run_in_executor(executor, fn, *args)
        finally:
            result.seconds_in_env += time.perf_counter() - start

    state = await call(game.reset, task.task, task.variation, task.seed)
    result.task_type = task.task_type or game.task_type
    history: list[Turn] = []
    for turn in range(settings.max_turns):
        if state.done:
            break
        messages = build_messages(
            game.task_description,
            state.observation,
            history[-settings.history_turns :] if settings.history_turns else [],
            await call(game.actions_prompt),
            turn,
            settings.max_turns,
        )
        response = await policy(messages, turn)
        # only the lenient parser needs the full list
        actions = await call(game.admissible_actions) if settings.parser == "lenient" else None
        action = parse_action(response, actions, settings.parser)
        if action is None:
            state = GameState(observation=INVALID_FORMAT, valid_action=False, score=state.score)
        else:
            state = await call(game.step, action)
        failed = bool(state.info.get("failure"))
        # an engine crash or hang is not the policy's invalid action
        if not state.valid_action and not failed:
            result.invalid_actions += 1
        result.turns.append(TurnRecord(messages, response, action, state.valid_action,
                                       state.observation))
        history.append(Turn(action or "(none)", state.observation))
        if failed:
            result.failure = str(state.info["failure"])
    result.won = bool(state.won)
    result.score = float(state.score)
