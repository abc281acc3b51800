"""ScienceWorld maintenance commands (each starts one JVM).

    .venv/bin/python -m env_adapters.sciworld write-splits   # regenerate splits.json
    .venv/bin/python -m env_adapters.sciworld check-splits   # exit 1 if splits.json is stale
    .venv/bin/python -m env_adapters.sciworld gold-lengths [--set sciworld/l0-test-small]
        # gold-path length per task type against the paper's 30 turns, each path replayed
    .venv/bin/python -m env_adapters.sciworld prompt-sizes [--set sciworld/l0-test-small]
        # characters of the compact actions, full valid list, observation, task, along gold paths
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict

from env_adapters.base import make_game, task_set
from env_adapters.sciworld import splits


def write_splits() -> int:
    fresh = splits.read_from_simulator()
    splits.SPLITS_PATH.write_text(splits.dump_index(fresh))
    print(f"wrote {splits.SPLITS_PATH} ({len(fresh['tasks'])} tasks)")
    return 0


def check_splits() -> int:
    same = splits.read_from_simulator()["tasks"] == splits.split_index()["tasks"]
    print("split index matches the simulator" if same else "split index DIFFERS: regenerate it")
    return 0 if same else 1


def gold_lengths(set_name: str, max_turns: int) -> int:
    """Print, per task type, how many gold-path actions it takes to win (the replay stops when the
    adapter reports done) over the set's variations, against the agent's turn limit."""
    game = make_game("sciworld")
    needed: dict[str, list[int]] = defaultdict(list)
    wins: dict[str, int] = defaultdict(int)
    start = time.time()
    try:
        for spec in task_set(set_name):
            game.reset(spec.task, spec.variation)
            gold = game.gold_actions()
            state, steps = None, 0
            for action in gold:
                state, steps = game.step(action), steps + 1
                if state.done:
                    break
            needed[spec.task].append(steps)
            wins[spec.task] += int(state is not None and state.won)
    finally:
        game.close()
    print(f"gold-path actions to win per task type, {set_name}, preset {game.simplification!r}, "
          f"env step limit {game.env_step_limit}, agent turn limit {max_turns}")
    print(f"| task | n | min | median | max | > {max_turns} turns | won |")
    print("|---|---|---|---|---|---|---|")
    over_total = count = 0
    for task, values in needed.items():
        over = sum(v > max_turns for v in values)
        over_total += over
        count += len(values)
        print(f"| {task} | {len(values)} | {min(values)} | {statistics.median(values):g} | "
              f"{max(values)} | {over} | {wins[task]} |")
    print(f"{over_total}/{count} gold paths need more than {max_turns} turns; "
          f"{sum(wins.values())}/{count} won ({time.time() - start:.0f} s)")
    return 0


def prompt_sizes(set_name: str) -> int:
    """Print, per task type, the largest character counts met along the gold path of the first
    variation in the set: compact actions (``actions_prompt``), the full valid-action list, the
    observation and the task description."""
    game = make_game("sciworld")
    rows = []
    seen: set[str] = set()
    try:
        for spec in task_set(set_name):
            if spec.task in seen:
                continue
            seen.add(spec.task)
            state = game.reset(spec.task, spec.variation)
            gold = game.gold_actions()
            compact, full, observation = [], [], [len(state.observation)]
            for action in gold:
                compact.append(len(game.actions_prompt() or ""))
                full.append(len("\n".join(game.admissible_actions() or [])))
                state = game.step(action)
                observation.append(len(state.observation))
                if state.done:
                    break
            rows.append((spec.task, max(compact), max(full), max(observation),
                         len(game.task_description)))
    finally:
        game.close()
    print(f"largest character counts along gold paths, {set_name} (first variation per type)")
    print("| task | compact actions | full valid list | observation | task description |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    print(f"max over tasks: compact {max(r[1] for r in rows)}, full {max(r[2] for r in rows)}, "
          f"observation {max(r[3] for r in rows)}, task {max(r[4] for r in rows)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m env_adapters.sciworld")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write-splits", help="regenerate splits.json from the simulator")
    sub.add_parser("check-splits", help="compare splits.json with the simulator")
    gold = sub.add_parser("gold-lengths", help="gold-path length per task type")
    gold.add_argument("--set", default="sciworld/l0-test-small", help="a sciworld task set")
    gold.add_argument("--max-turns", type=int, default=30, help="the agent's turn limit")
    sizes = sub.add_parser("prompt-sizes", help="prompt part sizes per task type")
    sizes.add_argument("--set", default="sciworld/l0-test-small", help="a sciworld task set")
    args = parser.parse_args(argv)
    if args.command == "write-splits":
        return write_splits()
    if args.command == "check-splits":
        return check_splits()
    if args.command == "prompt-sizes":
        return prompt_sizes(args.set)
    return gold_lengths(args.set, args.max_turns)


if __name__ == "__main__":
    sys.exit(main())
