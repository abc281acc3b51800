"""GRPO + EPO on a real Ray cluster of two nodes on this host (``trainer.nnodes=2``).

Two ``ray start --block`` processes (a head and a second raylet, one fake "GPU" and 16 logical
CPUs each, in their own Ray temp dir so no other training on this host finds the cluster) and the
verl driver joining them through ``+ray_kwargs.ray_init.address``, as on a real cluster: one FSDP
rank and one vLLM replica per node, one agent-loop worker per node (verl places them round-robin
over the nodes), games in the agent-loop workers. One 2-step run; each test checks one part of it:

- the agent-loop workers ran on both nodes and each played every step's share of the episodes
  (Ray's state API: the actors' nodes and their finished ``generate_sequences`` calls);
- each node's vLLM replica generated every step with the weights of the last update (its own log
  line: replica, node, weight version) and the rollout's log-probs equal the actor's on every
  token of the batch, so on every replica's tokens; the weight-sync sockets are per node;
- the entropy history is in the step-2 checkpoint;
- nothing is left on either node once the cluster is stopped (processes, /dev/shm).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from run_watch import assert_nothing_left

pytestmark = [pytest.mark.slow, pytest.mark.recipes]  # make test-recipes; two vLLM engines at once

NODE_CPUS = 16  # logical CPUs per node: verl's placement groups and TransferQueue actors take CPUs
OBJECT_STORE_BYTES = 300 * 2**20
STEPS = 2
STOP_WAIT_S = 60.0
# Ray turns token authentication on wherever ~/.ray/auth_token exists; this cluster, its driver and
# the state-API client here all run without it (one setting for all, or they cannot talk)
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}
REPLICA_LINE = re.compile(r"rollout replica (\d+) on node ([0-9a-f]+) generates with the weights of step (\S+)")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_env(marker: str, tag: str) -> dict[str, str]:
    """What every node of the cluster is started with: CPU mode and the run's marker (every Ray and
    vLLM process inherits it), and no address or resources of another cluster."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_OVERRIDE_RESOURCES")}
    return {**env, **NO_AUTH, "VERL_EPO_CPU": "1", "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0", marker: tag}


def start_node(temp_dir: Path, env: dict[str, str], log: Path, head: str | None = None,
               dashboard_port: int = 0) -> subprocess.Popen:
    """``ray start --block``: the head (``head`` None) or a node joining ``head`` (ip:port)."""
    ray = str(Path(sys.executable).with_name("ray"))
    ports = ["--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
             "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port"]
    cmd = [ray, "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
           f"--num-cpus={NODE_CPUS}", "--num-gpus=1", f"--object-store-memory={OBJECT_STORE_BYTES}",
           "--disable-usage-stats", *(f"{flag}={free_port()}" for flag in ports)]
    if head is None:
        cmd += ["--head", f"--port={head_port(temp_dir)}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={free_port()}"]
    else:
        cmd += [f"--address={head}"]
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def head_port(temp_dir: Path) -> int:
    """The head's GCS port, chosen once per cluster (kept beside its temp dir)."""
    path = temp_dir.parent / f"{temp_dir.name}.port"
    if not path.exists():
        path.write_text(str(free_port()))
    return int(path.read_text())


