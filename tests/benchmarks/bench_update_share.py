"""Cost of the update-share diagnostic (``epo.diagnostic_every``) inside the real verl trainer on CPU.

Two GRPO + EPO trainings on the synthetic game with the same tiny model, data and seeds, interleaved
(off, on, off, on, ...) so that machine load hits both alike:
  off: ``epo.diagnostic_every=null``
  on:  ``epo.diagnostic_every=1`` (every step measured, so every step after the first is a sample)
Prints the medians of verl's ``timing_s/update_actor`` and ``timing_s/step`` over the steps after
the first, the extra time of one measured step, and what that costs at the default N = 10
(extra / 10 as a share of the unmeasured step).

Usage: .venv/bin/python tests/benchmarks/bench_update_share.py [--steps 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_epo_trainer import prepare, run_rows  # noqa: E402

VARIANTS = {"off": ["++epo.diagnostic_every=null"], "on": ["++epo.diagnostic_every=1"]}
DEFAULT_N = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    samples: dict[str, dict[str, list[float]]] = {k: {"update": [], "step": []} for k in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = prepare(root)
        for rnd in range(args.rounds):
            for name, overrides in VARIANTS.items():
                rows = run_rows(setup, root / f"{name}{rnd}", overrides, args.steps)
                samples[name]["update"] += [r["timing_s/update_actor"] for r in rows]
                samples[name]["step"] += [r["timing_s/step"] for r in rows]
                print(f"round {rnd} {name}: update_actor {[round(r['timing_s/update_actor'], 3) for r in rows]} "
                      f"step {[round(r['timing_s/step'], 2) for r in rows]}", flush=True)
    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in samples.items()}
    print("\nvariant   median update_actor (s)   median step (s)   samples")
    for k in VARIANTS:
        print(f"{k:8s}{med[k]['update']:>18.3f}{med[k]['step']:>18.2f}{len(samples[k]['step']):>10d}")
    extra = med["on"]["update"] - med["off"]["update"]
    print(f"\nmeasured update / unmeasured update: {med['on']['update'] / med['off']['update']:.2f}")
    print(f"extra time of one measured step: {extra:.3f} s ({extra / med['off']['step']:.1%} of a step)")
    print(f"cost at the default N = {DEFAULT_N}: {extra / DEFAULT_N / med['off']['step']:.2%} of a step's time "
          "(target < 5 %)")


if __name__ == "__main__":
    main()
