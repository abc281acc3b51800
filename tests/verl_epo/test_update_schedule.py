"""The step's optimizer-update schedule (``epo.rows_per_update`` / ``epo.updates_per_step``) on real
v1 batches of uneven turn counts.

The batch is verl's own ``KVBatchMeta`` (row keys ``{uid}_{session}_{turn}``, one row per turn, as
the text_game loop returns them); the trainer is the real ``EPOTrainer`` on verl's composed config,
running verl's own ``_balance_batch`` (padding to the required multiple, sequence balancing over
data-parallel ranks) and ``_update_actor`` / ``_update_critic``. Only the worker group is a
recorder, and verl's padding template (which reads a row from TransferQueue) is replaced by tags
marked ``is_padding``. The mini-batch size the trainer hands the workers then goes through verl's
own split (``tu.make_iterator`` over each rank's share, as ``train_mini_batch`` does).
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from conftest import compose_verl
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1 import trainer_base
from verl.utils import tensordict_utils as tu

from verl_epo.config import EPOConfig
from verl_epo.trainer import EPOTrainer, updates_with_real_rows

DP = 8
TASKS, N = 16, 8
MICRO = 4


class RecordingWorkers:
    """Stands in for verl's worker group: records what an update call was asked to do."""

    def __init__(self) -> None:
        self._dispatch_info = {"actor": list(range(DP))}
        self.calls: list[tuple[str, int, int]] = []

    def _record(self, role: str, batch: KVBatchMeta) -> dict:
        self.calls.append((role, len(batch), int(batch.extra_info["mini_batch_size"])))
        return {"metrics": {"mfu": 0.0, "loss": 0.0}}

    def update_actor(self, batch: KVBatchMeta) -> dict:
        return self._record("actor", batch)

    def train_mini_batch(self, batch: KVBatchMeta) -> RecordingWorkers:
        self._record("critic", batch)
        return self

    def get(self) -> dict:
        return {"metrics": {"mfu": 0.0, "loss": 0.0}}


def pad_tags(batch: KVBatchMeta, multiple: int, eos_token_id: int) -> KVBatchMeta:
    """verl's upsampling without the TransferQueue read: append padding rows to a multiple."""
    missing = -len(batch) % multiple
    keys = batch.keys + [f"pad_{i}_0" for i in range(missing)]
    tags = batch.tags + [{"status": "success", "seq_len": 2, "is_padding": True} for _ in range(missing)]
    return KVBatchMeta(partition_id=batch.partition_id, keys=keys, tags=tags, extra_info=batch.extra_info)


def uneven_batch(seed: int, max_turns: int = 30) -> tuple[KVBatchMeta, list[int]]:
    """16 tasks x 8 sessions, each session 1..max_turns turns (one row per turn), shuffled."""
    rng = random.Random(seed)
    keys, tags, turns = [], [], []
    for task in range(TASKS):
        for session in range(N):
            t = rng.randint(1, max_turns)
            turns.append(t)
            for turn in range(t):
                keys.append(f"s000001f000r{task:05d}_{session}_{turn}")
                tags.append({"status": "success", "seq_len": rng.randint(300, 2500)})
    order = list(range(len(keys)))
    rng.shuffle(order)
    return KVBatchMeta(partition_id="train", keys=[keys[i] for i in order], tags=[tags[i] for i in order]), turns


def make_trainer(epo: dict, critic: bool = False) -> tuple[EPOTrainer, RecordingWorkers]:
    config = compose_verl([
        f"data.train_batch_size={TASKS}", f"actor_rollout_ref.rollout.n={N}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={TASKS}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={MICRO}",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        f"critic.ppo_mini_batch_size={TASKS}", f"critic.ppo_micro_batch_size_per_gpu={MICRO}",
        "trainer.n_gpus_per_node=8",
    ])
    trainer = object.__new__(EPOTrainer)  # the real methods, without starting workers
    workers = RecordingWorkers()
    trainer.config, trainer.epo, trainer.use_critic = config, EPOConfig.from_dict(epo), critic
    trainer.global_steps, trainer._step_updates, trainer._pending = 1, None, None  # as __init__ sets them
    trainer.actor_rollout_wg = trainer.critic_wg = workers
    trainer.tokenizer = type("Tokenizer", (), {"eos_token_id": 0})()
    trainer.distillation_config = None
    return trainer, workers


def run_step(trainer: EPOTrainer, batch: KVBatchMeta, monkeypatch) -> tuple[KVBatchMeta, dict]:
    monkeypatch.setattr(trainer_base, "upsample_batch_to_divisible_size", pad_tags)
    metrics: dict = {}
    batch = trainer._balance_batch(batch, metrics)
    if trainer.use_critic:
        trainer._update_critic(batch, metrics)
    trainer._update_actor(batch, metrics)
    return batch, metrics


