"""Eq. 3 hinge (values and gradient through a real softmax policy), Eq. 5, band fractions."""

from __future__ import annotations

import math

import pytest
import torch

from verl_epo.algorithm import (
    band_fractions,
    phase_weight,
    smoothing_penalty,
    trajectory_mean,
)


def test_penalty_hand_values_and_leaf_gradient() -> None:
    # band [0.5·1, 1.5·1] = [0.5, 1.5]
    # H = 0.2 -> 0.5 - 0.2 = 0.3;  0.5, 1.0, 1.5 -> 0 (boundaries inside);  2.0 -> 2.0 - 1.5 = 0.5
    entropy = torch.tensor([[0.2, 0.5, 1.0, 1.5, 2.0]], dtype=torch.float64, requires_grad=True)
    penalty = smoothing_penalty(entropy, 1.0, 0.5, 1.5)
    assert torch.allclose(penalty, torch.tensor([[0.3, 0.0, 0.0, 0.0, 0.5]], dtype=torch.float64))
    penalty.sum().backward()
    # dP/dH: -1 below, exactly 0 inside (and on the boundaries), +1 above
    assert torch.equal(
        entropy.grad, torch.tensor([[-1.0, 0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    )


def test_penalty_per_token_reference() -> None:
    # ref 1 -> band [0.5, 1.5]; ref 2 -> band [1, 3]
    # H = 0.2 (ref 1) -> 0.3;  1.0 (ref 1) -> 0;  0.6 (ref 2) -> 1 - 0.6 = 0.4;  3.5 (ref 2) -> 0.5
    entropy = torch.tensor([[0.2, 1.0], [0.6, 3.5]])
    reference = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    penalty = smoothing_penalty(entropy, reference, 0.5, 1.5)
    assert torch.allclose(penalty, torch.tensor([[0.3, 0.0], [0.4, 0.5]]))
    column = torch.tensor([[1.0], [2.0]])  # broadcastable [R, 1]
    assert torch.allclose(smoothing_penalty(entropy, column, 0.5, 1.5), penalty)


def test_penalty_without_reference_is_zero() -> None:
    entropy = torch.rand(3, 4)
    assert torch.equal(smoothing_penalty(entropy, None, 0.0, 2.0), torch.zeros(3, 4))


def test_penalty_paper_band_has_no_lower_side() -> None:
    # paper: κ_l = 0, κ_r = 2 -> only entropy above 2·ref is penalised
    entropy = torch.tensor([[0.0, 0.1, 1.9, 2.5]])
    penalty = smoothing_penalty(entropy, 1.0, 0.0, 2.0)
    assert torch.allclose(penalty, torch.tensor([[0.0, 0.0, 0.0, 0.5]]))


@pytest.mark.parametrize(
    ("low", "high", "match"),
    [(2.0, 1.0, "kappa_low"), (-0.1, 1.0, "kappa_low"), (0.0, float("nan"), "kappa_high")],
)
def test_penalty_rejects_bad_band(low, high, match) -> None:
    with pytest.raises(ValueError, match=match):
        smoothing_penalty(torch.ones(1, 1), 1.0, low, high)


def test_penalty_rejects_reference_of_wrong_shape() -> None:
    with pytest.raises(ValueError, match="does not broadcast"):
        smoothing_penalty(torch.ones(2, 3), torch.ones(2, 2), 0.0, 2.0)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """Token entropy of a softmax policy, [R, L, V] logits -> [R, L]."""
    log_probs = torch.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def test_one_sgd_step_on_smoothing_moves_entropy_toward_the_band() -> None:
    # Entropies of these 6-way softmax rows (float64): flat ≈ 1.789, peaked ≈ 0.439,
    # very peaked ≈ 0.241, mid ≈ 1.334, mid2 ≈ 1.416. Band with ref 1, κ = (0.8, 1.6): [0.8, 1.6].
    flat = [0.1, -0.05, 0.0, 0.08, -0.1, 0.02]
    peaked = [4.0, 0.0, 0.1, -0.2, 0.3, 0.0]
    very_peaked = [5.0, 1.0, 0.0, 0.0, -1.0, 0.5]
    mid = [2.0, 1.0, 0.3, -0.5, 0.2, -1.0]
    mid2 = [1.8, 1.2, 0.0, -0.4, 0.5, -1.0]
    # two trajectories, row per conversation; the last token of row 0 is environment text
    layout = [[flat, mid, peaked, flat], [very_peaked, mid2, flat, mid]]
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 1]])
    logits = torch.nn.Parameter(torch.tensor(layout, dtype=torch.float64))
    ref, low, high = 1.0, 0.8, 1.6

    before = _entropy(logits).detach()
    above = (before > high * ref) & (mask == 1)
    below = (before < low * ref) & (mask == 1)
    inside = ~above & ~below & (mask == 1)
    assert above.sum() == 2 and below.sum() == 2 and inside.sum() == 2  # all three cases occur

    loss = trajectory_mean(smoothing_penalty(_entropy(logits), ref, low, high), mask, ["x", "y"])
    loss.backward()
    grad = logits.grad
    assert torch.count_nonzero(grad[inside]) == 0  # in-band: exactly zero, not merely small
    assert torch.count_nonzero(grad[mask == 0]) == 0  # non-response tokens: weight 0
    assert (grad[above].abs().sum(-1) > 0).all() and (grad[below].abs().sum(-1) > 0).all()

    with torch.no_grad():
        logits -= 0.5 * grad  # one SGD step on L_smooth
    after = _entropy(logits).detach()
    assert (after[above] < before[above]).all()
    assert (after[below] > before[below]).all()
    assert torch.equal(after[inside], before[inside])
    assert torch.equal(after[mask == 0], before[mask == 0])


