"""Results table and plots over several training runs (methods × seeds), from verl's file-logger JSONL.

``python -m verl_epo.report RUN_DIR... --out DIR [--last-n 3]``

Each run directory holds ``metrics.jsonl`` (``trainer.logger=[file]``; rows ``{"step": N, "data":
{metric: value}}``; a resumed run's later ``metrics.<suffix>.jsonl`` files are read after it) and
names its method and seed in ``run.json`` (``{"method": "grpo_epo", "seed": 1}``) or, without one,
in its own name ``<method>-seed<N>`` or ``<method>_seed<N>`` (``grpo_epo-seed1``, or
``sciworld_grpo_epo_seed1`` as ``recipes/run.sh`` names its runs). A directory without ``metrics.jsonl``
stands for the run directories inside it.

The table (``results.md``, ``results.csv``) follows the paper's Table 1: one row per method, one
column per validation metric ``val-aux/<source>/success/mean@N``, each cell the mean ± sample
standard deviation (ddof=1) over seeds of one number per run: **the mean of that run's last N
validation points** (``--last-n``, default 3). Never the best point: a fixed window at the end of
training is what a user who cannot peek at the test split would get. A run with fewer than N
points contributes the mean of what it has (the CSV says how many). Final evaluations of a run's
last checkpoint (``python -m env_adapters.evaluate ... --out <run>/eval/<name>``) add one column per
evaluated set, with the run's success averaged over evaluation seeds as its one number.

Plots (PNG, in ``DIR``): ``success.png`` (validation and training success vs step, mean over seeds
with a ± std band, per method), ``entropy.png`` (trajectory entropy, Eq. 2, with the reference H̄_ref
and the κ band, per method), ``entropy_by_turn_<method>.png`` (turn-index bucket × step heatmap, mean
over seeds), ``band_fractions.png`` (fraction of tokens above / below the band); and each run's own
plots (:func:`verl_epo.plots.plot_run`) in ``DIR/runs/<run>/``.

Pure analysis: reads files, imports nothing from the games or from verl.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verl_epo.plots import plot_run, read_jsonl

DEFAULT_LAST_N = 3
RUN_NAME = re.compile(r"^(?P<method>.+)[-_]seed(?P<seed>\d+)$")
VALIDATION_SUCCESS = re.compile(r"^val-aux/(?P<source>.+)/success/mean@(?P<n>\d+)$")
"""The data source is the task set's name (``synthetic/val``, ``sciworld/l0-test-small``), slashes included."""
TRAIN_SUCCESS = "env/success"
EVAL_DIR = "eval"
EVAL_PREFIX = "eval:"


@dataclass
class Run:
    """One training run: its method, seed and metrics by name as {step: value}."""

    name: str
    method: str
    seed: int
    path: Path
    metrics: dict[str, dict[int, float]] = field(default_factory=dict)
    evaluations: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Final evaluation per task set: (success averaged over evaluation seeds, number of seeds)."""

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        points = sorted(self.metrics.get(key, {}).items())
        return np.array([s for s, _ in points]), np.array([v for _, v in points])


def metrics_by_step(rows: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} of the finite numbers; a step logged twice (resumed run) keeps the last."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        for key, value in row.get("data", {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value):
                out[key][int(row["step"])] = float(value)
    return dict(out)


def load_run(path: str | Path) -> Run:
    """Read one run directory; method and seed from ``run.json`` or the name ``<method>-seed<N>``."""
    path = Path(path)
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{path} has no metrics.jsonl; train with trainer.logger=[console,file] and "
                                "VERL_FILE_LOGGER_PATH=<run dir>/metrics.jsonl")
    info_file = path / "run.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        if "method" not in info or "seed" not in info:
            raise ValueError(f"{info_file} must name the run's method and seed, e.g. "
                             '{"method": "grpo_epo", "seed": 1}')
        method, seed = str(info["method"]), int(info["seed"])
    else:
        match = RUN_NAME.match(path.name)
        if match is None:
            raise ValueError(f"cannot tell the method and seed of {path}: name it <method>-seed<N> or "
                             '<method>_seed<N> (e.g. grpo_epo-seed1) or add run.json {"method": ..., "seed": ...}')
        method, seed = match["method"], int(match["seed"])
    rows = [row for f in metric_files(path) for row in read_jsonl(f)]
    return Run(path.name, method, seed, path, metrics_by_step(rows), evaluation_results(path))


def evaluation_results(path: Path) -> dict[str, tuple[float, int]]:
    """Success per set from ``python -m env_adapters.evaluate`` summaries under ``<run>/eval/``.

    Only complete evaluations count (an interrupted one is reported and left out); a set evaluated
    twice for one run is an error.
    """
    found: dict[str, tuple[float, int]] = {}
    for file in sorted((path / EVAL_DIR).glob("**/summary.json")):
        for set_name, result in json.loads(file.read_text()).get("sets", {}).items():
            if set_name in found:
                raise ValueError(f"{path} has two final evaluations of {set_name}; keep one under {EVAL_DIR}/")
            if not result.get("complete") or result["success"]["mean"] is None:
                print(f"[report] {file}: evaluation of {set_name} is incomplete "
                      f"({result.get('episodes')}/{result.get('expected_episodes')} episodes), left out; "
                      "rerun the same command to finish it", file=sys.stderr)
                continue
            found[set_name] = (float(result["success"]["mean"]), int(result["success"]["n_seeds"]))
    return found


def metric_files(path: Path) -> list[Path]:
    """``metrics.jsonl``, then any ``metrics.<suffix>.jsonl`` in name order (later files win a step).

    verl's file logger truncates its file when a run starts, so a resumed run must log to a new
    file (e.g. ``metrics.<timestamp>.jsonl``) in the same directory to keep the earlier steps.
    """
    return [path / "metrics.jsonl", *sorted(path.glob("metrics.*.jsonl"))]


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Runs from the given directories (a directory without metrics.jsonl: the runs inside it)."""
    runs: list[Run] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"run directory {p} does not exist")
        if (p / "metrics.jsonl").is_file():
            runs.append(load_run(p))
        else:
            inner = sorted(d for d in p.iterdir() if (d / "metrics.jsonl").is_file())
            if not inner:
                raise FileNotFoundError(f"{p} has no metrics.jsonl, nor any run directory with one")
            runs += [load_run(d) for d in inner]
    seen: dict[tuple[str, int], str] = {}
    for run in runs:
        if (run.method, run.seed) in seen:
            raise ValueError(f"runs {seen[(run.method, run.seed)]} and {run.path} are both {run.method} seed "
                             f"{run.seed}; pass each run once")
        seen[(run.method, run.seed)] = str(run.path)
    return runs


