"""The game-text corpus used to train the tiny tokenizer."""

import pytest

from env_adapters.corpus import BOILERPLATE, main, write_corpus


def test_corpus_has_game_text_and_boilerplate(tmp_path):
    out = tmp_path / "corpus.txt"
    counts = write_corpus(["synthetic"], out, episodes=5, max_steps=10)
    text = out.read_text()
    assert counts["synthetic"] > 20
    assert all(line in text for line in BOILERPLATE)
    assert "A sign points" in text and "Walk through a corridor" in text
    assert "<action>go " in text and "Admissible actions: go north" in text
    # fixed seed: the same corpus again
    again = tmp_path / "again.txt"
    write_corpus(["synthetic"], again, episodes=5, max_steps=10)
    assert again.read_text() == text


def test_unknown_games_are_skipped_but_not_all(tmp_path, capsys):
    counts = main(["--games", "synthetic,nosuchgame", "--out", str(tmp_path / "c.txt"),
                   "--episodes", "2"])
    assert list(counts) == ["synthetic"]
    assert "skipping game 'nosuchgame'" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="none of the games"):
        write_corpus(["nosuchgame"], tmp_path / "d.txt")
    with pytest.raises(ValueError, match="--episodes"):
        write_corpus(["synthetic"], tmp_path / "e.txt", episodes=0)
