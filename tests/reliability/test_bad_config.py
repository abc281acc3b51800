"""Bad configuration fails at start, with a message naming the key or the path.

Each case runs the real ``python -m verl.trainer.main_ppo`` in CPU mode on recipes/cpu_synthetic
with one bad setting. To keep the file fast, all cases run at once against one private Ray
cluster (``ray start --head`` in its own temp dir and port, no auth token: other Ray users of this
machine are not touched), so each run pays only its own imports.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
RUN_TIMEOUT = 240  # seconds one failing run may take (a loaded 2-core machine)
HANG_BOUND = 150  # the invalid env.* case: bounded so a run that does not stop cannot stall the suite

SMALL = [
    "data.train_batch_size=2", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4", "env.max_turns=4", "env.history_turns=1",
    "data.max_prompt_length=256", "trainer.val_before_train=false", "trainer.test_freq=-1",
    "trainer.total_training_steps=1", "trainer.save_freq=-1", "trainer.logger=[console]",
]

# case -> (overrides, what the error must name)
CASES = {
    "epo_value": (["epo.kappa_high=-1"], "epo.kappa_high"),
    "epo_unknown_key": (["+epo.alpah=0.1"], "alpah"),
    "batch": (["actor_rollout_ref.actor.ppo_mini_batch_size=8"], "ppo_mini_batch_size"),
    "model_path": (["actor_rollout_ref.model.path={root}/no-such-model"], "{root}/no-such-model"),
    "data_file": (["data.train_files={root}/no-such-data/train.parquet"], "{root}/no-such-data/train.parquet"),
    "env_value": (["env.max_turns=0"], "env.max_turns"),
}


@dataclass
class Outcome:
    returncode: int | None  # None: still running at the bound, then killed
    seconds: float
    log: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kill_tree(marker: str) -> None:
    """Kill every process whose command line holds ``marker``, and their descendants."""
    roots = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    victims = {p.pid: p for root in roots for p in [root, *_children(root)]}
    for proc in victims.values():
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(victims.values()), timeout=15)


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    """A random tiny model and synthetic-game parquet files (quality is irrelevant here)."""
    from env_adapters.corpus import write_corpus
    from env_adapters.dataset import build_dataset
    from verl_epo.embedded.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("badcfg")
    write_corpus(["synthetic"], root / "corpus.txt", episodes=5)
    build_tiny_model([root / "corpus.txt"], root / "model", hidden=32, layers=2, heads=1)
    data = build_dataset(root / "data", train_set="synthetic/train", val_set="synthetic/val", limit=4)
    return {"root": root, "model": root / "model", **data}


@pytest.fixture(scope="module")
def ray_address():
    """A private Ray head for this module's runs, killed (by its own processes) afterwards."""
    temp = tempfile.mkdtemp(prefix="rel-ray-", dir="/tmp")
    port = _free_port()
    env = {**os.environ, "VERL_EPO_CPU": "1", "RAY_AUTH_MODE": "disabled",
           "RAY_OVERRIDE_RESOURCES": '{"CPU": 16.0, "GPU": 8.0}'}
    cmd = [str(RAY), "start", "--head", f"--port={port}", f"--temp-dir={temp}",
           f"--ray-client-server-port={_free_port()}", "--disable-usage-stats", "--include-dashboard=false"]
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        # the node's own address (TransferQueue's sockets bind to it), as `ray start` prints it
        found = re.search(r"ray start --address='([^']+)'", started.stdout + started.stderr)
        assert found, started.stdout[-3000:]
        yield found.group(1)
    finally:
        _kill_tree(temp)


@pytest.fixture(scope="module")
def outcomes(request, tiny_inputs, ray_address):
    """Every selected case run at once; case name -> Outcome."""
    root = tiny_inputs["root"]
    selected = [item.callspec.params["case"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]

    def run(case: str) -> Outcome:
        overrides = [o.format(root=root) for o in CASES[case][0]]
        out = root / case
        out.mkdir()
        cmd = [
            sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(REPO / "recipes"),
            "--config-name", "cpu_synthetic", f"actor_rollout_ref.model.path={tiny_inputs['model']}",
            f"data.train_files={tiny_inputs['train']}", f"data.val_files={tiny_inputs['val']}",
            f"trainer.default_local_dir={out / 'ckpt'}", f"+ray_kwargs.ray_init.address={ray_address}",
            *SMALL, *overrides,
        ]
        env = {**os.environ, "VERL_EPO_CPU": "1", "RAY_AUTH_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
        bound = HANG_BOUND if case == "env_value" else RUN_TIMEOUT
        start = time.monotonic()
        with open(out / "run.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out,
                                    start_new_session=True)
            try:
                code: int | None = proc.wait(timeout=bound)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = None
        return Outcome(code, time.monotonic() - start, (out / "run.log").read_text(errors="replace"))

    with ThreadPoolExecutor(len(selected)) as pool:
        return dict(zip(selected, pool.map(run, selected), strict=True))


_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception)[\w.()]*: ")


def _error_lines(log: str) -> str:
    """The log's exception lines (``SomeError: message``; not hydra's list of all overrides)."""
    return "\n".join(line for line in log.splitlines() if _EXCEPTION_LINE.match(line))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_setting_fails_at_start_naming_it(case, outcomes, tiny_inputs):
    outcome = outcomes[case]
    named = CASES[case][1].format(root=tiny_inputs["root"])
    tail = outcome.log[-4000:]
    assert outcome.returncode is not None, f"{case}: still running after {outcome.seconds:.0f} s\n{tail}"
    assert outcome.returncode != 0, f"{case}: exit 0\n{tail}"
    errors = _error_lines(outcome.log)
    assert named in errors, f"{case}: no error line names {named!r}; error lines:\n{errors[-3000:]}"
    assert "Training Progress" not in outcome.log and "step:1 " not in outcome.log
