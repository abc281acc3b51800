"""The EPO trainer's overrides of verl's hooks, called one by one on a real verl batch, without Ray.

The rollout batch is a verl ``DataProto`` holding what verl's v1 path puts there (row keys
``{uid}_{session}_{index}``, ``uid``, ``response_mask``, the old policy's per-token ``entropy``,
``advantages``, the agent loop's ``extra_fields``) plus one synthetic padding row. TransferQueue,
where the v1 trainer keeps the batch, is replaced by an in-memory store that answers
``kv_batch_get`` / ``kv_batch_put`` the way it does (nested per-row tensors; a 1-D field comes back
as [R, 1]); verl's own step of each hook is stubbed, so what is tested is only what EPO adds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import compose_verl
from tensordict import NonTensorData, NonTensorStack, TensorDict
from transfer_queue import KVBatchMeta
from verl.protocol import DataProto
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

import verl_epo.trainer as trainer_module
from verl_epo.algorithm import EntropyHistory, trajectory_mean
from verl_epo.config import EPOConfig
from verl_epo.loss import BETA_KEY, REFERENCE_KEY, TURN_OFFSET_KEY, WEIGHT_KEY
from verl_epo.row_keys import BatchTurns, RowKeyError, token_turn_index
from verl_epo.trainer import EPOState, EPOTrainer

# (key, response length, success reported on the row): trajectory a has 3 turns (a GRPO group with b),
# b 1 turn, c 2 turns; the last row is verl's padding
ROWS = [("a_0_0", 3, None), ("a_0_1", 2, None), ("a_0_2", 4, 1.0), ("a_1_0", 5, 0.0),
        ("c_0_0", 2, None), ("c_0_1", 3, 0.0), ("padf00_0_0", 1, None)]
PADDING = {"padf00_0_0"}
WIDTH = 6
TENSOR_FIELDS = ("response_mask", "entropy", "advantages")


def rollout_batch(seed: int = 0) -> DataProto:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(ROWS), WIDTH, dtype=torch.int64)
    for row, (key, length, _) in enumerate(ROWS):
        mask[row, :length] = 0 if key in PADDING else 1
    extra = [{"reward_extra_info": {"success": s, "turns": 3.0}} if s is not None else {} for _, _, s in ROWS]
    return DataProto.from_single_dict({
        "response_mask": mask,
        "entropy": 0.2 + 2 * torch.rand(len(ROWS), WIDTH, generator=g),
        "advantages": torch.ones(len(ROWS), WIDTH),
        "uid": np.array([k.rsplit("_", 2)[0] for k, _, _ in ROWS], dtype=object),
        "extra_fields": np.array(extra, dtype=object),
    })


class TransferQueueStore:
    """``kv_batch_get`` / ``kv_batch_put`` over an in-memory {key: {field: value}}."""

    def __init__(self, batch: DataProto, keys: list[str]) -> None:
        lengths = [length for _, length, _ in ROWS]
        self.rows: dict[str, dict] = {}
        for row, key in enumerate(keys):
            fields = {name: batch.batch[name][row, : lengths[row]] for name in TENSOR_FIELDS}
            fields["extra_fields"] = batch.non_tensor_batch["extra_fields"][row]
            self.rows[key] = fields

    def kv_batch_get(self, keys: list[str], partition_id: str, select_fields: list[str]) -> TensorDict:
        out = {}
        for name in select_fields:
            values = [self.rows[k][name] for k in keys]
            if isinstance(values[0], torch.Tensor):
                out[name] = torch.nested.as_nested_tensor(values, layout=torch.jagged)
            else:
                out[name] = NonTensorStack(*[NonTensorData(v) for v in values])
        return TensorDict(out, batch_size=len(keys))

    def kv_batch_put(self, keys: list[str], partition_id: str, fields: TensorDict) -> None:
        for name, value in fields.items():
            rows = value.unbind() if value.is_nested else value.reshape(len(keys), -1)  # 1-D -> [R, 1]
            for key, row in zip(keys, rows, strict=True):
                self.rows[key][name] = row


SENT: list[dict] = []
"""The metadata verl's actor update received, one dict per call (the stub below appends)."""


def sent_to_the_update(trainer: EPOTrainer, meta: KVBatchMeta) -> dict:
    """Run the step's hooks in verl's order (old log-probs, advantages, actor update); what reached
    verl's actor update as the batch's metadata, which its workers hand to the loss."""
    SENT.clear()
    meta = trainer._compute_old_log_prob(meta, {})
    meta = trainer._compute_advantage(meta, {})
    trainer._update_actor(meta, {})
    return SENT[-1]


