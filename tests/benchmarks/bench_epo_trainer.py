"""Actor-update cost of EPO inside the real verl trainer on CPU (issue: EPO must be nearly free).

Three short GRPO trainings on the synthetic game with the same tiny model, data and seeds:
  (a) GRPO, no entropy term (epo.enable=false, calculate_entropy off)
  (b) GRPO + verl's own entropy bonus (epo.enable=false, actor.entropy_coeff=0.001)
  (c) GRPO + EPO (epo.enable=true)
and the median of verl's own ``timing_s/update_actor`` over the steps after the first. The runs
are interleaved (a, b, c, a, b, c, ...) so that machine load hits all three alike.

Usage: .venv/bin/python tests/benchmarks/bench_epo_trainer.py [--steps 4] [--rounds 2]
Memory: verl's CPU metrics report system memory, not the actor's peak; the pure-torch
benchmark (bench_epo_loss.py) measures peak memory instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

VARIANTS = {
    "a": ["epo.enable=false"],
    "b": ["epo.enable=false", "actor_rollout_ref.actor.entropy_coeff=0.001"],
    "c": ["epo.enable=true"],
}


def prepare(root: Path) -> dict[str, Path]:
    from env_adapters.corpus import write_corpus
    from env_adapters.dataset import build_dataset
    from verl_epo.embedded.tiny_model import build_tiny_model

    write_corpus(["synthetic"], root / "corpus.txt", episodes=20)
    build_tiny_model([root / "corpus.txt"], root / "model", hidden=64, layers=2, heads=2)
    return {"model": root / "model", **build_dataset(root / "data", "synthetic/train", "synthetic/val", limit=8)}


def run(setup: dict[str, Path], out: Path, overrides: list[str], steps: int) -> list[float]:
    return [data["timing_s/update_actor"] for data in run_rows(setup, out, overrides, steps)]


def watch_memory(proc: subprocess.Popen, every: float = 0.5) -> dict[str, float]:
    """Sample the resident memory of ``proc`` and all its descendants (the Ray head, raylet, workers
    and vLLM's engine that the training starts) until it exits; returns the peaks in GiB: of the sum
    over processes (shared pages count once per process that maps them) and of the largest one."""
    import psutil

    root = psutil.Process(proc.pid)
    total = largest = 0
    while proc.poll() is None:
        rss = []
        for p in [root, *root.children(recursive=True)]:
            try:
                rss.append(p.memory_info().rss)
            except psutil.Error:  # ended between the listing and the read
                pass
        total, largest = max(total, sum(rss)), max(largest, max(rss, default=0))
        time.sleep(every)
    return {"peak_rss_sum_gib": total / 2**30, "peak_rss_largest_gib": largest / 2**30}


def run_rows(setup: dict[str, Path], out: Path, overrides: list[str], steps: int,
             memory: dict[str, float] | None = None) -> list[dict[str, float]]:
    """verl's metrics of each step after the first (it warms up), from one short training; with
    ``memory``, the run's memory peaks (:func:`watch_memory`) are put there."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    env = {**os.environ, "VERL_EPO_CPU": "1", "VERL_FILE_LOGGER_PATH": str(metrics)}
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(REPO / "recipes"),
           "--config-name", "cpu_synthetic", f"actor_rollout_ref.model.path={setup['model']}",
           f"data.train_files={setup['train']}", f"data.val_files={setup['val']}",
           f"trainer.default_local_dir={out / 'ckpt'}", f"trainer.total_training_steps={steps}",
           "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.save_freq=-1",
           "trainer.logger=[file]", "env.max_turns=12", *overrides]
    with open(out / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        peaks = watch_memory(proc)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, output=f"see {out / 'train.log'}")
    if memory is not None:
        memory.update(peaks)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [r["data"] for r in rows[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = prepare(root)
        times: dict[str, list[float]] = {k: [] for k in VARIANTS}
        for rnd in range(args.rounds):
            for name, overrides in VARIANTS.items():
                times[name] += run(setup, root / f"{name}{rnd}", overrides, args.steps)
                print(f"round {rnd} {name}: update_actor {times[name][-args.steps + 1:]}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\nvariant                         median update_actor (s)   samples")
    labels = {"a": "(a) GRPO", "b": "(b) GRPO + verl entropy bonus", "c": "(c) GRPO + EPO"}
    for k in VARIANTS:
        print(f"{labels[k]:32s}{med[k]:>12.3f}{len(times[k]):>22d}")
    print(f"\n(c)/(b) time: {med['c'] / med['b']:.3f}   (target <= 1.03)")
    print(f"(c)/(a) time: {med['c'] / med['a']:.3f}")


if __name__ == "__main__":
    main()
