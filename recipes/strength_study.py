"""How strongly EPO acts, and at which strength it changes learning: one command, resumable run by run.

    .venv/bin/python recipes/strength_study.py --out outputs/strength --plan    # the runs and the budget
    .venv/bin/python recipes/strength_study.py --out outputs/strength           # train what is missing, report

The mini-study's four methods (``recipes/mini_study.py``: GRPO, + entropy bonus, EPO ``paper``, EPO
``hold``) at several λ (``epo.entropy_coef``; GRPO has none and runs once per set and seed) on the
corridor set (``synthetic/train`` → ``synthetic/val``) and the cascade set (``synthetic/cascade-train``
→ ``synthetic/cascade-val``), every method of a seed from the same warm start (the mini-study's, made
once per seed and shared by both sets). Every run measures EPO's share of its updates every
``--diagnostic-every`` steps (``epo.diagnostic_every``; the measurement does not change the update).

Runs go to ``<out>/<set>/<label>-seed<N>/`` with labels ``grpo`` and ``<method>_lam<λ>``; a finished
run (``run.json`` status ``complete``) is skipped, so rerunning the command continues the study.
The report: ``<out>/strength.md`` (``verl_epo.analysis.strength``: success, update shares, band
criterion, runaways and collapses per cell), ``<out>/entropy_by_strength.png`` (one figure), and per
set the mini-study's report in ``<out>/<set>/report/``. Anything after ``--`` goes to every run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parent
if str(RECIPES) not in sys.path:
    sys.path.insert(0, str(RECIPES))

from mini_study import (  # noqa: E402
    DEFAULT_LAST_N,
    DEFAULT_SEEDS,
    DEFAULT_STEPS,
    DEFAULT_TEST_FREQ,
    METHODS,
    data_dir,
    estimate_seconds,
    is_complete,
    run_dir,
    run_one,
    warm_dir,
)
from study_warm_start import WarmStartPlan, warm_start_until_learned  # noqa: E402

SETS = {"corridor": ("synthetic/train", "synthetic/val"),
        "cascade": ("synthetic/cascade-train", "synthetic/cascade-val")}
BASELINE = "grpo"
"""The λ-free method: EPO off."""
DEFAULT_COEFS = (1e-3, 1e-2, 1e-1)
"""The paper's λ and two larger ones (see docs/epo_band.md for the shares they gave)."""
DEFAULT_DIAGNOSTIC_EVERY = 2


def cells(methods: list[str], coefs: list[float]) -> list[tuple[str, float | None]]:
    """(method, λ) of every run of one seed and set: the baseline once, every other method at every λ."""
    return [(m, None) for m in methods if m == BASELINE] + [(m, c) for c in coefs for m in methods if m != BASELINE]


def main(argv: list[str] | None = None) -> dict:
    from verl_epo.analysis.strength import cell_label

    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/strength", help="study folder (runs, shared warm starts, report)")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--entropy-coefs", nargs="+", type=float, default=list(DEFAULT_COEFS), help="λ values")
    p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS[:3]))
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps per run")
    p.add_argument("--test-freq", type=int, default=DEFAULT_TEST_FREQ, help="validate every N steps")
    p.add_argument("--last-n", type=int, default=DEFAULT_LAST_N, help="validation points averaged per run")
    p.add_argument("--diagnostic-every", type=int, default=DEFAULT_DIAGNOSTIC_EVERY,
                   help="measure EPO's share of the update every N steps")
    p.add_argument("--plan", action="store_true", help="print the runs and the estimated budget, then exit")
    p.add_argument("--report-only", action="store_true", help="only (re)write the report from finished runs")
    args = p.parse_args(argv)
    if min(args.steps, args.test_freq, args.last_n, args.diagnostic_every) < 1 or min(args.entropy_coefs) <= 0:
        p.error("--steps, --test-freq, --last-n and --diagnostic-every must be >= 1, every λ > 0")
    out, plan = Path(args.out), WarmStartPlan()
    # set-major: a study stopped early has whole cells of the first set rather than pieces of both
    runs = [(task_set, seed, method, coef) for task_set in args.sets for seed in args.seeds
            for method, coef in cells(args.methods, args.entropy_coefs)]
    folder = {r: run_dir(out / r[0], cell_label(r[2], r[3]), r[1]) for r in runs}
    if args.plan:
        todo = [r for r in runs if not is_complete(folder[r])]
        for r in runs:
            print(f"{folder[r]}{'  (complete)' if r not in todo else ''}")
        budget = estimate_seconds(len(todo), len(args.seeds), args.steps, args.test_freq, plan)
        print(f"{len(runs)} runs, {len(todo)} to train: ~{budget['per_run']:.0f} s each, {budget['runs'] / 3600:.2f} h "
              f"of training, plus warm starts {budget['warm_min'] / 60:.0f}-{budget['warm_max'] / 60:.0f} min for "
              "seeds without one (2-core machine; two studies at once share it)")
        return {"runs": runs, "todo": todo, "budget": budget}
    started = time.perf_counter()
    if not args.report_only:
        from env_adapters.dataset import build_dataset

        data = {s: build_dataset(data_dir(out, *SETS[s]), train_set=SETS[s][0], val_set=SETS[s][1]) for s in args.sets}
        warm_starts: dict[int, dict] = {}
        for task_set, seed, method, coef in runs:
            if is_complete(folder[task_set, seed, method, coef]):
                continue
            if seed not in warm_starts:  # made once per seed (or found on disk), shared by every set
                warm_starts[seed] = warm_start_until_learned(warm_dir(out, seed, plan), seed, plan)
            if not warm_starts[seed]["learned"]:
                print(f"[strength] seed {seed}: the warm start never won {plan.threshold:g} of validation; skipped")
                continue
            overrides = [f"++epo.diagnostic_every={args.diagnostic_every}", *extra]
            if coef is not None:
                overrides.insert(0, f"epo.entropy_coef={coef}")
            run_one(out / task_set, method, seed, args.steps, args.test_freq, data[task_set], overrides,
                    warm_starts[seed], label=cell_label(method, coef))
    return report(out, runs, folder, args.last_n, started)


def report(out: Path, runs: list, folder: dict, last_n: int, started: float) -> dict:
    from verl_epo.analysis.runs import load_run
    from verl_epo.analysis.strength import cell_rows, plot_entropy_by_strength, to_markdown
    from verl_epo.analysis.study import study_report

    done = {r: folder[r] for r in runs if is_complete(folder[r])}
    if not done:
        raise SystemExit(f"[strength] no finished run in {out}; run without --report-only first")
    runs_by_set: dict[str, list] = {}
    for (task_set, *_), path in done.items():
        runs_by_set.setdefault(task_set, []).append(load_run(path))
    for task_set in runs_by_set:
        study_report([p for r, p in done.items() if r[0] == task_set], out / task_set / "report", last_n=last_n)
    rows = cell_rows(runs_by_set, last_n)
    markdown = to_markdown(rows, last_n)
    (out / "strength.md").write_text(markdown)
    figure = plot_entropy_by_strength(runs_by_set, out)
    print(markdown)
    print(f"[strength] {len(done)} of {len(runs)} runs finished; table {out / 'strength.md'}, figure {figure}; "
          f"took {math.ceil(time.perf_counter() - started)} s")
    return {"rows": rows, "markdown": markdown, "figure": figure, "done": done}


if __name__ == "__main__":
    main()
