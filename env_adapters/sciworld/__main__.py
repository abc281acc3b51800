"""ScienceWorld maintenance commands (each starts one JVM).

    .venv/bin/python -m env_adapters.sciworld write-splits   # regenerate splits.json
    .venv/bin/python -m env_adapters.sciworld check-splits   # exit 1 if splits.json is stale
    .venv/bin/python -m env_adapters.sciworld gold-lengths [--set sciworld/l0-test-small]
        # gold-path length per task type against the paper's 30 turns, each path replayed
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
    """Print, per task type, the gold-path lengths over the set's variations and whether each
    replay through the adapter was won within the env step limit."""
    game = make_game("sciworld")
    lengths: dict[str, list[int]] = defaultdict(list)
    wins: dict[str, int] = defaultdict(int)
    start = time.time()
    try:
        for spec in task_set(set_name):
            game.reset(spec.task, spec.variation)
            gold = game.gold_actions()
            state = None
            for action in gold:
                state = game.step(action)
                if state.done:
                    break
            lengths[spec.task].append(len(gold))
            wins[spec.task] += int(state is not None and state.won)
    finally:
        game.close()
    print(f"gold-path length per task type, {set_name}, 'easy' preset, max_turns={max_turns}")
    print(f"{'task':50s} {'n':>3s} {'min':>4s} {'med':>5s} {'max':>4s} {'>turns':>6s} {'won':>4s}")
    over_total = count = 0
    for task, values in lengths.items():
        over = sum(v > max_turns for v in values)
        over_total += over
        count += len(values)
        print(
            f"{task:50s} {len(values):3d} {min(values):4d} {statistics.median(values):5.1f} "
            f"{max(values):4d} {over:6d} {wins[task]:4d}"
        )
    print(f"{over_total}/{count} gold paths are longer than {max_turns} turns "
          f"({time.time() - start:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m env_adapters.sciworld")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write-splits", help="regenerate splits.json from the simulator")
    sub.add_parser("check-splits", help="compare splits.json with the simulator")
    gold = sub.add_parser("gold-lengths", help="gold-path length per task type")
    gold.add_argument("--set", default="sciworld/l0-test-small", help="a sciworld task set")
    gold.add_argument("--max-turns", type=int, default=30, help="the agent's turn limit")
    args = parser.parse_args(argv)
    if args.command == "write-splits":
        return write_splits()
    if args.command == "check-splits":
        return check_splits()
    return gold_lengths(args.set, args.max_turns)


if __name__ == "__main__":
    sys.exit(main())
