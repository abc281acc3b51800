"""epo_loss against verl's real loss, config and batch-splitting code.

A real softmax policy (a logits table with gradient) produces verl-shaped model outputs
(nested per-sequence log-probs and entropy); the batch is a real TensorDict with nested tensors
as verl's engine receives it, split with verl's own ``chunk_tensordict``.
"""

import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.torch_functional import entropy_from_logits
from verl.workers.utils.losses import ppo_loss

from verl_epo.algorithm import entropy_term_values, smoothing_penalty, trajectory_mean
from verl_epo.config import EPOConfig
from verl_epo.loss import BETA_KEY, REFERENCE_KEY, TURN_OFFSET_KEY, WEIGHT_KEY, epo_loss
from verl_epo.row_keys import BatchTurns

VOCAB = 11
# (key, prompt length, response length): trajectories a (3 turns), b (1 turn), c (2 turns)
ROWS = [("a_0_0", 3, 2), ("a_0_1", 4, 6), ("a_0_2", 2, 3), ("b_1_0", 5, 9), ("c_0_0", 3, 1), ("c_0_1", 2, 4),
        ("d_0_0", 4, 5), ("d_0_1", 3, 2)]
REFERENCE = 1.2


def nested(rows):
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def trajectory_and_turn_ids(keys, mask):
    turns = BatchTurns.from_keys(keys, mask)
    return turns.traj_ids, turns.turn_ids


def make_batch(seed=0, reference=REFERENCE):
    """The batch as the trainer leaves it: per-token weights, per-row turn offsets ([R, 1], as
    TransferQueue returns a 1-D field), β_k and H̄_ref as the step's values."""
    g = torch.Generator().manual_seed(seed)
    keys = [k for k, _, _ in ROWS]
    masks = [torch.ones(r, dtype=torch.int64) for _, _, r in ROWS]
    padded_mask = torch.nn.utils.rnn.pad_sequence(masks, batch_first=True)
    structure = BatchTurns.from_keys(keys, padded_mask)
    weight = structure.structure.token_weights()
    td = TensorDict(
        {
            "prompts": nested([torch.randint(0, VOCAB, (p,), generator=g) for _, p, _ in ROWS]),
            "responses": nested([torch.randint(0, VOCAB, (r,), generator=g) for _, _, r in ROWS]),
            "response_mask": nested(masks),
            "old_log_probs": nested([-torch.rand(r, generator=g) * 3 for _, _, r in ROWS]),
            "advantages": nested([torch.randn(1, generator=g).expand(r).clone() for _, _, r in ROWS]),
            WEIGHT_KEY: nested([weight[i, :r] for i, (_, _, r) in enumerate(ROWS)]),
            TURN_OFFSET_KEY: structure.turn_offsets()[:, None],
        },
        batch_size=len(ROWS),
    )
    total_tokens = sum(r for _, _, r in ROWS)
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=total_tokens, global_batch_size=len(ROWS))
    tu.assign_non_tensor_data(td, BETA_KEY, 1.7)
    tu.assign_non_tensor_data(td, REFERENCE_KEY, reference)  # as verl's workers put batch.extra_info
    return td, keys, padded_mask


class SoftmaxPolicy(torch.nn.Module):
    """One free logit vector per token position of every sequence."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.logits = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(p + r, VOCAB, generator=g) * 2) for _, p, r in ROWS]
        )

    def forward(self, rows, data):
        """verl-shaped output for ``rows`` of the batch: nested (bsz, prompt+response)."""
        logp, ent = [], []
        for local, row in enumerate(rows):
            seq = torch.cat([data["prompts"][local], data["responses"][local]])
            logits = self.logits[row]
            log_softmax = torch.log_softmax(logits, -1)
            nxt = torch.cat([seq[1:], seq[:1]])  # position t predicts token t+1
            logp.append(log_softmax.gather(-1, nxt.unsqueeze(-1)).squeeze(-1))
            ent.append(entropy_from_logits(logits))
        return {"log_probs": nested(logp), "entropy": nested(ent)}


EPO = EPOConfig(entropy_coef=0.5, alpha=0.3, kappa_low=0.8, kappa_high=1.1)
EPO_HOLD = EPOConfig(entropy_coef=0.5, alpha=0.3, kappa_low=0.8, kappa_high=1.1, band_mode="hold")


def split_losses(actor_config, chunks, dp_size=1, seed=0, epo=EPO, reference=REFERENCE):
    """Sum of epo_loss over verl's micro-batches (and simulated data-parallel ranks)."""
    data, _, _ = make_batch(reference=reference)
    policy = SoftmaxPolicy(seed)
    tu.assign_non_tensor(data, dp_size=dp_size)
    rows = torch.arange(len(ROWS))
    total = 0.0
    rank_parts = tu.chunk_tensordict(data, dp_size)
    rank_rows = rows.chunk(dp_size)
    for part, part_rows in zip(rank_parts, rank_rows, strict=True):
        micro = tu.chunk_tensordict(part, chunks)
        micro_rows = part_rows.chunk(chunks)
        for mb, mb_rows in zip(micro, micro_rows, strict=True):
            loss, _ = epo_loss(actor_config, policy(mb_rows.tolist(), mb), mb, epo=epo)
            total = total + loss / dp_size  # FSDP averages gradients over ranks
    total.backward()
    grads = torch.cat([p.grad.flatten() for p in policy.logits if p.grad is not None])
    return total.detach(), grads


