"""``run.sh`` sends verl's file logger into the run folder, and ``verl-epo-report`` reads it.

The launch itself is replaced (``PYTHON`` is a wrapper that records what ``main_ppo`` would get
and runs every other command with the real interpreter), so ``run.sh``'s own composing, checks and
override building run for real. verl's real ``FileLogger`` then writes the metrics where the
recorded environment says, and ``verl_epo.analysis.runs`` reads the run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = "sciworld_grpo_epo"

WRAPPER = """#!/usr/bin/env bash
for arg in "$@"; do
    if [[ "$arg" == verl.trainer.main_ppo ]]; then
        {{ printf '%s\\n' "$@"; echo "ENV VERL_FILE_LOGGER_PATH=$VERL_FILE_LOGGER_PATH"; }} >> "{record}"
        exit 0
    fi
done
exec "{python}" "$@"
"""


def launch(tmp_path: Path, *overrides: str) -> list[str]:
    """Run ``run.sh`` with the launch recorded; returns what main_ppo would have received."""
    record = tmp_path / "launch.txt"
    record.unlink(missing_ok=True)
    wrapper = tmp_path / "python"
    wrapper.write_text(WRAPPER.format(record=record, python=sys.executable))
    wrapper.chmod(0o755)
    root = tmp_path / "root"
    for split, name in (("train", "sciworld/l0-train"), ("val", "sciworld/l0-test-small")):
        data = root / "data" / name / f"{split}.parquet"  # run.sh builds missing sets; these exist
        data.parent.mkdir(parents=True, exist_ok=True)
        data.touch()
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    env = {**os.environ, "PYTHON": str(wrapper), "VERL_EPO_ROOT": str(root), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(["bash", str(REPO / "recipes" / "run.sh"), RECIPE, f"recipe.model={model}", *overrides],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return record.read_text().splitlines()


def logger_path(args: list[str]) -> str:
    [env] = [a for a in args if a.startswith("ENV VERL_FILE_LOGGER_PATH=")]
    return env.split("=", 1)[1]


def test_run_sh_logs_to_the_run_folder_and_the_report_reads_it(tmp_path):
    from verl.utils.tracking import FileLogger

    from verl_epo.analysis.runs import find_runs

    run_dir = tmp_path / "root" / "runs" / f"{RECIPE}_seed1"
    args = launch(tmp_path, "trainer.logger=[console,tensorboard]")
    first = logger_path(args)
    assert first == str(run_dir / "metrics.jsonl")
    assert args[-3:-1] == ["trainer.logger=[console,tensorboard,file]",
                         f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH='{first}'"]

    def write(path: str, steps: range, value: float) -> None:
        os.environ["VERL_FILE_LOGGER_PATH"] = path
        try:
            log = FileLogger("verl_epo", f"{RECIPE}_seed1")
        finally:
            del os.environ["VERL_FILE_LOGGER_PATH"]
        for step in steps:
            log.log({"env/success": value, "val-aux/sciworld/l0-test-small/success/mean@1": value}, step)
        log.finish()

    write(first, range(1, 6), 0.25)
    # a resumed run: verl's file logger would truncate metrics.jsonl, so run.sh picks a new file
    second = logger_path(launch(tmp_path))
    assert second != first and Path(second).parent == run_dir and Path(second).name.startswith("metrics.")
    write(second, range(5, 8), 0.5)

    [run] = find_runs([tmp_path / "root" / "runs"])
    assert (run.method, run.seed) == (RECIPE, 1)
    assert run.metrics["env/success"] == {1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25, 5: 0.5, 6: 0.5, 7: 0.5}
    assert json.loads(Path(first).read_text().splitlines()[0])["step"] == 1


def test_a_file_logger_already_listed_is_not_added_twice(tmp_path):
    args = launch(tmp_path, "trainer.logger=[console,file]")
    assert args[-3] == "trainer.logger=[console,file]"