def stop_node(proc: subprocess.Popen) -> None:
    """SIGTERM to ``ray start --block`` stops its node (raylet, workers, GCS); SIGKILL its process
    group if it does not end in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def alive_nodes(dashboard: str) -> list[dict]:
    """The cluster's alive nodes (Ray's state API), ``[]`` while the dashboard is not up."""
    from ray.util.state import list_nodes

    try:
        return [n for n in list_nodes(address=dashboard, detail=True) if n.state == "ALIVE"]
    except Exception:  # the dashboard is still starting: connection refused, 503
        return []


def wait_for_nodes(dashboard: str, count: int, procs: list[subprocess.Popen], timeout: float = 180.0) -> list:
    deadline = time.monotonic() + timeout
    while len(nodes := alive_nodes(dashboard)) < count:
        dead = [p.args[-1] for p in procs if p.poll() is not None]
        assert not dead and time.monotonic() < deadline, f"Ray nodes not up ({len(nodes)}/{count}); exited: {dead}"
        time.sleep(2)
    return nodes


def cluster_state(dashboard: str) -> dict:
    """What Ray recorded of the job: node ids, every actor (class, node, pid) and every finished
    actor task (name, node)."""
    from ray.util.state import list_actors, list_tasks

    nodes = alive_nodes(dashboard)
    actors = [{"class": a.class_name, "node": a.node_id, "pid": a.pid}
              for a in list_actors(address=dashboard, detail=True, limit=10_000)]
    tasks = [{"name": t.name, "node": t.node_id, "state": t.state}
             for t in list_tasks(address=dashboard, detail=True, limit=10_000)]
    return {"nodes": sorted(n.node_id for n in nodes), "actors": actors, "tasks": tasks}


def train_on_cluster(setup: dict, out: Path, address: str, launch: SimpleNamespace,
                     tag: str) -> subprocess.CompletedProcess:
    """``python -m verl.trainer.main_ppo`` joining the cluster at ``address``: 2 nodes x 1 "GPU"."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    env = {**os.environ, **NO_AUTH, "VERL_EPO_CPU": "1", "HYDRA_FULL_ERROR": "1", "RAY_DEDUP_LOGS": "0",
           launch.marker: tag}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo",
        "--config-path", str(launch.recipes), "--config-name", "cpu_synthetic",
        f"actor_rollout_ref.model.path={setup['model']}", f"data.train_files={setup['train']}",
        f"data.val_files={setup['val']}", f"trainer.default_local_dir={out / 'ckpt'}", *launch.small,
        "trainer.nnodes=2", "trainer.n_gpus_per_node=1", "actor_rollout_ref.rollout.agent.num_workers=2",
        f"trainer.total_training_steps={STEPS}", f"trainer.save_freq={STEPS}",
        f"+ray_kwargs.ray_init.address={address}",
        # the trainer runs on either node: its file logger's path travels in the job's runtime env
        f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH='{metrics}'",
    ]
    with open(out / "train.log", "w") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=1200, cwd=out)


@pytest.fixture(scope="module")
def two_node_run(tiny_setup, launch) -> Iterator[dict]:
    """Start the cluster, train, read Ray's state, stop the cluster, then check what is left."""
    out = tiny_setup["root"] / "two_nodes"
    out.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp")) / "ray"  # short: Unix socket paths
    tag, started = uuid.uuid4().hex, time.time()
    dashboard_port = free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    address = f"127.0.0.1:{head_port(temp_dir)}"
    env = node_env(launch.marker, tag)
    procs = [start_node(temp_dir, env, out / "head.log", dashboard_port=dashboard_port)]
    result: dict = {"out": out}
    patch = pytest.MonkeyPatch()
    for key, value in NO_AUTH.items():
        patch.setenv(key, value)  # the state-API client
    try:
        wait_for_nodes(dashboard, 1, procs)
        procs.append(start_node(temp_dir, env, out / "node2.log", head=address))
        result["nodes_at_start"] = sorted(n.node_id for n in wait_for_nodes(dashboard, 2, procs))
        wall = time.monotonic()
        proc = train_on_cluster(tiny_setup, out, address, launch, tag)
        result["wall_s"] = time.monotonic() - wall
        result["returncode"] = proc.returncode
        result["state"] = cluster_state(dashboard)
    finally:
        for node in reversed(procs):
            stop_node(node)
        patch.undo()
    try:
        assert_nothing_left(launch.marker, tag, started, launch.clean_bound, after="the two-node cluster")
        result["left"] = None
    except AssertionError as err:
        result["left"] = str(err)
    shutil.rmtree(temp_dir.parent, ignore_errors=True)
    temp_dir.parent.with_suffix(".port").unlink(missing_ok=True)
    print(f"two-node training: {result['wall_s']:.0f} s", file=sys.stderr)
    yield result


