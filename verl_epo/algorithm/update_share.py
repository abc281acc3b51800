"""How much of one actor update EPO makes: its gradient next to the policy loss's, and its share of
Adam's step. Pure torch; the caller sums the partial sums over data-parallel shards.

The actor's gradient on a mini-batch is linear in the loss, so with L = L_policy − λ(L_H − β_k·L_smooth)
(Eq. 6) it splits exactly into g = g_pol + g_epo, g_pol from L_policy (verl's policy loss with its KL
term and any verl entropy bonus) and g_epo from −λ(L_H − β_k·L_smooth). Two numbers describe the
raw gradients: the ratio ‖g_epo‖ / ‖g_pol‖ and the cosine of the two.

A share of the gradient is not a share of the step. verl clips the total gradient to norm c, then
Adam moves each parameter by

    Δ = −lr · m_t / ((1 − β1^t) · (sqrt(v_t / (1 − β2^t)) + ε)),
    m_t = β1·m + (1 − β1)·s·g,   v_t = β2·v + (1 − β2)·(s·g)²,   s = min(1, c / (‖g‖ + 1e-6)),

so where g_pol is zero the EPO gradient alone sets a full-size step whatever λ is. With
D = 1 / (sqrt(v_t / (1 − β2^t)) + ε), Adam's step splits into EPO's part and the rest:

    this step's gradient:  D·g = D·g_epo + D·g_pol
    the step itself:       D·m_t = (1 − β1)·s·D·g_epo + [β1·D·m + (1 − β1)·s·D·g_pol]

(the factor −lr / (1 − β1^t) cancels). For each split, a = EPO's part, b = the rest, two numbers:

    share = ‖a‖ / (‖a‖ + ‖b‖)   in [0, 1], as ``grad_share`` for the raw gradients
    ratio = ‖a‖ / ‖a + b‖       EPO's part next to the whole; above 1 when the parts oppose

``gradient_step_*`` is the first split (what Adam made of this step's gradient: share 1 where
g_pol = 0), ``step_*`` the second (the actual parameter change). The momentum m carries earlier
steps' gradients, EPO's among them, which cannot be told apart here, so on a run whose policy
gradient is zero on every step ``step_share`` is below 1 although all of Δ comes from EPO. AdamW's
decoupled weight decay is left out of Δ: it does not depend on the gradient. Without Adam state
(SGD) D = 1 and m = 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

GRAD_SUMS = ("policy_sq", "epo_sq", "dot")
"""What ``gradient_sums`` returns, in order: ‖g_pol‖², ‖g_epo‖², g_pol·g_epo."""
STEP_SUMS = ("epo_step_sq", "step_sq", "epo_step_dot", "epo_fresh_sq", "fresh_sq", "epo_fresh_dot")
"""What ``adam_step_sums`` returns, in order: for the step a = (1 − β1)·s·D·g_epo and a + b = D·m_t,
‖a‖², ‖a + b‖², a·(a + b); the same three for this step's gradient, a = D·g_epo and a + b = D·g."""


@dataclass(frozen=True)
class AdamMoments:
    """One parameter's Adam state BEFORE the update (None entries: no state yet, the first step)."""

    exp_avg: torch.Tensor | None
    """m, shaped like the parameter (or its local shard)."""
    exp_avg_sq: torch.Tensor | None
    """v, shaped like m."""
    step: int
    """Updates already taken (t − 1)."""
    beta1: float
    beta2: float
    eps: float


def gradient_sums(policy: Iterable[torch.Tensor], epo: Iterable[torch.Tensor]) -> torch.Tensor:
    """float64 [3]: ‖g_pol‖², ‖g_epo‖², g_pol·g_epo over the given (local) gradient tensors.

    Args:
        policy, epo: matching sequences of gradient tensors, one per parameter (any shapes, pairwise equal).
    """
    sums = torch.zeros(3, dtype=torch.float64)
    for p, e in zip(policy, epo, strict=True):
        p64, e64 = p.detach().double().flatten(), e.detach().double().flatten()
        sums += torch.stack([p64 @ p64, e64 @ e64, p64 @ e64]).cpu()
    return sums


def clip_scale(total_norm: float, max_norm: float | None) -> float:
    """s, the factor verl's gradient clipping multiplies the gradient by (1 without clipping)."""
    if max_norm is None or max_norm <= 0 or not math.isfinite(total_norm):
        return 1.0
    return min(1.0, max_norm / (total_norm + 1e-6))


def adam_step_sums(
    policy: Iterable[torch.Tensor],
    epo: Iterable[torch.Tensor],
    moments: Iterable[AdamMoments | None],
    scale: float = 1.0,
) -> torch.Tensor:
    """float64 [6]: the ``STEP_SUMS`` (module docstring) over the given tensors.

    Args:
        policy, epo: gradient tensors, one per parameter, as in ``gradient_sums``.
        moments: each parameter's Adam state, or None for an optimizer without moments (D = 1, m = 0).
        scale: s, the clipping factor (``clip_scale`` of the total gradient norm).
    """
    sums = torch.zeros(6, dtype=torch.float64)
    for p, e, state in zip(policy, epo, moments, strict=True):
        e64 = e.detach().double() * scale
        g64 = p.detach().double() * scale + e64
        if state is None:
            sums += _part_sums(e64, g64).repeat(2)
            continue
        b1, b2 = state.beta1, state.beta2
        t = state.step + 1
        m = state.exp_avg.detach().to(g64) if state.exp_avg is not None else torch.zeros_like(g64)
        v = state.exp_avg_sq.detach().to(g64) if state.exp_avg_sq is not None else torch.zeros_like(g64)
        v_t = b2 * v + (1 - b2) * g64 * g64
        precond = 1.0 / ((v_t / (1 - b2**t)).sqrt() + state.eps)
        epo_fresh, fresh = precond * e64, precond * g64
        epo_step = (1 - b1) * epo_fresh
        step = precond * (b1 * m) + (1 - b1) * fresh
        sums += torch.cat([_part_sums(epo_step, step), _part_sums(epo_fresh, fresh)])
    return sums


