"""Success per set, per seed and per task type: mean and sample standard deviation over seeds."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any


def _spread(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; None for a single value) of per-seed rates."""
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n_seeds": len(values)}


def summarize(rows: list[dict[str, Any]], expected: dict[str, int]) -> dict[str, Any]:
    """Per set: success rate per seed, mean ± std over seeds, and the same per task type.

    Args:
        rows: episode rows (any order).
        expected: episodes each set should have (tasks × seeds), to flag an incomplete evaluation.
    """
    sets: dict[str, Any] = {}
    for set_name in sorted({r["set"] for r in rows} | set(expected)):
        mine = [r for r in rows if r["set"] == set_name]
        by_seed: dict[int, list[dict]] = defaultdict(list)
        for r in mine:
            by_seed[r["seed"]].append(r)
        per_seed = {str(s): statistics.fmean(r["success"] for r in rs) for s, rs in sorted(by_seed.items())}
        types: dict[str, Any] = {}
        for task_type in sorted({r["task_type"] for r in mine}):
            rates = [statistics.fmean(r["success"] for r in rs if r["task_type"] == task_type)
                     for _, rs in sorted(by_seed.items()) if any(r["task_type"] == task_type for r in rs)]
            types[task_type] = {**_spread(rates), "episodes": sum(r["task_type"] == task_type for r in mine)}
        sets[set_name] = {
            "episodes": len(mine), "expected_episodes": expected.get(set_name),
            "complete": len(mine) == expected.get(set_name, len(mine)),
            "success": {**_spread(list(per_seed.values())), "per_seed": per_seed},
            "per_task_type": types,
            "mean_return": statistics.fmean(r["return"] for r in mine) if mine else None,
            "mean_turns": statistics.fmean(r["turns"] for r in mine) if mine else None,
            "mean_invalid_actions": statistics.fmean(r["invalid_actions"] for r in mine) if mine else None,
            "mean_response_tokens": statistics.fmean(r["response_tokens"] for r in mine) if mine else None,
            "env_failures": sum(r["failure"] is not None for r in mine),
        }
    return sets


def format_summary(summary: dict[str, Any]) -> str:
    """One line per set: success mean ± std over seeds, per seed."""
    lines = []
    for name, s in summary["sets"].items():
        mean, std = s["success"]["mean"], s["success"]["std"]
        spread = "" if std is None or (isinstance(std, float) and math.isnan(std)) else f" ± {100 * std:.1f}"
        shown = "n/a" if mean is None else f"{100 * mean:.1f}{spread}%"
        seeds = ", ".join(f"seed {k}: {100 * v:.1f}%" for k, v in s["success"]["per_seed"].items())
        lines.append(f"{name}: success {shown} over {s['success']['n_seeds']} seed(s) ({seeds}); "
                     f"{s['episodes']}/{s['expected_episodes']} episodes")
    return "\n".join(lines)
