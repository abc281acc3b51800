"""The episode runner with the real synthetic game and scripted policies."""

import asyncio

import pytest

from env_adapters import make_game, task_set
from env_adapters.episode import EpisodeSettings, play_episode
from env_adapters.prompting import format_action


def run(policy, settings, task=None):
    game = make_game("synthetic")
    task = task or task_set("synthetic/train")[0]
    return asyncio.run(play_episode(game, task, policy, settings))


def test_expert_policy_wins_and_gets_the_success_reward():
    game = make_game("synthetic")
    task = task_set("synthetic/train")[0]

    async def expert(messages, turn):
        return format_action(game.expert_action())

    settings = EpisodeSettings(max_turns=50)
    result = asyncio.run(play_episode(game, task, expert, settings))
    assert result.won and result.invalid_actions == 0
    assert result.reward(settings) == pytest.approx(10.0)
    assert result.summary(settings)["success"] == 1.0


@pytest.mark.parametrize("text", ["", "no tag here", "x" * 10_000, "<action></action>", "<action>fly</action>"])
def test_malformed_output_is_penalised_and_episode_runs_to_the_turn_limit(text):
    async def policy(messages, turn):
        return text

    settings = EpisodeSettings(max_turns=5, invalid_penalty=0.1)
    result = run(policy, settings)
    assert not result.won
    assert len(result.turns) == 5
    assert result.invalid_actions == 5
    assert result.reward(settings) == pytest.approx(-0.5)


def test_prompt_shows_task_history_window_and_admissible_actions():
    seen = []

    async def policy(messages, turn):
        seen.append(messages[-1]["content"])
        return "<action>wait</action>"

    run(policy, EpisodeSettings(max_turns=4, history_turns=2))
    last = seen[-1]
    assert last.startswith("Task:")
    assert "Turn 4 of 4" in last and "Turn 2: action" in last and "Turn 1: action" not in last
    assert "Admissible actions:" in last


def test_invalid_settings_name_the_key():
    with pytest.raises(ValueError, match="env.max_turns"):
        EpisodeSettings(max_turns=0)
    with pytest.raises(ValueError, match="env.parser"):
        EpisodeSettings(parser="fuzzy")