def _part_sums(part: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """float64 [3] on the CPU: ‖part‖², ‖whole‖², part·whole (two same-shaped tensors)."""
    return torch.stack([(part * part).sum(), (whole * whole).sum(), (part * whole).sum()]).cpu()


def _split(part_sq: float, whole_sq: float, dot: float) -> tuple[float, float]:
    """(share, ratio) of a part a in a whole a + b from ‖a‖², ‖a + b‖², a·(a + b); (0, 0) for a zero whole."""
    if whole_sq <= 0:
        return 0.0, 0.0
    part = math.sqrt(max(part_sq, 0.0))
    rest = math.sqrt(max(whole_sq - 2 * dot + part_sq, 0.0))
    return (part / (part + rest) if part + rest > 0 else 0.0), part / math.sqrt(whole_sq)


def update_share_metrics(grad_sums: torch.Tensor, step_sums: torch.Tensor) -> dict[str, float]:
    """The diagnostic's numbers from the (globally summed) ``gradient_sums`` and ``adam_step_sums``.

    Returns:
        ``grad_norm_policy``, ``grad_norm_epo``: ‖g_pol‖, ‖g_epo‖; ``grad_ratio``: ‖g_epo‖ / ‖g_pol‖,
        left out where g_pol = 0 (every advantage zero and no KL: the ratio is infinite);
        ``grad_cos``: their cosine (0 when either is 0); ``grad_share``: ‖g_epo‖ / (‖g_pol‖ + ‖g_epo‖),
        in [0, 1] on every step; ``gradient_step_share`` / ``gradient_step_ratio`` and ``step_share`` /
        ``step_ratio``: EPO's part of Adam's step (module docstring; 0 when the step is 0). All finite.
    """
    policy_sq, epo_sq, dot = (float(x) for x in grad_sums)
    epo_step_sq, step_sq, epo_step_dot, epo_fresh_sq, fresh_sq, epo_fresh_dot = (float(x) for x in step_sums)
    gradient_step_share, gradient_step_ratio = _split(epo_fresh_sq, fresh_sq, epo_fresh_dot)
    step_share, step_ratio = _split(epo_step_sq, step_sq, epo_step_dot)
    policy_norm, epo_norm = math.sqrt(max(policy_sq, 0.0)), math.sqrt(max(epo_sq, 0.0))
    both = policy_norm * epo_norm
    metrics = {
        "grad_norm_policy": policy_norm,
        "grad_norm_epo": epo_norm,
        "grad_cos": dot / both if both > 0 else 0.0,
        "grad_share": epo_norm / (policy_norm + epo_norm) if policy_norm + epo_norm > 0 else 0.0,
        "gradient_step_share": gradient_step_share,
        "gradient_step_ratio": gradient_step_ratio,
        "step_share": step_share,
        "step_ratio": step_ratio,
    }
    if policy_norm > 0:
        metrics["grad_ratio"] = epo_norm / policy_norm
    return metrics


def zero_advantage_fractions(
    advantages: torch.Tensor, response_mask: torch.Tensor, group_ids: list[str], atol: float = 1e-8
) -> tuple[float, float]:
    """Fractions of rows, and of groups, whose advantage is zero on every response token.

    Where a GRPO group's episodes all got the same reward (all failed, common early in sparse-reward
    training) its advantages are all 0: the policy loss gives that group no gradient and EPO's terms
    act alone on it.

    Args:
        advantages: (R, L) per-token advantages.
        response_mask: (R, L) 1 on response tokens; rows without any (padding) are not counted.
        group_ids: R group labels (verl's ``uid``: one per prompt, shared by its ``rollout.n`` rollouts).
        atol: |A| at or below this counts as zero.

    Returns:
        (row fraction, group fraction); (0.0, 0.0) when no row has a response token.
    """
    if advantages.shape != response_mask.shape or len(group_ids) != advantages.shape[0]:
        raise ValueError(
            f"advantages {tuple(advantages.shape)}, response_mask {tuple(response_mask.shape)} and "
            f"{len(group_ids)} group ids must describe the same rows"
        )
    response = response_mask.bool()
    active = response.any(dim=1)
    zero = ~((advantages.abs() > atol) & response).any(dim=1)
    groups: dict[str, bool] = {}
    for gid, on, is_zero in zip(group_ids, active.tolist(), zero.tolist(), strict=True):
        if on:
            groups[gid] = groups.get(gid, True) and is_zero
    rows = int(active.sum())
    if rows == 0:
        return 0.0, 0.0
    return int((zero & active).sum()) / rows, sum(groups.values()) / len(groups)
