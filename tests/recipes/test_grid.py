"""``recipes/grid.py``: the grid, its plan, a resumable sequential run, the dry-run checks, the report.

The sequential run uses the real ``run.sh`` (composing, checks, data and logger set-up) with the
training replaced: ``PYTHON`` is a wrapper that, for ``main_ppo``, writes what a finished run leaves
(verl's checkpoint tracker at the last step, a metrics file where ``VERL_FILE_LOGGER_PATH`` says)
and runs every other command with the real interpreter. The report is the real ``verl_epo.analysis.report``.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GRID = REPO / "recipes" / "grid.py"

WRAPPER = """#!/usr/bin/env bash
for arg in "$@"; do
    if [[ "$arg" == verl.trainer.main_ppo ]]; then
        run="$(dirname "$VERL_FILE_LOGGER_PATH")"
        echo "$run" >> "{record}"
        mkdir -p "$run/checkpoints"
        echo 125 > "$run/checkpoints/latest_checkpointed_iteration.txt"
        for step in 5 10 15; do
            echo "{{\\"step\\": $step, \\"data\\": {{\\"val-aux/sciworld/l0-test-small/success/mean@1\\": 0.5}}}}" \\
                >> "$VERL_FILE_LOGGER_PATH"
        done
        exit 0
    fi
done
exec "{python}" "$@"
"""


def load_grid():
    spec = importlib.util.spec_from_file_location("recipes_grid", GRID)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


grid = load_grid()


def test_the_grid_is_methods_x_seeds_then_ablations_of_the_epo_recipes():
    runs = grid.grid(["sciworld", "alfworld"], list(grid.METHODS), [1, 2, 3], ["no_beta", "ref_window"])
    assert len(runs) == 2 * 4 * 3 + 2 * 2 * 3 * 2
    assert len({r.experiment for r in runs}) == len(runs)
    assert runs[0].command([]) == ["bash", "recipes/run.sh", "sciworld_ppo", "recipe.seed=1"]
    ablated = [r for r in runs if r.ablation]
    assert all(r.method.endswith("_epo") for r in ablated)
    assert ablated[0].experiment == "sciworld_ppo_epo_no_beta_seed1"  # the name run.sh gives it
    assert ablated[0].command(["trainer.nnodes=2"])[-2:] == ["ablation=no_beta", "trainer.nnodes=2"]


@pytest.mark.parametrize("ablation", ["clip_cov", "kl_cov", "entropy_bonus"])
def test_verl_entropy_controls_run_on_the_baseline_recipes(ablation):
    """verl's own entropy controls switch EPO off: they are baselines beside EPO, run on the
    grid's baseline recipes, and each composes and passes the checks."""
    runs = grid.grid(["sciworld", "alfworld"], list(grid.METHODS), [1], [ablation])
    ablated = [r for r in runs if r.ablation]
    assert sorted({r.method for r in ablated}) == ["grpo", "ppo"]
    assert ablated[0].experiment == f"sciworld_ppo_{ablation}_seed1"
    config = grid.composed(ablated[0], [])
    assert config.epo.enable is False
    assert grid.check_run(ablated[0], [])[0].endswith("EPO off)")


def finish(root: Path, experiment: str, step: int) -> None:
    tracker = root / "runs" / experiment / "checkpoints" / "latest_checkpointed_iteration.txt"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(str(step))


def run_grid(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "VERL_EPO_ROOT": str(root), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(GRID), *args], capture_output=True, text=True, timeout=900,
                          env=env, cwd=REPO)


def test_plan_leaves_out_finished_runs_and_resumes_partial_ones(tmp_path):
    finish(tmp_path, "sciworld_grpo_seed2", 125)
    finish(tmp_path, "sciworld_grpo_seed3", 50)
    proc = run_grid(tmp_path, "--plan", "--games", "sciworld", "--methods", "grpo")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "bash recipes/run.sh sciworld_grpo recipe.seed=1" in lines
    assert "# sciworld_grpo_seed2: finished" in lines
    assert "bash recipes/run.sh sciworld_grpo recipe.seed=3" in lines  # resumes from step 50
    assert any(line.startswith("python -m verl_epo.analysis.report ") and "runs/sciworld_*" in line for line in lines)


@pytest.mark.timeout(1500)
def test_sequential_grid_is_resumable_and_ends_with_the_report(tmp_path):
    record = tmp_path / "launched.txt"
    wrapper = tmp_path / "python"
    wrapper.write_text(WRAPPER.format(record=record, python=sys.executable))
    wrapper.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    root = tmp_path / "root"
    for split, name in (("train", "sciworld/l0-train"), ("val", "sciworld/l0-test-small")):
        data = root / "data" / name / f"{split}.parquet"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.touch()
    finish(root, "sciworld_grpo_epo_seed2", 125)
    args = ("--games", "sciworld", "--methods", "grpo_epo", "--seeds", "1", "2", "--", f"recipe.model={model}")

    proc = run_grid(root, *args, env={"PYTHON": str(wrapper)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert record.read_text().split() == [str(root / "runs" / "sciworld_grpo_epo_seed1")]
    assert "sciworld_grpo_epo_seed2: finished, skipped" in proc.stdout
    table = (root / "report" / "sciworld" / "results.md").read_text()
    assert "| sciworld_grpo_epo | 1 | 50.0 |" in table  # seed 1's last three points (seed 2: no metrics)

    again = run_grid(root, *args, env={"PYTHON": str(wrapper)})
    assert again.returncode == 0 and again.stdout.count("finished, skipped") == 2
    assert len(record.read_text().split()) == 1  # nothing launched twice


def test_dry_run_checks_every_run_for_a_multi_node_cluster(tmp_path):
    proc = run_grid(tmp_path, "--dry-run", "--games", "alfworld", "--methods", "ppo_epo", "--seeds", "1", "--",
                    "trainer.nnodes=2", "+ray_kwargs.ray_init.address=auto")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "checks passed (2 node(s) x 8 GPUs, EPO on)" in proc.stdout
    assert "optimizer updates" in proc.stdout
    bad = run_grid(tmp_path, "--dry-run", "--games", "alfworld", "--methods", "ppo_epo", "--seeds", "1", "--",
                   "trainer.nnodes=3")  # 128 rollouts do not split over 24 GPUs
    assert bad.returncode == 1 and "rejected" in bad.stdout and "24 GPUs" in bad.stdout


def test_recipes_readme_holds_the_plan():
    readme = (REPO / "recipes" / "README.md").read_text()
    planned = [shlex.join(r.command([])) for r in grid.grid(list(grid.GAMES), list(grid.METHODS), [1, 2, 3], [])]
    assert all(line in readme for line in planned), "recipes/README.md lacks the grid's --plan output"
