"""The actor loss verl calls when EPO is on: verl's own policy loss, minus EPO's terms (Eq. 6).

    L_EPO = L_policy - λ · (L_H - β_k · L_smooth)          (+ verl's KL loss, inside L_policy)

verl calls the loss once per micro-batch and sums the gradients over micro-batches; with data
parallelism it averages them over ranks. The trainer therefore computes each token's Eq. 2 weight
once, on the whole rollout batch (``epo_weight``, see ``verl_epo.step_terms``), and this function
only sums ``weight · value`` over its micro-batch, times ``dp_size`` to undo the rank average. The
pieces then add up to the whole-batch value however verl splits the batch. β_k and the reference
H̄_ref travel as the values they are (the batch's non-tensor data); a per-turn reference is looked
up with each token's turn index, its row's ``epo_turn_offset`` plus its run of ``response_mask``.

The trainer installs it with ``actor_rollout_wg.set_loss_fn(partial(epo_loss, config=..., epo=...))``.

What the EPO part does to one token (``verl_epo.algorithm.net_entropy_coefficients``; derivative of
``-λ·(L_H - β_k·L_smooth)`` with respect to the token's entropy H, in units of λ·w, w its Eq. 2
weight; negative = gradient descent raises H; λ = 0.001, β_k from 2 at the start to 1 at the end):

| band_mode | α | β_k | below κ_l·H̄_ref | inside | above κ_r·H̄_ref |
|---|---|---|---|---|---|
| formula: paper | | | -(1 + α·β_k) | -1 | -(1 - α·β_k) |
| formula: hold | | | -(1 + α·β_k) | -1 | +(1 + α·β_k) |
| paper (ScienceWorld) | 0.05 | 2 → 1 | -1.10 → -1.05 | -1 | -0.90 → -0.95 |
| paper (ALFWorld) | 0.1 | 2 → 1 | -1.20 → -1.10 | -1 | -0.80 → -0.90 |
| hold (ScienceWorld) | 0.05 | 2 → 1 | -1.10 → -1.05 | -1 | +1.10 → +1.05 |
| hold (ALFWorld) | 0.1 | 2 → 1 | -1.20 → -1.10 | -1 | +1.20 → +1.10 |

(At the paper's κ_l = 0 no token is below the band.) With ``band_mode=paper`` the hinge never pulls
entropy down at these settings; ``hold`` mirrors the bonus above the band (``verl_epo/algorithm/band.py``,
``docs/epo_band.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from verl_epo.algorithm import entropy_term_values, reference_per_token, smoothing_penalty
from verl_epo.config import EPOConfig
from verl_epo.row_keys import token_turn_index

WEIGHT_KEY = "epo_weight"
"""Per-token Eq. 2 weight, [R, L] nested like ``advantages`` (0 off-response)."""
TURN_OFFSET_KEY = "epo_turn_offset"
"""Per-row turn index of the row's first turn in its trajectory, long [R]."""
REFERENCE_KEY = "epo_reference"
"""H̄_ref of the step (non-tensor data): None before any step, a float, or a list, one per turn index."""
BETA_KEY = "epo_beta"
"""β_k of the step being trained (a float in the batch's non-tensor data)."""
LOSS_PARTS = ("all", "policy", "epo")


