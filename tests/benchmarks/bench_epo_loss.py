"""Actor-update cost of EPO against GRPO with and without verl's entropy bonus (issue 9, item 1).

Run:  .venv/bin/python tests/benchmarks/bench_epo_loss.py                  (CPU: reduced size)
      python tests/benchmarks/bench_epo_loss.py --device cuda              (GPU: Qwen2.5-7B LM head)
      .venv/bin/python -m pytest -q -s tests/benchmarks/bench_epo_loss.py  (one tiny round)

One actor update is forward + backward through ``hidden_states [N, H] -> LM head [V, H] -> logits
[N, V] -> loss``, the part of the update where the three objectives differ (the transformer below
the LM head is the same for all three and is left out, so the ratios are upper bounds):

(a) GRPO: clipped policy loss on log-probs from the logits; no entropy.
(b) (a) + verl's entropy bonus: the token entropy computed from the logits with gradient as verl's
    FSDP engine computes it when ``calculate_entropy`` is on (``entropy_from_logits_with_chunking``
    by default here, ``--entropy plain`` / ``--entropy checkpoint`` for verl's other two settings),
    minus ``entropy_coeff`` times its token mean.
(c) (a) + EPO: the same entropy, plus ``verl_epo.loss.epo_terms`` (Eq. 2 weights per token, a
    reference that puts about half the tokens above the band, so the smoothing hinge is active).

Log-probs use a fused log-softmax-gather (float32 per chunk, only the log-sum-exp kept for the
backward), standing in for the flash-attn cross-entropy kernel verl uses on GPU; verl's own pure
torch fallback loops over tokens, which would inflate (a) and flatter the ratios.

Timing: the variants are interleaved (a, b, c, a, b, c, ...) so machine noise hits all of them;
the median of ``--repeats`` updates after ``--warmup`` is reported. Memory: on GPU
``torch.cuda.max_memory_allocated`` (absolute peak, and the peak above what was allocated before the
update); on CPU torch's profiler records every tensor allocation and free of one more update of
each variant, and its memory timeline gives the peak of live tensor bytes (the same quantity,
without caching-allocator rounding; peak RSS was tried and is too noisy, as malloc keeps and
returns pages at its own pace).

Needs only torch (verl optional): without verl the chunked entropy is a local copy of verl's
function and ``epo_terms`` is rebuilt from ``verl_epo.algorithm``; the header says which was used.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from update_pieces import (
    FusedLogProb,
    check_fused_log_prob,
    entropy_function,
    epo_terms_function,
    local_entropy_chunked,
    local_epo_terms,
)

VARIANTS = {"a": "(a) GRPO", "b": "(b) GRPO + verl entropy bonus", "c": "(c) GRPO + EPO"}
QWEN_7B = {"hidden": 3584, "vocab": 152064, "rows": 8, "tokens": 2048, "dtype": "bfloat16", "chunk": 2048, "repeats": 7}
# about a minute on 2 busy cores; the chunk shrinks with the size so the entropy is still chunked
CPU_DEFAULT = {"hidden": 512, "vocab": 8192, "rows": 2, "tokens": 512, "dtype": "float32", "chunk": 256, "repeats": 5}
TURN_TOKENS, ENV_TOKENS = 240, 16  # response run / environment text lengths inside a row
CLIP, ENTROPY_COEFF = 0.2, 1e-3


# ----- one update ---------------------------------------------------------------------------------


@dataclass
class Problem:
    hidden: torch.Tensor  # [N, H] leaf, requires grad
    head: torch.Tensor  # [V, H] leaf, requires grad
    labels: torch.Tensor  # [N]
    old_logp: torch.Tensor  # [N] float32
    advantages: torch.Tensor  # [N] float32
    mask: torch.Tensor  # [R, L] float32, 1 on response tokens
    weight: torch.Tensor  # [R, L] Eq. 2 weights
    reference: torch.Tensor  # [R, L] H_ref per token
    rows: int
    tokens: int


def build_problem(args, device: torch.device, epo) -> Problem:
    """Random LM-head inputs at the requested size; in-place init so no temporary copies stay."""
    from verl_epo.algorithm import trajectory_token_weights

    dtype = getattr(torch, args.dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    n = args.rows * args.tokens
    hidden = torch.randn(n, args.hidden, generator=g).to(device=device, dtype=dtype).requires_grad_()
    head = torch.randn(args.vocab, args.hidden, generator=g)
    head.mul_(2.0 / math.sqrt(args.hidden))  # logits of std ~2: entropies spread well below log V
    head = head.to(device=device, dtype=dtype).requires_grad_()
    labels = torch.randint(0, args.vocab, (n,), generator=g).to(device)
    advantages = torch.randn(args.rows, generator=g).repeat_interleave(args.tokens).to(device)
    position = torch.arange(args.tokens) % (TURN_TOKENS + ENV_TOKENS)
    mask = (position < TURN_TOKENS).float().expand(args.rows, -1).contiguous()
    # two rows per trajectory (the per-turn row layout), turns = response runs
    weight = trajectory_token_weights(mask, [r // 2 for r in range(args.rows)])
    with torch.no_grad():
        old_logp = FusedLogProb.apply(hidden @ head.T, labels, args.chunk).detach() - 0.05
        entropy = local_entropy_chunked(hidden @ head.T, args.chunk).view(args.rows, args.tokens)
    # band top κ_r·H_ref at the mean entropy: about half the tokens are penalised
    ref = float(entropy[mask.to(entropy.device).bool()].mean()) / epo.kappa_high
    reference = torch.full((args.rows, args.tokens), ref)
    return Problem(
        hidden, head, labels, old_logp, advantages, mask.to(device), weight.to(device), reference.to(device),
        args.rows, args.tokens,
    )


def policy_loss(logp: torch.Tensor, p: Problem) -> torch.Tensor:
    """verl's vanilla clipped PPO objective with GRPO advantages, token-mean over the mask."""
    ratio = torch.exp(logp - p.old_logp)
    surrogate = torch.maximum(-p.advantages * ratio, -p.advantages * ratio.clamp(1 - CLIP, 1 + CLIP))
    mask = p.mask.reshape(-1)
    return (surrogate * mask).sum() / mask.sum()


