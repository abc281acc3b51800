"""The ``text_game`` agent loop (``env_adapters/agent_loop.py``), built on verl's composed CPU recipe.

What verl's v1 path gets from it: one output per turn with the episode's reward and outcome on
each, sampling seeds that make validation replayable, prompt truncation counted, and failures
kept inside their episode. An exception inside a game, the episode loop or generation fails that
episode, not the run.

verl's v1 agent-loop path retries a prompt whose agent loop raised, without end (a hang, not a
failure), so the ``text_game`` loop must always return outputs. The game here is the real
synthetic corridor with one method made to raise; the loop is the real ``TextGameAgentLoop``
built on verl's composed CPU recipe with a tiny tokenizer, playing through verl's own prompt
building (Continuous Token); only the inference server is scripted (it answers the expert's move
and records each request). The same agent loop measures prompt truncation and derives the
sampling seeds, checked here too.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from omegaconf import open_dict

from env_adapters.base import register_game, task_set
from env_adapters.episode import EpisodeSettings, play_episode
from env_adapters.prompting import format_action
from env_adapters.synthetic import CorridorGame

REPO = Path(__file__).resolve().parents[2]


class BrokenCorridor(CorridorGame):
    """The real synthetic game whose ``method`` raises at its ``at``-th call (0: never)."""

    def __init__(self, method: str = "step", at: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.method, self.at, self.calls = method, int(at), 0

    def _count(self, method: str) -> None:
        if method == self.method:
            self.calls += 1
            if self.calls == self.at:
                raise RuntimeError(f"engine fault in {method}")

    def reset(self, task: str, variation: int = 0, seed: int = 0):
        self._count("reset")
        return super().reset(task, variation, seed)

    def step(self, action: str):
        self._count("step")
        return super().step(action)

    def actions_prompt(self) -> str | None:
        self._count("actions_prompt")
        return super().actions_prompt()


register_game("broken_synthetic")(BrokenCorridor)
TASK = task_set("synthetic/train")[0]


@pytest.mark.parametrize(("method", "at", "turns"), [("step", 2, 1), ("reset", 1, 0), ("actions_prompt", 3, 2)])
def test_play_episode_fails_the_episode_with_the_reason(method, at, turns):
    game = BrokenCorridor(method, at)

    async def expert(messages, turn):
        return format_action(game.expert_action())

    settings = EpisodeSettings(max_turns=20)
    result = asyncio.run(play_episode(game, TASK, expert, settings))
    assert not result.won and len(result.turns) == turns
    assert result.failure == f"RuntimeError at turn {turns + 1}: engine fault in {method}"
    assert isinstance(result.error, RuntimeError)
    assert result.summary(settings)["env_failure"] == 1.0 and result.reward(settings) == 0.0


def test_play_episode_fails_on_a_policy_error_too():
    async def policy(messages, turn):
        if turn == 3:
            raise ConnectionError("inference server went away")
        return "<action>wait</action>"

    result = asyncio.run(play_episode(CorridorGame(), TASK, policy, EpisodeSettings(max_turns=10)))
    assert len(result.turns) == 3 and not result.won
    assert result.failure == "ConnectionError at turn 4: inference server went away"


# ----- the real agent loop -------------------------------------------------------------------------


class ExpertServer:
    """Answers each request with the expert's next move (read off the prompt's sign), as tokens."""

    def __init__(self, tokenizer, fail_at: int | None = None) -> None:
        self.tokenizer, self.fail_at = tokenizer, fail_at
        self.requests: list[dict[str, Any]] = []

    async def generate(self, request_id: str, prompt_ids: list[int], sampling_params: dict[str, Any]):
        from verl.workers.rollout.replica import TokenOutput

        self.requests.append({"prompt_len": len(prompt_ids), "seed": sampling_params["seed"]})
        if self.fail_at is not None and len(self.requests) == self.fail_at:
            raise ConnectionError("inference server went away")
        current = self.tokenizer.decode(prompt_ids).rsplit("Current observation:", 1)[-1]
        sign = re.findall(r"A sign points (\w+)\.", current)
        action = "open door" if " is closed." in current else f"go {sign[-1] if sign else 'north'}"
        return TokenOutput(token_ids=self.tokenizer.encode(format_action(action), add_special_tokens=False))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from env_adapters.corpus import write_corpus
    from verl_epo.embedded.tiny_model import read_corpus, train_tokenizer

    corpus = tmp_path_factory.mktemp("loop") / "corpus.txt"
    write_corpus(["synthetic"], corpus, episodes=5)
    return train_tokenizer(read_corpus([corpus]), vocab_size=600)


def make_loop(tokenizer, server, game: dict[str, Any] | None = None, prompt_length: int = 4096):
    """A factory of the agent loop (verl builds one per trajectory, inside its event loop)."""
    from hydra import compose, initialize_config_dir
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap

    from env_adapters.agent_loop import TextGameAgentLoop

    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base=None):
        config = compose(config_name="cpu_synthetic", overrides=[
            "env.max_turns=12", "env.isolate=false", f"data.max_prompt_length={prompt_length}",
            f"+env.games.broken_synthetic={game or {}}".replace("'", ""),
        ])
    with open_dict(config):
        config.actor_rollout_ref.rollout.prompt_length = prompt_length
    return lambda: TextGameAgentLoop(trainer_config=DictConfigWrap(config), server_manager=server,
                                     tokenizer=tokenizer, processor=None, dataset_cls=None,
                                     data_config=DictConfigWrap(config.data))


def row(game: str = "broken_synthetic", split: str = "train", uid: str | None = None, session: int = 0):
    return {"uid": uid or uuid.uuid4().hex, "session_id": session, "data_source": f"synthetic/{split}",
            "raw_prompt": [{"role": "user", "content": "Play the corridor."}],
            "extra_info": {**TASK.to_row(), "game": game, "index": 3, "split": split}}


def run_loop(make, sampling_params: dict[str, Any], **kwargs: Any):
    async def go():
        return await make().run(sampling_params, **kwargs)

    return asyncio.run(go())


def play(make, **kwargs):
    return run_loop(make, {"temperature": 1.0, "top_p": 1.0, "logprobs": False}, **row(**kwargs))


def outcome(outputs) -> dict[str, float]:
    return outputs[-1].extra_fields["reward_extra_info"]


def test_agent_loop_plays_a_healthy_game(tokenizer):
    outputs = play(make_loop(tokenizer, ExpertServer(tokenizer)))
    info = outcome(outputs)
    assert info["success"] == 1.0 and info["env_failure"] == 0.0 and info["prompt_truncated"] == 0.0
    assert len(outputs) == info["turns"] and outputs[-1].reward_score == 10.0
    # what verl's v1 path keys {uid}_{session}_{turn}: one output per turn, each a complete row
    for turn, out in enumerate(outputs):
        assert out.reward_score == 10.0 and out.extra_fields["reward_extra_info"] == info
        assert out.response_mask == [1] * len(out.response_ids) and out.response_ids
        prompt = tokenizer.decode(out.prompt_ids)
        assert f"Turn {turn + 1} of 12." in prompt  # env.max_turns=12, the loop's own prompt
        if turn:  # the previous turn's action is in this turn's history
            previous = re.search(r"<action>(.*?)</action>", tokenizer.decode(outputs[turn - 1].response_ids))
            assert f"Turn {turn}: action: {previous.group(1).strip()}" in prompt


@pytest.mark.parametrize(("method", "at", "rows"), [("step", 3, 3), ("actions_prompt", 2, 1), ("reset", 1, 1)])
def test_agent_loop_returns_a_failed_episode_when_the_game_raises(tokenizer, method, at, rows):
    server = ExpertServer(tokenizer)
    outputs = play(make_loop(tokenizer, server, {"method": method, "at": at}))
    info = outcome(outputs)
    assert info["env_failure"] == 1.0 and info["success"] == 0.0 and outputs[-1].reward_score == 0.0
    assert len(outputs) == rows  # the turns generated before the fault, or one empty turn
    for out in outputs:  # what verl's v1 path needs from every output
        assert len(out.response_ids) == len(out.response_mask) >= 1 and out.prompt_ids
        assert out.extra_fields["reward_extra_info"] == info
    if method == "reset":  # nothing was generated: the empty turn trains nothing
        assert server.requests == [] and outputs[0].response_mask == [0]


def test_agent_loop_returns_a_failed_episode_when_generation_raises(tokenizer):
    outputs = play(make_loop(tokenizer, ExpertServer(tokenizer, fail_at=3)))
    assert outcome(outputs)["env_failure"] == 1.0 and len(outputs) == 2


def test_agent_loop_fails_a_bad_dataset_row_instead_of_raising(tokenizer):
    make = make_loop(tokenizer, ExpertServer(tokenizer))
    outputs = run_loop(make, {"temperature": 1.0}, uid="u", session_id=0, extra_info={"task": "x"})
    assert outcome(outputs)["env_failure"] == 1.0 and outputs[0].response_mask == [0]


def test_truncated_prompts_are_counted(tokenizer):
    server = ExpertServer(tokenizer)
    outputs = play(make_loop(tokenizer, server, prompt_length=64))
    assert outcome(outputs)["prompt_truncated"] == 1.0  # every turn's prompt is longer than 64 tokens
    assert {r["prompt_len"] for r in server.requests} == {64}
    server = ExpertServer(tokenizer)
    outputs = play(make_loop(tokenizer, server, prompt_length=4096))
    assert outcome(outputs)["prompt_truncated"] == 0.0 and max(r["prompt_len"] for r in server.requests) > 64


def seeds(tokenizer, **kwargs) -> list[int]:
    server = ExpertServer(tokenizer)
    play(make_loop(tokenizer, server), **kwargs)
    return [r["seed"] for r in server.requests]


def test_validation_seeds_come_from_the_dataset_row_not_verls_uid(tokenizer):
    # verl names validation prompts with fresh random uuids each time
    first = seeds(tokenizer, game="synthetic", split="val", uid="a")
    assert first == seeds(tokenizer, game="synthetic", split="val", uid="b")
    assert first != seeds(tokenizer, game="synthetic", split="val", uid="a", session=1)
    # training prompts are named by the EPO trainer (step, fetch, row): the uid is the identity
    assert seeds(tokenizer, game="synthetic", uid="s1") != seeds(tokenizer, game="synthetic", uid="s2")
    assert seeds(tokenizer, game="synthetic", uid="s1") == seeds(tokenizer, game="synthetic", uid="s1")
