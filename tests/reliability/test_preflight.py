"""A bad model folder, data file or setting stops a GPU recipe's launch before Ray starts.

Each case runs the real ``python -m verl.trainer.main_ppo`` on a GPU recipe (so verl's own Hydra
entry point runs the recipe's ``hydra.callbacks``) with one bad setting; everything else points
at files that exist. The launch must exit with status 2 before ``ray.init`` (verl prints
``ray init kwargs`` right before it), with an error line naming the key or path. ``run.sh`` is
checked too: it must stop before building any data. In-process cases check ``preflight`` itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPE = "sciworld_grpo_epo"
BOUND = 240  # seconds; a process import of verl on a loaded 2-core machine takes 10-60 s

# case -> (overrides, what the error line must name)
CASES = {
    "model_path": (["recipe.model={root}/no-such-model"], "{root}/no-such-model"),
    "model_not_a_model": (["recipe.model={root}/data"], "config.json"),
    "train_file": (["data.train_files={root}/no-such-data/train.parquet"], "{root}/no-such-data/train.parquet"),
    "val_file": (["data.val_files={root}/no-such-data/val.parquet"], "data.val_files"),
    "epo_value": (["epo.kappa_high=-1"], "epo.kappa_high"),
    "epo_unknown_key": (["+epo.alpah=0.1"], "alpah"),
    "two_schedules": (["epo.updates_per_step=4"], "epo.rows_per_update"),
    "batch": (["actor_rollout_ref.actor.ppo_mini_batch_size=32"], "ppo_mini_batch_size"),
    "env_value": (["env.max_turns=0"], "env.max_turns"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A model folder (only its config.json is read before Ray) and data files that exist."""
    root = tmp_path_factory.mktemp("preflight")
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text("{}")
    (root / "data").mkdir()
    for name in ("train", "val"):
        (root / "data" / f"{name}.parquet").write_bytes(b"")
    return root


def good_overrides(root: Path) -> list[str]:
    return [f"recipe.model={root}/model", f"data.train_files={root}/data/train.parquet",
            f"data.val_files={root}/data/val.parquet", f"recipe.root={root}/out"]


@pytest.fixture(scope="module")
def outcomes(request, files):
    selected = [item.callspec.params["case"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]

    def run(case: str) -> tuple[int | None, float, str]:
        bad = [o.format(root=files) for o in CASES[case][0]]
        cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(REPO / "recipes"),
               "--config-name", RECIPE, *good_overrides(files), *bad, f"hydra.run.dir={files}/hydra/{case}"]
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BOUND, cwd=files,
                                  env={**os.environ, "HYDRA_FULL_ERROR": "1"}, start_new_session=True)
        except subprocess.TimeoutExpired as err:
            return None, time.monotonic() - start, str(err.stdout) + str(err.stderr)
        return proc.returncode, time.monotonic() - start, proc.stdout + proc.stderr

    with ThreadPoolExecutor(min(len(selected), 4)) as pool:
        return dict(zip(selected, pool.map(run, selected), strict=True))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_setting_stops_main_ppo_before_ray(case, outcomes, files):
    code, seconds, log = outcomes[case]
    named = CASES[case][1].format(root=files)
    tail = log[-3000:]
    assert "ray init kwargs" not in log, f"{case}: Ray was started\n{tail}"
    assert code == 2, f"{case}: exit status {code} after {seconds:.0f} s\n{tail}"
    errors = [line for line in log.splitlines() if "Error: " in line]
    assert any(named in line for line in errors), f"{case}: no error line names {named!r}\n{tail}"
    assert "launch stopped before Ray started" in log


def test_run_sh_stops_before_building_data(tmp_path):
    env = {**os.environ, "VERL_EPO_ROOT": str(tmp_path / "root")}
    proc = subprocess.run(["bash", str(REPO / "recipes" / "run.sh"), "sciworld_ppo_epo",
                           f"recipe.model={tmp_path}/no-such-model"],
                          capture_output=True, text=True, timeout=BOUND, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"actor_rollout_ref.model.path={tmp_path}/no-such-model: no such folder" in proc.stderr
    assert not (tmp_path / "root").exists()  # nothing built, nothing launched


# ----- preflight in-process ---------------------------------------------------------------------------


def compose(overrides: list[str]):
    sys.path.insert(0, str(REPO / "recipes"))
    try:
        from compose import compose_recipe
    finally:
        sys.path.pop(0)
    return compose_recipe(RECIPE, overrides)


def test_a_good_launch_passes(files):
    from verl_epo.preflight import preflight

    preflight(compose(good_overrides(files)))


def test_hugging_face_ids_pass_unless_offline_and_not_cached(files, monkeypatch, tmp_path):
    from verl_epo.preflight import PreflightError, check_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    check_model_path("actor_rollout_ref.model.path", "Qwen/Qwen2.5-7B-Instruct")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PreflightError, match="HF_HUB_OFFLINE"):
        check_model_path("actor_rollout_ref.model.path", "Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(PreflightError, match="is a file"):
        check_model_path("critic.model.path", str(files / "model" / "config.json"))
