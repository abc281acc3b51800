"""Write verl's RL parquet files (train/val) for named task sets: one row per task instance.

``python -m env_adapters.dataset --train-set synthetic/train --val-set synthetic/val --out DIR``
writes ``DIR/train.parquet`` and ``DIR/val.parquet``. Each row is read by verl's ``RLHFDataset``
and handed, column by column, to the agent loop's ``run(sampling_params, **row)``:

- ``data_source``: the task set's name (verl groups validation metrics by it, so IID and OOD
  sets validated together stay apart: ``val-aux/sciworld/l0-test-small/success/mean@1``).
- ``prompt``: a one-message chat list naming the task; a placeholder only, since the agent loop
  builds its own prompt from the game (verl still tokenizes it to filter overlong rows).
- ``agent_name``: the registered agent loop that plays the row (default ``text_game``).
- ``ability``: ``"text_game"``; ``reward_model``: ``{"style": "env", "ground_truth": ""}``
  (the loop scores episodes itself; verl's v1 trainer reads ``ground_truth`` for logging).
- ``extra_info``: ``game, task, variation, seed, task_type`` (the ``TaskSpec``), ``index`` (row
  number, which verl copies to the top-level ``index``), ``split`` and ``task_set``.

GRPO groups: verl rolls out each row ``actor_rollout_ref.rollout.n`` times under one uid, so a
group is G rollouts of the SAME task instance, as EPO_SPEC requires.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from env_adapters.base import TaskSpec, task_set

DEFAULT_AGENT = "text_game"


def task_row(spec: TaskSpec, index: int, split: str, set_name: str,
             agent_name: str = DEFAULT_AGENT) -> dict[str, Any]:
    """The parquet row of one task instance."""
    fields = spec.to_row()
    where = f"variation {fields['variation']}, seed {fields['seed']}"
    return {
        "data_source": set_name,
        "prompt": [{"role": "user", "content": f"Play {spec.game} task {spec.task} ({where})."}],
        "agent_name": agent_name,
        "ability": "text_game",
        "reward_model": {"style": "env", "ground_truth": ""},
        "extra_info": {**fields, "index": index, "split": split, "task_set": set_name},
    }


def task_rows(set_name: str, split: str, limit: int | None = None, repeat: int = 1,
              agent_name: str = DEFAULT_AGENT) -> list[dict[str, Any]]:
    """Rows of a named task set: its first ``limit`` tasks, each repeated ``repeat`` times."""
    if repeat < 1:
        raise ValueError(f"--repeat {repeat} must be >= 1")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit} must be >= 1 (omit it to keep every task)")
    specs = task_set(set_name)[:limit]
    if not specs:
        raise ValueError(f"task set {set_name!r} is empty; nothing to write")
    specs = [spec for spec in specs for _ in range(repeat)]
    return [task_row(spec, i, split, set_name, agent_name) for i, spec in enumerate(specs)]


def write_parquet(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows with pandas/pyarrow (nested dicts and lists become parquet structs/lists)."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def build_dataset(out: str | Path, train_set: str | None = None, val_set: str | None = None,
                  limit: int | None = None, repeat: int = 1,
                  agent_name: str = DEFAULT_AGENT) -> dict[str, Path]:
    """Write ``train.parquet`` and/or ``val.parquet`` under ``out``; returns their paths.

    ``repeat`` applies to the training split only (validation evaluates each task once).
    """
    if not train_set and not val_set:
        raise ValueError("name at least one of --train-set / --val-set (e.g. synthetic/train)")
    written = {}
    if train_set:
        rows = task_rows(train_set, "train", limit, repeat, agent_name)
        written["train"] = write_parquet(rows, Path(out) / "train.parquet")
    if val_set:
        rows = task_rows(val_set, "val", limit, 1, agent_name)
        written["val"] = write_parquet(rows, Path(out) / "val.parquet")
    return written


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-set", help="task set for training, e.g. synthetic/train")
    parser.add_argument("--val-set", help="task set for validation, e.g. synthetic/val")
    parser.add_argument("--out", required=True, help="folder for train.parquet / val.parquet")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N tasks of a set")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rows per training task (a longer epoch); validation keeps 1")
    parser.add_argument("--agent-name", default=DEFAULT_AGENT,
                        help="registered verl agent loop that plays the rows")
    args = parser.parse_args(argv)
    written = build_dataset(args.out, args.train_set, args.val_set, args.limit, args.repeat,
                            args.agent_name)
    for split, path in written.items():
        print(f"{split}: {path}")
    return written


if __name__ == "__main__":
    main()
