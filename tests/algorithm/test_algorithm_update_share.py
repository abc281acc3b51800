"""``verl_epo.algorithm.update_share`` against torch's real AdamW and hand values."""

import math

import pytest
import torch

from verl_epo.algorithm.update_share import (
    AdamMoments,
    adam_step_sums,
    clip_scale,
    gradient_sums,
    update_share_metrics,
    zero_advantage_fractions,
)


def test_gradient_sums_hand_values():
    sums = gradient_sums([torch.tensor([3.0, 0.0]), torch.tensor([[1.0]])],
                         [torch.tensor([0.0, 4.0]), torch.tensor([[2.0]])])
    assert sums.tolist() == [10.0, 20.0, 2.0]
    # the step: a = 1, a + b = 2 (b = 1, along a); this step's gradient: a = 3, a + b = -3 (b = -6)
    metrics = update_share_metrics(sums, torch.tensor([1.0, 4.0, 2.0, 9.0, 9.0, -9.0]))
    assert metrics["grad_ratio"] == pytest.approx(math.sqrt(2))
    assert metrics["grad_cos"] == pytest.approx(2 / math.sqrt(200))
    assert metrics["grad_share"] == pytest.approx(math.sqrt(20) / (math.sqrt(10) + math.sqrt(20)))
    assert metrics["step_share"] == metrics["step_ratio"] == pytest.approx(0.5)
    assert metrics["gradient_step_share"] == pytest.approx(3 / 9)
    assert metrics["gradient_step_ratio"] == pytest.approx(1.0)


def test_opposing_parts_share_stays_below_one_ratio_does_not():
    """EPO's part a = 3 against the rest b = -2: the whole step is 1, EPO's part is 3 times it."""
    a, b = torch.tensor([3.0]), torch.tensor([-2.0])
    metrics = update_share_metrics(gradient_sums([b], [a]), adam_step_sums([b], [a], [None]))
    assert metrics["gradient_step_share"] == metrics["step_share"] == pytest.approx(3 / 5)
    assert metrics["gradient_step_ratio"] == metrics["step_ratio"] == pytest.approx(3.0)
    assert metrics["grad_share"] == pytest.approx(3 / 5) and metrics["grad_cos"] == pytest.approx(-1.0)


@pytest.mark.parametrize("max_norm", [None, 0.01])
def test_adam_step_sums_predict_adamws_real_step(max_norm):
    """Split a gradient into two parts, take a real AdamW step on their (clipped) sum after three
    earlier steps: ‖Δθ‖ = lr / (1 − β1^t) · ‖D·m_t‖, and the EPO part's share of it is what the
    function says, checked by a second AdamW that sees the same history and only that part."""
    g = torch.Generator().manual_seed(0)
    theta = torch.nn.Parameter(torch.randn(50, generator=g, dtype=torch.float64))
    opt = torch.optim.AdamW([theta], lr=1e-2, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(3):
        opt.zero_grad()
        theta.grad = torch.randn(50, generator=g, dtype=torch.float64)
        opt.step()
    policy = torch.randn(50, generator=g, dtype=torch.float64)
    epo = 0.3 * torch.randn(50, generator=g, dtype=torch.float64)
    state = opt.state[theta]
    moments = AdamMoments(state["exp_avg"].clone(), state["exp_avg_sq"].clone(), int(state["step"]), 0.9, 0.999, 1e-8)
    scale = clip_scale(float((policy + epo).norm()), max_norm)
    sums = adam_step_sums([policy], [epo], [moments], scale)
    epo_sq, step_sq, epo_step_dot, epo_fresh_sq, fresh_sq, epo_fresh_dot = sums.tolist()
    before = theta.detach().clone()
    theta.grad = (policy + epo).clone()
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_([theta], max_norm)
    opt.step()
    change = (theta.detach() - before).double()
    assert float(change.norm()) == pytest.approx(1e-2 / (1 - 0.9**4) * math.sqrt(step_sq), rel=1e-6)
    # the EPO part of the step: (1 − β1)·s·D·g_epo, with D from v_t of the whole gradient
    v_t = 0.999 * moments.exp_avg_sq.double() + 0.001 * (scale * (policy + epo).double()) ** 2
    d = 1 / ((v_t / (1 - 0.999**4)).sqrt() + 1e-8)
    epo_step = 0.1 * scale * d * epo.double()
    assert math.sqrt(epo_sq) == pytest.approx(float(epo_step.norm()), rel=1e-9)
    # the rest of the step, as the change itself shows it: Δ·(1 − β1^t)/lr minus EPO's part
    rest = -change * (1 - 0.9**4) / 1e-2 - epo_step
    share = update_share_metrics(gradient_sums([policy], [epo]), sums)["step_share"]
    assert share == pytest.approx(float(epo_step.norm() / (epo_step.norm() + rest.norm())), rel=1e-6)
    assert epo_step_dot == pytest.approx(float(epo_step @ (epo_step + rest)), rel=1e-6)
    assert math.sqrt(epo_fresh_sq / fresh_sq) == pytest.approx(float((d * epo).norm() / (d * (policy + epo)).norm()))
    assert epo_fresh_dot == pytest.approx(float((d * epo) @ (d * scale * (policy + epo))) * scale, rel=1e-9)


def test_first_step_without_policy_gradient_is_all_epo():
    """No Adam state yet and g_pol = 0: Adam's first step is sign(g_epo), all of it EPO's."""
    epo = torch.tensor([1e-6, -3e-7, 2e-5])
    moments = [AdamMoments(None, None, 0, 0.9, 0.999, 1e-8)]
    sums = adam_step_sums([torch.zeros(3)], [epo], moments)
    metrics = update_share_metrics(gradient_sums([torch.zeros(3)], [epo]), sums)
    assert metrics["step_share"] == metrics["gradient_step_share"] == pytest.approx(1.0)
    assert "grad_ratio" not in metrics and metrics["grad_share"] == 1.0


def test_without_moments_the_step_is_the_gradient():
    sums = adam_step_sums([torch.tensor([3.0])], [torch.tensor([1.0])], [None])
    assert sums.tolist() == [1.0, 16.0, 4.0, 1.0, 16.0, 4.0]


def test_clip_scale_matches_torch():
    assert clip_scale(5.0, None) == clip_scale(5.0, 10.0) == 1.0
    assert clip_scale(5.0, 1.0) == pytest.approx(1.0 / (5.0 + 1e-6))


def test_zero_advantage_fractions_hand_count():
    adv = torch.tensor([[0.0, 0.0], [0.5, 0.5], [0.0, 0.0], [0.0, 9.0], [1.0, 1.0]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 0], [1, 0], [0, 0]])  # row 3's nonzero is off-response
    rows, groups = zero_advantage_fractions(adv, mask, ["a", "a", "b", "b", "c"])
    assert rows == pytest.approx(3 / 4)  # row 4 is padding
    assert groups == pytest.approx(1 / 2)  # a has a nonzero row, b is all zero
    with pytest.raises(ValueError, match="same rows"):
        zero_advantage_fractions(adv, mask, ["a"])
