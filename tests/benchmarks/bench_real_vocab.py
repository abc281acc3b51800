"""Per-step time and peak memory of GRPO + EPO on CPU with Qwen's real vocabulary against the small
one, inside the real verl trainer (vLLM rollout, entropy with gradient over the vocabulary).

Two tiny Qwen2 models of the same sizes (hidden 32, 2 layers, 1 head: the e2e model), each warm-started
40 steps on expert play of the synthetic game:
  small: a 2,000-token BPE tokenizer trained on the games' text (``tiny_model.build_tiny_model``);
  real:  the offline Qwen tokenizer and Qwen2.5's 151,936 embedding rows
         (``qwen_tokenizer.build_real_vocab_model``).
The trainings are interleaved (small, real, small, real, ...) so that machine load hits both alike.
Prints the medians of verl's ``timing_s/step``, ``gen``, ``old_log_prob``, ``update_actor`` and
``update_weights`` (the sync to vLLM) over the steps after the first, and each run's memory peaks (resident memory of
the training's whole process tree, sampled every 0.5 s), with the real / small ratios.

Usage: .venv/bin/python tests/benchmarks/bench_real_vocab.py [--steps 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_epo_trainer import run_rows  # noqa: E402

SIZES = {"hidden": 32, "layers": 2, "heads": 1}
TIMINGS = ["timing_s/step", "timing_s/gen", "timing_s/old_log_prob", "timing_s/update_actor",
           "timing_s/update_weights"]
MEMORY = ["peak_rss_sum_gib", "peak_rss_largest_gib"]
# the e2e tests' batch (2 tasks x 2 rollouts, micro-batches of 4): at the benchmark's default batch
# one step with the real vocabulary took 647 s on 2 cores
BATCH = ["data.train_batch_size=2", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
         "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
         "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
         "env.history_turns=1", "data.max_prompt_length=256"]


def prepare(root: Path) -> dict[str, dict[str, Path]]:
    """Both models, warm-started alike, and the synthetic game's data."""
    from env_adapters.corpus import write_corpus
    from env_adapters.dataset import build_dataset
    from env_adapters.episode import EpisodeSettings
    from env_adapters.expert import expert_rows
    from verl_epo.embedded.qwen_tokenizer import build_real_vocab_model
    from verl_epo.embedded.tiny_model import build_tiny_model
    from verl_epo.embedded.warm_start import warm_start

    write_corpus(["synthetic"], root / "corpus.txt", episodes=20)
    build_tiny_model([root / "corpus.txt"], root / "small-init", **SIZES)
    build_real_vocab_model(root / "real-init", **SIZES)
    rows, _ = expert_rows("synthetic/train", EpisodeSettings(max_turns=6, history_turns=1), limit=16)
    data = build_dataset(root / "data", "synthetic/train", "synthetic/val", limit=8)
    setups = {}
    for name, lr in (("small", 1e-3), ("real", 1e-2)):  # lr: tests/e2e/test_train_real_vocab.py says why
        warm_start(root / f"{name}-init", [r["messages"] for r in rows], root / name, steps=40, lr=lr, seed=0)
        setups[name] = {"model": root / name, **data}
    return setups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in TIMINGS} for n in ("small", "real")}
    peaks: dict[str, dict[str, list[float]]] = {n: {k: [] for k in MEMORY} for n in ("small", "real")}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setups = prepare(root)
        for rnd in range(args.rounds):
            for name, setup in setups.items():
                memory: dict[str, float] = {}
                for data in run_rows(setup, root / f"{name}{rnd}", ["epo.enable=true", *BATCH], args.steps, memory):
                    for key in TIMINGS:
                        times[name][key].append(data[key])
                for key in MEMORY:
                    peaks[name][key].append(memory[key])
                print(f"round {rnd} {name}: step {times[name]['timing_s/step'][-args.steps + 1:]} s, "
                      f"memory {memory}", flush=True)
    print(f"\nfigure (median)            {'small':>10}{'real':>10}{'real/small':>12}   samples each")
    for table, unit in ((times, "s"), (peaks, "GiB")):
        for key in table["small"]:
            small, real = (statistics.median(table[n][key]) for n in ("small", "real"))
            print(f"{key + ' (' + unit + ')':27s}{small:>10.3f}{real:>10.3f}{real / small:>12.2f}"
                  f"   {len(table['small'][key])}")


if __name__ == "__main__":
    main()
