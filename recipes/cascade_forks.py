"""Where evaluated cascade episodes went at the fork: the sign's branch (the lure, which ends at a
dead end), the unmarked passage, or nowhere (they never left the first room).

Run, on folders written by ``env_adapters.evaluate`` on a ``synthetic/cascade-*`` set::

    .venv/bin/python recipes/cascade_forks.py outputs/cascade_check/seed1-cascade-val [...]

Each episode's recorded actions are replayed in the synthetic game (same task, variation, seed and
game settings) until it leaves the first room; unparsable turns (no action) never reach the game.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def fork_branch(record: dict, game_kwargs: dict) -> str:
    """``lure``, ``passage`` or ``stayed``: where one evaluated episode left the first room."""
    from env_adapters.synthetic import CorridorGame

    game = CorridorGame(**game_kwargs)
    state = game.reset(record["task"], record["variation"], record["task_seed"])
    if "lure" not in state.info:
        raise ValueError(f"{record['task']} is not a cascade task; use a synthetic/cascade-* evaluation")
    for action in record["actions"]:
        if action is None:
            continue
        state = game.step(action)
        if state.info["room"] > 0:
            return "lure" if state.info["lure"] else "passage"
        if state.done:
            break
    return "stayed"


def fork_counts(folder: Path) -> Counter:
    """(branch, won) -> episodes, over one evaluation folder."""
    config = json.loads((folder / "eval_config.json").read_text())
    game_kwargs = config["game"]["games"].get("synthetic", {})
    counts: Counter = Counter()
    for line in (folder / "episodes.jsonl").read_text().splitlines():
        record = json.loads(line)
        counts[(fork_branch(record, game_kwargs), bool(record["success"]))] += 1
    return counts


def main(argv: list[str] | None = None) -> dict[str, Counter]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="env_adapters.evaluate output folders")
    args = p.parse_args(argv)
    result = {}
    for folder in args.folders:
        counts = fork_counts(folder)
        branches: Counter = Counter()
        for (branch, _), n in counts.items():
            branches[branch] += n
        won = sum(n for (_, success), n in counts.items() if success)
        print(f"{folder}: {sum(counts.values())} episodes; lure {branches['lure']}, passage "
              f"{branches['passage']}, stayed in the first room {branches['stayed']}; won {won}")
        result[str(folder)] = counts
    return result


if __name__ == "__main__":
    main()
