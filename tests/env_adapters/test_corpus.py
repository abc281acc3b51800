"""The game-text corpus used to train the tiny tokenizer."""

import asyncio

import pytest

from env_adapters.base import make_game, task_set
from env_adapters.corpus import main, write_corpus
from env_adapters.episode import EpisodeSettings, play_episode


def test_corpus_has_game_text_and_boilerplate(tmp_path):
    out = tmp_path / "corpus.txt"
    counts = write_corpus(["synthetic"], out, episodes=5, max_steps=10)
    text = out.read_text()
    assert counts["synthetic"] > 20
    assert all(line in text for line in fixed_prompt_text())
    assert "A sign points" in text and "Walk through a corridor" in text
    assert "<action>go " in text and "Admissible actions: go north" in text
    # fixed seed: the same corpus again
    again = tmp_path / "again.txt"
    write_corpus(["synthetic"], again, episodes=5, max_steps=10)
    assert again.read_text() == text


def fixed_prompt_text() -> list[str]:
    """The lines every prompt of a real episode shows whatever the game says: its system message and
    the user message's headings, taken from what play_episode sent to the policy (an invalid answer
    first, so the game's invalid-action message is among them)."""
    seen: list[list[dict[str, str]]] = []

    async def policy(messages, turn):
        seen.append(messages)
        return "not an action" if turn == 0 else "<action>look around</action>"

    game = make_game("synthetic")
    asyncio.run(play_episode(game, task_set("synthetic/val")[0], policy, EpisodeSettings(max_turns=3)))
    system = {m["content"] for messages in seen for m in messages if m["role"] == "system"}
    user_lines = {line for messages in seen for m in messages if m["role"] == "user"
                  for line in m["content"].split("\n")}
    invalid = [line for line in user_lines if line.startswith("Invalid action")]
    headings = [line for line in user_lines if line.endswith(":") and not line.startswith("Turn ")]
    assert len(system) == 1 and invalid and {"Admissible actions:", "Recent turns:"} <= set(headings), user_lines
    return [*system, *invalid, *headings]


def test_corpus_has_the_prompts_real_text(tmp_path):
    # the drift this catches: a corpus line retyped by hand that no prompt shows (the invalid-action line was)
    out = tmp_path / "corpus.txt"
    write_corpus(["synthetic"], out, episodes=1, max_steps=2)
    text = out.read_text()
    missing = [line for line in fixed_prompt_text() if line not in text]
    assert not missing, missing


def test_unknown_games_are_skipped_but_not_all(tmp_path, capsys):
    counts = main(["--games", "synthetic,nosuchgame", "--out", str(tmp_path / "c.txt"),
                   "--episodes", "2"])
    assert list(counts) == ["synthetic"]
    assert "skipping game 'nosuchgame'" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="none of the games"):
        write_corpus(["nosuchgame"], tmp_path / "d.txt")
    with pytest.raises(ValueError, match="--episodes"):
        write_corpus(["synthetic"], tmp_path / "e.txt", episodes=0)
