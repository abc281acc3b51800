"""Per-step EPO quantities computed once on the driver, on the whole rollout batch.

After verl has computed the old policy's entropy for the rollout batch, the trainer calls
``compute_step_terms``. It returns what the loss needs on every token (the Eq. 2 weight, the
entropy reference H̄_ref of Eq. 4) and the step's scalar β_k (Eq. 5), plus the ``epo/*`` metrics of
the rollout batch. Trajectory and turn structure come only from what verl itself puts in the
batch: the row keys ``{uid}_{session}_{index}`` of the v1 agent-loop path and runs of
``response_mask``, so any agent loop works, one row per turn or one row per conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from verl_epo.algorithm import (
    EntropyHistory,
    PerTurnEntropyHistory,
    phase_weight,
    smoothing_penalty,
    trajectory_mean,
    trajectory_token_weights,
    turn_ids_from_mask,
    turn_index_in_trajectory,
    turn_index_means,
)
from verl_epo.config import EPOConfig

_ROW_INDEX_STRIDE = 1 << 20
"""Turn labels are row_index * stride + run index, so turns stay distinct across rows."""


def trajectory_and_turn_ids(
    keys: Sequence[str], response_mask: torch.Tensor
) -> tuple[list[str], torch.Tensor]:
    """Trajectory id per row and turn label per token from verl's v1 row keys.

    Args:
        keys: one key per row, ``{uid}_{session}_{index}`` (verl's v1 agent-loop path); a key
            without that form is its own trajectory.
        response_mask: (R, L) 1 on tokens the policy wrote.

    Returns:
        traj_ids: R strings ``{uid}_{session}``.
        turn_ids: (R, L) long; equal labels within one trajectory are one turn (the output index
            orders them, then the run of ``response_mask`` inside the row); -1 off-response.
    """
    traj_ids, row_index = [], []
    for key in keys:
        parts = str(key).rsplit("_", 2)
        if len(parts) == 3 and parts[2].isdigit():
            traj_ids.append(f"{parts[0]}_{parts[1]}")
            row_index.append(int(parts[2]))
        else:
            traj_ids.append(str(key))
            row_index.append(0)
    runs = turn_ids_from_mask(response_mask)
    offset = torch.tensor(row_index, dtype=torch.long).unsqueeze(1) * _ROW_INDEX_STRIDE
    turn_ids = torch.where(runs >= 0, runs + offset, runs)
    return traj_ids, turn_ids


def trajectory_balance_scale(keys: Sequence[str], active: Sequence[bool] | None = None) -> torch.Tensor:
    """Per-row advantage scale T̄ / T_n (``epo.balance_trajectories``).

    Args:
        keys: R row keys ``{uid}_{session}_{index}``; rows of one trajectory share ``{uid}_{session}``.
        active: R flags, False for padding rows (scale 1, not counted).

    Returns:
        float32 [R]: T̄ / T_n, with T_n the rows of row r's trajectory and T̄ their mean over
        trajectories; the scales of each trajectory's rows sum to T̄, the same for every trajectory.
    """
    traj_ids, _ = trajectory_and_turn_ids(keys, torch.zeros(len(keys), 0))
    active = [True] * len(keys) if active is None else list(active)
    counts: dict[str, int] = {}
    for traj, on in zip(traj_ids, active, strict=True):
        if on:
            counts[traj] = counts.get(traj, 0) + 1
    if not counts:
        return torch.ones(len(keys))
    mean_rows = sum(counts.values()) / len(counts)
    return torch.tensor([mean_rows / counts[t] if on else 1.0 for t, on in zip(traj_ids, active, strict=True)])


@dataclass
class StepTerms:
    """What one training step hands to the loss, and what it logs."""

    weight: torch.Tensor
    """(R, L) Eq. 2 weight of each token, scaled by the number of mini-batches (see below)."""
    reference: torch.Tensor
    """(R, L) H̄_ref per token (the same value everywhere unless per-turn); NaN at step 0."""
    beta: float
    """β_k, or 1.0 when the phase weight is off."""
    batch_entropy: float
    """H̄_k: token-mean old-policy entropy of this batch (what the history records)."""
    turn_entropy: dict[int, float] = field(default_factory=dict)
    """Token-mean entropy per turn index (for the per-turn reference and the metrics)."""
    metrics: dict[str, float] = field(default_factory=dict)


def _mean_turns(traj_ids: Sequence[str], turn_index: torch.Tensor) -> float:
    """Mean number of turns per trajectory (trajectories with no response token not counted)."""
    last: dict[str, int] = {}
    for traj, row_max in zip(traj_ids, turn_index.max(dim=1).values.tolist(), strict=True):
        if row_max >= 0:
            last[traj] = max(last.get(traj, -1), row_max)
    return sum(v + 1 for v in last.values()) / max(len(last), 1)


def _turn_bucket_edges(max_turn: int, buckets: int) -> list[int]:
    width = max(1, -(-(max_turn + 1) // buckets))
    return list(range(0, max_turn + 1, width))


def compute_step_terms(
    entropy: torch.Tensor,
    response_mask: torch.Tensor,
    keys: Sequence[str],
    history: EntropyHistory,
    epo: EPOConfig,
    step: int,
    total_steps: int,
    num_mini_batches: int = 1,
    turn_history: PerTurnEntropyHistory | None = None,
) -> StepTerms:
    """EPO's per-step quantities for a rollout batch.

    Args:
        entropy: (R, L) old-policy token entropy of the rollout batch (no gradient needed).
        response_mask: (R, L) 1 on response tokens; padding rows are all 0.
        keys: R row keys (see ``trajectory_and_turn_ids``).
        history: the entropy history BEFORE this step's update (its reference excludes step k).
        turn_history: per-turn-index histories (the per-turn reference option), or None.
        epo: settings.
        step: k, 0-based index of the step being trained.
        total_steps: K for Eq. 5.
        num_mini_batches: optimizer steps verl takes per epoch on this batch. Each token's Eq. 2
            weight is multiplied by it, so every optimizer step sees the EPO term at full
            strength and the sum over all mini-batches is ``num_mini_batches`` × the whole-batch
            value (exactly the whole-batch value when there is one mini-batch).

    Returns:
        StepTerms.
    """
    mask = response_mask.to(torch.bool)
    entropy = entropy.detach().float()
    traj_ids, turn_ids = trajectory_and_turn_ids(keys, response_mask)
    weight = trajectory_token_weights(response_mask, traj_ids, turn_ids)
    turn_index = turn_index_in_trajectory(response_mask, traj_ids, turn_ids)

    n_tokens = int(mask.sum())
    batch_entropy = float(entropy[mask].mean()) if n_tokens else 0.0
    turn_entropy = turn_index_means(entropy, response_mask, traj_ids, turn_ids)

    global_ref = history.reference
    per_turn = None if turn_history is None else turn_history.reference_for(turn_index, global_ref)
    if per_turn is None:
        fill = float("nan") if global_ref is None else float(global_ref)
        reference = torch.full_like(entropy, fill)
    else:
        reference = torch.where(mask, per_turn.to(entropy.dtype), torch.nan)

    k_total = epo.total_steps or total_steps
    beta = phase_weight(step, k_total, epo.gamma) if epo.use_phase_weight else 1.0

    has_ref = ~torch.isnan(reference)
    ref0 = torch.where(has_ref, reference, torch.zeros_like(reference))
    penalty = smoothing_penalty(entropy, ref0, epo.kappa_low, epo.kappa_high) * has_ref
    above = (mask & has_ref & (entropy > epo.kappa_high * ref0)).sum()
    below = (mask & has_ref & (entropy < epo.kappa_low * ref0)).sum()
    denom = max(n_tokens, 1)
    metrics = {
        "epo/beta": beta,
        "epo/batch_entropy": batch_entropy,
        "epo/trajectory_entropy": float(trajectory_mean(entropy, response_mask, traj_ids, turn_ids)),
        "epo/smooth_penalty": epo.alpha
        * float(trajectory_mean(penalty, response_mask, traj_ids, turn_ids)),
        "epo/frac_above_band": float(above) / denom,
        "epo/frac_below_band": float(below) / denom,
        "epo/turns_per_trajectory": _mean_turns(traj_ids, turn_index),
        # which Eq. 6 variant trained this step: 0 = paper, 1 = hold (entropy bonus mirrored above the band)
        "epo/band_mode_hold": float(epo.band_mode == "hold"),
    }
    if global_ref is not None:
        metrics["epo/reference_entropy"] = float(global_ref)
        metrics["epo/band_low"] = epo.kappa_low * float(global_ref)
        metrics["epo/band_high"] = epo.kappa_high * float(global_ref)
    if turn_entropy:
        edges = _turn_bucket_edges(max(turn_entropy), epo.turn_buckets)
        for lo, hi in zip(edges, edges[1:] + [max(turn_entropy) + 1], strict=True):
            sel = mask & (turn_index >= lo) & (turn_index < hi)
            if sel.any():
                metrics[f"epo/entropy_turn_{lo:03d}"] = float(entropy[sel].mean())

    return StepTerms(
        weight=weight * num_mini_batches,
        reference=reference,
        beta=beta,
        batch_entropy=batch_entropy,
        turn_entropy=turn_entropy,
        metrics=metrics,
    )
