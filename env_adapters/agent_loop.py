"""The verl agent loop that plays any registered text game: ``agent_name: text_game``.

Configured by a top-level ``env:`` section of the verl config (verl ignores it)::

    env:
      max_turns: 30          # EpisodeSettings fields (see env_adapters.episode)
      history_turns: 3
      success_reward: 10.0
      invalid_penalty: 0.1
      parser: strict         # or lenient
      isolate: false         # run each game in a worker subprocess (crash/hang protection)
      step_timeout: 60       # seconds per step, with isolate
      reset_timeout: 180     # seconds per reset (a JVM may start), with isolate
      games:                 # constructor kwargs per game name
        sciworld: {simplification: easy, env_step_limit: 100}

Each dataset row names its task in ``extra_info`` (game, task, variation, seed, task_type).
The loop returns one ``AgentLoopOutput`` per turn (verl's v1 path keys them
``{uid}_{session}_{turn}``); the trajectory's reward and outcome ride on every output, and
``reward_extra_info`` carries success / return / score / turns / ``prompt_truncated`` (the
fraction of the episode's turns whose prompt verl left-truncated to ``rollout.prompt_length``)
for verl's metrics.

Failures stay inside their episode: an exception from the game, the episode loop or generation
ends that episode as failed (``env_failure`` = 1, the reason logged) and the loop still returns
outputs, since an exception escaping ``run`` is retried by verl's v1 path without end.

Sampling seeds (one per turn, vLLM's per-request seed) come from the dataset row and the session:
for validation rows (``extra_info.split == "val"``) from the row itself, so identical runs, and
every validation of one run, play the same episodes; for training rows from the prompt's uid,
which the EPO trainer numbers by (step, fetch, row).
"""

from __future__ import annotations

import logging
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any
from uuid import uuid4

from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopBase,
    AgentLoopMetrics,
    AgentLoopOutput,
    register,
)

from env_adapters.base import TaskSpec
from env_adapters.episode import EpisodeResult, EpisodeSettings, play_episode
from env_adapters.game_pool import GamePool, GameSettings
from verl_epo.config import register_config_check

logger = logging.getLogger(__name__)

AGENT_NAME = "text_game"
_EXECUTOR = ThreadPoolExecutor(max_workers=64, thread_name_prefix="text-game")
"""Game calls block (JVM, TextWorld); a large pool lets every episode of a batch step at once."""


POOL = GamePool()


def task_from_row(kwargs: dict[str, Any]) -> TaskSpec:
    """The task a dataset row names (``extra_info`` written by ``env_adapters.dataset``)."""
    info = kwargs.get("extra_info") or {}
    if hasattr(info, "items"):
        info = dict(info.items())
    missing = [k for k in ("game", "task") if k not in info]
    if missing:
        raise KeyError(
            f"dataset row has no {missing} in extra_info: build the parquet files with "
            "`python -m env_adapters.dataset` (rows must name game, task, variation, seed)"
        )
    return TaskSpec(
        game=str(info["game"]),
        task=str(info["task"]),
        variation=int(info.get("variation", 0)),
        seed=int(info.get("seed", 0)),
        task_type=str(info.get("task_type", "")),
    )


def env_settings(config: Any) -> tuple[EpisodeSettings, GameSettings]:
    """The ``env:`` section as its two settings objects (episode, games); unknown keys are refused."""
    raw = config.get("env") if config is not None else None
    raw = OmegaConf.to_container(raw, resolve=True) if raw is not None else {}
    episode_keys = {f.name for f in fields(EpisodeSettings)}
    game_keys = {f.name for f in fields(GameSettings)}
    unknown = set(raw) - episode_keys - game_keys
    if unknown:
        raise ValueError(f"unknown key(s) env.{sorted(unknown)}; valid: {sorted(episode_keys | game_keys)}")
    game = {k: v for k, v in raw.items() if k in game_keys}
    game["games"] = game.get("games") or {}
    return EpisodeSettings(**{k: v for k, v in raw.items() if k in episode_keys}), GameSettings(**game)


def sampling_key(kwargs: dict[str, Any]) -> str:
    """The name a trajectory's per-turn sampling seeds derive from (see the module docstring)."""
    info = kwargs.get("extra_info") or {}
    if hasattr(info, "items"):
        info = dict(info.items())
    session = kwargs.get("session_id")
    if info.get("split") == "val":
        row = "/".join(str(info.get(k, "")) for k in ("index", "game", "task", "variation", "seed"))
        return f"val/{kwargs.get('data_source', '')}/{row}/{session}"
    return f"{kwargs.get('uid')}/{session}"


