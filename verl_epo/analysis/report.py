"""Results table and plots over several training runs (methods × seeds): ``verl-epo-report``.

``verl-epo-report RUN_DIR... --out DIR [--last-n 3]`` (or ``python -m verl_epo.analysis.report``)

Reads run directories (``verl_epo.analysis.runs``: a directory without ``metrics.jsonl`` stands for
the run directories inside it), writes the table (``results.md``, ``results.csv``;
``verl_epo.analysis.tables``: mean ± sample std over seeds of each run's mean over its last N
validation points, never the best point) and the figures (``verl_epo.analysis.plots``) to ``DIR``,
with each run's own figures in ``DIR/runs/<run>/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from verl_epo.analysis.plots import plot_run, plot_runs
from verl_epo.analysis.runs import find_runs
from verl_epo.analysis.tables import DEFAULT_LAST_N, results_table, strength_table, to_markdown, write_csv


def report(paths: list[str | Path], out: str | Path, last_n: int = DEFAULT_LAST_N,
           per_run_plots: bool = True) -> dict[str, Any]:
    """Write results.md, results.csv and the plots to ``out``; returns what was written."""
    runs = find_runs(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(runs, last_n)
    markdown = to_markdown(table, runs, last_n)
    if strength := strength_table(runs):
        markdown += "\n" + strength
    (out / "results.md").write_text(markdown)
    write_csv(table, out / "results.csv")
    plots = plot_runs(runs, out)
    if per_run_plots:
        for run in runs:
            plots += plot_run(run.path / "metrics.jsonl", out / "runs" / run.name)
    return {"table": table, "markdown": markdown, "results_md": out / "results.md",
            "results_csv": out / "results.csv", "plots": plots, "runs_read": runs,
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
