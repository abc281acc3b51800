"""The mini-study's own table and figure, on top of ``verl_epo.analysis.report``: did the method decide?

``python -m verl_epo.analysis.study RUN_DIR... --out DIR [--last-n 3] [--warm-starts FILE...]``

Reads the same run directories as :mod:`verl_epo.analysis.report` (and writes its table and plots
too), then adds, per method over seeds:

- validation success: mean ± sample std over seeds of each run's mean over its last N validation
  points (``report.results_table``, never the best point);
- **entropy runaways**: how many runs' entropy ran away, by :class:`RunawayCriterion`, which is
  fixed here before any study is run: the trajectory entropy (``epo/trajectory_entropy``, Eq. 2)
  is above ``nats`` at some step, or above ``band_factor`` × the band's top
  (``epo/band_high`` = κ_r·H̄_ref) for ``consecutive`` steps in a row;
- **tokens above the band**: the fraction of a run's steps with any token above κ_r·H̄_ref
  (``epo/frac_above_band`` > 0) and the mean fraction of tokens above it, mean ± std over seeds;

and per seed: the warm start (supervised steps, sampled success at T = 1, rule accuracy, answer loss, from the study's
``warm_start_check.json`` files) and the validation success of the warm-started model (each run's
first validation point, before training; mean over the seed's runs). Files in ``DIR``:
``study.md``, ``study.json`` and ``entropy_per_seed.png`` (``plots.plot_entropy_per_seed``).

Pure analysis: reads files, imports nothing from the games or from verl.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from verl_epo.analysis.plots import BAND_HIGH, ENTROPY, plot_entropy_per_seed
from verl_epo.analysis.report import report
from verl_epo.analysis.runs import Run, methods_in_order, source_of, validation_metrics
from verl_epo.analysis.tables import DEFAULT_LAST_N, results_table

FRAC_ABOVE = "epo/frac_above_band"


@dataclass(frozen=True)
class RunawayCriterion:
    """When a run's entropy counts as having run away (fixed before the study is run)."""

    nats: float = 3.0
    """Trajectory entropy above this at any step (uniform over the tiny model's 585 tokens: 6.37;
    warm-started policies start at 0.1-0.9)."""
    band_factor: float = 1.5
    """... or above this multiple of the band's top κ_r·H̄_ref ..."""
    consecutive: int = 3
    """... for this many consecutive logged steps."""

    def describe(self) -> str:
        return (f"trajectory entropy (Eq. 2) > {self.nats:g} nats at any step, or > {self.band_factor:g} × "
                f"the band's top κ_r·H̄_ref for {self.consecutive} consecutive steps")


RUNAWAY = RunawayCriterion()

INVALID = "env/invalid_actions"
TURNS = "env/turns"


@dataclass(frozen=True)
class CollapseCriterion:
    """When a run counts as having collapsed into invalid actions (fixed before the strength study)."""

    rate: float = 0.5
    """Invalid actions per turn (``env/invalid_actions`` / ``env/turns``, the training batch's means) at
    or above this ..."""
    consecutive: int = 3
    """... for this many consecutive logged steps."""

    def describe(self) -> str:
        return (f"invalid actions per turn (env/invalid_actions / env/turns) >= {self.rate:g} for "
                f"{self.consecutive} consecutive steps")


COLLAPSE = CollapseCriterion()


def collapse(run: Run, criterion: CollapseCriterion = COLLAPSE) -> dict[str, Any]:
    """Whether ``run`` collapsed into invalid actions: ``{"collapsed": bool, "step": first step it did or None}``."""
    invalid, turns = run.metrics.get(INVALID, {}), run.metrics.get(TURNS, {})
    streak = 0
    for step in sorted(s for s in invalid if turns.get(s)):
        streak = streak + 1 if invalid[step] / turns[step] >= criterion.rate else 0
        if streak >= criterion.consecutive:
            return {"collapsed": True, "step": step}
    return {"collapsed": False, "step": None}


def runaway(run: Run, criterion: RunawayCriterion = RUNAWAY) -> dict[str, Any]:
    """Whether ``run``'s entropy ran away, and the first step at which the criterion was met.

    Returns:
        ``{"ran_away": bool, "step": int | None, "why": "nats" | "band" | None}``.
    """
    entropy = run.metrics.get(ENTROPY, {})
    top = run.metrics.get(BAND_HIGH, {})
    streak = 0
    for step in sorted(entropy):
        if entropy[step] > criterion.nats:
            return {"ran_away": True, "step": step, "why": "nats"}
        above = step in top and entropy[step] > criterion.band_factor * top[step]
        streak = streak + 1 if above else 0
        if streak >= criterion.consecutive:
            return {"ran_away": True, "step": step, "why": "band"}
    return {"ran_away": False, "step": None, "why": None}


