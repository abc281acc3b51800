"""verl's synchronous PPO trainer with EPO: ``trainer.v1.trainer_mode=epo``.

What it adds to ``PPOTrainerSync``, and nothing else:
1. reads and validates the ``epo:`` config section at start;
2. installs ``epo_loss`` as the actor loss after the workers start;
3. after verl computes the old policy's entropy of the rollout batch, computes the step's EPO
   quantities on the whole batch (``compute_step_terms``) and puts them in the batch for the loss;
4. after the step's update, records the batch entropy in the ``EntropyHistory`` (so the reference
   used at step k excludes step k), and logs ``epo/*`` and ``env/*`` metrics;
5. saves the history inside verl's checkpoint folder and restores it on resume;
6. optionally (not in the paper, for one-output-per-turn agent loops): equal trajectory weights in
   the advantages (``epo.balance_trajectories``) and exactly K optimizer updates per step
   (``epo.updates_per_step``), or the paper's schedule of ceil(rows / R) updates on a step's turn
   rows (``epo.rows_per_update``);
7. every ``epo.diagnostic_every`` steps, how much of the actor's update EPO makes (``epo/update/*``:
   its actor worker, ``verl_epo.actor_worker``, measures the gradients), and on every step the
   fractions of rows and groups whose advantage is zero.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import ray
import torch
import transfer_queue as tq
from omegaconf import OmegaConf, open_dict
from tensordict import NonTensorData, NonTensorStack, TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.utils import Role
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.utils.padding import response_to_nested

from verl_epo.actor_worker import DIAGNOSE_KEY, METRIC_PREFIX, EPOActorRolloutRefWorker
from verl_epo.algorithm import EntropyHistory, PerTurnEntropyHistory
from verl_epo.algorithm.update_share import zero_advantage_fractions
from verl_epo.config import EPOConfig, run_config_checks, validate_with_verl
from verl_epo.loss import BETA_KEY, REFERENCE_KEY, TURN_OFFSET_KEY, WEIGHT_KEY, epo_loss
from verl_epo.row_keys import BatchTurns, parse_row_key
from verl_epo.step_terms import StepTerms, compute_step_terms, trajectory_balance_scale

logger = logging.getLogger(__name__)

STATE_FILE = "epo_state.json"
"""Written inside verl's ``global_step_N`` checkpoint folder."""


def load_epo_config(config: Any) -> EPOConfig:
    """The ``epo:`` section of a verl config as a validated ``EPOConfig`` (defaults if absent)."""
    section = config.get("epo") if hasattr(config, "get") else None
    raw = OmegaConf.to_container(section, resolve=True) if section is not None else {}
    epo = EPOConfig.from_dict(raw)
    validate_with_verl(epo, config)
    run_config_checks(config)
    return epo


def _active_rows(batch: KVBatchMeta) -> list[bool]:
    """False for verl's synthetic padding rows (tag ``is_padding``)."""
    return [not tag.get("is_padding", False) for tag in batch.tags]


class EPOState:
    """Everything EPO carries from step to step: the entropy histories."""

    def __init__(self, epo: EPOConfig) -> None:
        ref = epo.reference
        window = ref.window if ref.mode == "window" else None
        decay = ref.decay if ref.mode == "ema" else None
        self.history = EntropyHistory(ref.mode, window, decay)
        self.turn_history = PerTurnEntropyHistory(ref.mode, window, decay) if ref.per_turn else None

    def record(self, terms: StepTerms) -> None:
        self.history.update(terms.batch_entropy)
        if self.turn_history is not None:
            self.turn_history.update(terms.turn_entropy)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history.state_dict(),
            "turn_history": None if self.turn_history is None else self.turn_history.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history.load_state_dict(state["history"])
        if self.turn_history is not None:
            if state.get("turn_history") is None:
                raise ValueError(
                    "epo.reference.per_turn=true but the checkpoint has no per-turn history; "
                    "resume with the settings it was trained with"
                )
            self.turn_history.load_state_dict(state["turn_history"])

    def save(self, folder: str, global_step: int) -> str:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, STATE_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"global_step": global_step, **self.state_dict()}, f, indent=1)
        os.replace(tmp, path)  # atomic: a crash never leaves half a file
        return path

    def load(self, folder: str) -> int:
        path = os.path.join(folder, STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"checkpoint {folder} has no {STATE_FILE}: it was not written by the EPO trainer, "
                "so the entropy history cannot be restored (start a new run, or resume a run "
                "trained with trainer.v1.trainer_mode=epo)"
            )
        with open(path) as f:
            state = json.load(f)
        self.load_state_dict(state)
        return int(state["global_step"])