def update(variant: str, p: Problem, entropy_fn, epo_terms, epo, chunk: int) -> dict[str, float]:
    """Forward + backward of one actor update; returns the loss terms (for the sanity check)."""
    p.hidden.grad = None
    p.head.grad = None
    logits = p.hidden @ p.head.T
    loss = policy_loss(FusedLogProb.apply(logits, p.labels, chunk), p)
    out = {"policy": float(loss.detach())}
    if variant == "b":
        entropy = entropy_fn(logits)
        mask = p.mask.reshape(-1)
        loss = loss - ENTROPY_COEFF * (entropy * mask).sum() / mask.sum()
    elif variant == "c":
        entropy = entropy_fn(logits).view(p.rows, p.tokens)
        objective, l_h, l_smooth = epo_terms(entropy, p.weight, p.reference, epo, 2.0)
        loss = loss - objective
        out |= {"l_h": float(l_h.detach()), "l_smooth": float(l_smooth.detach())}
    loss.backward()
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----- measurement --------------------------------------------------------------------------------


def cpu_update_memory_mib(one_update: Callable[[], object]) -> dict[str, float]:
    """Peak bytes of live torch tensors during one CPU update, from the profiler's memory timeline.

    The same quantity ``torch.cuda.max_memory_allocated`` gives on GPU (without allocator rounding),
    independent of how malloc returns pages to the OS. ``update_mib`` subtracts the tensors alive at
    the first recorded event (the inputs and weights the update touches).
    """
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        one_update()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    totals = [sum(step) for step in sizes]
    return {"peak_mib": max(totals) / 2**20, "update_mib": (max(totals) - totals[0]) / 2**20}


