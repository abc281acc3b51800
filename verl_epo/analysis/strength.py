"""The strength study's table and figure: each method at each λ, on each task set (``recipes/strength_study.py``).

A run's method label is ``<method>`` (λ-free: GRPO) or ``<method>_lam<λ>`` (``cell_label``). Per cell
(task set, method, λ), over seeds: validation success (each run's mean over its last N validation
points, never the best), EPO's share of the update (``epo/update/*``: each run's mean over its
measured steps), the band criterion (``epo/band/traj_inside``), and how many runs' entropy ran away or
collapsed into invalid actions (``verl_epo.analysis.study``'s criteria, fixed before running). Pure
analysis: reads run folders, imports nothing from the games or verl.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

from verl_epo.analysis.plots import ENTROPY, _colors, _legend, _plt, _save, seed_band
from verl_epo.analysis.runs import Run, validation_metrics
from verl_epo.analysis.study import COLLAPSE, RUNAWAY, collapse, runaway
from verl_epo.analysis.tables import last_n_mean

LABEL = re.compile(r"^(?P<method>.+?)(?:_lam(?P<coef>[0-9.e+-]+))?$")
SHARES = {
    "epo/update/step_share": "share of Adam's step (%)",
    "epo/update/step_ratio": "EPO's step ÷ whole step (%)",
    "epo/update/grad_share": "gradient share (%)",
    "epo/band/traj_inside": "trajectories in band (%)",
}


def cell_label(method: str, coef: float | None) -> str:
    """``grpo_epo_lam0.01``: the run label of ``method`` at λ = ``coef`` (None: a λ-free baseline)."""
    return method if coef is None else f"{method}_lam{coef:g}"


def parse_label(label: str) -> tuple[str, float | None]:
    """(method, λ or None) of a run label made by ``cell_label``."""
    match = LABEL.match(label)
    return match["method"], None if match["coef"] is None else float(match["coef"])


def _spread(values: list[float]) -> tuple[float | None, float | None]:
    return (statistics.fmean(values) if values else None, statistics.stdev(values) if len(values) > 1 else None)


def _pct(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{100 * mean:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")


def cell_rows(runs_by_set: dict[str, list[Run]], last_n: int) -> list[dict[str, Any]]:
    """One entry per (task set, method label): seeds, success, shares, runaway and collapse counts."""
    rows = []
    for task_set, runs in runs_by_set.items():
        keys = validation_metrics(runs)
        labels = sorted({r.method for r in runs}, key=lambda lab: (parse_label(lab)[0], parse_label(lab)[1] or 0.0))
        for label in labels:
            mine = sorted((r for r in runs if r.method == label), key=lambda r: r.seed)
            success = [found[0] for r in mine if keys and (found := last_n_mean(r.metrics.get(keys[0], {}), last_n))]
            method, coef = parse_label(label)
            row = {"set": task_set, "label": label, "method": method, "entropy_coef": coef,
                   "seeds": [r.seed for r in mine], "success": _spread(success),
                   "ran_away": [r.seed for r in mine if runaway(r)["ran_away"]],
                   "collapsed": [r.seed for r in mine if collapse(r)["collapsed"]]}
            for key in SHARES:
                row[key] = _spread([statistics.fmean(v.values()) for r in mine if (v := r.metrics.get(key))])
            rows.append(row)
    return rows


def to_markdown(rows: list[dict[str, Any]], last_n: int) -> str:
    header = ["task set", "method", "λ", "seeds", "success (%)", *SHARES.values(), "entropy ran away", "collapsed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lam = "–" if r["entropy_coef"] is None else f"{r['entropy_coef']:g}"
        n = len(r["seeds"])
        lines.append("| " + " | ".join([
            r["set"], r["method"], lam, ", ".join(map(str, r["seeds"])), _pct(*r["success"]),
            *[_pct(*r[k]) for k in SHARES], f"{len(r['ran_away'])} of {n}", f"{len(r['collapsed'])} of {n}",
        ]) + " |")
    lines += ["", f"Mean ± sample std over seeds. Success: each run's mean over its last {last_n} validation "
              "points (never the best). Shares: each run's mean over the steps that measured them "
              "(`epo/update/*`, `docs/epo_band.md`); a share is ‖EPO's part‖ / (‖EPO's part‖ + ‖the rest‖), "
              "in [0, 100] %; EPO's step ÷ whole step is above 100 % where EPO's part and the policy "
              "gradient's oppose; trajectories in band: `epo/band/traj_inside`. Entropy ran "
              f"away: {RUNAWAY.describe()}. Collapsed: {COLLAPSE.describe()}."]
    return "\n".join(lines) + "\n"


def plot_entropy_by_strength(runs_by_set: dict[str, list[Run]], out: Path) -> Path:
    """One figure: a row per task set, a column per method, a line per λ (trajectory entropy, mean ± std
    over seeds)."""
    plt = _plt()
    sets = list(runs_by_set)
    methods = sorted({parse_label(r.method)[0] for runs in runs_by_set.values() for r in runs})
    coefs = sorted({c for runs in runs_by_set.values() for r in runs if (c := parse_label(r.method)[1]) is not None})
    colors = _colors([None, *coefs])
    fig, axes = plt.subplots(len(sets), len(methods), figsize=(4.2 * len(methods), 3.2 * len(sets)),
                             squeeze=False, sharey=True)
    for i, task_set in enumerate(sets):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            for coef in [None, *coefs]:
                mine = [r for r in runs_by_set[task_set] if parse_label(r.method) == (method, coef)]
                steps, mean, std = seed_band(mine, ENTROPY)
                if len(steps):
                    label = "λ-free" if coef is None else f"λ = {coef:g}"
                    ax.plot(steps, mean, color=colors[coef], marker=".", label=f"{label} ({len(mine)})")
                    ax.fill_between(steps, mean - std, mean + std, color=colors[coef], alpha=0.15, linewidth=0)
            ax.set_yscale("symlog", linthresh=1.0)
            ax.set(title=f"{task_set}: {method}", xlabel="step")
            _legend(ax, "x-small")
        axes[i][0].set_ylabel("trajectory entropy (nats)")
    return _save(fig, out / "entropy_by_strength.png")