@register_config_check
def check_env_config(config: Any) -> None:
    """Validate the ``env:`` section when the trainer starts (not first inside a rollout worker)."""
    env_settings(config)


@register(AGENT_NAME)
class TextGameAgentLoop(AgentLoopBase):
    """Plays one episode per call; one output per turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings, self.game_settings = env_settings(self.config)
        self.response_length = self.rollout_config.response_length

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> list[AgentLoopOutput]:
        turns: list[dict[str, Any]] = []
        request_id = uuid4().hex
        session = sampling_key(kwargs)
        self._truncated = 0

        async def policy(messages: list[dict[str, str]], turn: int) -> str:
            prompt_ids = await self._prompt_ids(messages)
            start = time.perf_counter()
            # a per-request seed (vLLM's SamplingParams.seed) makes a turn's sample depend only on
            # (prompt, session, turn), not on which requests were batched together
            params = {**sampling_params, "seed": zlib.crc32(f"{session}/{turn}".encode())}
            out = await self.server_manager.generate(
                request_id=f"{request_id}-{turn}", prompt_ids=prompt_ids, sampling_params=params
            )
            response_ids = list(out.token_ids)[: self.response_length]
            logprobs = list(out.log_probs)[: self.response_length] if out.log_probs else None
            # the server's extra fields carry the weight versions verl's staleness checks read
            turns.append({"prompt_ids": prompt_ids, "response_ids": response_ids, "logprobs": logprobs,
                          "seconds": time.perf_counter() - start, "extra": dict(out.extra_fields or {})})
            return self.tokenizer.decode(response_ids, skip_special_tokens=True)

        try:
            task = task_from_row(kwargs)
        except (KeyError, TypeError, ValueError) as err:  # a row env_adapters.dataset did not write
            task = TaskSpec(game="unknown", task="unknown")
            result = EpisodeResult(task=task, error=err, failure=f"bad dataset row: {err}")
        else:
            result = await self._play(task, policy)
        reward = result.reward(self.settings)
        info = result.summary(self.settings)
        info["prompt_truncated"] = self._truncated / max(len(turns), 1)
        if result.failure is not None:
            logger.warning("episode %s of %s failed: %s", session, task, result.failure)
        if not turns:  # failed before its first generation: one empty turn carries the outcome
            turns.append(await self._empty_turn(kwargs, sampling_params))
        outputs = []
        for turn in turns:
            outputs.append(
                AgentLoopOutput(
                    prompt_ids=turn["prompt_ids"],
                    response_ids=turn["response_ids"],
                    response_mask=turn.get("response_mask", [1] * len(turn["response_ids"])),
                    response_logprobs=turn["logprobs"],
                    reward_score=reward,
                    num_turns=2,
                    metrics=AgentLoopMetrics(generate_sequences=turn["seconds"],
                                             tool_calls=result.seconds_in_env / len(turns)),
                    extra_fields={**turn["extra"], "reward_extra_info": dict(info)},
                )
            )
        return outputs

    async def _play(self, task: TaskSpec, policy: Any) -> EpisodeResult:
        """One episode on a pooled game; a game that cannot even be made fails the episode."""
        try:
            game = POOL.acquire(task.game, self.game_settings)
        except Exception as err:  # e.g. a worker process or JVM that does not start
            return EpisodeResult(task=task, error=err, failure=f"{type(err).__name__} starting the game: {err}")
        try:
            return await play_episode(game, task, policy, self.settings, _EXECUTOR)
        finally:
            POOL.release(game)

    async def _empty_turn(self, kwargs: dict[str, Any], sampling_params: dict[str, Any]) -> dict[str, Any]:
        """A turn with one masked response token (no gradient) on the row's own prompt, so that an
        episode that failed before generating still reaches verl with its reward and outcome."""
        messages = list(kwargs.get("raw_prompt") or [{"role": "user", "content": "(episode failed)"}])
        prompt_ids = await self._prompt_ids([dict(m) for m in messages])
        eos = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        return {"prompt_ids": prompt_ids, "response_ids": [eos], "response_mask": [0],
                "logprobs": [0.0] if sampling_params.get("logprobs") else None, "seconds": 0.0, "extra": {}}

    async def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return await self.ct_build_initial_tokens(messages)

    def _cap_text_prompt_length(self, prompt_ids: list[int]) -> list[int]:
        # verl left-truncates a prompt longer than rollout.prompt_length here; count it
        if len(prompt_ids) > self.rollout_config.prompt_length:
            self._truncated += 1
        return super()._cap_text_prompt_length(prompt_ids)