def run(args) -> dict:
    device = torch.device(args.device)
    entropy_fn, entropy_source = entropy_function(args.entropy, args.chunk)
    epo_terms, epo_config, epo_source = epo_terms_function()
    epo = epo_config()  # paper defaults: λ 0.001, κ 0/2, α 0.05
    p = build_problem(args, device, epo)
    variants = list(args.variants)

    def one(variant: str) -> dict[str, float]:
        return update(variant, p, entropy_fn, epo_terms, epo, args.chunk)

    terms = {v: one(v) for v in variants}
    with torch.no_grad():
        entropy = local_entropy_chunked(p.hidden @ p.head.T, args.chunk).view(p.rows, p.tokens)
    above = float(((entropy > epo.kappa_high * p.reference) & p.mask.bool()).sum() / p.mask.sum())

    for _ in range(args.warmup - 1):
        for v in variants:
            one(v)
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu_times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            one(v)
            synchronize(device)
            times[v].append(time.perf_counter() - start)
            cpu_times[v].append(time.process_time() - cpu_start)

    memory: dict[str, dict[str, float]] = {}
    memory_note = ""
    if device.type == "cuda":
        memory_note = "torch.cuda.max_memory_allocated: absolute peak, and peak minus allocated before the update"
        for v in variants:
            p.hidden.grad = None
            p.head.grad = None
            gc.collect()
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            one(v)
            synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            memory[v] = {"peak_mib": peak / 2**20, "update_mib": (peak - before) / 2**20}
    elif not args.no_memory:
        memory_note = "torch profiler memory timeline: peak of live tensor bytes, and the peak minus the first sample"
        for v in variants:
            p.hidden.grad = None
            p.head.grad = None
            memory[v] = cpu_update_memory_mib(lambda v=v: one(v))

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({args.threads} threads)",
        "torch": torch.__version__,
        "size": {k: getattr(args, k) for k in ("rows", "tokens", "hidden", "vocab", "dtype", "chunk")},
        "entropy": entropy_source,
        "epo_terms": epo_source,
        "repeats": args.repeats,
        "frac_above_band": above,
        "terms": terms,
        "time_ms": {v: summary_ms(t) for v, t in times.items()},
        "cpu_time_ms": {v: summary_ms(t) for v, t in cpu_times.items()} if device.type == "cpu" else {},
        "terms_only_ms": terms_only_ms(p, epo_terms, epo, device),
        "memory": memory,
        "memory_note": memory_note,
    }