def updates_with_real_rows(updates: int, rows: int, unit: int) -> int:
    """The most optimizer updates, at most ``updates``, for a step of ``rows`` real rows whose batch
    is padded to a multiple of ``updates x unit`` rows and split into equal updates, such that the
    padding is smaller than one update: then no update is padding only (one that is has no token
    to average over: a PPO twin at 2 rows per update with micro-batches of 4 logged NaN
    ``critic/vf_loss``). One update always qualifies (its padding is below ``unit``)."""
    for k in range(updates, 1, -1):
        padded = math.ceil(rows / (k * unit)) * k * unit
        if padded - rows < padded // k:
            return k
    return 1


@register_trainer("epo")
class EPOTrainer(PPOTrainerSync):
    """``PPOTrainerSync`` + EPO. Works with any advantage estimator and any agent loop."""

    def __init__(self, config: Any) -> None:
        self.epo = load_epo_config(config)
        if self.epo.enable:
            with open_dict(config):
                # EPO's terms need the current policy's entropy, with gradient, in every micro-batch
                config.actor_rollout_ref.actor.calculate_entropy = True
        super().__init__(config)
        # checkpoint and resume paths follow verl's synchronous trainer
        self.trainer_mode = "sync"
        self.epo_state = EPOState(self.epo)
        self._pending: StepTerms | None = None
        self._fetches = (-1, 0)
        self._step_updates: int | None = None
        self._step_rows = 0
        logger.info("EPO settings: %s", json.dumps(self.epo.to_dict()))

    # ----- set-up -----------------------------------------------------------------------------
    def _init_resource_pool_mgr(self) -> None:
        super()._init_resource_pool_mgr()
        # the actor runs in EPO's worker, which can measure the update share (verl_epo.actor_worker)
        for role in (Role.Actor, Role.ActorRollout, Role.ActorRolloutRef):
            if role in self.role_worker_mapping:
                self.role_worker_mapping[role] = ray.remote(EPOActorRolloutRefWorker)

    def _setup(self) -> None:
        super()._setup()
        # with epo.enable=false epo_loss is verl's ppo_loss, which verl installs itself: same training,
        # and the update-share diagnostic can still split the loss into its parts
        actor_cfg = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
        self.actor_rollout_wg.set_loss_fn(partial(epo_loss, config=actor_cfg, epo=self.epo))

    # ----- per step ---------------------------------------------------------------------------
    def _fetch_one_gen_batch(self) -> TensorDict:
        """verl names prompts with random uuids; ours are numbered by (step, fetch, row), so a
        run, and a run resumed from a checkpoint, replays the same batch order and sampling seeds."""
        batch = super()._fetch_one_gen_batch()
        # a step may fetch several chunks; count them per step so a resumed run names them alike
        step, count = self._fetches
        self._fetches = (self.global_steps, count + 1 if step == self.global_steps else 0)
        fetch = self._fetches[1]
        uids = [f"s{self.global_steps:06d}f{fetch:03d}r{i:05d}" for i in range(len(batch))]
        batch.set("uid", NonTensorStack(*[NonTensorData(u) for u in uids]))
        return batch

    def _balance_batch(self, batch: KVBatchMeta, metrics: dict, *args: Any, **kwargs: Any) -> KVBatchMeta:
        # episodes finish in any order; sort rows by (prompt, session, turn) first so that the
        # balanced layout, and so the mini-batches, do not depend on timing
        rows = [parse_row_key(key) for key in batch.keys]
        batch.reorder(sorted(range(len(batch)), key=rows.__getitem__))
        self._step_rows = sum(_active_rows(batch))
        self._step_updates = self.epo.updates_for(self._step_rows)
        batch = super()._balance_batch(batch, metrics, *args, **kwargs)  # may lower _step_updates
        if self._step_updates is not None:
            metrics["epo/updates_per_step"] = self._step_updates
        return batch

    def _get_required_batch_multiple(self, dp_size: int) -> int:
        """With K updates this step (``epo.updates_per_step`` or ``epo.rows_per_update``), pad the
        batch to K equal mini-batches whose rows are a multiple of rollout.n and, per data-parallel
        rank, of every micro-batch size (actor, log-prob and, with a critic, the critic's). K is
        lowered where that padding would fill a whole update (:func:`updates_with_real_rows`)."""
        if self._step_updates is None:
            return super()._get_required_batch_multiple(dp_size)
        per_update = self._update_unit(dp_size)
        updates = updates_with_real_rows(self._step_updates, self._step_rows, per_update)
        if updates < self._step_updates:
            logger.warning(
                "step %s: %s updates of %s turn rows would leave whole updates of padding (each update's rows "
                "are a multiple of %s: rollout.n, data-parallel ranks x micro-batch sizes); making %s updates. "
                "Lower the micro-batch sizes or raise epo.rows_per_update to keep the schedule.",
                self.global_steps, self._step_updates, self._step_rows, per_update, updates,
            )
            self._step_updates = updates
        return updates * per_update

    def _update_unit(self, dp_size: int) -> int:
        """The rows every update's mini-batch is a multiple of: rollout.n and, per data-parallel rank,
        every micro-batch size (actor, log-prob and, with a critic, the critic's)."""
        n = int(self.config.actor_rollout_ref.rollout.n)
        per_update = math.lcm(n, dp_size)
        micro_sizes = []
        actor = self.config.actor_rollout_ref.actor
        if not actor.get("use_dynamic_bsz", False):
            micro_sizes += [actor.get("ppo_micro_batch_size_per_gpu"),
                            self.config.actor_rollout_ref.rollout.get("log_prob_micro_batch_size_per_gpu")]
        if self.use_critic and not self.config.critic.get("use_dynamic_bsz", False):
            micro_sizes.append(self.config.critic.get("ppo_micro_batch_size_per_gpu"))
        for micro in micro_sizes:
            if micro:
                per_update = math.lcm(per_update, dp_size * int(micro))
        return per_update

    def _num_mini_batches(self, rows: int) -> int:
        """Optimizer updates the actor takes on a (padded) batch of ``rows`` rows per epoch."""
        if self._step_updates is not None:
            return self._step_updates
        actor = self.config.actor_rollout_ref.actor
        return max(1, rows // (int(actor.ppo_mini_batch_size) * int(self.config.actor_rollout_ref.rollout.n)))

    def _update_actor(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        if self._pending is not None:
            # β_k and H̄_ref ride on the batch's metadata to the workers' loss. Attached here, just
            # before the update: every TransferQueue put returns metadata rebuilt without them
            # (tq.kv_batch_put; verl's advantage step does one), so set earlier they never arrived.
            batch.extra_info[BETA_KEY] = self._pending.beta
            batch.extra_info[REFERENCE_KEY] = self._pending.reference_value
        batch.extra_info[DIAGNOSE_KEY] = self.global_steps if self.epo.diagnoses(self.global_steps) else None
        with self._mini_batches_of_this_step(self.config.actor_rollout_ref.actor, len(batch)):
            batch = super()._update_actor(batch, metrics)
        for key in [k for k in metrics if k.startswith("actor/" + METRIC_PREFIX)]:
            metrics["epo/update/" + key.removeprefix("actor/" + METRIC_PREFIX)] = metrics.pop(key)
        return batch

    def _update_critic(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        with self._mini_batches_of_this_step(self.config.critic, len(batch)):
            return super()._update_critic(batch, metrics)

    @contextlib.contextmanager
    def _mini_batches_of_this_step(self, section: Any, rows: int) -> Iterator[None]:
        """verl sends ``ppo_mini_batch_size x rollout.n`` rows per update; with K updates this step,
        size that to (padded rows) / K for the duration of the call."""
        updates = self._step_updates
        if updates is None:
            yield
            return
        configured = section.ppo_mini_batch_size
        with open_dict(self.config):
            section.ppo_mini_batch_size = rows // (updates * int(self.config.actor_rollout_ref.rollout.n))
        try:
            yield
        finally:
            with open_dict(self.config):
                section.ppo_mini_batch_size = configured

    def _compute_old_log_prob(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        batch = super()._compute_old_log_prob(batch, metrics)
        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id,
            select_fields=["entropy", "response_mask"],
        )
        nested_mask = data["response_mask"]
        padded = data.to_padded_tensor()
        response_mask = padded["response_mask"].clone()
        active = _active_rows(batch)
        response_mask[~torch.tensor(active, dtype=torch.bool)] = 0
        turns = BatchTurns.from_keys(batch.keys, response_mask)
        terms = compute_step_terms(
            entropy=padded["entropy"],
            turns=turns,
            history=self.epo_state.history,
            turn_history=self.epo_state.turn_history,
            epo=self.epo,
            step=self.global_steps - 1,
            total_steps=self.total_training_steps,
            num_mini_batches=self._num_mini_batches(len(batch)),
        )
        fields = TensorDict(
            {
                WEIGHT_KEY: response_to_nested(terms.weight, nested_mask),
                TURN_OFFSET_KEY: turns.turn_offsets(),
            },
            batch_size=len(batch),
        )
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
        metrics.update(terms.metrics)
        metrics.update(self._env_metrics(batch, turns, active))
        self._pending = terms
        return batch

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        batch = super()._compute_advantage(batch, metrics)
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["advantages", "response_mask"])
        padded = data.to_padded_tensor()
        response_mask = padded["response_mask"] * torch.tensor(_active_rows(batch))[:, None]
        groups = [row.uid for row in self._step_turns(batch).rows]
        rows, groups = zero_advantage_fractions(padded["advantages"], response_mask, groups)
        metrics["epo/update/zero_adv_rows"] = rows
        metrics["epo/update/zero_adv_groups"] = groups
        if not self.epo.balance_trajectories:
            return batch
        scale = trajectory_balance_scale(self._step_turns(batch).traj_ids, _active_rows(batch))
        advantages = padded["advantages"] * scale[:, None]
        fields = TensorDict({"advantages": response_to_nested(advantages, data["response_mask"])},
                            batch_size=len(batch))
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
        metrics["epo/advantage_scale_min"] = float(scale.min())
        metrics["epo/advantage_scale_max"] = float(scale.max())
        return batch

    def step(self, metrics: dict, timing_raw: dict) -> KVBatchMeta:
        batch = super().step(metrics, timing_raw)
        # the update of step k is done: only now does H̄_k enter the history (reference excludes k)
        if self._pending is not None:
            self.epo_state.record(self._pending)
            self._pending = None
        return batch

    def _step_turns(self, batch: KVBatchMeta) -> BatchTurns:
        """The turn structure computed for this step's batch in ``_compute_old_log_prob``."""
        turns = None if self._pending is None else self._pending.turns
        if turns is None or tuple(parse_row_key(key) for key in batch.keys) != turns.rows:
            raise RuntimeError("the batch changed after the EPO trainer read its turn structure "
                               "(_compute_old_log_prob); rows must keep their order until the update")
        return turns

    def _env_metrics(self, batch: KVBatchMeta, turns: BatchTurns, active: list[bool]) -> dict[str, float]:
        """Mean of every numeric ``reward_extra_info`` entry over trajectories, as ``env/<key>``.

        Any agent loop or reward manager that reports ``reward_extra_info`` (verl's own channel
        for per-trajectory outcomes) gets its numbers logged; one value per trajectory, taken
        from its last output.
        """
        try:
            data = tq.kv_batch_get(
                keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_fields"]
            )
        except Exception:  # the field is optional: loops without extra fields log nothing
            return {}
        extra = data["extra_fields"]
        sums: dict[str, list[float]] = {}
        for row in turns.last_rows(active).values():
            fields = extra[row] if not hasattr(extra[row], "data") else extra[row].data
            info = (fields.get("reward_extra_info") if isinstance(fields, dict) else None) or {}
            for name, value in info.items():
                if isinstance(value, bool | int | float | np.number) and np.isfinite(value):
                    sums.setdefault(name, []).append(float(value))
        return {f"env/{name}": float(np.mean(v)) for name, v in sums.items()}

    # ----- checkpoints ------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        folder = os.path.join(
            self.config.trainer.default_local_dir, f"global_step_{self.global_steps}"
        )
        # written before verl's tracker file, so a checkpoint marked complete always has it
        self.epo_state.save(folder, self.global_steps)
        super()._save_checkpoint()

    def _load_checkpoint(self) -> None:
        super()._load_checkpoint()
        if self.global_steps == 0:
            return
        trainer = self.config.trainer
        if trainer.resume_mode == "resume_path":
            folder = trainer.resume_from_path
        else:
            folder = os.path.join(trainer.default_local_dir, f"global_step_{self.global_steps}")
        if not os.path.isabs(folder):
            folder = os.path.join(os.getcwd(), folder)
        saved_step = self.epo_state.load(folder)
        logger.info("restored entropy history from %s (step %s, %s entries, reference %s)", folder, saved_step,
                    self.epo_state.history.num_updates, self.epo_state.history.reference)