def epo_terms(
    entropy: torch.Tensor,
    weight: torch.Tensor,
    reference: torch.Tensor,
    epo: EPOConfig,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This micro-batch's share of the EPO objective.

    Args:
        entropy: (bs, response_length) current-policy token entropy, with gradient.
        weight: (bs, response_length) Eq. 2 weights computed on the whole batch (0 off-response).
        reference: (bs, response_length) per-token H̄_ref; NaN where there is none (step 0).
        epo: the EPO settings.
        beta: β_k (Eq. 5), already 1.0 when the phase weight is off.

    Returns:
        (objective, l_h, l_smooth): objective = λ (L_H - β_k L_smooth) and its two parts, each
        this micro-batch's share of the whole-batch value (Eq. 2, Eq. 3 with α applied). With
        ``epo.band_mode == "hold"``, L_H is the Eq. 2 mean of ``held_entropy`` (H mirrored above
        κ_r·H̄_ref) on tokens that have a reference, of H on the others.
    """
    zero = entropy.new_zeros(())
    has_ref = ~torch.isnan(reference)
    ref = torch.where(has_ref, reference, torch.zeros_like(reference))
    l_h = zero
    if epo.use_entropy_term:
        values = torch.where(has_ref, entropy_term_values(entropy, ref, epo.kappa_high, epo.band_mode), entropy)
        l_h = (values * weight).sum()
    l_smooth = zero
    if epo.use_smoothing:
        penalty = smoothing_penalty(entropy, ref, epo.kappa_low, epo.kappa_high)
        l_smooth = epo.alpha * (penalty * weight * has_ref).sum()
    objective = epo.entropy_coef * (l_h - beta * l_smooth)
    return objective, l_h, l_smooth


def epo_loss(
    config: Any,
    model_output: dict[str, Any],
    data: TensorDict,
    dp_group: Any = None,
    *,
    epo: EPOConfig,
    part: str = "all",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """verl's ``ppo_loss`` (whatever policy loss, aggregation and KL loss it is configured with)
    minus EPO's objective. Same signature as verl's loss functions plus ``epo``.

    ``part`` selects what is returned for backward: ``"all"`` (training), ``"policy"`` (verl's loss
    alone) or ``"epo"`` (EPO's terms alone, zero with ``epo.enable=false``); the two parts sum to
    ``"all"``. ``verl_epo.actor_worker`` uses them to measure each one's gradient.
    """
    if part not in LOSS_PARTS:
        raise ValueError(f"part={part!r} is invalid: must be one of {LOSS_PARTS}")
    policy_loss, metrics = ppo_loss(config, model_output, data, dp_group)
    if part == "policy":
        return policy_loss, metrics
    if not epo.enable:
        # a zero that keeps the graph, so that backward of the EPO part runs and gives zero gradients
        return (policy_loss * 0.0 if part == "epo" else policy_loss), metrics

    entropy = model_output.get("entropy")
    if entropy is None:
        raise RuntimeError(
            "EPO needs the current policy's entropy but verl did not compute it: set "
            "actor_rollout_ref.actor.calculate_entropy=true (the EPO trainer does this itself)"
        )
    if WEIGHT_KEY not in data.keys():
        raise RuntimeError(
            f"the batch has no '{WEIGHT_KEY}': epo_loss must be used with the EPO trainer "
            "(trainer.v1.trainer_mode=epo), which computes the per-token weights"
        )
    entropy = no_padding_2_padding(entropy, data)
    padded = data.select(WEIGHT_KEY, "response_mask").to_padded_tensor()
    # at least fp32: Eq. 2 weights like 1/(B·T·|τ|) lose digits in bf16
    dtype = torch.promote_types(entropy.dtype, torch.float32)
    weight = padded[WEIGHT_KEY].to(dtype)
    offsets = data[TURN_OFFSET_KEY]  # one value per row, stored [R, 1] (or nested, one value a row)
    turn_index = token_turn_index(padded["response_mask"], offsets.values() if offsets.is_nested else offsets)
    missing = [key for key in (BETA_KEY, REFERENCE_KEY) if key not in data.keys()]
    if missing:  # a silent default here once trained without the hinge and without β_k
        raise RuntimeError(
            f"the batch reached the loss without {missing}: the EPO trainer attaches them to the batch's "
            "metadata in _update_actor; a hook that replaces the metadata after that drops them"
        )
    reference_value = tu.get_non_tensor_data(data=data, key=REFERENCE_KEY, default=None)
    reference = reference_per_token(reference_value, turn_index).to(device=entropy.device, dtype=dtype)
    beta = float(tu.get_non_tensor_data(data=data, key=BETA_KEY, default=None))
    dp_size = int(data["dp_size"])

    objective, l_h, l_smooth = epo_terms(entropy, weight, reference, epo, beta)
    loss = (policy_loss if part == "all" else policy_loss * 0.0) - objective * dp_size
    metrics["epo_loss/entropy"] = Metric(value=l_h.detach() * dp_size, aggregation=AggregationType.SUM)
    metrics["epo_loss/smooth"] = Metric(
        value=l_smooth.detach() * dp_size, aggregation=AggregationType.SUM
    )
    metrics["epo_loss/objective"] = Metric(
        value=objective.detach() * dp_size, aggregation=AggregationType.SUM
    )
    return loss, metrics