def whole_batch_value(actor_config, epo=EPO, reference=REFERENCE):
    """ppo_loss on the whole batch minus λ(L_H − β L_smooth) from the algorithm functions."""
    data, keys, mask = make_batch(reference=reference)
    policy = SoftmaxPolicy(0)
    out = policy(list(range(len(ROWS))), data)
    pg, _ = ppo_loss(actor_config, out, data)
    ent = torch.nn.utils.rnn.pad_sequence(
        [e[p - 1 : p - 1 + r] for e, (_, p, r) in zip(out["entropy"].unbind(), ROWS, strict=True)],
        batch_first=True,
    )
    traj, turns = trajectory_and_turn_ids(keys, mask)
    if isinstance(reference, list):  # one per turn index: the token's turn index picks it
        reference = torch.tensor(reference)[BatchTurns.from_keys(keys, mask).turn_index.clamp(min=0)]
    l_h = trajectory_mean(entropy_term_values(ent, reference, epo.kappa_high, epo.band_mode), mask, traj, turns)
    penalty = smoothing_penalty(ent, reference, epo.kappa_low, epo.kappa_high)
    l_s = epo.alpha * trajectory_mean(penalty, mask, traj, turns)
    return (pg - epo.entropy_coef * (l_h - 1.7 * l_s)).detach(), l_s.detach()


@pytest.mark.parametrize("chunks,dp", [(1, 1), (2, 1), (4, 1), (8, 1), (2, 2), (1, 4)])
def test_loss_is_invariant_to_verl_batch_splits(actor_config, chunks, dp):
    expected, l_s = whole_batch_value(actor_config)
    assert l_s > 0  # the smoothing term is active in this batch
    value, _ = split_losses(actor_config, chunks, dp)
    assert value == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_gradients_are_invariant_to_splits(actor_config):
    _, g1 = split_losses(actor_config, 1, 1)
    _, g4 = split_losses(actor_config, 4, 1)
    _, g22 = split_losses(actor_config, 2, 2)
    torch.testing.assert_close(g1, g4, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g1, g22, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("chunks,dp", [(1, 1), (4, 1), (2, 2)])
def test_hold_mode_is_the_algorithms_value_under_any_split(actor_config, chunks, dp):
    """band_mode=hold: L_H is the Eq. 2 mean of the mirrored entropy; tokens above κ_r·H̄_ref = 1.32
    exist in this batch, so the value differs from paper's."""
    expected, _ = whole_batch_value(actor_config, EPO_HOLD)
    paper, _ = whole_batch_value(actor_config, EPO)
    assert abs(expected.item() - paper.item()) > 1e-3, (expected, paper)
    value, grads = split_losses(actor_config, chunks, dp, epo=EPO_HOLD)
    assert value == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    _, paper_grads = split_losses(actor_config, chunks, dp, epo=EPO)
    assert not torch.allclose(grads, paper_grads)


@pytest.mark.parametrize("chunks,dp", [(1, 1), (4, 1), (8, 1), (2, 2)])
def test_per_turn_reference_is_looked_up_by_turn_index_under_any_split(actor_config, chunks, dp):
    """One H̄_ref per turn index travels as a list; each micro-batch finds its tokens' turn index from
    its rows' turn offsets, even when a trajectory's turns land in different micro-batches."""
    per_turn = [1.0, 1.5, 0.8]  # trajectory a has 3 turns
    expected, l_s = whole_batch_value(actor_config, reference=per_turn)
    single, _ = whole_batch_value(actor_config)
    assert l_s > 0 and abs(expected.item() - single.item()) > 1e-4
    value, _ = split_losses(actor_config, chunks, dp, reference=per_turn)
    assert value == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_no_reference_yet_means_no_smoothing(actor_config):
    """Step 0: H̄_ref is None; the loss is verl's minus λ·L_H alone."""
    data, keys, mask = make_batch(reference=None)
    out = SoftmaxPolicy(0)(list(range(len(ROWS))), data)
    loss, metrics = epo_loss(actor_config, out, data, epo=EPO)
    pg, _ = ppo_loss(actor_config, out, data)
    ent = torch.nn.utils.rnn.pad_sequence(
        [e[p - 1 : p - 1 + r] for e, (_, p, r) in zip(out["entropy"].unbind(), ROWS, strict=True)],
        batch_first=True,
    )
    traj, turns = trajectory_and_turn_ids(keys, mask)
    assert loss.item() == pytest.approx((pg - EPO.entropy_coef * trajectory_mean(ent, mask, traj, turns)).item(),
                                        rel=1e-6)
    assert [float(v) for v in metrics["epo_loss/smooth"].values] == [0.0]


def test_disabled_epo_is_verls_loss(actor_config):
    data, _, _ = make_batch()
    out = SoftmaxPolicy(0)(list(range(len(ROWS))), data)
    off = EPOConfig(enable=False)
    a, _ = epo_loss(actor_config, out, data, epo=off)
    b, _ = ppo_loss(actor_config, out, data)
    assert a.item() == b.item()


def test_missing_entropy_or_weights_is_a_clear_error(actor_config):
    data, _, _ = make_batch()
    out = SoftmaxPolicy(0)(list(range(len(ROWS))), data)
    with pytest.raises(RuntimeError, match="calculate_entropy"):
        epo_loss(actor_config, {"log_probs": out["log_probs"]}, data, epo=EPO)
    with pytest.raises(RuntimeError, match="trainer_mode=epo"):
        epo_loss(actor_config, out, data.exclude(WEIGHT_KEY), epo=EPO)

