"""verl's actor worker plus one measurement: how much of an actor update EPO makes (``epo.diagnostic_every``).

On a step the trainer marks (``DIAGNOSE_KEY`` in the batch's non-tensor data), the worker takes the
step's first mini-batch, exactly the data of its first optimizer update, and before that update runs
verl's own forward/backward on it twice: once with the policy loss alone (``epo_loss(part="policy")``:
verl's ``ppo_loss`` with its KL term), once with EPO's terms alone (``part="epo"``). The gradients
are read from the parameters the optimizer updates (all trainable ones: with LoRA the adapters), in
their sharded layout beside Adam's state, summed over ranks, and turned into the numbers of
``verl_epo.algorithm.update_share``. The real update then runs unchanged. Cost: two extra
forward/backward passes of one mini-batch every N steps, and one copy of the gradient.

Why the parameters and not the logits: the step Adam takes is per parameter, so only there can the
gradient be set beside the optimizer's state; and verl's loss sees log-probs and entropy, not logits.

``EPOTrainer`` runs this worker in place of verl's ``ActorRolloutRefWorker`` for the actor role.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from tensordict import TensorDict
from verl.single_controller.base.decorator import Dispatch, register
from verl.utils import tensordict_utils as tu
from verl.workers.engine_workers import ActorRolloutRefWorker

from verl_epo.algorithm.update_share import (
    AdamMoments,
    adam_step_sums,
    clip_scale,
    gradient_sums,
    update_share_metrics,
)

DIAGNOSE_KEY = "epo_diagnose_step"
"""Non-tensor batch entry: the global step to measure, or None."""
METRIC_PREFIX = "epo_update/"
"""The worker's metric names; the trainer logs them as ``epo/update/<name>``."""


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (FSDP2), or the tensor itself (FSDP1's flat shards, one rank)."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _moments(optimizer: torch.optim.Optimizer, param: torch.Tensor, group: dict[str, Any]) -> AdamMoments | None:
    """This parameter's Adam state before the update; None for an optimizer without moments."""
    if "betas" not in group:
        return None
    state = optimizer.state.get(param, {})
    step = state.get("step", 0)
    exp_avg, exp_avg_sq = state.get("exp_avg"), state.get("exp_avg_sq")
    return AdamMoments(
        exp_avg=None if exp_avg is None else _local(exp_avg),
        exp_avg_sq=None if exp_avg_sq is None else _local(exp_avg_sq),
        step=int(step.item() if isinstance(step, torch.Tensor) else step),
        beta1=float(group["betas"][0]),
        beta2=float(group["betas"][1]),
        eps=float(group["eps"]),
    )


def _all_reduce(sums: torch.Tensor) -> torch.Tensor:
    """Sum over every rank of the actor (the parameter shards partition them; CPU tensors go through
    gloo on GPU runs too). With replicated shards (HSDP) every sum grows by the same factor: ratios,
    cosines and shares stay exact."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    return sums


def measure_update_share(engine: Any, data: TensorDict, loss_function: Any) -> dict[str, float]:
    """The update-share numbers of one mini-batch ``data`` (see the module docstring).

    ``engine`` is verl's training engine (``forward_backward_batch``, ``optimizer``,
    ``optimizer_zero_grad``, ``optimizer_config.clip_grad``); ``loss_function`` is
    ``partial(epo_loss, ...)``. Leaves the gradients zeroed, as ``engine.train_batch`` expects.
    """
    optimizer = engine.optimizer
    pairs = [(p, group) for group in optimizer.param_groups for p in group["params"]]

    def gradients(part: str) -> list[torch.Tensor]:
        engine.optimizer_zero_grad()
        engine.forward_backward_batch(data, partial(loss_function, part=part), forward_only=False)
        return [
            torch.zeros_like(_local(p)) if p.grad is None else _local(p.grad).detach().clone() for p, _ in pairs
        ]

    policy = gradients("policy")
    epo = gradients("epo")
    engine.optimizer_zero_grad()
    grad_sums = _all_reduce(gradient_sums(policy, epo))
    total_sq = float(grad_sums[0] + grad_sums[1] + 2 * grad_sums[2])
    scale = clip_scale(max(total_sq, 0.0) ** 0.5, getattr(engine.optimizer_config, "clip_grad", None))
    moments = [_moments(optimizer, p, group) for p, group in pairs]
    step_sums = _all_reduce(adam_step_sums(policy, epo, moments, scale))
    metrics = update_share_metrics(grad_sums, step_sums)
    metrics["grad_norm_total"] = max(total_sq, 0.0) ** 0.5
    return metrics


class UpdateShareProbe:
    """Stands in for ``engine.train_batch``: measures the marked step's first mini-batch, then trains."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.train_batch = engine.train_batch
        self.measured_step: Any = None

    def __call__(self, data: TensorDict, loss_function: Any) -> Any:
        step = tu.get_non_tensor_data(data=data, key=DIAGNOSE_KEY, default=None)
        metrics: dict[str, float] = {}
        if step is not None and step != self.measured_step:
            self.measured_step = step
            metrics = measure_update_share(self.engine, data, loss_function)
        output = self.train_batch(data, loss_function)
        if metrics and self.engine.is_mp_src_rank_with_outputs():
            # one-element lists, as verl's per-micro-batch metrics: its worker gathers them over ranks
            # and mini-batches, and the trainer logs their mean (the same value on every rank)
            output["metrics"].update({METRIC_PREFIX + name: [value] for name, value in metrics.items()})
        return output


class EPOActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl's actor (+ rollout, + reference) worker whose training engine carries ``UpdateShareProbe``."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def set_loss_fn(self, loss_fn: Any) -> None:
        super().set_loss_fn(loss_fn)
        engine = self.actor.engine
        if not isinstance(engine.train_batch, UpdateShareProbe):
            engine.train_batch = UpdateShareProbe(engine)