def band_stats(run: Run) -> dict[str, Any]:
    """Steps logged with a band, steps with any token above it, their fraction, the mean fraction of
    tokens above the band, and the run's peak trajectory entropy."""
    fractions = run.metrics.get(FRAC_ABOVE, {})
    with_band = [s for s in fractions if s in run.metrics.get(BAND_HIGH, {})]  # step 0 has no band yet
    above = [s for s in with_band if fractions[s] > 0]
    entropy = run.metrics.get(ENTROPY, {})
    return {
        "steps_with_band": len(with_band),
        "steps_above": len(above),
        "frac_steps_above": len(above) / len(with_band) if with_band else None,
        "mean_frac_tokens_above": statistics.fmean(fractions[s] for s in with_band) if with_band else None,
        "peak_entropy": max(entropy.values()) if entropy else None,
    }


def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def method_summary(runs: list[Run], last_n: int = DEFAULT_LAST_N,
                   criterion: RunawayCriterion = RUNAWAY) -> list[dict[str, Any]]:
    """One entry per method: seeds, last-N validation success, runaways, band statistics."""
    keys = validation_metrics(runs)
    table = results_table(runs, last_n)
    summary = []
    for method in methods_in_order(runs):
        mine = sorted((r for r in runs if r.method == method), key=lambda r: r.seed)
        per_run = {r.seed: {**band_stats(r), "runaway": runaway(r, criterion), "collapse": collapse(r)} for r in mine}
        success = next((e for e in table if e["method"] == method and keys and e["metric"] == keys[0]), None)
        frac_steps = [s["frac_steps_above"] for s in per_run.values() if s["frac_steps_above"] is not None]
        frac_tokens = [s["mean_frac_tokens_above"] for s in per_run.values()
                       if s["mean_frac_tokens_above"] is not None]
        summary.append({
            "method": method, "seeds": [r.seed for r in mine],
            "validation_metric": keys[0] if keys else None,
            "success": None if success is None else {k: success[k] for k in ("mean", "std", "per_seed", "n_seeds")},
            "runaways": sum(s["runaway"]["ran_away"] for s in per_run.values()),
            "runaway_seeds": [seed for seed, s in per_run.items() if s["runaway"]["ran_away"]],
            "collapse_seeds": [seed for seed, s in per_run.items() if s["collapse"]["collapsed"]],
            "frac_steps_above": _spread(frac_steps), "frac_tokens_above": _spread(frac_tokens),
            "per_seed": per_run,
        })
    return summary


