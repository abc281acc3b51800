"""``recipes/prompt_lengths.py`` replays real episodes through the agent loop's prompt and measures them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load():
    spec = importlib.util.spec_from_file_location("recipes_prompt_lengths", REPO / "recipes" / "prompt_lengths.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


prompt_lengths = load()


def test_evenly_spaced_covers_the_whole_set():
    assert prompt_lengths.evenly_spaced(list(range(100)), 4) == [0, 25, 50, 75]
    assert prompt_lengths.evenly_spaced([1, 2], 5) == [1, 2]


def test_measures_the_prompts_the_policy_sees(tmp_path):
    from env_adapters.base import task_set
    from env_adapters.prompting import build_messages

    out = tmp_path / "lengths.json"
    result = prompt_lengths.main(["cpu_synthetic", "--task-set", "synthetic/train", "--sample", "4",
                                  "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    played = result["played"]
    assert played["episodes"] == 4 and played["won"] == 4  # the expert wins the corridor
    assert result["prompts"] == played["turns"] > 4
    chars = result["chars"]
    assert chars["p50"] <= chars["p90"] <= chars["p99"] <= chars["p100"]
    # a lower bound the rendered prompt of a first turn cannot undercut: its system + user text
    first = task_set("synthetic/train")[0]
    assert chars["p100"] >= len(build_messages(first.task, "", [], None, 0, 1)[0]["content"])
    assert result["qwen_estimate"]["p100"] == -(-chars["p100"] // 4)
    assert 0 < result["tokens"]["p50"] < chars["p50"]
