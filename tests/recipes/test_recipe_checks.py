"""recipes/recipe_checks.py: the preflight names every value a launch would leave unset."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
sys.path.insert(0, str(RECIPES))

import compose  # noqa: E402
from recipe_checks import _unset_keys  # noqa: E402


def test_unset_keys_names_missing_and_circular_values_without_resolving_the_rest():
    config = OmegaConf.create({
        "a": {"b": "???", "items": [1, "???", {"x": "???"}]},
        "points_to_missing": "${a.b}",      # listed under a.b, not twice
        "loop_1": "${loop_2}", "loop_2": "${loop_1}",
        "follows_loop": "${oc.select:loop_1,null}",
        "fine": "${a.items[0]}",
    })
    assert sorted(_unset_keys(config)) == [
        ("a.b", "missing"), ("a.items[1]", "missing"), ("a.items[2].x", "missing"),
        ("follows_loop", "circular"), ("loop_1", "circular"), ("loop_2", "circular"),
    ]


def test_a_cpu_recipe_without_a_model_path_is_rejected_naming_the_path(capsys):
    # base/cpu.yaml's recipe.model follows actor_rollout_ref.model.path, and base/common.yaml's path
    # follows recipe.model: with no path given, OmegaConf used to fail on an unrelated verl key
    assert compose.main(["--print", "cpu_synthetic"]) == 2
    err = capsys.readouterr().err
    assert "rejected: mandatory value(s) not set: actor_rollout_ref.model.path (circular" in err, err
    assert compose.main(["--print", "cpu_synthetic", "actor_rollout_ref.model.path=/nonexistent"]) == 0
