"""Per-row next-token sampling (temperature, top-k, top-p) with the log-probs verl's actor recomputes.

The log-prob returned for a token is ``log_softmax(logits / T)`` at that token, before top-k/top-p
filtering: verl's actor recomputes exactly this (``logits / temperature`` then log-softmax), so
rollout and actor agree up to floating-point error when their weights are equal.
"""

from __future__ import annotations

import torch


def sample_next_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    generator: torch.Generator | list[torch.Generator | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row.

    Args:
        logits: (bs, vocab) next-token logits, any float dtype (computed in fp32 here).
        temperature: (bs,) sampling temperature; ``<= 0`` means greedy (log-probs then use T = 1).
        top_k: (bs,) keep the k most likely tokens; ``<= 0`` disables the filter.
        top_p: (bs,) keep the smallest set of tokens whose mass reaches p; ``>= 1`` disables it.
        generator: torch RNG for reproducible sampling, or one per row (a request's own seed makes
            its sample independent of which other requests share the batch).

    Returns:
        tokens: (bs,) sampled token ids (long).
        log_probs: (bs,) fp32 ``log_softmax(logits / T)[token]``.
    """
    logits = logits.float()
    greedy = temperature <= 0
    safe_t = torch.where(greedy, torch.ones_like(temperature), temperature).float()
    scaled = logits / safe_t[:, None]
    log_probs_all = torch.log_softmax(scaled, dim=-1)

    sorted_logits, sorted_idx = scaled.sort(dim=-1, descending=True)
    vocab = logits.shape[-1]
    rank = torch.arange(vocab, device=logits.device)[None, :]
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab))
    drop = rank >= k[:, None]
    sorted_probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    # the most likely token always survives, so every row keeps at least one candidate
    drop = drop | ((mass_before >= top_p[:, None].float()) & (rank > 0))
    sorted_probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
    if isinstance(generator, list):
        pick = torch.cat([torch.multinomial(sorted_probs[row : row + 1], 1, generator=gen).squeeze(-1)
                          for row, gen in enumerate(generator)])
    else:
        pick = torch.multinomial(sorted_probs, 1, generator=generator).squeeze(-1)
    sampled = sorted_idx.gather(-1, pick[:, None]).squeeze(-1)

    tokens = torch.where(greedy, logits.argmax(dim=-1), sampled)
    log_probs = log_probs_all.gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, log_probs
