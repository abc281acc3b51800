"""Every figure of the reports, drawn from ``Run`` objects (``verl_epo.analysis.runs``).

Over runs (mean over seeds with a ± std band, per method):

- ``success.png``: validation success (one panel per validation metric) and training success vs step;
- ``entropy.png``: trajectory entropy (Eq. 2) with the reference H̄_ref and the κ band, one panel per method;
- ``entropy_by_turn_<method>.png``: mean entropy per turn-index bucket (rows) and step (columns);
- ``band_fractions.png``: fraction of tokens above / below the band;
- ``entropy_per_seed.png`` (the mini-study): one panel per method, one line per seed, each seed's band
  shaded in its colour.

``plot_run`` draws the same figures for one run's metrics log.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from verl_epo.analysis.runs import (
    TRAIN_SUCCESS,
    Run,
    methods_in_order,
    metrics_by_step,
    read_jsonl,
    source_of,
    validation_metrics,
)

ENTROPY = "epo/trajectory_entropy"
REFERENCE = "epo/reference_entropy"
BAND_LOW = "epo/band_low"
BAND_HIGH = "epo/band_high"
TURN_BUCKET_PREFIX = "epo/entropy_turn_"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


def _seeds(n: int) -> str:
    return "1 seed" if n == 1 else f"mean over {n} seeds"


def _colors(names: list[Any]) -> dict[Any, Any]:
    cmap = _plt().get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _of(runs: list[Run], method: str) -> list[Run]:
    return [r for r in runs if r.method == method]


def seed_band(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std) over the runs that logged ``key`` at each step (std 0 with one run)."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for step, value in run.metrics.get(key, {}).items():
            by_step.setdefault(step, []).append(value)
    steps = np.array(sorted(by_step))
    mean = np.array([np.mean(by_step[s]) for s in steps])
    std = np.array([np.std(by_step[s], ddof=1) if len(by_step[s]) > 1 else 0.0 for s in steps])
    return steps, mean, std


def _banded(ax: Any, runs: list[Run], key: str, color: Any, label: str, **style: Any) -> bool:
    steps, mean, std = seed_band(runs, key)
    if not len(steps):
        return False
    ax.plot(steps, mean, color=color, label=label, **style)
    ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    return True


def _legend(ax: Any, fontsize: str = "small") -> None:
    """The panel's legend, or a note in its middle when none of the runs logged what it shows."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=fontsize)
    else:
        ax.text(0.5, 0.5, "not logged by these runs", ha="center", va="center", transform=ax.transAxes)


def _band(ax: Any, steps: Any, low: Any, high: Any, color: Any, label: str | None = None, **line: Any) -> None:
    """The κ band shaded, its top drawn as a line with markers (visible even with a single point)."""
    ax.fill_between(steps, low, high, color=color, alpha=0.12, linewidth=0, label=label)
    ax.plot(steps, high, color=color, marker="_", **{"linewidth": 0.8, **line})


def plot_success(runs: list[Run], out: Path) -> Path:
    """Validation success per metric and training success vs step; mean over seeds ± std."""
    plt = _plt()
    keys = [*validation_metrics(runs), TRAIN_SUCCESS]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    colors = _colors(methods_in_order(runs))
    for ax, key in zip(axes[0], keys, strict=True):
        for method in methods_in_order(runs):
            mine = _of(runs, method)
            _banded(ax, mine, key, colors[method], f"{method} (n={len(mine)})",
                    marker="." if key == TRAIN_SUCCESS else "o", markersize=3)
        title = "training episodes" if key == TRAIN_SUCCESS else f"validation: {source_of(key)}"
        ax.set(xlabel="step", ylabel="success rate", ylim=(-0.02, 1.02), title=title)
        _legend(ax)
    return _save(fig, out / "success.png")


def plot_entropy(runs: list[Run], out: Path) -> Path:
    """Trajectory entropy (Eq. 2) with H̄_ref and the κ band [κ_l·H̄_ref, κ_r·H̄_ref], per method."""
    plt = _plt()
    methods = methods_in_order(runs)
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), squeeze=False, sharey=True)
    colors = _colors(methods)
    for ax, method in zip(axes[0], methods, strict=True):
        mine = _of(runs, method)
        _banded(ax, mine, ENTROPY, colors[method], "trajectory entropy (Eq. 2)")
        steps, ref, _ = seed_band(mine, REFERENCE)
        if len(steps):
            ax.plot(steps, ref, color="black", linestyle="--", marker=".", label="reference H̄_ref")
            low_steps, low, _ = seed_band(mine, BAND_LOW)
            high_steps, high, _ = seed_band(mine, BAND_HIGH)
            if len(low_steps) and np.array_equal(low_steps, high_steps):
                _band(ax, low_steps, low, high, "tab:green", "κ band")
        ax.set(xlabel="step", ylabel="entropy (nats)", title=f"{method} ({_seeds(len(mine))})")
        _legend(ax)
    return _save(fig, out / "entropy.png")


