"""The results table over runs (methods × seeds), after the paper's Table 1.

One row per method, one column per validation metric ``val-aux/<source>/success/mean@N``, each cell
the mean ± sample standard deviation (ddof=1) over seeds of one number per run: **the mean of that
run's last N validation points**. Never the best point: a fixed window at the end of training is
what a user who cannot peek at the test split would get. A run with fewer than N points contributes
the mean of what it has (the CSV says how many). Final evaluations add one column per evaluated
set, with the run's success averaged over evaluation seeds as its one number.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

from verl_epo.analysis.runs import VALIDATION_SUCCESS, Run, methods_in_order, source_of, validation_metrics

DEFAULT_LAST_N = 3
EVAL_PREFIX = "eval:"
STRENGTH_COLUMNS = {
    "epo/update/step_share": "EPO's share of Adam's step (%)",
    "epo/update/step_ratio": "‖EPO's part of the step‖ / ‖step‖ (%)",
    "epo/update/gradient_step_share": "EPO's share of what the step's gradient adds (%)",
    "epo/update/grad_share": "‖g_EPO‖ / (‖g_pol‖ + ‖g_EPO‖) (%)",
    "epo/update/zero_adv_groups": "groups with all-zero advantage (%)",
    "epo/band/traj_inside": "trajectories inside the band (%)",
}
"""How strongly EPO acted in each run (``verl_epo.actor_worker``, ``docs/epo_band.md``): column titles."""


def last_n_mean(values_by_step: dict[int, float], n: int) -> tuple[float, list[int]] | None:
    """Mean of the last ``n`` points by step, and the steps used; None without points."""
    if n < 1:
        raise ValueError(f"--last-n {n} must be >= 1")
    steps = sorted(values_by_step)[-n:]
    if not steps:
        return None
    return statistics.fmean(values_by_step[s] for s in steps), steps


def evaluation_columns(runs: list[Run]) -> list[str]:
    return [EVAL_PREFIX + name for name in sorted({k for r in runs for k in r.evaluations})]


def table_columns(runs: list[Run]) -> list[str]:
    """Validation metrics (last-N window of training-time validation), then final-evaluation sets."""
    return validation_metrics(runs) + evaluation_columns(runs)


def column_title(key: str) -> str:
    if key.startswith(EVAL_PREFIX):
        return f"{key.removeprefix(EVAL_PREFIX)} final eval (%)"
    return f"{source_of(key)} success@{VALIDATION_SUCCESS.match(key)['n']} (%)"


def results_table(runs: list[Run], last_n: int = DEFAULT_LAST_N) -> list[dict[str, Any]]:
    """One entry per (method, column), each with one number per training seed, their mean and sample std.

    A validation column's number per run is the mean of its last ``last_n`` validation points; a
    final-evaluation column's is the run's success on that set averaged over evaluation seeds.
    """
    table = []
    for method in methods_in_order(runs):
        mine = sorted((r for r in runs if r.method == method), key=lambda r: r.seed)
        for key in table_columns(runs):
            per_seed: dict[int, float] = {}
            steps: dict[int, list[int]] = {}
            points: dict[int, int] = {}
            for run in mine:
                if key.startswith(EVAL_PREFIX):
                    if key.removeprefix(EVAL_PREFIX) in run.evaluations:
                        per_seed[run.seed], points[run.seed] = run.evaluations[key.removeprefix(EVAL_PREFIX)]
                elif (found := last_n_mean(run.metrics.get(key, {}), last_n)) is not None:
                    per_seed[run.seed], steps[run.seed] = found
                    points[run.seed] = len(steps[run.seed])
            values = list(per_seed.values())
            source = key.removeprefix(EVAL_PREFIX) if key.startswith(EVAL_PREFIX) else source_of(key)
            table.append({
                "method": method, "metric": key, "source": source,
                "n_seeds": len(values), "seeds": sorted(per_seed),
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "per_seed": per_seed, "steps": steps, "points": points,
                "last_n": None if key.startswith(EVAL_PREFIX) else last_n,
            })
    return table


def _cell(entry: dict[str, Any], runs_of_method: int) -> str:
    if entry["mean"] is None:
        return "–"
    text = f"{100 * entry['mean']:.1f}"
    if entry["std"] is not None:
        text += f" ± {100 * entry['std']:.1f}"
    if entry["n_seeds"] != runs_of_method:
        text += f" (n={entry['n_seeds']})"
    return text


def to_markdown(table: list[dict[str, Any]], runs: list[Run], last_n: int) -> str:
    """Methods × validation metrics, success in %, mean ± std over seeds."""
    metrics = table_columns(runs)
    header = ["method", "seeds", *[column_title(k) for k in metrics]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods_in_order(runs):
        seeds = sorted(r.seed for r in runs if r.method == method)
        cells = [_cell(e, len(seeds)) for k in metrics for e in table if e["method"] == method and e["metric"] == k]
        lines.append("| " + " | ".join([method, ", ".join(map(str, seeds)), *cells]) + " |")
    note = (f"\nMean ± sample std (ddof=1) over training seeds. Validation columns: each run's mean over its "
            f"last {last_n} validation points (never the best point). Final-eval columns: each run's success on "
            "the full set, averaged over evaluation seeds.")
    return "\n".join(lines) + "\n" + note + "\n"


def write_csv(table: list[dict[str, Any]], path: Path) -> None:
    """Long format, values as logged (fractions, not %): one line per (method, metric)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "metric", "source", "n_seeds", "seeds", "mean", "std", "last_n", "per_seed",
                         "points_per_seed"])
        for e in table:
            writer.writerow([
                e["method"], e["metric"], e["source"], e["n_seeds"], " ".join(map(str, e["seeds"])),
                "" if e["mean"] is None else repr(e["mean"]), "" if e["std"] is None else repr(e["std"]),
                "" if e["last_n"] is None else e["last_n"], " ".join(f"{s}:{v!r}" for s, v in e["per_seed"].items()),
                " ".join(f"{s}:{n}" for s, n in e["points"].items()),
            ])


def strength_table(runs: list[Run]) -> str:
    """Markdown: per method, mean ± std over seeds of each run's mean over every step that logged
    the ``STRENGTH_COLUMNS`` metric (the update share is measured every ``epo.diagnostic_every`` steps);
    empty when no run logged any of them."""
    keys = [k for k in STRENGTH_COLUMNS if any(r.metrics.get(k) for r in runs)]
    if not keys:
        return ""
    header = ["method", *[STRENGTH_COLUMNS[k] for k in keys]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods_in_order(runs):
        cells = []
        for key in keys:
            per_run = [statistics.fmean(v.values()) for r in runs if r.method == method and (v := r.metrics.get(key))]
            entry = {"mean": statistics.fmean(per_run) if per_run else None, "n_seeds": len(per_run),
                     "std": statistics.stdev(per_run) if len(per_run) > 1 else None}
            cells.append(_cell(entry, sum(r.method == method for r in runs)))
        lines.append("| " + " | ".join([method, *cells]) + " |")
    note = ("\nHow strongly EPO acted: mean ± sample std over seeds of each run's mean over the steps that "
            "logged the metric (`epo/update/*`: every `epo.diagnostic_every` steps; `docs/epo_band.md`).")
    return "\n".join(lines) + "\n" + note + "\n"