def last_n_mean(values_by_step: dict[int, float], n: int) -> tuple[float, list[int]] | None:
    """Mean of the last ``n`` points by step, and the steps used; None without points."""
    if n < 1:
        raise ValueError(f"--last-n {n} must be >= 1")
    steps = sorted(values_by_step)[-n:]
    if not steps:
        return None
    return statistics.fmean(values_by_step[s] for s in steps), steps


def validation_metrics(runs: list[Run]) -> list[str]:
    return sorted({k for r in runs for k in r.metrics if VALIDATION_SUCCESS.match(k)})


def evaluation_columns(runs: list[Run]) -> list[str]:
    return [EVAL_PREFIX + name for name in sorted({k for r in runs for k in r.evaluations})]


def table_columns(runs: list[Run]) -> list[str]:
    """Validation metrics (last-N window of training-time validation), then final-evaluation sets."""
    return validation_metrics(runs) + evaluation_columns(runs)


def column_title(key: str) -> str:
    if key.startswith(EVAL_PREFIX):
        return f"{key.removeprefix(EVAL_PREFIX)} final eval (%)"
    return f"{source_of(key)} success@{VALIDATION_SUCCESS.match(key)['n']} (%)"


def source_of(key: str) -> str:
    """The data source of a validation metric: ``val-aux/synthetic/val/success/mean@1`` -> ``synthetic/val``."""
    return VALIDATION_SUCCESS.match(key)["source"]


def methods_in_order(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(r.method for r in runs))


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


# --- plots --------------------------------------------------------------------------------------


def seed_band(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std) over the runs that logged ``key`` at each step (std 0 with one run)."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for step, value in run.metrics.get(key, {}).items():
            by_step[step].append(value)
    steps = np.array(sorted(by_step))
    mean = np.array([np.mean(by_step[s]) for s in steps])
    std = np.array([np.std(by_step[s], ddof=1) if len(by_step[s]) > 1 else 0.0 for s in steps])
    return steps, mean, std


def _plt():
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


def _colors(methods: list[str]) -> dict[str, Any]:
    cmap = _plt().get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _banded(ax: Any, runs: list[Run], key: str, color: Any, label: str, **style: Any) -> bool:
    steps, mean, std = seed_band(runs, key)
    if not len(steps):
        return False
    ax.plot(steps, mean, color=color, label=label, **style)
    ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    return True


def plot_success(runs: list[Run], out: Path) -> Path:
    """Validation success per metric and training success vs step; mean over seeds ± std."""
    plt = _plt()
    keys = [*validation_metrics(runs), TRAIN_SUCCESS]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    colors = _colors(methods_in_order(runs))
    for ax, key in zip(axes[0], keys, strict=True):
        for method in methods_in_order(runs):
            n = sum(r.method == method for r in runs)
            _banded(ax, [r for r in runs if r.method == method], key, colors[method], f"{method} (n={n})",
                    marker="." if key == TRAIN_SUCCESS else "o", markersize=3)
        title = "training episodes" if key == TRAIN_SUCCESS else f"validation: {source_of(key)}"
        ax.set(xlabel="step", ylabel="success rate", ylim=(-0.02, 1.02), title=title)
        ax.legend(loc="best", fontsize="small")
    return _save(fig, out / "success.png")


