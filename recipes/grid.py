"""The paper's grid of runs (games x methods x seeds, and chosen EPO ablations), then the report.

    python recipes/grid.py [--games sciworld alfworld] [--methods ppo ppo_epo grpo grpo_epo]
                           [--seeds 1 2 3] [--ablations no_beta ...] [--plan | --dry-run | --report]
                           [-- hydra overrides for every run]

Without a mode flag, runs every run of the grid one after another on this machine with
``recipes/run.sh`` (one run at a time holds all its GPUs), skipping runs that are finished (their
last checkpoint is at ``trainer.total_training_steps``); an interrupted run resumes from its last
checkpoint (verl's ``resume_mode: auto``), so the same command resumes the grid. A run that fails
is reported and the grid goes on. Then writes the report of each game (``verl_epo.analysis.report``: mean ±
std over seeds of the last validation points, plots) to ``<root>/report/<game>/``.

- ``--plan``: print one launch line per run not yet finished (for a cluster scheduler: each line is
  one job holding all GPUs of the run), and the report commands; runs nothing.
- ``--dry-run``: ``run.sh --dry-run`` of every run: composes and checks it (batch over all GPUs of
  ``trainer.nnodes`` x ``trainer.n_gpus_per_node``, ``epo:``, ``env:``) and prints its update count.
- ``--report``: only the reports, over the runs that have metrics.

Ablations (``recipes/ablation/``) are run on the EPO recipes of the grid, except those that switch
EPO off (verl's own entropy controls: ``clip_cov``, ``kl_cov``, ``entropy_bonus``), which are
baselines and run on the baseline recipes (``ppo``, ``grpo``). Overrides after ``--``
go to every run (e.g. ``recipe.model=...``, ``trainer.nnodes=2 +ray_kwargs.ray_init.address=auto``).
``VERL_EPO_ROOT`` (default ``outputs/``) is where data, runs and reports go, as for ``run.sh``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent
REPO = RECIPES_DIR.parent
GAMES = ("sciworld", "alfworld")
METHODS = ("ppo", "ppo_epo", "grpo", "grpo_epo")
SEEDS = (1, 2, 3)


@dataclass(frozen=True)
class GridRun:
    game: str
    method: str
    seed: int
    ablation: str | None = None

    @property
    def recipe(self) -> str:
        return f"{self.game}_{self.method}"

    @property
    def experiment(self) -> str:
        """The experiment name run.sh gives the run (its folder under <root>/runs/)."""
        middle = f"_{self.ablation}" if self.ablation else ""
        return f"{self.recipe}{middle}_seed{self.seed}"

    def overrides(self, extra: list[str]) -> list[str]:
        return [f"recipe.seed={self.seed}", *([f"ablation={self.ablation}"] if self.ablation else []), *extra]

    def command(self, extra: list[str], dry_run: bool = False) -> list[str]:
        return ["bash", "recipes/run.sh", *(["--dry-run"] if dry_run else []), self.recipe, *self.overrides(extra)]


def switches_epo_off(ablation: str) -> bool:
    """The ablation sets ``epo.enable: false``: a baseline with another entropy control."""
    import yaml

    tree = yaml.safe_load((RECIPES_DIR / "ablation" / f"{ablation}.yaml").read_text()) or {}
    return (tree.get("epo") or {}).get("enable") is False


def grid(games: list[str], methods: list[str], seeds: list[int], ablations: list[str]) -> list[GridRun]:
    """Methods x seeds per game, then each ablation x seeds of each EPO method (of each baseline
    method, for an ablation that switches EPO off)."""
    runs = [GridRun(g, m, s) for g in games for m in methods for s in seeds]
    runs += [GridRun(g, m, s, a) for g in games for a in ablations for m in methods
             if m.endswith("_epo") != switches_epo_off(a) for s in seeds]
    return runs


def root() -> Path:
    return Path(os.environ.get("VERL_EPO_ROOT", REPO / "outputs")).resolve()


def _compose_module():
    sys.path.insert(0, str(RECIPES_DIR))
    try:
        import compose
    finally:
        sys.path.pop(0)
    return compose


def composed(run: GridRun, extra: list[str]):
    """The run's config exactly as ``run.sh`` composes it (root, experiment name, overrides)."""
    return _compose_module().compose_recipe(
        run.recipe, [f"++recipe.root={root()}", f"trainer.experiment_name={run.experiment}", *run.overrides(extra)])


