"""The pieces of an actor update that verl computes, for ``bench_epo_loss.py``: a fused log-prob
(standing in for verl's GPU cross-entropy kernel), verl's entropy functions and ``epo_terms``, each
with a pure-torch fallback so the benchmark runs where only torch is installed (a GPU machine)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


class FusedLogProb(torch.autograd.Function):
    """log p(label) from logits [N, V], float32 math per chunk; saves only logits and lse."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        for i in range(0, logits.shape[0], chunk):
            lse[i : i + chunk] = torch.logsumexp(logits[i : i + chunk].float(), dim=-1)
        picked = logits.gather(-1, labels[:, None]).squeeze(-1).float()
        ctx.save_for_backward(logits, labels, lse)
        ctx.chunk = chunk
        return picked - lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, labels, lse = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        rows = torch.arange(logits.shape[0], device=logits.device)
        for i in range(0, logits.shape[0], ctx.chunk):
            j = min(i + ctx.chunk, logits.shape[0])
            # d log p_y / d z = onehot(y) - softmax(z)
            g = -torch.exp(logits[i:j].float() - lse[i:j, None])
            g[rows[: j - i], labels[i:j]] += 1.0
            grad_logits[i:j] = (g * grad[i:j, None]).to(logits.dtype)
        return grad_logits, None, None


def local_entropy_chunked(logits: torch.Tensor, chunk_size: int = 2048) -> torch.Tensor:
    """Same computation as verl's ``entropy_from_logits_with_chunking`` (used without verl)."""
    entropy = torch.zeros(logits.shape[0], device=logits.device)
    for i in range(0, logits.shape[0], chunk_size):
        part = logits[i : i + chunk_size].float()
        probs = torch.softmax(part, dim=-1)
        entropy[i : i + chunk_size] = torch.logsumexp(part, dim=-1) - (probs * part).sum(-1)
    return entropy


def local_entropy_plain(logits: torch.Tensor) -> torch.Tensor:
    """Same computation as verl's ``entropy_from_logits`` (used without verl)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def entropy_function(kind: str, chunk: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """verl's entropy computation for ``kind`` in {chunked, plain, checkpoint} and where it came from."""
    try:
        from verl.utils.torch_functional import entropy_from_logits, entropy_from_logits_with_chunking

        chunked, plain, source = entropy_from_logits_with_chunking, entropy_from_logits, "verl.utils.torch_functional"
    except ImportError:
        chunked, plain, source = local_entropy_chunked, local_entropy_plain, "local copy (verl not importable)"
    if kind == "plain":
        return plain, f"entropy_from_logits from {source}"
    if kind == "chunked":
        return lambda z: chunked(z, chunk_size=chunk), f"entropy_from_logits_with_chunking({chunk}) from {source}"
    # verl's entropy_checkpointing: recompute the (chunked) entropy in the backward
    return (
        lambda z: torch.utils.checkpoint.checkpoint(chunked, z, chunk, use_reentrant=False),
        f"checkpoint(entropy_from_logits_with_chunking({chunk})) from {source}",
    )


def epo_terms_function():
    """``verl_epo.loss.epo_terms`` and EPOConfig, or the same combination rebuilt without verl."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from verl_epo.config import EPOConfig

    try:
        from verl_epo.loss import epo_terms

        return epo_terms, EPOConfig, "verl_epo.loss.epo_terms"
    except ImportError:
        return local_epo_terms, EPOConfig, "local epo_terms on verl_epo.algorithm (verl_epo.loss needs verl)"


def local_epo_terms(entropy, weight, reference, epo, beta):
    """``verl_epo.loss.epo_terms`` rebuilt from ``verl_epo.algorithm`` (pure torch), for runs without verl."""
    from verl_epo.algorithm import smoothing_penalty

    zero = entropy.new_zeros(())
    has_ref = ~torch.isnan(reference)
    ref = torch.where(has_ref, reference, torch.zeros_like(reference))
    l_h = (entropy * weight).sum() if epo.use_entropy_term else zero
    penalty = smoothing_penalty(entropy, ref, epo.kappa_low, epo.kappa_high)
    l_smooth = epo.alpha * (penalty * weight * has_ref).sum() if epo.use_smoothing else zero
    return epo.entropy_coef * (l_h - beta * l_smooth), l_h, l_smooth


def check_fused_log_prob() -> None:
    """The fused log-prob matches log_softmax + gather in value and gradient."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(37, 50, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (37,), generator=g)
    upstream = torch.randn(37, generator=g)
    fused = FusedLogProb.apply(logits, labels, 8)
    (grad_fused,) = torch.autograd.grad((fused * upstream).sum(), logits)
    naive = torch.log_softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1)
    (grad_naive,) = torch.autograd.grad((naive * upstream).sum(), logits)
    torch.testing.assert_close(fused, naive)
    torch.testing.assert_close(grad_fused, grad_naive)
