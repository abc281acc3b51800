"""Time and peak memory of the LM head + loss with and without verl's fused log-prob / entropy path,
at Qwen's real vocabulary, with the entropy's gradient (what EPO needs).

One process per mode (peak memory is the process's own ``ru_maxrss``). ``T`` last hidden states
``[T, H]`` and the LM head ``[V, H]`` (both with gradient) go through:
  unfused: logits = h W^T / temperature (``[T, V]`` materialised, as verl's FSDP engine does), then
           verl's ``logprobs_from_logits`` and ``entropy_from_logits``;
  fused:   verl's ``FusedLinearForPPO`` (``impl_backend=torch``, 512-token chunks), what
           ``use_fused_kernels=true`` installs;
and the loss ``-(A · log p).mean() - λ · entropy.mean()`` (a policy-gradient term and an entropy
term with gradient, EPO's two kinds of gradient) is differentiated. The layers below the head are
the same in both modes and left out. Prints one JSON line: the median seconds of forward + backward
over ``--repeats`` and the peak resident memory.

Usage (side by side, same sizes):
  .venv/bin/python tests/benchmarks/bench_fused_kernels.py --mode unfused
  .venv/bin/python tests/benchmarks/bench_fused_kernels.py --mode fused
Defaults: T = 1024 tokens, H = 896 (Qwen2.5-0.5B's hidden size), V = 151,936 (Qwen2.5's rows), fp32.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
from verl.utils.experimental.torch_functional import FusedLinearForPPO
from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits


def head_and_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, advantages: torch.Tensor,
                  mode: str, temperature: float, entropy_coef: float) -> torch.Tensor:
    """The loss over ``T`` tokens: hidden ``[T, H]``, weight ``[V, H]``, labels / advantages ``[T]``."""
    if mode == "fused":
        log_probs, entropy = FusedLinearForPPO(impl_backend="torch")(hidden, weight, labels, temperature)
    else:
        logits = hidden @ weight.T / temperature
        log_probs, entropy = logprobs_from_logits(logits, labels), entropy_from_logits(logits)
    return -(advantages * log_probs).mean() - entropy_coef * entropy.mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["fused", "unfused"], required=True)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--entropy-coef", type=float, default=1e-3)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden, generator=g).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden, generator=g) * args.hidden**-0.5).requires_grad_()
    labels = torch.randint(0, args.vocab, (args.tokens,), generator=g)
    advantages = torch.randn(args.tokens, generator=g)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    seconds = []
    for _ in range(args.repeats):
        hidden.grad = weight.grad = None
        start = time.perf_counter()
        head_and_loss(hidden, weight, labels, advantages, args.mode, args.temperature, args.entropy_coef).backward()
        seconds.append(time.perf_counter() - start)
    print(json.dumps({
        "mode": args.mode, "tokens": args.tokens, "hidden": args.hidden, "vocab": args.vocab,
        "seconds_median": round(statistics.median(seconds), 3), "seconds": [round(s, 3) for s in seconds],
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "rss_before_gib": round(before, 2),
        "grad_norms": [round(float(hidden.grad.norm()), 6), round(float(weight.grad.norm()), 6)],
    }))


if __name__ == "__main__":
    main()
