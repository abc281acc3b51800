"""ScienceWorld's official variation splits, cached in ``splits.json``, and the paper's named sets.

Building a set never starts a JVM: the split index (task names in the simulator's order, and each
task's train/dev/test variations from ``get_variations_train/dev/test``) is committed next to this
file. Regenerate it from the simulator (and check a committed copy) with::

    .venv/bin/python -m env_adapters.sciworld write-splits    # rewrite splits.json
    .venv/bin/python -m env_adapters.sciworld check-splits    # compare, exit 1 on a difference

The paper's sets (EPO, arXiv 2509.22576, from its authors' index files):

- ``sciworld/l0-train``: official train variations of tasks 0-28 (all but 29, use-thermometer).
- ``sciworld/l0-test`` (the paper's IID): official dev variations of tasks 0-28.
- ``sciworld/l1-test`` (the paper's OOD): official test variations of tasks 0-28.
- ``sciworld/l2-train``: train variations of the 19 task types of 0-28 not held out for L2.
- ``sciworld/l2-test``: official test variations of the 10 held-out types (``L2_HELD_OUT``).
- ``sciworld/<set>-small`` for l0-train, l0-test, l1-test, l2-test: the first
  ``SMALL_PER_TYPE`` (2) variations, in ascending order, of each task type of the full set.

Every set is ordered by task index, then variation.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from env_adapters.base import TaskSpec, register_task_set

SPLITS_PATH = Path(__file__).with_name("splits.json")
REGENERATE_COMMAND = ".venv/bin/python -m env_adapters.sciworld write-splits"
GAME = "sciworld"

L0_TASKS = range(0, 29)  # every task but 29 (use-thermometer)
L2_HELD_OUT = (1, 4, 8, 11, 13, 16, 18, 21, 24, 28)
SMALL_PER_TYPE = 2
OFFICIAL_SPLITS = ("train", "dev", "test")


@lru_cache(maxsize=1)
def split_index() -> dict[str, Any]:
    """The committed split index: ``{"tasks": [{"index", "name", "max_variations", "train",
    "dev", "test"}, ...]}`` in the simulator's task order."""
    try:
        with open(SPLITS_PATH) as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"cannot read the ScienceWorld split index {SPLITS_PATH}: {exc}; "
            f"regenerate it with `{REGENERATE_COMMAND}`"
        ) from exc


def task_names() -> list[str]:
    """The 30 task names, position = the simulator's task index."""
    return [task["name"] for task in split_index()["tasks"]]


def max_variations(task_name: str) -> int:
    for task in split_index()["tasks"]:
        if task["name"] == task_name:
            return int(task["max_variations"])
    raise KeyError(task_name)


def official_variations(task_index: int, split: str) -> list[int]:
    """The official ``split`` ("train", "dev" or "test") variations of one task, ascending."""
    if split not in OFFICIAL_SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {OFFICIAL_SPLITS}")
    return sorted(split_index()["tasks"][task_index][split])


def build_set(task_indices: Any, split: str, per_type: int | None = None) -> list[TaskSpec]:
    """TaskSpecs of ``split`` over ``task_indices``; ``per_type`` keeps the first N per task."""
    names = task_names()
    specs = []
    for index in task_indices:
        variations = official_variations(index, split)
        if per_type is not None:
            variations = variations[:per_type]
        name = names[index]
        specs += [TaskSpec(GAME, name, v, seed=0, task_type=name) for v in variations]
    return specs


L2_TRAIN_TASKS = tuple(i for i in L0_TASKS if i not in L2_HELD_OUT)

# name -> (task indices, official split); the "-small" variants keep SMALL_PER_TYPE per type
SETS: dict[str, tuple[tuple[int, ...], str]] = {
    "l0-train": (tuple(L0_TASKS), "train"),
    "l0-test": (tuple(L0_TASKS), "dev"),
    "l1-test": (tuple(L0_TASKS), "test"),
    "l2-train": (L2_TRAIN_TASKS, "train"),
    "l2-test": (L2_HELD_OUT, "test"),
}
SMALL_SETS = ("l0-train", "l0-test", "l1-test", "l2-test")


def _register(name: str, tasks: tuple[int, ...], split: str, per_type: int | None) -> None:
    register_task_set(f"{GAME}/{name}")(lambda: build_set(tasks, split, per_type))


for _name, (_tasks, _split) in SETS.items():
    _register(_name, _tasks, _split, None)
    if _name in SMALL_SETS:
        _register(f"{_name}-small", _tasks, _split, SMALL_PER_TYPE)


def read_from_simulator() -> dict[str, Any]:
    """Ask a real JVM for the task list and every task's official splits (about 15 s)."""
    from importlib.metadata import version

    from env_adapters.sciworld.simulator import Simulator

    simulator = Simulator()
    try:
        server = simulator.server
        tasks = []
        for index, name in enumerate(server.getTaskNames()):
            error = server.load(name, 0, "", False)
            if error:
                raise RuntimeError(f"loading {name!r} failed: {error}")
            tasks.append(
                {
                    "index": index,
                    "name": str(name),
                    "max_variations": int(server.getTaskMaxVariations(name)),
                    "train": sorted(int(v) for v in server.getVariationsTrain()),
                    "dev": sorted(int(v) for v in server.getVariationsDev()),
                    "test": sorted(int(v) for v in server.getVariationsTest()),
                }
            )
    finally:
        simulator.kill()
    return {
        "scienceworld_version": version("scienceworld"),
        "generated_by": REGENERATE_COMMAND,
        "tasks": tasks,
    }


def dump_index(index: dict[str, Any]) -> str:
    # one task per line: small diffs when the simulator changes
    head = {k: v for k, v in index.items() if k != "tasks"}
    lines = [json.dumps(task, separators=(",", ":")) for task in index["tasks"]]
    body = ",\n    ".join(lines)
    return json.dumps(head, indent=2)[:-2] + ',\n  "tasks": [\n    ' + body + "\n  ]\n}\n"