def plot_entropy_by_turn(runs: list[Run], method: str, out: Path, name: str | None = None) -> Path | None:
    """Heatmap: mean entropy per turn-index bucket (rows) and step (columns), averaged over seeds.
    Written as ``name`` (default ``entropy_by_turn_<method>.png``); None without turn metrics."""
    mine = _of(runs, method)
    buckets = sorted({k for r in mine for k in r.metrics if k.startswith(TURN_BUCKET_PREFIX)})
    if not buckets:
        return None
    logged = sorted({s for r in mine for k in buckets for s in r.metrics.get(k, {})})
    steps = list(range(logged[0], logged[-1] + 1))  # every step a column: gaps stay blank, the axis stays true
    grid = np.full((len(buckets), len(steps)), np.nan)
    for i, key in enumerate(buckets):
        band_steps, mean, _ = seed_band(mine, key)
        for step, value in zip(band_steps, mean, strict=True):
            grid[i, steps.index(step)] = value
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                      extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, len(buckets) - 0.5))
    ax.set_yticks(range(len(buckets)), [f"turn {int(k.rsplit('_', 1)[1])}+" for k in buckets])
    ax.set(xlabel="step", title=f"Entropy by turn index: {method} ({_seeds(len(mine))})")
    fig.colorbar(image, ax=ax, label="entropy (nats)")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", method)
    return _save(fig, out / (name or f"entropy_by_turn_{safe}.png"))


def plot_band_fractions(runs: list[Run], out: Path) -> Path:
    """Fraction of response tokens above κ_r·H̄_ref and below κ_l·H̄_ref, per method."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False)
    colors = _colors(methods_in_order(runs))
    for ax, (key, title) in zip(axes[0], [("epo/frac_above_band", "tokens above κ_r·H̄_ref"),
                                           ("epo/frac_below_band", "tokens below κ_l·H̄_ref")], strict=True):
        for method in methods_in_order(runs):
            _banded(ax, _of(runs, method), key, colors[method], method, marker=".")
        ax.set(xlabel="step", ylabel="fraction of tokens", title=title)
        _legend(ax)
    return _save(fig, out / "band_fractions.png")


def plot_update_share(runs: list[Run], out: Path) -> Path:
    """How strongly EPO acts, per method: its share of Adam's step and of the gradient (measured every
    ``epo.diagnostic_every`` steps), and the fraction of trajectories whose mean entropy is in the band."""
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.6), squeeze=False)
    colors = _colors(methods_in_order(runs))
    panels = [("epo/update/step_share", "EPO's share of Adam's step", "share"),
              ("epo/update/gradient_step_share", "... of what this step's gradient adds", "share"),
              ("epo/update/grad_share", "‖g_EPO‖ / (‖g_pol‖ + ‖g_EPO‖)", "share"),
              ("epo/band/traj_inside", "trajectories with mean entropy in the band", "fraction")]
    for ax, (key, title, ylabel) in zip(axes[0], panels, strict=True):
        for method in methods_in_order(runs):
            _banded(ax, _of(runs, method), key, colors[method], method, marker="o", markersize=3)
        ax.set(xlabel="step", ylabel=ylabel, title=title, ylim=(-0.05, 1.05))
        _legend(ax)
    return _save(fig, out / "update_share.png")


def plot_entropy_per_seed(runs: list[Run], out: Path) -> Path:
    """One panel per method; each seed's trajectory entropy (Eq. 2) with its band [κ_l, κ_r]·H̄_ref shaded."""
    plt = _plt()
    methods = methods_in_order(runs)
    colors = _colors(sorted({r.seed for r in runs}))
    fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 3.6), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods, strict=True):
        for run in sorted(_of(runs, method), key=lambda r: r.seed):
            steps, entropy = run.series(ENTROPY)
            if len(steps):
                ax.plot(steps, entropy, color=colors[run.seed], marker=".", markersize=3, label=f"seed {run.seed}")
            band_steps, high = run.series(BAND_HIGH)
            if len(band_steps):
                low = [run.metrics.get(BAND_LOW, {}).get(int(s), 0.0) for s in band_steps]
                _band(ax, band_steps, low, high, colors[run.seed], linestyle="--")
        ax.set_yscale("symlog", linthresh=1.0)  # a runaway (several nats) and a band of tenths both stay readable
        ax.set(xlabel="step", title=method)
        _legend(ax, "x-small")
    axes[0][0].set_ylabel("trajectory entropy (nats); band shaded")
    return _save(fig, out / "entropy_per_seed.png")


def plot_runs(runs: list[Run], out: Path) -> list[Path]:
    """The figures over runs: success, entropy, band fractions, update share, entropy by turn per method."""
    plots = [plot_success(runs, out), plot_entropy(runs, out), plot_band_fractions(runs, out),
             plot_update_share(runs, out)]
    return plots + [p for m in methods_in_order(runs) if (p := plot_entropy_by_turn(runs, m, out)) is not None]


def plot_run(metrics_path: str | Path, out_dir: str | Path) -> list[Path]:
    """One run's figures (success, entropy, band fractions, ``entropy_by_turn.png``) from its metrics
    log, written to ``out_dir``; returns the files written."""
    metrics_path, out = Path(metrics_path), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = metrics_path.parent.name or "run"
    run = Run(name, name, 0, metrics_path.parent, metrics_by_step(read_jsonl(metrics_path)))
    plots = [plot_success([run], out), plot_entropy([run], out), plot_band_fractions([run], out),
             plot_update_share([run], out)]
    by_turn = plot_entropy_by_turn([run], name, out, name="entropy_by_turn.png")
    return plots + ([by_turn] if by_turn is not None else [])
