"""CPU mini-study: GRPO, + entropy bonus, + EPO (paper), + EPO (hold) on the synthetic game, 5 seeds.

One command (2 CPU cores; about 1.6-2.3 hours with the defaults, measured budget below; ``--plan``
prints the estimate)::

    .venv/bin/python recipes/mini_study.py --out outputs/mini_study

Built so that the method, not the warm start, decides:

1. **Warm start until sampled play wins, per seed** (``recipes/study_warm_start.py``): the demo's
   noisy-expert warm start for ``--warm-start-steps`` steps, then ``--warm-start-round`` more at a
   time until the model wins at least ``--success-threshold`` of the validation episodes when
   sampling at T = 1 (64 episodes, measured with ``env_adapters.evaluate``), or ``--warm-start-max``
   steps are spent; a seed that never gets there is reported and not trained. Every method of a
   seed starts from the same model.
2. **Four methods** (Hydra overrides on ``recipes/cpu_synthetic.yaml``):

   | method | overrides |
   |---|---|
   | ``grpo`` | ``epo.enable=false`` (the EPO trainer still logs entropy, H̄_ref and the band) |
   | ``grpo_entropy`` | ``epo.use_smoothing=false``: λ·L_H only (Eq. 2), the entropy bonus |
   | ``grpo_epo`` | ``epo.band_mode=paper``: Eq. 6 exactly |
   | ``grpo_epo_hold`` | ``epo.band_mode=hold``: the bonus mirrored above κ_r·H̄_ref (``docs/epo_band.md``) |

3. **Fixed validation set**: ``synthetic/val`` (16 tasks), before training and every ``--test-freq``
   steps; the table averages each run's last ``--last-n`` validation points.
4. **Report** (``verl_epo.analysis.study``, on top of ``verl_epo.analysis.report``): mean ± std of last-N
   validation success per method, runs whose entropy ran away (criterion fixed in
   ``verl_epo.analysis.study.RunawayCriterion`` before running), fraction of steps with tokens above
   the band, the warm start per seed, and ``entropy_per_seed.png`` (one panel per method, band
   shaded), in ``<out>/report/``.

Each run goes to ``<out>/<method>-seed<N>/`` (``metrics.jsonl``, ``train.log``, ``run.json``, the
final checkpoint); finished runs (``run.json`` status ``complete``) and finished warm starts are
skipped, so an interrupted study resumes run by run. Options: ``--methods``, ``--seeds``,
``--steps``, ``--test-freq``, ``--last-n``, ``--plan`` (print the runs and the estimated budget,
build nothing), ``--report-only``, ``--train-set`` / ``--val-set`` (RL on other task sets; the warm
start and its check stay on the corridor: ``synthetic/cascade-train`` / ``synthetic/cascade-val`` ask
whether a method escapes the rule it was taught); anything after ``--`` goes to every training run as
Hydra overrides.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parent
if str(RECIPES) not in sys.path:
    sys.path.insert(0, str(RECIPES))

from demo import GAMES, log, train  # noqa: E402
from study_warm_start import CHECK_FILE, GAME, WarmStartPlan, warm_start_until_learned  # noqa: E402

METHODS: dict[str, list[str]] = {
    "grpo": ["epo.enable=false"],
    "grpo_entropy": ["epo.use_smoothing=false", "++epo.band_mode=paper"],
    "grpo_epo": ["++epo.band_mode=paper"],
    "grpo_epo_hold": ["++epo.band_mode=hold"],
}
DEFAULT_SEEDS = (1, 2, 3, 4, 5)
DEFAULT_STEPS = 12
DEFAULT_TEST_FREQ = 4
DEFAULT_LAST_N = 2

# Budget model (seconds on the 2-core machine, vLLM CPU rollout, measured from the first study's runs'
# train.log time stamps with little else running: Ray start to "ready to fit" 71 s, 14 steps with 5
# validations 160 s, shutdown 14 s; a warm-start step 0.07-0.13 s; a sampled-success check of 64
# episodes 62 s, most of it vLLM's start-up).
RUN_STARTUP_S = 90.0
"""Ray and worker start-up (the vLLM CPU engine dominates), model load, final checkpoint, shutdown."""
STEP_S = 10.0
"""One GRPO step: rollout of 4 tasks x 4 episodes, old log-probs, 4 updates, weight sync."""
VALIDATION_S = 8.0
"""One validation pass over the 16 synthetic/val tasks."""
WARM_START_STEP_S = 0.13
"""One supervised warm-start step (batch 8, one thread)."""
CHECK_S = 65.0
"""One warm-start check: sampled success on 64 validation episodes, plus rule accuracy."""


def run_dir(out: Path, method: str, seed: int) -> Path:
    """``<out>/<method>-seed<N>``: the name ``verl_epo.analysis.runs`` reads method and seed from."""
    return out / f"{method}-seed{seed}"


def warm_dir(out: Path, seed: int, plan: WarmStartPlan) -> Path:
    """One folder per (seed, warm-start plan): another plan never reuses a model made under this one."""
    return out / "shared" / (f"seed{seed}-warm{plan.first_steps}+{plan.round_steps}to{plan.max_steps}"
                             f"-success{plan.threshold:g}")


def data_dir(out: Path, train_set: str, val_set: str) -> Path:
    """``<out>/shared/data`` for the game's own sets, ``data-<train>-<val>`` for others."""
    game = GAMES[GAME]
    if (train_set, val_set) == (game.train_set, game.val_set):
        return out / "shared" / "data"
    return out / "shared" / ("data-" + "-".join(name.replace("/", "_") for name in (train_set, val_set)))