def test_phase_weight_values() -> None:
    # K = 125 -> k_mid = 62: β_0 = 1 + e^0 = 2, β_62 = 1 + e^-3, β_124 = 1 + e^-6
    assert phase_weight(0, 125, 3.0) == 2.0
    assert phase_weight(62, 125, 3.0) == pytest.approx(1.0497870684)
    assert phase_weight(124, 125, 3.0) == pytest.approx(1.0024787522)
    # K = 1 -> k_mid = max(1, 0) = 1: β_1 = 1 + e^-3
    assert phase_weight(1, 1, 3.0) == pytest.approx(1 + math.exp(-3))
    # K = 150 -> k_mid = 75: β_25 = 1 + e^-1
    assert phase_weight(25, 150, 3.0) == pytest.approx(1 + math.exp(-1))
    assert phase_weight(40, 100, 0.0) == 2.0  # γ = 0: no decay


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 0, 3.0), "total_steps"), ((-1, 10, 3.0), "step"), ((1.5, 10, 3.0), "step"),
     ((0, 10, -1.0), "gamma"), ((0, 10, float("inf")), "gamma")],
)  # fmt: skip
def test_phase_weight_rejects_bad_arguments(args, match) -> None:
    with pytest.raises(ValueError, match=match):
        phase_weight(*args)


def test_band_fractions_hand_values() -> None:
    # response tokens 0.2, 0.5, 1.0, 1.5, 2.0 (9.0 is not a response token); band [0.5, 1.5]
    # above: 2.0 -> 1/5; below: 0.2 -> 1/5 (boundary values count as inside)
    entropy = torch.tensor([[0.2, 0.5, 1.0], [1.5, 2.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert band_fractions(entropy, 1.0, 0.5, 1.5, mask) == pytest.approx((0.2, 0.2))
    assert band_fractions(entropy, None, 0.5, 1.5, mask) == (0.0, 0.0)
    assert band_fractions(entropy, 1.0, 0.5, 1.5, torch.zeros_like(mask)) == (0.0, 0.0)


def test_bf16_entropy_is_compared_with_a_float32_reference() -> None:
    # 1.0 in bf16 against band edge 2·0.5004 = 1.0008: bf16 would round 0.5004 to 0.5 (edge 1.0)
    # and call the token in-band; in float32 it is below by 0.0008
    entropy = torch.tensor([[1.0]], dtype=torch.bfloat16, requires_grad=True)
    penalty = smoothing_penalty(entropy, 0.5004, 2.0, 4.0)
    assert penalty.dtype == torch.float32
    assert penalty.item() == pytest.approx(0.0008, abs=1e-6)
    penalty.sum().backward()
    assert entropy.grad.item() == -1.0