def plot_entropy(runs: list[Run], out: Path) -> Path:
    """Trajectory entropy (Eq. 2) with H̄_ref and the κ band [κ_l·H̄_ref, κ_r·H̄_ref], per method."""
    plt = _plt()
    methods = methods_in_order(runs)
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), squeeze=False, sharey=True)
    colors = _colors(methods)
    for ax, method in zip(axes[0], methods, strict=True):
        mine = [r for r in runs if r.method == method]
        _banded(ax, mine, "epo/trajectory_entropy", colors[method], "trajectory entropy (Eq. 2)")
        steps, ref, _ = seed_band(mine, "epo/reference_entropy")
        if len(steps):
            ax.plot(steps, ref, color="black", linestyle="--", marker=".", label="reference H̄_ref")
            low_steps, low, _ = seed_band(mine, "epo/band_low")
            high_steps, high, _ = seed_band(mine, "epo/band_high")
            if len(low_steps) and np.array_equal(low_steps, high_steps):
                ax.fill_between(low_steps, low, high, color="tab:green", alpha=0.12, label="κ band")
                ax.plot(high_steps, high, color="tab:green", linewidth=0.8, marker="_")  # visible from one point on
        ax.set(xlabel="step", ylabel="entropy (nats)", title=f"{method} ({_seeds(len(mine))})")
        ax.legend(loc="best", fontsize="small")
    return _save(fig, out / "entropy.png")


def plot_entropy_by_turn(runs: list[Run], method: str, out: Path) -> Path | None:
    """Heatmap: mean entropy per turn-index bucket (rows) and step (columns), averaged over seeds."""
    mine = [r for r in runs if r.method == method]
    buckets = sorted({k for r in mine for k in r.metrics if k.startswith("epo/entropy_turn_")})
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
    return _save(fig, out / f"entropy_by_turn_{safe}.png")


def plot_band_fractions(runs: list[Run], out: Path) -> Path:
    """Fraction of response tokens above κ_r·H̄_ref and below κ_l·H̄_ref, per method."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False)
    colors = _colors(methods_in_order(runs))
    for ax, (key, title) in zip(axes[0], [("epo/frac_above_band", "tokens above κ_r·H̄_ref"),
                                           ("epo/frac_below_band", "tokens below κ_l·H̄_ref")], strict=True):
        for method in methods_in_order(runs):
            _banded(ax, [r for r in runs if r.method == method], key, colors[method], method, marker=".")
        ax.set(xlabel="step", ylabel="fraction of tokens", title=title)
        ax.legend(loc="best", fontsize="small")
    return _save(fig, out / "band_fractions.png")


def report(paths: list[str | Path], out: str | Path, last_n: int = DEFAULT_LAST_N,
           per_run_plots: bool = True) -> dict[str, Any]:
    """Write results.md, results.csv and the plots to ``out``; returns what was written."""
    runs = find_runs(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(runs, last_n)
    markdown = to_markdown(table, runs, last_n)
    (out / "results.md").write_text(markdown)
    write_csv(table, out / "results.csv")
    plots = [plot_success(runs, out), plot_entropy(runs, out), plot_band_fractions(runs, out)]
    plots += [p for m in methods_in_order(runs) if (p := plot_entropy_by_turn(runs, m, out)) is not None]
    if per_run_plots:
        for run in runs:
            plots += plot_run(run.path / "metrics.jsonl", out / "runs" / run.name)
    return {"table": table, "markdown": markdown, "results_md": out / "results.md",
            "results_csv": out / "results.csv", "plots": plots,
            "runs": [(r.method, r.seed, str(r.path)) for r in runs]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="Results table (mean ± std over seeds, last-N validation points) "
                                            "and plots over training runs.")
    p.add_argument("runs", nargs="+", help="run directories (<method>-seed<N>/ with metrics.jsonl), or folders "
                                           "holding them")
    p.add_argument("--out", required=True, help="output folder for results.md, results.csv and the plots")
    p.add_argument("--last-n", type=int, default=DEFAULT_LAST_N,
                   help=f"validation points at the end of each run to average (default {DEFAULT_LAST_N})")
    p.add_argument("--no-run-plots", action="store_true", help="skip each run's own plots")
    args = p.parse_args(argv)
    result = report(args.runs, args.out, args.last_n, per_run_plots=not args.no_run_plots)
    print(result["markdown"])
    print(f"table: {result['results_md']} and {result['results_csv']}")
    for plot in result["plots"]:
        print(f"plot: {plot}")
    return result


if __name__ == "__main__":
    main()
