"""Interrupting a real training run leaves no process behind.

A short CPU run of ``python -m verl.trainer.main_ppo`` on ScienceWorld with ``env.isolate=true``
(a random tiny model: quality is irrelevant) is started; once episodes are being played (game
worker processes and their ScienceWorld JVMs exist) the trainer process alone gets SIGINT (as
from Ctrl-C) or SIGTERM (as from a job scheduler). Within a bound, the trainer must exit and no
process it started may remain: Ray's GCS, raylet and workers, vLLM's engine, the game workers, the
JVMs; nor any shared-memory segment it created in /dev/shm.

Every process of the run is found by a marker variable in its environment (inherited by Ray's
processes, the game workers and the JVMs alike), so a process reparented after its parent died
is still found, and other users' processes on this machine are never counted or touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from run_watch import assert_nothing_left, describe, run_processes

REPO = Path(__file__).resolve().parents[2]
MARKER = "VERL_EPO_RELIABILITY_RUN"
START_BOUND = 420  # seconds until episodes run (imports, Ray, FSDP workers, first JVMs on 2 cores)
EXIT_BOUND = 60  # seconds the trainer may take to exit after the signal
CLEAN_BOUND = 30  # further seconds until every process of the run is gone
GAME_WORKER = "from env_adapters.isolated import serve"


@pytest.fixture(scope="module")
def sciworld_inputs(tmp_path_factory):
    """A random tiny model and two ScienceWorld tasks per split."""
    from env_adapters.corpus import write_corpus
    from env_adapters.dataset import build_dataset
    from verl_epo.embedded.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("interrupt")
    write_corpus(["synthetic"], root / "corpus.txt", episodes=5)
    build_tiny_model([root / "corpus.txt"], root / "model", hidden=32, layers=2, heads=1)
    data = build_dataset(root / "data", train_set="sciworld/l0-train-small", val_set="sciworld/l0-test-small",
                         limit=2)
    return {"root": root, "model": root / "model", **data}


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


@pytest.mark.timeout(900)
@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM],
                         ids=["SIGINT", "SIGTERM"])  # ~70 s each on 2 cores: one in the default suite
def test_interrupted_training_leaves_no_orphans(sig, sciworld_inputs):
    tag = uuid.uuid4().hex
    out = sciworld_inputs["root"] / sig.name
    out.mkdir()
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(REPO / "recipes"),
        "--config-name", "cpu_sciworld", f"actor_rollout_ref.model.path={sciworld_inputs['model']}",
        f"data.train_files={sciworld_inputs['train']}", f"data.val_files={sciworld_inputs['val']}",
        f"trainer.default_local_dir={out / 'ckpt'}", "++env.isolate=true", "++env.step_timeout=60",
        "data.train_batch_size=2", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4", "trainer.val_before_train=false",
        "trainer.test_freq=-1", "trainer.save_freq=-1", "trainer.total_training_steps=2", "trainer.logger=[console]",
    ]
    env = {**os.environ, "VERL_EPO_CPU": "1", MARKER: tag, "HYDRA_FULL_ERROR": "1"}
    log = open(out / "train.log", "w")  # noqa: SIM115 - closed in finally
    started = time.time()
    trainer = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
    try:
        # wait until episodes are being played: game workers and JVMs of this run exist
        deadline = time.monotonic() + START_BOUND
        while True:
            assert trainer.poll() is None, f"training ended early: {(out / 'train.log').read_text()[-4000:]}"
            procs = run_processes(MARKER, tag)
            workers = [p for p in procs if GAME_WORKER in _cmdline(p)]
            jvms = [p for p in procs if "py4j.GatewayServer" in _cmdline(p)]
            if workers and jvms:
                break
            assert time.monotonic() < deadline, f"no episodes after {START_BOUND} s:\n" + describe(procs)
            time.sleep(1)
        time.sleep(2)  # a few turns into the episodes
        before = run_processes(MARKER, tag)
        trainer.send_signal(sig)
        try:
            trainer.wait(timeout=EXIT_BOUND)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the trainer did not exit within {EXIT_BOUND} s of {sig.name}")
        assert_nothing_left(MARKER, tag, started, CLEAN_BOUND,
                            after=f"{sig.name} to the trainer ({len(before)} processes before it)")
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
        for proc in run_processes(MARKER, tag):  # never leave them to other tests, even on failure
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        log.close()