def make_trainer(epo: dict | None = None, step: int = 3) -> EPOTrainer:
    trainer = object.__new__(EPOTrainer)  # the real hooks, without Ray or workers
    trainer.config = compose_verl(["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
                                   "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
                                   "actor_rollout_ref.rollout.n=2"])
    trainer.epo = EPOConfig.from_dict(epo or {})
    trainer.epo_state = EPOState(trainer.epo)
    for value in (1.0, 1.4):
        trainer.epo_state.history.update(value)
    trainer.global_steps, trainer.total_training_steps = step, 10
    trainer._step_updates, trainer._pending, trainer._fetches = None, None, (-1, 0)
    return trainer


@pytest.fixture
def step_batch(monkeypatch):
    """(trainer factory, KVBatchMeta, store, DataProto): verl's own parts of the hooks stubbed."""
    batch = rollout_batch()
    keys = [k for k, _, _ in ROWS]
    store = TransferQueueStore(batch, keys)
    monkeypatch.setattr(trainer_module, "tq", store)
    monkeypatch.setattr(PPOTrainerSync, "_compute_old_log_prob", lambda self, meta, metrics: meta)
    # verl's advantage step ends with tq.kv_batch_put, which returns metadata rebuilt from the
    # store: the keys and tags, not the extra_info the driver had set on the batch before
    monkeypatch.setattr(PPOTrainerSync, "_compute_advantage", lambda self, meta, metrics: KVBatchMeta(
        partition_id=meta.partition_id, keys=list(meta.keys), tags=list(meta.tags)))
    monkeypatch.setattr(PPOTrainerSync, "_update_actor", lambda self, meta, metrics: SENT.append(dict(meta.extra_info)))
    tags = [{"status": "success", "seq_len": 8, **({"is_padding": True} if k in PADDING else {})} for k in keys]
    meta = KVBatchMeta(partition_id="train", keys=keys, tags=tags)
    return make_trainer, meta, store, batch