def check_run(run: GridRun, extra: list[str]) -> list[str]:
    """``run.sh --dry-run``'s checks in this process; returns the update-count lines."""
    compose = _compose_module()
    config = composed(run, extra)
    epo = compose.check_recipe(config, warn_missing_model=True)
    trainer = config.trainer
    gpus = f"{trainer.nnodes} node(s) x {trainer.n_gpus_per_node} GPUs"
    return [f"checks passed ({gpus}, EPO {'on' if epo is not None and epo.enable else 'off'})",
            *compose.update_plan(config, epo)[1:2]]


def run_state(run: GridRun, extra: list[str]) -> str:
    """``finished``, ``partial (step k of K)`` or ``todo``, from verl's checkpoint tracker file."""
    config = composed(run, extra)
    total = int(config.trainer.total_training_steps)
    tracker = Path(config.trainer.default_local_dir) / "latest_checkpointed_iteration.txt"
    if not tracker.is_file():
        return "todo"
    step = int(tracker.read_text().strip() or 0)
    return "finished" if step >= total else f"partial (step {step} of {total})"


def report_command(game: str, runs: list[GridRun], ready_only: bool = False) -> list[str] | None:
    """``verl_epo.analysis.report`` over the game's runs of the grid (``ready_only``: those with metrics;
    None when there is none)."""
    folders = [root() / "runs" / run.experiment for run in runs if run.game == game]
    if ready_only:
        folders = [f for f in folders if (f / "metrics.jsonl").is_file()]
    if not folders:
        return None
    return ["python", "-m", "verl_epo.analysis.report", *map(str, folders), "--out", str(root() / "report" / game)]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", choices=GAMES, default=list(GAMES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ablations = sorted(p.stem for p in (RECIPES_DIR / "ablation").glob("*.yaml"))
    parser.add_argument("--ablations", nargs="*", choices=ablations, default=[],
                        help="EPO ablations to run on the grid's EPO recipes")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="print one launch line per run; run nothing")
    mode.add_argument("--dry-run", action="store_true", help="compose and check every run (run.sh --dry-run)")
    mode.add_argument("--report", action="store_true", help="only write the reports")
    args = parser.parse_args(argv)
    runs = grid(args.games, args.methods, args.seeds, args.ablations)

    if args.plan:
        print(f"# {len(runs)} runs, one launch line each (finished runs left out, partial ones resume)")
        for run in runs:
            state = run_state(run, extra)
            print(f"# {run.experiment}: finished" if state == "finished" else shlex.join(run.command(extra)))
        print("# then the report of each game (mean ± std over seeds of the last 3 validation points):")
        for game in args.games:
            print(f"python -m verl_epo.analysis.report ${{VERL_EPO_ROOT:-outputs}}/runs/{game}_* "
                  f"--out ${{VERL_EPO_ROOT:-outputs}}/report/{game}")
        return 0
    failed = []
    if args.dry_run:
        for i, run in enumerate(runs, 1):
            try:
                lines = check_run(run, extra)
            except ValueError as err:  # RecipeError, EPOConfigError: the message names the key
                failed.append(run.experiment)
                lines = [f"rejected: {err}"]
            print(f"[grid] {i}/{len(runs)} {run.experiment}: " + "\n    ".join(lines), flush=True)
    elif not args.report:
        for i, run in enumerate(runs, 1):
            if run_state(run, extra) == "finished":
                print(f"[grid] {i}/{len(runs)} {run.experiment}: finished, skipped", flush=True)
                continue
            print(f"[grid] {i}/{len(runs)} {run.experiment}: {shlex.join(run.command(extra))}", flush=True)
            done = subprocess.run(run.command(extra), cwd=REPO)
            if done.returncode != 0:
                failed.append(run.experiment)
                print(f"[grid] {run.experiment} failed (exit status {done.returncode}); going on", flush=True)
    if not args.dry_run:
        for game in args.games:
            command = report_command(game, runs, ready_only=True)
            if command is not None:
                subprocess.run([sys.executable, *command[1:]], cwd=REPO, check=False)
            else:
                print(f"[grid] no {game} run has metrics yet; no report", flush=True)
    if failed:
        print(f"[grid] {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
