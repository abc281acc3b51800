"""Shared set-up of the end-to-end tests: a tiny model warm-started on expert play, and data.

Everything is real: the synthetic game, the tiny Qwen2 model, verl's trainer and Ray, in the
embedded CPU mode. Runs are kept small (2 tasks x 2 rollouts, 6 turns) to fit the CI budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from run_watch import assert_nothing_left, weight_sync_socket

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
MARKER = "VERL_EPO_E2E_RUN"
CLEAN_BOUND = 30  # seconds after the trainer's exit until every process of the run is gone

SMALL = [
    "data.train_batch_size=2",
    "actor_rollout_ref.rollout.n=2",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
    "env.max_turns=6",
    "env.history_turns=1",
    "data.max_prompt_length=256",
    "trainer.val_before_train=false",
    "trainer.test_freq=-1",
    "trainer.logger=[console,file]",
]


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory):
    """Tiny model (warm-started on expert play) and parquet files for the synthetic game."""
    from env_adapters.corpus import write_corpus
    from env_adapters.dataset import build_dataset
    from env_adapters.episode import EpisodeSettings
    from env_adapters.expert import expert_rows
    from verl_epo.embedded.tiny_model import build_tiny_model
    from verl_epo.embedded.warm_start import warm_start

    root = tmp_path_factory.mktemp("e2e")
    write_corpus(["synthetic"], root / "corpus.txt", episodes=20)
    build_tiny_model([root / "corpus.txt"], root / "init", hidden=32, layers=2, heads=1)
    rows, _ = expert_rows("synthetic/train", EpisodeSettings(max_turns=6, history_turns=1), limit=16)
    warm_start(root / "init", [r["messages"] for r in rows], root / "model", steps=40, seed=0)
    data = build_dataset(root / "data", train_set="synthetic/train", val_set="synthetic/val", limit=4)
    return {"root": root, "model": root / "model", **data}


def run_training(setup: dict, out: Path, recipe: str = "cpu_synthetic", overrides: list[str] | None = None,
                 timeout: int = 900, tag: str | None = None) -> list[dict]:
    """Run ``python -m verl.trainer.main_ppo`` in CPU mode; returns the file logger's rows.

    Without ``tag``, checks that the run left nothing behind. A caller running trainings at once
    passes each its own ``tag`` and checks after all have ended: while one run shuts down, its
    segments are briefly unused, and a check by the other would count them."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    check_left, tag = tag is None, tag or uuid.uuid4().hex
    env = {**os.environ, "VERL_EPO_CPU": "1", "VERL_FILE_LOGGER_PATH": str(metrics), "HYDRA_FULL_ERROR": "1",
           "RAY_DEDUP_LOGS": "0", MARKER: tag}
    started = time.time()
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(RECIPES), "--config-name", recipe,
        f"actor_rollout_ref.model.path={setup['model']}", f"data.train_files={setup['train']}",
        f"data.val_files={setup['val']}", f"trainer.default_local_dir={out / 'ckpt'}", *SMALL, *(overrides or []),
    ]
    with open(out / "train.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=out)
    if proc.returncode != 0:
        tail = (out / "train.log").read_text()[-6000:]
        raise AssertionError(f"training failed (exit {proc.returncode}); log tail:\n{tail}")
    if check_left:
        assert_nothing_left(MARKER, tag, started, CLEAN_BOUND)
    weight_sync_socket(out)
    return [json.loads(line) for line in metrics.read_text().splitlines()]


@pytest.fixture(scope="session")
def train():
    """The ``run_training`` function, for tests."""
    return run_training


@pytest.fixture(scope="session")
def nothing_left():
    """``check(tag, started)``: no process and no /dev/shm segment of the run with ``tag`` is left."""
    return lambda tag, started: assert_nothing_left(MARKER, tag, started, CLEAN_BOUND)


@pytest.fixture(scope="session")
def launch():
    """For a test that launches verl itself: ``recipes`` folder, ``small`` (the e2e sizes), the run
    ``marker`` variable and the ``clean_bound``."""
    return SimpleNamespace(recipes=RECIPES, small=SMALL, marker=MARKER, clean_bound=CLEAN_BOUND)