def terms_only_ms(p: Problem, epo_terms, epo, device: torch.device, repeats: int = 200) -> dict[str, float]:
    """Forward + backward of the entropy terms alone, on an entropy leaf [R, L]: the part of the
    update where (b) and (c) differ, timed without the LM head so machine noise cannot hide it."""
    leaf = (torch.rand(p.rows, p.tokens, device=device) * 3).requires_grad_()
    mask = p.mask

    def bonus():
        return -ENTROPY_COEFF * (leaf * mask).sum() / mask.sum()

    def epo_objective():
        return -epo_terms(leaf, p.weight, p.reference, epo, 2.0)[0]

    functions = {"verl entropy bonus": bonus, "EPO terms": epo_objective}
    best = dict.fromkeys(functions, math.inf)
    for _ in range(5):  # interleaved blocks, best block: the least disturbed by other processes
        for name, fn in functions.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(repeats // 5):
                leaf.grad = None
                fn().backward()
            synchronize(device)
            best[name] = min(best[name], 1e3 * (time.perf_counter() - start) / (repeats // 5))
    return best


def summary_ms(seconds: list[float]) -> dict[str, float]:
    return {"median": 1e3 * statistics.median(seconds), "min": 1e3 * min(seconds), "max": 1e3 * max(seconds)}


def ratios(result: dict) -> dict[str, float]:
    out = {}
    t = {v: s["median"] for v, s in result["time_ms"].items()}
    cpu = {v: s["median"] for v, s in result.get("cpu_time_ms", {}).items()}
    mem = {v: m.get("peak_mib", m["update_mib"]) for v, m in result["memory"].items()}
    upd = {v: m["update_mib"] for v, m in result["memory"].items()}
    for num, den in (("c", "b"), ("c", "a")):
        if num in t and den in t:
            out[f"time {num}/{den}"] = t[num] / t[den]
        if num in cpu and den in cpu:
            out[f"cpu time {num}/{den}"] = cpu[num] / cpu[den]
        if num in mem and den in mem:
            out[f"peak memory {num}/{den}"] = mem[num] / mem[den] if mem[den] > 0 else math.nan
            if "peak_mib" in result["memory"][num]:
                out[f"update memory {num}/{den}"] = upd[num] / upd[den] if upd[den] > 0 else math.nan
    return out


def print_report(result: dict) -> None:
    s = result["size"]
    n = s["rows"] * s["tokens"]
    print(f"EPO actor-update micro-benchmark on {result['device']}, torch {result['torch']}")
    print(
        f"  tokens {s['rows']} x {s['tokens']} = {n}, hidden {s['hidden']}, vocab {s['vocab']}, {s['dtype']}, "
        f"chunk {s['chunk']} (entropy and log-prob)"
    )
    print(f"  entropy: {result['entropy']}")
    print(f"  EPO: {result['epo_terms']}; {100 * result['frac_above_band']:.0f}% of tokens above the band")
    if result["memory_note"]:
        print(f"  memory: {result['memory_note']}")
    has_memory = bool(result["memory"])
    head = f"{'variant':32s} {'ms/update':>10s} {'min':>8s} {'max':>8s}"
    head += f" {'peak MiB':>10s} {'update MiB':>11s}" if has_memory else ""
    print(f"\n  median of {result['repeats']} updates (interleaved)\n  {head}")
    for v, stats in result["time_ms"].items():
        row = f"{VARIANTS[v]:32s} {stats['median']:10.1f} {stats['min']:8.1f} {stats['max']:8.1f}"
        mem = result["memory"].get(v)
        if mem:
            row += f" {mem['peak_mib']:10.0f} {mem['update_mib']:11.0f}"
        print("  " + row)
    if result["cpu_time_ms"]:
        cpu = ", ".join(f"{v} {stats['median']:.1f}" for v, stats in result["cpu_time_ms"].items())
        print(f"\n  process CPU time per update (all threads), median ms: {cpu}")
    terms = result["terms_only_ms"]
    print(
        "  entropy terms alone (fwd+bwd on the [R, L] entropy): "
        + ", ".join(f"{name} {ms:.3f} ms" for name, ms in terms.items())
    )
    if "b" in result["time_ms"]:
        extra = terms["EPO terms"] - terms["verl entropy bonus"]
        b = result["time_ms"]["b"]
        share = 100 * extra / b["median"]
        spread = 100 * (b["max"] - b["min"]) / b["median"]
        print(f"  -> EPO's extra work per update = {extra:.3f} ms = {share:.3f}% of (b)")
        print(f"  (b)'s own min-max spread is {spread:.0f}% of its median: the time ratios below resolve no finer")
    print()
    for name, value in ratios(result).items():
        target = {"time c/b": 1.03, "peak memory c/b": 1.05}.get(name)
        verdict = "" if target is None else f"   (target <= {target}: {'met' if value <= target else 'NOT met'})"
        print(f"  {name:22s} {value:6.3f}{verdict}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    for key in ("hidden", "vocab", "rows", "tokens"):
        parser.add_argument(f"--{key}", type=int, help=f"default: {QWEN_7B[key]} on GPU, {CPU_DEFAULT[key]} on CPU")
    parser.add_argument(
        "--dtype", choices=["bfloat16", "float16", "float32"], help="default: bfloat16 on GPU, float32 on CPU"
    )
    parser.add_argument("--entropy", choices=["chunked", "plain", "checkpoint"], default="chunked")
    parser.add_argument("--chunk", type=int, help="entropy/log-prob chunk: verl's default 2048 on GPU, 256 on CPU")
    parser.add_argument("--variants", default="abc", help="subset of abc")
    parser.add_argument("--repeats", type=int, help="timed updates per variant: 7 on GPU, 5 on CPU")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates per variant before timing (>= 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU memory measurement")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    defaults = QWEN_7B if args.device.startswith("cuda") else CPU_DEFAULT
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if set(args.variants) - set(VARIANTS) or not args.variants:
        parser.error("--variants takes letters from 'abc'")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    return args


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    result = run(args)
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result | {"ratios": ratios(result)}, indent=1))
    return result


def test_bench_epo_loss_small():
    """One tiny round (pytest -s): the three variants run and EPO's smoothing term is active."""
    check_fused_log_prob()
    result = main(["--device", "cpu", "--hidden", "64", "--vocab", "512", "--rows", "2", "--tokens", "512",
                   "--chunk", "256", "--repeats", "2", "--warmup", "1"])
    assert result["terms"]["c"]["l_smooth"] > 0
    # the local stand-in used without verl computes what verl_epo.loss.epo_terms computes
    epo_terms, epo_config, _ = epo_terms_function()
    g = torch.Generator().manual_seed(2)
    entropy, weight, reference = (torch.rand(3, 40, generator=g) for _ in range(3))
    reference[0] = math.nan
    for got, want in zip(
        local_epo_terms(entropy, weight, reference, epo_config(), 1.5),
        epo_terms(entropy, weight, reference, epo_config(), 1.5),
        strict=True,
    ):
        torch.testing.assert_close(got, want)
    assert set(result["memory"]) == {"a", "b", "c"}


if __name__ == "__main__":
    check_fused_log_prob()
    main()
