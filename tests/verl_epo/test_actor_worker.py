"""The update-share measurement (``verl_epo.actor_worker``) on a real softmax policy and real AdamW.

``SoftmaxEngine`` offers the part of verl's training-engine interface that ``measure_update_share``
uses (forward/backward of a mini-batch through a loss function, the optimizer, zero_grad, the clip
setting) over ``test_loss``'s softmax policy and verl's real ``ppo_loss``; the e2e test
(``tests/e2e/test_train_cpu.py``) runs the same code inside verl's FSDP engine.
"""

from types import SimpleNamespace

import pytest
import torch
from test_loss import ROWS, SoftmaxPolicy, make_batch
from verl.utils import tensordict_utils as tu

from verl_epo.actor_worker import DIAGNOSE_KEY, METRIC_PREFIX, UpdateShareProbe, measure_update_share
from verl_epo.config import EPOConfig
from verl_epo.loss import epo_loss

EPO = EPOConfig(entropy_coef=1e-3, alpha=0.3, kappa_low=0.8, kappa_high=1.1)


class SoftmaxEngine:
    """The engine interface ``measure_update_share`` and ``UpdateShareProbe`` use, on a softmax policy."""

    def __init__(self, clip: float = 1e9, lr: float = 1e-2, seed: int = 0) -> None:
        self.policy = SoftmaxPolicy(seed)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=lr, weight_decay=0.0)
        self.optimizer_config = SimpleNamespace(clip_grad=clip)

    def optimizer_zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def is_mp_src_rank_with_outputs(self) -> bool:
        return True

    def forward_backward_batch(self, data, loss_function, forward_only=False):
        out = self.policy(list(range(len(ROWS))), data)
        loss, _ = loss_function(model_output=out, data=data, dp_group=None)
        loss.backward()
        return {}

    def train_batch(self, data, loss_function):
        self.optimizer_zero_grad()
        self.forward_backward_batch(data, loss_function)
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.optimizer_config.clip_grad)
        self.optimizer.step()
        return {"metrics": {"grad_norm": float(norm)}}

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in self.policy.parameters()])


def part_gradients(engine, loss, data):
    """Hand computation: the two parts' gradients by autograd on the whole policy, flattened."""
    out = engine.policy(list(range(len(ROWS))), data)
    grads = []
    for part in ("policy", "epo"):
        value, _ = loss(model_output=out, data=data, part=part)
        g = torch.autograd.grad(value, list(engine.policy.parameters()), retain_graph=True, allow_unused=True)
        grads.append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten()
                                for x, p in zip(g, engine.policy.parameters(), strict=True)]).double())
    return grads


def loss_fn(actor_config, epo=EPO):
    return lambda **kw: epo_loss(actor_config, **kw, epo=epo)


def test_gradient_numbers_equal_a_hand_computation(actor_config):
    data, _, _ = make_batch()
    engine = SoftmaxEngine()
    g_pol, g_epo = part_gradients(engine, loss_fn(actor_config), data)
    metrics = measure_update_share(engine, data, loss_fn(actor_config))
    assert g_epo.norm() > 0 and g_pol.norm() > 0
    assert metrics["grad_norm_policy"] == pytest.approx(float(g_pol.norm()), rel=1e-9)
    assert metrics["grad_norm_epo"] == pytest.approx(float(g_epo.norm()), rel=1e-9)
    assert metrics["grad_ratio"] == pytest.approx(float(g_epo.norm() / g_pol.norm()), rel=1e-9)
    assert metrics["grad_cos"] == pytest.approx(float(g_pol @ g_epo / (g_pol.norm() * g_epo.norm())), rel=1e-9)
    assert metrics["grad_norm_total"] == pytest.approx(float((g_pol + g_epo).norm()), rel=1e-9)
    assert all(p.grad is None or not p.grad.any() for p in engine.policy.parameters())  # left zeroed


def test_ratio_grows_in_proportion_to_lambda(actor_config):
    data, _, _ = make_batch()
    ratios = []
    for lam in (1e-3, 4e-3):
        epo = EPOConfig(entropy_coef=lam, alpha=0.3, kappa_low=0.8, kappa_high=1.1)
        ratios.append(measure_update_share(SoftmaxEngine(), data, loss_fn(actor_config, epo))["grad_ratio"])
    assert ratios[1] == pytest.approx(4 * ratios[0], rel=1e-9)


def test_epo_part_is_zero_when_epo_is_off(actor_config):
    data, _, _ = make_batch()
    metrics = measure_update_share(SoftmaxEngine(), data, loss_fn(actor_config, EPOConfig(enable=False)))
    assert metrics["grad_norm_policy"] > 0
    assert metrics["grad_norm_epo"] == metrics["grad_ratio"] == metrics["step_share"] == 0.0


def test_measuring_leaves_the_update_unchanged(actor_config):
    """With Adam's moments populated and clipping active, a measured update moves the parameters
    exactly as an unmeasured one, and verl's grad norm equals the measured parts' total."""
    data, _, _ = make_batch()
    loss = loss_fn(actor_config)
    engines = [SoftmaxEngine(clip=0.05), SoftmaxEngine(clip=0.05)]
    for engine in engines:
        for _ in range(3):
            engine.train_batch(data, loss)
    plain = engines[0].train_batch(data, loss)
    tu.assign_non_tensor_data(data, DIAGNOSE_KEY, 4)
    measured = UpdateShareProbe(engines[1])(data, loss)
    assert torch.equal(engines[0].flat(), engines[1].flat())
    assert measured["metrics"]["grad_norm"] == plain["metrics"]["grad_norm"]
    [total] = measured["metrics"][METRIC_PREFIX + "grad_norm_total"]
    assert measured["metrics"]["grad_norm"] == pytest.approx(total, rel=1e-6)
    [share] = measured["metrics"][METRIC_PREFIX + "step_share"]
    assert 0 < share < 1


def test_epo_alone_makes_the_whole_step_when_advantages_are_zero(actor_config):
    """Every advantage 0 (a step whose episodes all failed) and no KL: the policy loss has no gradient,
    the ratio is undefined and left out, and EPO's λ = 1e-3 terms make all of Adam's step."""
    data, _, _ = make_batch()
    data["advantages"] = torch.nested.as_nested_tensor([torch.zeros(r) for _, _, r in ROWS], layout=torch.jagged)
    metrics = measure_update_share(SoftmaxEngine(), data, loss_fn(actor_config))
    assert metrics["grad_norm_policy"] == 0.0 and "grad_ratio" not in metrics
    assert metrics["grad_share"] == pytest.approx(1.0)
    assert metrics["step_share"] == metrics["gradient_step_share"] == pytest.approx(1.0, rel=1e-9)


def test_probe_measures_each_marked_step_once(actor_config):
    data, _, _ = make_batch()
    engine = SoftmaxEngine()
    probe = UpdateShareProbe(engine)
    loss = loss_fn(actor_config)
    assert METRIC_PREFIX + "step_share" not in probe(data, loss)["metrics"]  # no mark: plain training
    tu.assign_non_tensor_data(data, DIAGNOSE_KEY, 7)
    assert METRIC_PREFIX + "step_share" in probe(data, loss)["metrics"]
    assert METRIC_PREFIX + "step_share" not in probe(data, loss)["metrics"]  # the step's later mini-batches