@pytest.fixture(scope="module")
def trained(two_node_run) -> dict:
    """The run, asserted to have trained ``STEPS`` steps; with its metrics rows and log."""
    out = two_node_run["out"]
    log = (out / "train.log").read_text()
    assert two_node_run["returncode"] == 0, f"training failed (exit {two_node_run['returncode']}):\n{log[-6000:]}"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), [r["step"] for r in rows]
    return {**two_node_run, "rows": rows, "log": log}


def test_two_nodes_each_with_one_gpu_slot(trained):
    nodes = trained["state"]["nodes"]
    assert len(nodes) == 2 and nodes == trained["nodes_at_start"], (nodes, trained["nodes_at_start"])
    actors = trained["state"]["actors"]
    fsdp = [a for a in actors if a["class"].endswith("WorkerDict")]  # verl's fused actor/rollout workers
    assert sorted(a["node"] for a in fsdp) == nodes, f"one FSDP rank per node expected: {fsdp}"


def test_agent_loops_and_games_ran_on_both_nodes(trained):
    """verl spreads its agent-loop workers over the nodes and gives each an equal share of the
    batch; the games run inside them (``env.isolate=false``)."""
    nodes = trained["state"]["nodes"]
    workers = [a for a in trained["state"]["actors"] if "AgentLoopWorker" in a["class"]]
    assert sorted(w["node"] for w in workers) == nodes, f"one agent-loop worker per node expected: {workers}"
    calls = [t for t in trained["state"]["tasks"]
             if "AgentLoopWorker" in t["name"] and t["name"].endswith(".generate_sequences")]
    for node in nodes:
        done = [t for t in calls if t["node"] == node and t["state"] == "FINISHED"]
        assert len(done) >= STEPS, f"node {node}: {len(done)} finished agent-loop batches (steps {STEPS}): {calls}"
    for row in trained["rows"]:
        data = row["data"]
        assert data["env/turns"] >= 1 and data["env/env_failure"] == 0.0, (row["step"], data["env/turns"])
        assert math.isfinite(data["env/return"])


def test_each_nodes_rollout_has_the_weights_of_every_update(trained):
    """Each replica generated every step's rollout with the weights of the step before (verl's
    weight-version tag, set by the sync); the log-prob gap over all tokens, so over each replica's
    own, is fp32 noise: a replica that missed a sync would generate with the old weights."""
    nodes = trained["state"]["nodes"]
    seen = {(int(r), n, v) for r, n, v in REPLICA_LINE.findall(trained["log"])}
    replicas = {r: n for r, n, _ in seen}
    assert sorted(replicas) == [0, 1] and sorted(replicas.values()) == nodes, f"one replica per node: {seen}"
    versions = {r: {v for q, _, v in seen if q == r} for r in replicas}
    # the first rollout uses the initial weights (tag unset or 0), step k's the update of step k - 1
    for replica, tags in versions.items():
        later = {str(k) for k in range(1, STEPS)}
        assert later <= tags, f"replica {replica} never generated with the weights of steps {later - tags}: {tags}"
    for row in trained["rows"]:
        gap = row["data"]["training/rollout_log_probs_diff_max"]
        assert gap < 1e-3, f"step {row['step']}: rollout vs actor log-prob gap {gap}"
    senders = set(re.findall(r"weight-sync socket \(trainer side\): \S+zmq-([0-9a-f]{12})-", trained["log"]))
    receivers = set(re.findall(r"weight-sync socket job id \(vLLM side\): ([0-9a-f]{12})-", trained["log"]))
    assert senders == receivers == {n[:12] for n in nodes}, f"per-node sockets: {senders} {receivers} {nodes}"


def test_entropy_history_is_in_the_checkpoint(trained):
    state = json.loads((trained["out"] / "ckpt" / f"global_step_{STEPS}" / "epo_state.json").read_text())
    assert state["global_step"] == STEPS
    entropies = [row["data"]["epo/batch_entropy"] for row in trained["rows"]]
    assert state["history"]["values"] == pytest.approx(entropies, rel=1e-6), (state["history"], entropies)
    assert (trained["out"] / "ckpt" / f"global_step_{STEPS}" / "actor").is_dir()


def test_nothing_left_on_either_node(two_node_run):
    assert two_node_run["left"] is None, two_node_run["left"]