def verl_split(rows: int, mini_batch_size: int) -> list[int]:
    """Sizes of the mini-batches one data-parallel rank trains on (engine_workers.train_mini_batch)."""
    share = TensorDict({"x": torch.arange(rows // DP)}, batch_size=rows // DP)
    return [len(mb) for mb in tu.make_iterator(share, mini_batch_size=mini_batch_size // DP, epochs=1, seed=0)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rows_per_update", [1024, 512, 2048])
def test_rows_per_update_makes_ceil_rows_over_r_equal_updates(seed, rows_per_update, monkeypatch):
    batch, turns = uneven_batch(seed)
    rows = sum(turns)
    assert len(set(turns)) > 10  # really uneven
    trainer, workers = make_trainer({"rows_per_update": rows_per_update})
    padded, metrics = run_step(trainer, batch, monkeypatch)

    expected = math.ceil(rows / rows_per_update)
    assert metrics["epo/updates_per_step"] == expected
    assert trainer._num_mini_batches(len(padded)) == expected  # the Eq. 2 weight scale agrees
    assert sum(not t.get("is_padding") for t in padded.tags) == rows
    [(role, sent, mini)] = workers.calls
    assert role == "actor" and sent == len(padded)
    assert mini % N == 0  # verl counts it as ppo_mini_batch_size x rollout.n
    sizes = verl_split(len(padded), mini)
    assert len(sizes) == expected and len(set(sizes)) == 1
    assert sizes[0] % MICRO == 0  # every micro-batch full
    # each update holds at most rows_per_update real rows plus the padding of this one step
    assert mini <= rows_per_update + len(padded) - rows
    # the configured value is back after the call
    assert trainer.config.actor_rollout_ref.actor.ppo_mini_batch_size == TASKS


def test_each_step_counts_its_own_rows(monkeypatch):
    trainer, workers = make_trainer({"rows_per_update": 1024})
    counts = []
    for seed, max_turns in ((3, 6), (4, 30), (5, 12)):
        batch, turns = uneven_batch(seed, max_turns)
        _, metrics = run_step(trainer, batch, monkeypatch)
        assert metrics["epo/updates_per_step"] == math.ceil(sum(turns) / 1024)
        counts.append(metrics["epo/updates_per_step"])
    assert counts[0] < counts[1]  # short episodes, fewer updates


def test_critic_gets_the_same_schedule(monkeypatch):
    batch, turns = uneven_batch(7)
    trainer, workers = make_trainer({"rows_per_update": 512}, critic=True)
    padded, _ = run_step(trainer, batch, monkeypatch)
    (c_role, c_rows, c_mini), (a_role, a_rows, a_mini) = workers.calls
    assert (c_role, a_role) == ("critic", "actor") and c_mini == a_mini and c_rows == a_rows
    assert len(verl_split(c_rows, c_mini)) == math.ceil(sum(turns) / 512)
    assert trainer.config.critic.ppo_mini_batch_size == TASKS


def test_updates_per_step_is_a_fixed_count(monkeypatch):
    batch, _ = uneven_batch(8)
    trainer, workers = make_trainer({"updates_per_step": 4})
    padded, metrics = run_step(trainer, batch, monkeypatch)
    [(_, sent, mini)] = workers.calls
    assert metrics["epo/updates_per_step"] == 4 and len(verl_split(sent, mini)) == 4


def test_without_either_option_verl_splits_by_ppo_mini_batch_size(monkeypatch):
    batch, turns = uneven_batch(9)
    trainer, workers = make_trainer({})
    padded, metrics = run_step(trainer, batch, monkeypatch)
    [(_, sent, mini)] = workers.calls
    assert "epo/updates_per_step" not in metrics
    assert mini == TASKS * N  # 128 turn rows per update: about one update per turn of an episode
    assert len(verl_split(sent, mini)) == math.ceil(sum(turns) / (TASKS * N))


@pytest.mark.parametrize(("updates", "rows", "unit", "expected"), [
    (8, 16, 4, 4),  # 8 x 4 = 32 rows, 16 of them padding: 4 updates of 4 real rows instead
    (3, 13, 4, 2),  # 3 x 8 = 24 rows, 11 padding >= an update of 8; 2 x 8 = 16 has 3
    (2, 2000, 64, 2),  # the paper-scale step: padding (48 rows) far below an update (1,024)
    (5, 1, 4, 1),
])
def test_updates_are_lowered_only_where_padding_would_fill_one(updates, rows, unit, expected):
    made = updates_with_real_rows(updates, rows, unit)
    assert made == expected
    padded = math.ceil(rows / (made * unit)) * made * unit
    assert padded - rows < padded // made  # no update can be padding only


def test_more_updates_than_real_rows_allow_are_lowered(monkeypatch, caplog):
    batch, turns = uneven_batch(10, max_turns=3)
    rows = sum(turns)
    trainer, workers = make_trainer({"rows_per_update": 8})  # far below an update's 64-row unit here
    with caplog.at_level("WARNING"):
        padded, metrics = run_step(trainer, batch, monkeypatch)
    [(_, sent, mini)] = workers.calls
    made = metrics["epo/updates_per_step"]
    assert 1 < made < math.ceil(rows / 8)
    assert len(verl_split(sent, mini)) == made
    assert len(padded) - rows < mini  # fewer padding rows than one update holds
    assert "would leave whole updates of padding" in caplog.text
