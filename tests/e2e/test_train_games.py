"""Two real GRPO + EPO steps on ScienceWorld (real JVM) and ALFWorld (real TextWorld games) on CPU."""

from __future__ import annotations

import math

import pytest

GAMES = {
    "sciworld": ("cpu_sciworld", "sciworld/l0-train-small", "sciworld/l0-test-small"),
    "alfworld": ("cpu_alfworld", "alfworld/train-small", "alfworld/valid-seen-small"),
}


@pytest.fixture(scope="module", params=sorted(GAMES))
def game_setup(request, tmp_path_factory):
    """A random tiny model whose tokenizer was trained on this game's text, and 2 tasks of data."""
    from env_adapters.corpus import write_corpus
    from env_adapters.dataset import build_dataset
    from verl_epo.embedded.tiny_model import build_tiny_model

    game = request.param
    recipe, train_set, val_set = GAMES[game]
    root = tmp_path_factory.mktemp(game)
    write_corpus([game], root / "corpus.txt", episodes=3, max_steps=10)
    build_tiny_model([root / "corpus.txt"], root / "model", hidden=32, layers=2, heads=1)
    data = build_dataset(root / "data", train_set=train_set, val_set=val_set, limit=2)
    return {"game": game, "recipe": recipe, "root": root, "model": root / "model", **data}


def test_two_training_steps_on_a_real_game(game_setup, train):
    rows = train(game_setup, game_setup["root"] / "run", recipe=game_setup["recipe"], overrides=[
        "trainer.total_training_steps=2", "trainer.save_freq=-1", "env.max_turns=4", "data.max_prompt_length=2048",
    ])
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        data = row["data"]
        for key in ["actor/pg_loss", "epo/trajectory_entropy", "epo/beta", "env/success", "env/turns"]:
            assert math.isfinite(data[key]), key
        assert data["env/turns"] <= 4
        assert data["env/env_failure"] == 0.0
        assert data["training/rollout_log_probs_diff_max"] < 1e-3
