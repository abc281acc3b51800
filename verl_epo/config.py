"""EPO's configuration: one dataclass, every field with a default, validated once at start.

The section lives at the top level of a verl config (``epo:``), which verl itself ignores; the
trainer registered as ``trainer.v1.trainer_mode=epo`` reads it. Paper names are given in brackets.
Unknown keys and wrong types are found by OmegaConf's structured config; the allowed ranges are the
math's own (``verl_epo.algorithm.bounds``), so the config accepts exactly what the math accepts.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from verl_epo.algorithm.band import BAND_MODES
from verl_epo.algorithm.bounds import (
    BoundError,
    check_band,
    check_choice,
    check_coefficient,
    check_history,
    check_positive_int,
)

_CONFIG_CHECKS: list[Callable[[Any], None]] = []


def register_config_check(check: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register a check of the whole trainer config that the EPO trainer runs at start.

    Plug-in sections verl does not know (an agent loop's own settings, say) are otherwise read only
    inside verl's rollout workers, where an error is logged and the prompt retried forever.
    """
    if check not in _CONFIG_CHECKS:
        _CONFIG_CHECKS.append(check)
    return check


def run_config_checks(config: Any) -> None:
    """Run every registered check; the first bad setting raises."""
    for check in _CONFIG_CHECKS:
        check(config)


class EPOConfigError(ValueError):
    """An EPO setting is out of range; the message names the key and the allowed values."""


_NULL_MEANS = {
    "total_steps": "null (use the trainer's total steps)",
    "updates_per_step": "null (verl's mini-batches of ppo_mini_batch_size x rollout.n rows)",
    "rows_per_update": "null (verl's mini-batches of ppo_mini_batch_size x rollout.n rows)",
    "diagnostic_every": "null (no update-share diagnostic)",
}


@contextlib.contextmanager
def _keys_under(prefix: str) -> Iterator[None]:
    """Report a ``BoundError`` of the math's checks as the config key ``<prefix><name>``."""
    try:
        yield
    except BoundError as err:
        allowed = f"must be {err.allowed}"
        if err.name in _NULL_MEANS:
            allowed = f"must be {_NULL_MEANS[err.name]} or {err.allowed}"
        raise EPOConfigError(f"{prefix}{err.name}={err.value!r} is invalid: {allowed}") from None


@dataclass
class ReferenceConfig:
    """How the entropy reference H̄_ref (Eq. 4) is formed from past steps' batch entropies."""

    mode: str = "cumulative"
    """'cumulative' (paper: mean over all previous steps), 'window' (last `window` steps) or 'ema'."""
    window: int = 10
    """Number of past steps averaged when mode='window'."""
    decay: float = 0.9
    """Weight of the old average when mode='ema' (new = decay * old + (1 - decay) * value)."""
    per_turn: bool = False
    """Keep one reference per turn index instead of one for the whole trajectory."""


