"""Per-step EPO quantities computed once on the driver, on the whole rollout batch.

After verl has computed the old policy's entropy for the rollout batch, the trainer calls
``compute_step_terms``. It returns what the loss needs: the Eq. 2 weight of every token, the
entropy reference H̄_ref of Eq. 3 as the value(s) it is (one float, or one per turn index, or None
before any step) with each row's first turn index, and the step's β_k (Eq. 5); plus the ``epo/*``
metrics of the rollout batch. Trajectory and turn structure come only from what verl itself puts
in the batch (``verl_epo.row_keys.BatchTurns``: the v1 row keys and runs of ``response_mask``), so
any agent loop works, one row per turn or one row per conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from verl_epo.algorithm import (
    EntropyHistory,
    PerTurnEntropyHistory,
    TurnStructure,
    band_fractions,
    phase_weight,
    reference_per_token,
    smoothing_penalty,
)
from verl_epo.config import EPOConfig
from verl_epo.row_keys import BatchTurns

Reference = float | list[float] | None
"""H̄_ref as it travels to the loss: None (no reference yet), one float, or one per turn index."""


def trajectory_balance_scale(traj_ids: Sequence[str], active: Sequence[bool] | None = None) -> torch.Tensor:
    """Per-row advantage scale T̄ / T_n (``epo.balance_trajectories``).

    Args:
        traj_ids: R trajectory ids (``BatchTurns.traj_ids``), one per row.
        active: R flags, False for padding rows (scale 1, not counted).

    Returns:
        float32 [R]: T̄ / T_n, with T_n the rows of row r's trajectory and T̄ their mean over
        trajectories; the scales of each trajectory's rows sum to T̄, the same for every trajectory.
    """
    active = [True] * len(traj_ids) if active is None else list(active)
    counts: dict[str, int] = {}
    for traj, on in zip(traj_ids, active, strict=True):
        if on:
            counts[traj] = counts.get(traj, 0) + 1
    if not counts:
        return torch.ones(len(traj_ids))
    mean_rows = sum(counts.values()) / len(counts)
    return torch.tensor([mean_rows / counts[t] if on else 1.0 for t, on in zip(traj_ids, active, strict=True)])


@dataclass
class StepTerms:
    """What one training step hands to the loss, and what it logs."""

    weight: torch.Tensor | None
    """(R, L) Eq. 2 weight of each token, scaled by the number of mini-batches (see below)."""
    reference_value: Reference
    """H̄_ref as sent to the loss: None at step 0, one float, or one per turn index (per-turn option)."""
    beta: float
    """β_k, or 1.0 when the phase weight is off."""
    batch_entropy: float
    """H̄_k: token-mean old-policy entropy of this batch (what the history records)."""
    turn_entropy: dict[int, float] = field(default_factory=dict)
    """Token-mean entropy per turn index (for the per-turn reference and the metrics)."""
    metrics: dict[str, float] = field(default_factory=dict)
    turns: BatchTurns | None = None
    """The batch's trajectory and turn structure the terms were computed on."""

    @property
    def reference(self) -> torch.Tensor:
        """(R, L) H̄_ref per token, NaN where there is none: the view the loss builds."""
        if self.turns is None:
            raise ValueError("StepTerms without a batch structure has no per-token reference")
        return reference_per_token(self.reference_value, self.turns.turn_index)


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


def _band_hold_metrics(
    structure: TurnStructure, entropy: torch.Tensor, batch_entropy: float, reference: float, epo: EPOConfig
) -> dict[str, float]:
    """Whether the band holds where a bound can make it hold (``docs/epo_band.md``): on means, not
    on single tokens. ``batch_ratio`` = H̄_k / H̄_ref (the band holds for the batch when it lies in
    [κ_l, κ_r]); ``traj_inside`` / ``traj_above``: fractions of trajectories whose Eq. 2 mean
    entropy lies inside / above [κ_l·H̄_ref, κ_r·H̄_ref]. Always against the one global reference."""
    means = structure.trajectory_means(entropy)[None, :]
    above, below = band_fractions(means, reference, epo.kappa_low, epo.kappa_high, torch.ones_like(means))
    metrics = {"epo/band/traj_inside": 1.0 - above - below if means.numel() else 0.0, "epo/band/traj_above": above}
    if reference > 0:
        metrics["epo/band/batch_ratio"] = batch_entropy / reference
    return metrics


def compute_step_terms(
    entropy: torch.Tensor,
    turns: BatchTurns,
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
        turns: the batch's structure (``BatchTurns.from_keys(keys, response_mask)``; padding rows
            have an all-0 ``response_mask``).
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
    structure, turn_index = turns.structure, turns.turn_index
    mask = structure.response
    entropy = entropy.detach().float()

    n_tokens = int(mask.sum())
    batch_entropy = float(entropy[mask].mean()) if n_tokens else 0.0
    turn_entropy = structure.turn_index_means(entropy, turn_index)

    global_ref = history.reference
    reference_value: Reference = None
    if global_ref is not None:
        max_turn = int(turn_index.max()) if turn_index.numel() else -1
        reference_value = (
            float(global_ref) if turn_history is None else turn_history.references_by_turn(max_turn, global_ref)
        )
    reference = reference_per_token(reference_value, turn_index)

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
        "epo/trajectory_entropy": float(structure.mean(entropy)),
        "epo/smooth_penalty": epo.alpha * float(structure.mean(penalty)),
        "epo/frac_above_band": float(above) / denom,
        "epo/frac_below_band": float(below) / denom,
        "epo/turns_per_trajectory": _mean_turns(turns.traj_ids, turn_index),
        # which Eq. 6 variant trained this step: 0 = paper, 1 = hold (entropy bonus mirrored above the band)
        "epo/band_mode_hold": float(epo.band_mode == "hold"),
    }
    if global_ref is not None:
        metrics["epo/reference_entropy"] = float(global_ref)
        metrics["epo/band_low"] = epo.kappa_low * float(global_ref)
        metrics["epo/band_high"] = epo.kappa_high * float(global_ref)
        metrics.update(_band_hold_metrics(structure, entropy, batch_entropy, float(global_ref), epo))
    if turn_entropy:
        edges = _turn_bucket_edges(max(turn_entropy), epo.turn_buckets)
        for lo, hi in zip(edges, edges[1:] + [max(turn_entropy) + 1], strict=True):
            sel = mask & (turn_index >= lo) & (turn_index < hi)
            if sel.any():
                metrics[f"epo/entropy_turn_{lo:03d}"] = float(entropy[sel].mean())

    return StepTerms(
        weight=structure.token_weights() * num_mini_batches,
        reference_value=reference_value,
        beta=beta,
        batch_entropy=batch_entropy,
        turn_entropy=turn_entropy,
        metrics=metrics,
        turns=turns,
    )
