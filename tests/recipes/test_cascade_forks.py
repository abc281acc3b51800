"""cascade_forks reads where evaluated cascade episodes left the first room, by replaying them."""

import json
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
sys.path.insert(0, str(RECIPES))

import cascade_forks  # noqa: E402

from env_adapters import task_set  # noqa: E402
from env_adapters.synthetic import CorridorGame  # noqa: E402


def played(task, policy, turns=30):
    """An episode record as env_adapters.evaluate writes it (the fields cascade_forks reads)."""
    game = CorridorGame(step_factor=1.5)
    state = game.reset(task.task, task.variation, task.seed)
    actions = []
    while not state.done and len(actions) < turns:
        action = policy(game, state)
        actions.append(action)
        if action is not None:
            state = game.step(action)
    return {"task": task.task, "variation": task.variation, "task_seed": task.seed, "actions": actions,
            "success": float(state.won)}


def sign(game, state):
    return "go " + state.observation.split("A sign points ")[1].split(".")[0]


def write_eval(folder, records):
    folder.mkdir()
    (folder / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "eval_config.json").write_text(json.dumps({"game": {"games": {"synthetic": {"step_factor": 1.5}}}}))


def test_counts_lure_passage_and_stayed(tmp_path, capsys):
    task = task_set("synthetic/cascade-val")[0]
    records = [
        played(task, sign),  # follows the signs: the lure, lost at the end
        played(task, lambda game, state: game.expert_action()),  # the passage, won
        played(task, lambda game, state: None, turns=3),  # never an action: stays
    ]
    write_eval(tmp_path / "eval", records)
    counts = cascade_forks.main([str(tmp_path / "eval")])[str(tmp_path / "eval")]
    assert counts == {("lure", False): 1, ("passage", True): 1, ("stayed", False): 1}
    assert "lure 1, passage 1, stayed in the first room 1; won 1" in capsys.readouterr().out


def test_refuses_a_corridor_evaluation(tmp_path):
    corridor = task_set("synthetic/val")[0]
    write_eval(tmp_path / "eval", [played(corridor, lambda game, state: game.expert_action())])
    with pytest.raises(ValueError, match="not a cascade task"):
        cascade_forks.fork_counts(tmp_path / "eval")