@dataclass
class EPOConfig:
    """Every EPO setting (Eq. 6: L = L_policy - λ (L_H - β_k L_smooth))."""

    enable: bool = True
    """Add EPO's terms to verl's policy loss. False trains the configured baseline (plain PPO /
    GRPO) while still tracking and logging the same entropy statistics."""
    entropy_coef: float = 1e-3
    """[λ] weight of the entropy objective."""
    use_entropy_term: bool = True
    """Include L_H (Eq. 2). False leaves only the smoothing term."""
    use_smoothing: bool = True
    """Include L_smooth (Eq. 3). False is the 'entropy bonus only' ablation."""
    use_phase_weight: bool = True
    """Scale L_smooth by β_k (Eq. 5). False uses β = 1."""
    kappa_low: float = 0.0
    """[κ_l] lower edge of the entropy band, as a multiple of H̄_ref."""
    kappa_high: float = 2.0
    """[κ_r] upper edge of the entropy band, as a multiple of H̄_ref."""
    alpha: float = 0.05
    """[α] smoothing coefficient (paper: 0.05 ScienceWorld, 0.1 ALFWorld)."""
    band_mode: str = "paper"
    """'paper': Eq. 6 exactly; at the paper's α·β_k < 1 it raises entropy above the band too (only
    5-20 % less than inside). 'hold' (not in the paper): the entropy bonus's value is mirrored above
    κ_r·H̄_ref, min(H, 2·κ_r·H̄_ref − H), so there it pulls entropy down as hard as it pushes inside
    (``verl_epo/algorithm/band.py``, ``docs/epo_band.md``)."""
    gamma: float = 3.0
    """[γ] decay rate of the phase weight β_k."""
    total_steps: int | None = None
    """[K] planned number of steps for β_k; None uses the trainer's total training steps."""
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    turn_buckets: int = 8
    """Number of turn-index buckets for the per-turn entropy metrics (epo/entropy_turn_*)."""
    balance_trajectories: bool = False
    """Not in the paper; for agent loops with one output per turn. Scale each row's advantage by
    (mean turns per trajectory) / (its trajectory's turns), so that under verl's token-mean policy
    loss a 24-turn failure does not outweigh a 6-turn success on the tokens they share."""
    updates_per_step: int | None = None
    """Not in the paper; for agent loops with one output per turn. verl splits a step's rows into
    mini-batches of ``ppo_mini_batch_size x rollout.n`` rows, which it sizes for one row per
    trajectory: with one row per turn, a step then takes (turns per trajectory) times as many
    optimizer updates as configured, each on a few turns of a few trajectories. An integer splits
    every step's batch into exactly this many updates instead (1: one update on all turns of all
    trajectories), for the actor and, with PPO, the critic. None keeps verl's row-based split.
    Exclusive with ``rows_per_update``."""
    rows_per_update: int | None = None
    """The paper's update schedule (its code splits a step's turn rows into mini-batches of
    ``ppo_mini_batch_size x n`` rows: GRPO ScienceWorld 128 x 8 = 1,024, PPO 64 x 8 = 512, ALFWorld
    256 x 8 = 2,048). A step with R turn rows makes ceil(R / rows_per_update) optimizer updates of
    equal size (at most this many rows each), for the actor and, with PPO, the critic. verl 0.9.1
    refuses a ``ppo_mini_batch_size`` above ``train_batch_size``, so the recipes cannot express it
    there. None keeps verl's split (or ``updates_per_step``). Exclusive with ``updates_per_step``."""

    diagnostic_every: int | None = 10
    """Not in the paper. Every this many steps (from the first), measure how much of the actor's
    update EPO makes: the gradients of its terms and of the policy loss on the step's first
    mini-batch, their norm ratio and cosine, and EPO's share of Adam's step (``epo/update/*``,
    ``verl_epo/actor_worker.py``). Costs two extra forward/backward passes of that mini-batch. null = off."""

    def __post_init__(self) -> None:
        if isinstance(self.reference, dict):
            self.reference = ReferenceConfig(**self.reference)
        self.validate()

    def validate(self) -> None:
        """Raise EPOConfigError naming the first key that is out of range."""
        with _keys_under("epo."):
            for key in ("entropy_coef", "alpha", "gamma"):
                check_coefficient(key, getattr(self, key))
            check_band(self.kappa_low, self.kappa_high)
            check_choice("band_mode", self.band_mode, BAND_MODES)
            check_positive_int("turn_buckets", self.turn_buckets)
            for key in ("total_steps", "updates_per_step", "rows_per_update", "diagnostic_every"):
                if getattr(self, key) is not None:
                    check_positive_int(key, getattr(self, key))
        if self.rows_per_update is not None and self.updates_per_step is not None:
            raise EPOConfigError(
                f"epo.rows_per_update={self.rows_per_update!r} is invalid: cannot be combined with "
                f"epo.updates_per_step={self.updates_per_step}: both set the number of optimizer updates per "
                "step; keep one and set the other to null"
            )
        ref = self.reference
        with _keys_under("epo.reference."):
            # window / decay only matter in their own mode: a leftover value must not block a run
            window = ref.window if ref.mode == "window" else None
            check_history(ref.mode, window, ref.decay if ref.mode == "ema" else None)
        if self.enable and not (self.use_entropy_term or self.use_smoothing):
            raise EPOConfigError(
                f"epo.use_entropy_term={self.use_entropy_term!r} is invalid: EPO is enabled with both terms off; "
                "set epo.enable=false for the baseline"
            )

    def updates_for(self, rows: int) -> int | None:
        """Optimizer updates a step with ``rows`` turn rows (padding excluded) makes, or None when
        verl's own split by ``ppo_mini_batch_size`` applies."""
        if self.updates_per_step is not None:
            return self.updates_per_step
        if self.rows_per_update is not None:
            return max(1, math.ceil(rows / self.rows_per_update))
        return None

    def diagnoses(self, global_step: int) -> bool:
        """Whether verl's (1-based) ``global_step`` measures the update share: steps 1, 1 + N, 1 + 2N, ..."""
        return self.diagnostic_every is not None and (global_step - 1) % self.diagnostic_every == 0

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> EPOConfig:
        """Build from a plain dict (e.g. ``OmegaConf.to_container(config.epo)``) through OmegaConf's
        structured config: an unknown key or a value of the wrong type is an error naming the key,
        so a typo does not silently fall back to a default."""
        raw = dict(raw or {})
        if raw.get("reference", {}) is None:
            del raw["reference"]
        if not isinstance(raw.get("reference", {}), dict):
            raise EPOConfigError(
                f"epo.reference={raw['reference']!r} is invalid: must be a mapping such as "
                "{mode: window, window: 10}; set the mode with epo.reference.mode"
            )
        try:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), raw))
        except ConfigKeyError as err:
            section = ReferenceConfig if err.full_key.startswith("reference.") else cls
            where = "epo.reference" if section is ReferenceConfig else "epo"
            valid = sorted(f.name for f in fields(section))
            raise EPOConfigError(f"unknown key epo.{err.full_key}; valid keys of {where}: {valid}") from None
        except ValidationError as err:
            value = raw
            for part in err.full_key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            reason = str(err.msg).splitlines()[0]
            raise EPOConfigError(f"epo.{err.full_key}={value!r} is invalid: {reason}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_with_verl(epo: EPOConfig, config: Any) -> None:
    """Checks that involve verl's own settings (``config`` is the whole trainer config)."""
    actor = config.actor_rollout_ref.actor
    if epo.enable and float(actor.get("entropy_coeff", 0.0)) != 0.0:
        raise EPOConfigError(
            "actor_rollout_ref.actor.entropy_coeff="
            f"{actor.entropy_coeff} while EPO is enabled: EPO adds its own entropy term "
            "(epo.entropy_coef); set actor_rollout_ref.actor.entropy_coeff=0"
        )
    rollout_corr = config.algorithm.get("rollout_correction") or {}
    if rollout_corr.get("bypass_mode", False):
        raise EPOConfigError(
            "algorithm.rollout_correction.bypass_mode=true skips verl's old-policy pass, which is where "
            "the EPO trainer reads the batch entropy for its history; set it to false"
        )
    n = int(config.actor_rollout_ref.rollout.n)
    mini_rows = int(actor.ppo_mini_batch_size) * n
    if not actor.get("use_dynamic_bsz", False):
        # the batch is padded to a multiple of the mini-batch rows; verl then needs every
        # micro-batch size to divide it, or it fails at the first step, after a whole rollout
        for key, micro in (
            ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", actor.get("ppo_micro_batch_size_per_gpu")),
            (
                "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
                config.actor_rollout_ref.rollout.get("log_prob_micro_batch_size_per_gpu"),
            ),
        ):
            if micro and (int(micro) > mini_rows or mini_rows % int(micro) != 0):
                raise EPOConfigError(
                    f"{key}={micro} must divide the rows of a mini-batch (ppo_mini_batch_size x rollout.n = "
                    f"{actor.ppo_mini_batch_size} x {n} = {mini_rows}); use a divisor of {mini_rows}"
                )
    train_bs = int(config.data.train_batch_size)
    mini_bs = int(actor.ppo_mini_batch_size)
    if mini_bs <= 0 or mini_bs > train_bs:
        raise EPOConfigError(
            f"actor_rollout_ref.actor.ppo_mini_batch_size={mini_bs} must be between 1 and "
            f"data.train_batch_size={train_bs}"
        )