def is_complete(folder: Path) -> bool:
    info = folder / "run.json"
    return info.is_file() and json.loads(info.read_text()).get("status") == "complete" and (
        folder / "metrics.jsonl").is_file()


def validations(steps: int, test_freq: int) -> int:
    """Validation passes of one run: before training, every ``test_freq`` steps, and at the end."""
    return 1 + len({*range(test_freq, steps + 1, test_freq), steps})


def estimate_seconds(runs: int, seeds: int, steps: int, test_freq: int, plan: WarmStartPlan) -> dict[str, float]:
    """The study's wall time by the budget model above: warm starts (best case: the first round
    learns; worst case: every round up to the maximum) plus the training runs."""
    rounds_max = 1 + (plan.max_steps - plan.first_steps) // plan.round_steps
    warm_min = seeds * (plan.first_steps * WARM_START_STEP_S + CHECK_S)
    warm_max = seeds * (plan.max_steps * WARM_START_STEP_S + rounds_max * CHECK_S)
    per_run = RUN_STARTUP_S + steps * STEP_S + validations(steps, test_freq) * VALIDATION_S
    return {"per_run": per_run, "runs": runs * per_run, "warm_min": warm_min, "warm_max": warm_max,
            "total_min": runs * per_run + warm_min, "total_max": runs * per_run + warm_max}


def print_plan(out: Path, runs: list[tuple[str, int]], seeds: list[int], steps: int, test_freq: int,
               plan: WarmStartPlan) -> dict[str, float]:
    for seed in seeds:
        print(f"{warm_dir(out, seed, plan)}: warm start {plan.first_steps} steps, then +{plan.round_steps} until "
              f"sampled success >= {plan.threshold:g} (at most {plan.max_steps})")
    for method, seed in runs:
        print(f"{run_dir(out, method, seed)}: {' '.join(METHODS[method])}")
    budget = estimate_seconds(len(runs), len(seeds), steps, test_freq, plan)
    print(f"{len(runs)} runs x {steps} steps, {validations(steps, test_freq)} validations each: "
          f"~{budget['per_run']:.0f} s per run ({RUN_STARTUP_S:.0f} s start-up, {STEP_S:.0f} s per step, "
          f"{VALIDATION_S:.0f} s per validation), {budget['runs'] / 3600:.2f} h; warm starts "
          f"{budget['warm_min'] / 60:.0f}-{budget['warm_max'] / 60:.0f} min; estimated total "
          f"{budget['total_min'] / 3600:.1f}-{budget['total_max'] / 3600:.1f} h (2-core machine, other jobs beside it)")
    return budget