def seed_summary(runs: list[Run], warm_starts: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per seed: the warm start's record and the warm-started model's validation success (each
    run's first validation point, before any update; mean over the seed's runs)."""
    keys = validation_metrics(runs)
    warm_starts = warm_starts or {}
    rows = []
    for seed in sorted({r.seed for r in runs} | set(warm_starts)):
        first = []
        for run in (r for r in runs if r.seed == seed):
            points = run.metrics.get(keys[0], {}) if keys else {}
            if points:
                first.append(points[min(points)])
        record = warm_starts.get(seed, {})
        rows.append({"seed": seed, "warm_start_steps": record.get("steps"),
                     "sampled_success": record.get("sampled_success"), "rule_accuracy": record.get("accuracy"),
                     "answer_loss": record.get("answer_loss"), "learned": record.get("learned"),
                     "initial_success": statistics.fmean(first) if first else None,
                     "runs": sum(r.seed == seed for r in runs)})
    return rows


def _pct(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    text = f"{100 * entry['mean']:.1f}"
    return text + (f" ± {100 * entry['std']:.1f}" if entry.get("std") is not None else "")


def _of_seeds(hit: list[int], seeds: list[int]) -> str:
    """'1 of 3 (seed 2)': how many of a method's seeds met a criterion, and which."""
    return f"{len(hit)} of {len(seeds)}" + (f" (seed {', '.join(map(str, hit))})" if hit else "")


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def to_markdown(methods: list[dict[str, Any]], seeds: list[dict[str, Any]], last_n: int,
                criterion: RunawayCriterion = RUNAWAY) -> str:
    """The study's two tables (methods, seeds) and how every number was taken."""
    metric = next((m["validation_metric"] for m in methods if m["validation_metric"]), None)
    title = f"{source_of(metric)} success (%)" if metric else "validation success (%)"
    lines = [f"| method | seeds | {title} | entropy ran away | collapsed into invalid actions | steps with tokens "
             "above the band (%) | tokens above the band (%) |", "|---|---|---|---|---|---|---|"]
    for m in methods:
        lines.append(f"| {m['method']} | {', '.join(map(str, m['seeds']))} | {_pct(m['success'])} | "
                     f"{_of_seeds(m['runaway_seeds'], m['seeds'])} | {_of_seeds(m['collapse_seeds'], m['seeds'])} | "
                     f"{_pct(m['frac_steps_above'])} | {_pct(m['frac_tokens_above'])} |")
    lines += ["", "| seed | warm-start steps | sampled success at the check (%) | rule accuracy | answer loss | "
              "ready | validation success before RL (%) | runs |", "|---|---|---|---|---|---|---|---|"]
    for s in seeds:
        initial = "–" if s["initial_success"] is None else f"{100 * s['initial_success']:.1f}"
        learned = "–" if s["learned"] is None else ("yes" if s["learned"] else "no")
        sampled = "–" if s["sampled_success"] is None else f"{100 * s['sampled_success']:.1f}"
        lines.append(f"| {s['seed']} | {_num(s['warm_start_steps'], 'd')} | {sampled} | "
                     f"{_num(s['rule_accuracy'], '.2f')} | "
                     f"{_num(s['answer_loss'], '.3f')} | {learned} | {initial} | {s['runs']} |")
    lines += ["", f"Success: mean ± sample std (ddof=1) over seeds of each run's mean over its last {last_n} "
              "validation points (never the best point). Entropy ran away: " + criterion.describe() + ". Collapsed: "
              + COLLAPSE.describe() + ". Steps "
              "with tokens above the band: a run's steps (from step 1, when H̄_ref exists) with any token above "
              "κ_r·H̄_ref; tokens above the band: a run's mean over steps of the fraction of its tokens above it; "
              "both mean ± std over seeds. Sampled success at the check: the warm-started model's success at "
              "T = 1 on 64 validation episodes (4 sampling seeds), the warm start's stopping criterion (ready: it "
              "reached the threshold). Rule accuracy: fraction of the clean expert's turns on the validation "
              "tasks that greedy decoding of the warm-started model reproduces. Validation success before RL: "
              "each run's first validation point (the warm-started model), mean over the seed's runs."]
    return "\n".join(lines) + "\n"


def read_warm_starts(paths: list[str | Path]) -> dict[int, dict[str, Any]]:
    """``warm_start_check.json`` records (``recipes/study_warm_start.py``) by seed."""
    records = {}
    for path in map(Path, paths):
        record = json.loads(path.read_text())
        records[int(record["seed"])] = record
    return records


def study_report(paths: list[str | Path], out: str | Path, last_n: int = DEFAULT_LAST_N,
                 warm_starts: dict[int, dict[str, Any]] | None = None,
                 criterion: RunawayCriterion = RUNAWAY) -> dict[str, Any]:
    """``verl_epo.analysis.report``'s table and plots, plus ``study.md``, ``study.json``, ``entropy_per_seed.png``."""
    out = Path(out)
    base = report(paths, out, last_n)
    runs = base["runs_read"]
    methods = method_summary(runs, last_n, criterion)
    seeds = seed_summary(runs, warm_starts)
    markdown = to_markdown(methods, seeds, last_n, criterion)
    (out / "study.md").write_text(markdown)
    (out / "study.json").write_text(json.dumps({"criterion": asdict(criterion), "collapse": asdict(COLLAPSE),
                                                "last_n": last_n, "methods": methods,
                                                "seeds": seeds}, indent=2, default=str) + "\n")
    plots = [*base["plots"], plot_entropy_per_seed(runs, out)]
    return {**base, "plots": plots, "study_md": out / "study.md", "study_markdown": markdown,
            "methods": methods, "seeds": seeds}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="The mini-study's tables (success, entropy runaways, tokens above the "
                                            "band, warm starts per seed) and per-seed entropy figure.")
    p.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--last-n", type=int, default=DEFAULT_LAST_N, help="validation points averaged per run")
    p.add_argument("--warm-starts", nargs="*", default=[], help="warm_start_check.json files, one per seed")
    args = p.parse_args(argv)
    result = study_report(args.runs, args.out, args.last_n, read_warm_starts(args.warm_starts))
    print(result["markdown"])
    print(result["study_markdown"])
    return result


if __name__ == "__main__":
    main()
