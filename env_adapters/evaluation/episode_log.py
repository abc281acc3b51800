"""The episode log ``episodes.jsonl``: one line per episode, resumable without duplicates."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from env_adapters.evaluation.settings import EvalSettings

EPISODES_FILE = "episodes.jsonl"
CONFIG_FILE = "eval_config.json"
KEY_FIELDS = ("set", "game", "task", "variation", "task_seed", "seed")
"""An episode's identity in ``episodes.jsonl``: resuming skips keys already there."""

def episode_key(row: dict[str, Any]) -> tuple:
    return tuple(row[k] for k in KEY_FIELDS)


def read_episodes(path: Path) -> list[dict[str, Any]]:
    """The complete lines of ``episodes.jsonl``; a torn last line (killed mid-write) is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    rows, seen = [], set()
    for number, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number} is not JSON ({err}); the file was edited by hand? "
                             "remove that line and rerun") from None
        if episode_key(row) not in seen:  # defensive: count an episode once even if written twice
            seen.add(episode_key(row))
            rows.append(row)
    return rows


def append_episode(path: Path, row: dict[str, Any]) -> None:
    """One line, one ``write``, flushed and synced: a kill leaves at most a torn last line."""
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def check_resume(out: Path, settings: EvalSettings) -> None:
    """Refuse to mix episodes played with different settings in one output folder."""
    path = out / CONFIG_FILE
    current = json.loads(json.dumps(settings.outcome_settings()))
    if path.exists():
        previous = json.loads(path.read_text())
        differ = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
        if differ:
            changes = ", ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in differ)
            raise ValueError(f"{out} holds an evaluation with other settings ({changes}); use another --out, "
                             "or the same settings to resume")
    else:
        path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
