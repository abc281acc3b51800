"""CPU mini-study: GRPO vs GRPO + entropy bonus vs GRPO + EPO, 3 seeds each, on the synthetic game.

One command (about 2 CPU cores; hours, not minutes — see ``docs/evaluation.md`` for measured times)::

    .venv/bin/python recipes/mini_study.py --out outputs/mini_study

What it runs (each method × seed into ``<out>/<method>-seed<N>/``, with ``metrics.jsonl``,
``train.log``, ``run.json`` and the final checkpoint):

| method | Hydra overrides on ``recipes/cpu_synthetic.yaml`` |
|---|---|
| ``grpo`` | ``epo.enable=false`` (the EPO trainer still logs entropy, H̄_ref and the band) |
| ``grpo_entropy`` | ``epo.use_smoothing=false``: λ·L_H only (Eq. 2), no smoothing, no β |
| ``grpo_epo`` | none: λ·L_H − β_k·α·L_smooth (Eq. 6) |

The tiny model and its warm start (``--warm-start-steps``, default: the demo's) are built once per seed
(``recipes/demo.py::prepare_model``) and shared by the three methods of that seed, so methods differ
only in their loss. Each run validates
on the fixed ``synthetic/val`` set every ``--test-freq`` steps. Finished runs (``run.json`` status
``complete``) are skipped, so an interrupted study resumes run by run. At the end the report
(``python -m verl_epo.report``) writes ``<out>/report/results.md`` (last-3 validation window) and
the plots.

Other options: ``--methods grpo grpo_epo``, ``--seeds 1 2 3``, ``--steps 30``, ``--test-freq 3``,
``--warm-start-steps N``, ``--plan`` (print the runs and exit), ``--report-only``; anything after
``--`` is passed to every training run as Hydra overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parent
if str(RECIPES) not in sys.path:
    sys.path.insert(0, str(RECIPES))

from demo import GAMES, log, prepare_model, train  # noqa: E402

GAME = "synthetic"
METHODS: dict[str, list[str]] = {
    "grpo": ["epo.enable=false"],
    "grpo_entropy": ["epo.use_smoothing=false"],
    "grpo_epo": [],
}
DEFAULT_SEEDS = (1, 2, 3)
DEFAULT_TEST_FREQ = 3


def run_dir(out: Path, method: str, seed: int) -> Path:
    """``<out>/<method>-seed<N>``: the name ``verl_epo.report`` reads method and seed from."""
    return out / f"{method}-seed{seed}"


def is_complete(folder: Path) -> bool:
    info = folder / "run.json"
    return info.is_file() and json.loads(info.read_text()).get("status") == "complete" and (
        folder / "metrics.jsonl").is_file()


def run_one(out: Path, method: str, seed: int, steps: int, test_freq: int, data: dict[str, Path],
            extra: list[str], warm_start_steps: int) -> Path:
    """Train one (method, seed) into its run directory; returns the directory."""
    folder = run_dir(out, method, seed)
    if is_complete(folder):
        log(f"{folder.name}: complete, skipped")
        return folder
    # an interrupted run starts over: a half-written checkpoint folder would make verl resume from it
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    game = dataclasses.replace(GAMES[GAME], warm_start_steps=warm_start_steps)
    model = prepare_model(GAME, game, out / "shared" / f"seed{seed}-warm{warm_start_steps}", seed)
    overrides = [*METHODS[method], f"trainer.test_freq={test_freq}",
                 f"trainer.experiment_name=mini-{method}-seed{seed}", *extra]
    info = {"method": method, "seed": seed, "steps": steps, "overrides": overrides, "model": str(model),
            "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (folder / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"{folder.name}: training {steps} steps ({' '.join(overrides) or 'no overrides'})")
    wall = train(GAMES[GAME], model, data, folder, steps, seed, overrides)
    info.update(status="complete", wall_seconds=round(wall, 1), finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    (folder / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"{folder.name}: done in {wall:.0f} s")
    return folder


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/mini_study", help="study folder (runs, shared models, report)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    p.add_argument("--steps", type=int, default=GAMES[GAME].steps, help="training steps per run")
    p.add_argument("--test-freq", type=int, default=DEFAULT_TEST_FREQ, help="validate every N steps")
    p.add_argument("--warm-start-steps", type=int, default=GAMES[GAME].warm_start_steps,
                   help="supervised warm-start steps of each seed's tiny model (default: the demo's)")
    p.add_argument("--last-n", type=int, default=3, help="validation points averaged per run in the table")
    p.add_argument("--plan", action="store_true", help="print the runs and their overrides, then exit")
    p.add_argument("--report-only", action="store_true", help="only (re)write the report from finished runs")
    args = p.parse_args(argv)
    if args.steps < 1 or args.test_freq < 1:
        p.error("--steps and --test-freq must be >= 1")
    out = Path(args.out)
    runs = [(m, s) for s in args.seeds for m in args.methods]  # seed-major: a seed's warm start is reused at once
    if args.plan:
        for method, seed in runs:
            print(f"{run_dir(out, method, seed)}: {' '.join(METHODS[method]) or '(EPO defaults)'}")
        return {"runs": runs}
    started = time.perf_counter()
    if not args.report_only:
        from env_adapters.dataset import build_dataset

        game = GAMES[GAME]
        data = build_dataset(out / "shared" / "data", train_set=game.train_set, val_set=game.val_set)
        for method, seed in runs:
            run_one(out, method, seed, args.steps, args.test_freq, data, extra, args.warm_start_steps)
    from verl_epo.report import report

    folders = [run_dir(out, m, s) for m, s in runs if is_complete(run_dir(out, m, s))]
    if not folders:
        raise SystemExit(f"[study] no finished run in {out}; run without --report-only first")
    result = report(folders, out / "report", last_n=args.last_n)
    print(result["markdown"])
    for plot in result["plots"]:
        if plot.parent == out / "report":
            log(f"plot: {plot}")
    log(f"table: {result['results_md']}; study took {time.perf_counter() - started:.0f} s")
    return result


if __name__ == "__main__":
    main()