def test_old_log_prob_hook_sends_the_weights_offsets_and_the_steps_values(step_batch):
    make, meta, store, batch = step_batch
    trainer = make()
    metrics: dict = {}
    trainer._compute_old_log_prob(meta, metrics)

    mask = batch.batch["response_mask"]
    turns = BatchTurns.from_keys(meta.keys, mask)
    rows = len(ROWS)
    updates = max(1, rows // (2 * 2))  # ppo_mini_batch_size x rollout.n rows per update
    weight = torch.nn.utils.rnn.pad_sequence([store.rows[k][WEIGHT_KEY] for k in meta.keys], batch_first=True)
    assert float(weight.sum()) == pytest.approx(updates)  # Eq. 2 weights sum to 1 per update
    assert float(weight[-1].abs().sum()) == 0.0  # the padding row
    entropy = batch.batch["entropy"][:, : weight.shape[1]]
    assert float((weight * entropy).sum()) / updates == pytest.approx(
        float(trajectory_mean(batch.batch["entropy"], mask, turns.traj_ids, turns.turn_ids)), rel=1e-6)

    offsets = torch.stack([store.rows[k][TURN_OFFSET_KEY] for k in meta.keys])
    assert offsets.shape == (rows, 1) and offsets.squeeze(1).tolist() == [0, 1, 2, 0, 0, 1, 0]
    assert torch.equal(token_turn_index(mask, offsets), turns.turn_index)

    assert metrics["epo/reference_entropy"] == pytest.approx(1.2)
    assert metrics["epo/turns_per_trajectory"] == pytest.approx(2.0)
    # env/*: one value per trajectory, from its last output (a: 1.0, a_1: 0.0, c: 0.0); padding left out
    assert metrics["env/success"] == pytest.approx(1 / 3)
    assert metrics["env/turns"] == 3.0
    assert trainer._pending is not None and trainer._pending.turns.traj_ids == turns.traj_ids


def test_beta_and_reference_reach_the_actor_update_as_values(step_batch):
    # they once were set on the metadata in the old-log-prob hook and lost at verl's advantage put:
    # the workers' loss then trained without the hinge and with β_k = 1 (the driver's metrics looked right)
    make, meta, _, _ = step_batch
    sent = sent_to_the_update(make(), meta)
    assert sent[BETA_KEY] == pytest.approx(1 + math.exp(-3.0 * 2 / 5))  # k = 2, K = 10
    assert sent[REFERENCE_KEY] == pytest.approx(1.2)
    assert not {"epo_step", "epo_total_steps"} & set(sent)  # written once, never read: not sent


def test_per_turn_reference_travels_as_one_value_per_turn_index(step_batch):
    make, meta, store, _ = step_batch
    trainer = make({"reference": {"per_turn": True}})
    trainer.epo_state.turn_history.update({0: 0.5, 1: 0.9})
    # turn indices 0..2 are in the batch; index 2 was never recorded: the global reference 1.2
    assert sent_to_the_update(trainer, meta)[REFERENCE_KEY] == pytest.approx([0.5, 0.9, 1.2])


def test_step_zero_sends_no_reference(step_batch):
    make, meta, _, _ = step_batch
    trainer = make(step=1)
    trainer.epo_state = EPOState(trainer.epo)  # no history yet
    sent = sent_to_the_update(trainer, meta)
    assert REFERENCE_KEY in sent and sent[REFERENCE_KEY] is None
    assert sent[BETA_KEY] == 2.0


def test_advantage_hook_balances_trajectories_by_their_rows(step_batch):
    make, meta, store, _ = step_batch
    trainer = make({"balance_trajectories": True})
    trainer._compute_old_log_prob(meta, {})
    metrics: dict = {}
    trainer._compute_advantage(meta, metrics)
    # rows per trajectory: a_0 3, a_1 1, c_0 2 -> mean 2; padding keeps 1
    expected = [2 / 3, 2 / 3, 2 / 3, 2.0, 1.0, 1.0, 1.0]
    assert [float(store.rows[k]["advantages"][0]) for k in meta.keys] == pytest.approx(expected)
    assert (metrics["epo/advantage_scale_min"], metrics["epo/advantage_scale_max"]) == pytest.approx((2 / 3, 2.0))


def test_advantage_hook_refuses_a_batch_reordered_after_the_turn_structure(step_batch):
    make, meta, _, _ = step_batch
    trainer = make({"balance_trajectories": True})
    trainer._compute_old_log_prob(meta, {})
    meta.reorder(list(reversed(range(len(meta)))))
    with pytest.raises(RuntimeError, match="batch changed"):
        trainer._compute_advantage(meta, {})


def test_advantage_hook_leaves_advantages_alone_by_default(step_batch):
    make, meta, store, _ = step_batch
    trainer = make()
    trainer._compute_old_log_prob(meta, {})
    trainer._compute_advantage(meta, {})
    assert all(bool((store.rows[k]["advantages"] == 1.0).all()) for k in meta.keys)


def test_a_malformed_row_key_fails_the_hook_with_a_clear_error(step_batch):
    make, meta, store, _ = step_batch
    store.rows["odd-key"] = store.rows["a_0_0"]
    meta.keys[0] = "odd-key"
    with pytest.raises(RowKeyError, match="odd-key"):
        make()._compute_old_log_prob(meta, {})


def test_balance_batch_sorts_rows_by_uid_session_and_index(monkeypatch):
    trainer = make_trainer()
    seen = []
    monkeypatch.setattr(PPOTrainerSync, "_balance_batch", lambda self, meta, metrics, *a, **k: seen.append(meta.keys))
    keys = ["b_0_1", "a_1_0", "b_0_0", "a_0_10", "a_0_2"]
    trainer._balance_batch(KVBatchMeta(partition_id="train", keys=keys, tags=[{}] * 5), {})
    assert seen == [["a_0_2", "a_0_10", "a_1_0", "b_0_0", "b_0_1"]]
    with pytest.raises(RowKeyError, match="no-index"):
        trainer._balance_batch(KVBatchMeta(partition_id="train", keys=["no-index"], tags=[{}]), {})


def test_step_records_the_batch_entropy_only_after_the_update(step_batch, monkeypatch):
    make, meta, _, batch = step_batch
    trainer = make()
    references = []

    def verl_step(self, metrics, timing_raw):
        self._compute_old_log_prob(meta, metrics)
        references.append(self.epo_state.history.reference)  # during the step: steps before it only
        return meta

    monkeypatch.setattr(PPOTrainerSync, "step", verl_step)
    trainer.step({}, {})
    mask = batch.batch["response_mask"].bool()
    expected = EntropyHistory()
    for value in (1.0, 1.4, float(batch.batch["entropy"][mask].mean())):
        expected.update(value)
    assert references == [pytest.approx(1.2)]
    assert trainer.epo_state.history.values == pytest.approx(expected.values)
    assert trainer._pending is None


def test_prompt_uids_are_numbered_by_step_fetch_and_row(monkeypatch):
    trainer = make_trainer(step=4)
    monkeypatch.setattr(PPOTrainerSync, "_fetch_one_gen_batch", lambda self: TensorDict({}, batch_size=2))
    uids = []
    for step in (4, 4, 5):
        trainer.global_steps = step
        uids.append([str(u) for u in trainer._fetch_one_gen_batch()["uid"]])
    assert uids == [["s000004f000r00000", "s000004f000r00001"], ["s000004f001r00000", "s000004f001r00001"],
                    ["s000005f000r00000", "s000005f000r00001"]]