def run_one(out: Path, method: str, seed: int, steps: int, test_freq: int, data: dict[str, Path],
            extra: list[str], warm: dict, label: str | None = None) -> Path:
    """Train one (method, seed) from the seed's warm-started model; returns the run directory.
    ``label`` (default ``method``) names the run's folder and its method in the report."""
    label = label or method
    folder = run_dir(out, label, seed)
    if is_complete(folder):
        log(f"{folder.name}: complete, skipped")
        return folder
    # an interrupted run starts over: a half-written checkpoint folder would make verl resume from it
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    overrides = [*METHODS[method], f"trainer.test_freq={test_freq}",
                 f"trainer.experiment_name=mini-{label}-seed{seed}", *extra]
    info = {"method": label, "seed": seed, "steps": steps, "overrides": overrides, "model": warm["model"],
            "train_files": str(data["train"]), "val_files": str(data["val"]),
            "warm_start_steps": warm["steps"], "sampled_success": warm["sampled_success"], "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (folder / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"{folder.name}: training {steps} steps ({' '.join(overrides)})")
    wall = train(GAMES[GAME], Path(warm["model"]), data, folder, steps, seed, overrides)
    info.update(status="complete", wall_seconds=round(wall, 1), finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    (folder / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"{folder.name}: done in {wall:.0f} s")
    return folder


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    defaults = WarmStartPlan()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/mini_study", help="study folder (runs, shared models, report)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps per run")
    p.add_argument("--test-freq", type=int, default=DEFAULT_TEST_FREQ, help="validate every N steps")
    p.add_argument("--last-n", type=int, default=DEFAULT_LAST_N, help="validation points averaged per run")
    p.add_argument("--warm-start-steps", type=int, default=defaults.first_steps,
                   help="supervised steps before the first check")
    p.add_argument("--warm-start-round", type=int, default=defaults.round_steps,
                   help="further supervised steps per round while sampled success is below the threshold")
    p.add_argument("--warm-start-max", type=int, default=defaults.max_steps,
                   help="most supervised steps per seed; a seed still below the threshold is not trained")
    p.add_argument("--success-threshold", type=float, default=defaults.threshold,
                   help="sampled (T = 1) validation success of the warm-started model that counts as ready")
    p.add_argument("--train-set", default=GAMES[GAME].train_set, help="task set RL trains on")
    p.add_argument("--val-set", default=GAMES[GAME].val_set, help="task set RL validates on")
    p.add_argument("--plan", action="store_true", help="print the runs and the estimated budget, then exit")
    p.add_argument("--report-only", action="store_true", help="only (re)write the report from finished runs")
    args = p.parse_args(argv)
    if args.steps < 1 or args.test_freq < 1 or args.last_n < 1:
        p.error("--steps, --test-freq and --last-n must be >= 1")
    try:
        plan = WarmStartPlan(args.warm_start_steps, args.warm_start_round, args.warm_start_max, args.success_threshold)
    except ValueError as err:
        p.error(str(err))
    out = Path(args.out)
    runs = [(m, s) for s in args.seeds for m in args.methods]  # seed-major: a seed's warm start is used at once
    if args.plan:
        return {"runs": runs, "budget": print_plan(out, runs, args.seeds, args.steps, args.test_freq, plan)}
    started = time.perf_counter()
    warm_starts: dict[int, dict] = {}
    if not args.report_only:
        from env_adapters.dataset import build_dataset

        data = build_dataset(data_dir(out, args.train_set, args.val_set), train_set=args.train_set,
                             val_set=args.val_set)
        for seed in args.seeds:
            warm = warm_start_until_learned(warm_dir(out, seed, plan), seed, plan)
            warm_starts[seed] = warm
            if not warm["learned"]:
                log(f"seed {seed}: sampled success {warm['sampled_success']:.3f} < {plan.threshold:g} after "
                    f"{warm['steps']} warm-start steps; not trained (reported)")
                continue
            for method in args.methods:
                run_one(out, method, seed, args.steps, args.test_freq, data, extra, warm)
    for seed in args.seeds:
        check = warm_dir(out, seed, plan) / CHECK_FILE
        if seed not in warm_starts and check.is_file():
            warm_starts[seed] = json.loads(check.read_text())
    from verl_epo.analysis.study import study_report

    folders = [run_dir(out, m, s) for m, s in runs if is_complete(run_dir(out, m, s))]
    if not folders:
        raise SystemExit(f"[study] no finished run in {out}; run without --report-only first")
    result = study_report(folders, out / "report", last_n=args.last_n, warm_starts=warm_starts)
    print(result["markdown"])
    print(result["study_markdown"])
    log(f"tables: {result['results_md']}, {result['study_md']}; figure: {out / 'report' / 'entropy_per_seed.png'}; "
        f"study took {math.ceil(time.perf_counter() - started)} s")
    return result


if __name__ == "__main__":
    main()
