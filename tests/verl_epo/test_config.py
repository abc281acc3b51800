"""EPOConfig and validate_with_verl: every bad setting fails at start with a message naming its key.

``validate_with_verl`` runs on verl's real composed trainer config (``conftest.compose_verl``), the
same object ``python -m verl.trainer.main_ppo`` hands to the trainer.
"""

import math
from pathlib import Path

import pytest
import torch
import yaml
from config_tree import flatten
from conftest import compose_verl
from omegaconf import open_dict

from verl_epo.config import EPOConfig, EPOConfigError, ReferenceConfig, validate_with_verl


def test_defaults_are_the_papers():
    epo = EPOConfig()
    assert epo.enable is True
    assert epo.entropy_coef == 0.001  # λ
    assert (epo.kappa_low, epo.kappa_high) == (0.0, 2.0)  # κ_l, κ_r
    assert epo.alpha == 0.05  # α (ScienceWorld)
    assert epo.gamma == 3.0  # γ
    assert epo.use_entropy_term and epo.use_smoothing and epo.use_phase_weight
    assert epo.total_steps is None
    assert epo.reference.mode == "cumulative"  # mean over all previous steps
    assert epo.reference.per_turn is False
    assert epo.band_mode == "paper"  # Eq. 6 exactly
    assert EPOConfig.from_dict({}) == epo
    assert EPOConfig.from_dict(None) == epo


def test_from_dict_round_trip():
    epo = EPOConfig.from_dict({"alpha": 0.1, "reference": {"mode": "window", "window": 5}})
    assert epo.alpha == 0.1
    assert epo.reference == ReferenceConfig(mode="window", window=5)
    assert EPOConfig.from_dict(epo.to_dict()) == epo


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"kappa_low": 1.0, "kappa_high": 1.0}, "epo.kappa_high"),
        ({"kappa_low": 1.5, "kappa_high": 1.0}, "epo.kappa_high"),
        ({"alpha": -0.1}, "epo.alpha"),
        ({"entropy_coef": -1e-3}, "epo.entropy_coef"),
        ({"gamma": -3.0}, "epo.gamma"),
        ({"kappa_low": -0.5}, "epo.kappa_low"),
        ({"alpha": math.nan}, "epo.alpha"),
        ({"entropy_coef": math.nan}, "epo.entropy_coef"),
        ({"kappa_high": math.inf}, "epo.kappa_high"),
        ({"gamma": "fast"}, "epo.gamma"),
        ({"reference": {"mode": "median"}}, "epo.reference.mode"),
        ({"reference": {"mode": "window", "window": 0}}, "epo.reference.window"),
        ({"reference": {"mode": "window", "window": -3}}, "epo.reference.window"),
        ({"reference": {"mode": "window", "window": 2.5}}, "epo.reference.window"),
        ({"reference": {"mode": "ema", "decay": 1.0}}, "epo.reference.decay"),
        ({"reference": {"mode": "ema", "decay": -0.2}}, "epo.reference.decay"),
        ({"reference": {"mode": "ema", "decay": 1.5}}, "epo.reference.decay"),
        ({"reference": "window"}, "epo.reference"),
        ({"kapa_high": 2.0}, "kapa_high"),
        ({"reference": {"windw": 3}}, "windw"),
        ({"use_entropy_term": False, "use_smoothing": False}, "epo.use_entropy_term"),
        ({"total_steps": 0}, "epo.total_steps"),
        ({"total_steps": -5}, "epo.total_steps"),
        ({"total_steps": True}, "epo.total_steps"),
        ({"turn_buckets": 0}, "epo.turn_buckets"),
        ({"turn_buckets": 2.5}, "epo.turn_buckets"),
        ({"band_mode": "clamp"}, "epo.band_mode"),
        ({"band_mode": None}, "epo.band_mode"),
        ({"updates_per_step": 0}, "epo.updates_per_step"),
        ({"updates_per_step": 1.5}, "epo.updates_per_step"),
        ({"updates_per_step": True}, "epo.updates_per_step"),
        ({"rows_per_update": 0}, "epo.rows_per_update"),
        ({"rows_per_update": 512.5}, "epo.rows_per_update"),
        ({"rows_per_update": True}, "epo.rows_per_update"),
        ({"rows_per_update": 1024, "updates_per_step": 4}, "epo.rows_per_update"),
    ],
)
def test_invalid_setting_names_its_key(raw, key):
    with pytest.raises(EPOConfigError) as info:
        EPOConfig.from_dict(raw)
    assert key in str(info.value)


def test_update_schedules_are_exclusive_and_say_how_to_fix_it():
    with pytest.raises(EPOConfigError) as info:
        EPOConfig.from_dict({"rows_per_update": 1024, "updates_per_step": 4})
    assert "epo.updates_per_step=4" in str(info.value) and "null" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "rows", "updates"),
    [
        ({}, 3000, None),  # verl's own split
        ({"updates_per_step": 4}, 3000, 4),
        ({"rows_per_update": 1024}, 3000, 3),
        ({"rows_per_update": 1024}, 3073, 4),
        ({"rows_per_update": 1024}, 1024, 1),
        ({"rows_per_update": 1024}, 1, 1),
        ({"rows_per_update": 512}, 0, 1),
    ],
)
def test_updates_for_a_step(raw, rows, updates):
    assert EPOConfig.from_dict(raw).updates_for(rows) == updates


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(EPOConfigError) as info:
        EPOConfig.from_dict({"kapa_high": 2.0})
    assert "kappa_high" in str(info.value)  # the valid keys are listed next to the typo
    with pytest.raises(EPOConfigError) as info:
        EPOConfig.from_dict({"reference": {"windw": 3}})
    assert "epo.reference" in str(info.value) and "window" in str(info.value)


def test_bounds_are_the_maths_own():
    """The config accepts exactly what the algorithm accepts (verl_epo.algorithm.bounds)."""
    from verl_epo.algorithm import EntropyHistory, smoothing_penalty

    # decay 0 (the reference is the last step's entropy) is a valid EMA for both
    assert EPOConfig.from_dict({"reference": {"mode": "ema", "decay": 0.0}}).reference.decay == 0.0
    EntropyHistory("ema", decay=0.0)
    # an empty band is refused by both, each naming kappa_high
    with pytest.raises(EPOConfigError, match="epo.kappa_high=1.0 is invalid: must be greater than kappa_low=1.0"):
        EPOConfig(kappa_low=1.0, kappa_high=1.0)
    with pytest.raises(ValueError, match="kappa_high must be greater than kappa_low=1.0"):
        smoothing_penalty(torch.ones(1, 1), 1.0, 1.0, 1.0)


def test_wrong_types_name_the_key_and_the_value():
    with pytest.raises(EPOConfigError, match=r"epo.gamma='fast' is invalid: .*could not be converted to Float"):
        EPOConfig.from_dict({"gamma": "fast"})
    with pytest.raises(EPOConfigError, match=r"epo.reference.window=2.5 is invalid"):
        EPOConfig.from_dict({"reference": {"mode": "window", "window": 2.5}})
    with pytest.raises(EPOConfigError, match=r"epo.total_steps=0 is invalid: must be null \(use the trainer's"):
        EPOConfig.from_dict({"total_steps": 0})


def test_settings_of_unused_reference_modes_are_not_checked():
    # window/decay only matter in their own mode; a leftover value must not block a run
    assert EPOConfig.from_dict({"reference": {"mode": "cumulative", "window": 0}}).reference.window == 0
    assert EPOConfig.from_dict({"reference": {"mode": "window", "window": 3, "decay": 7.0}})


def test_both_terms_off_is_allowed_when_epo_is_disabled():
    epo = EPOConfig.from_dict({"enable": False, "use_entropy_term": False, "use_smoothing": False})
    assert epo.enable is False


def test_each_term_alone_is_valid():
    assert EPOConfig.from_dict({"use_entropy_term": False}).use_smoothing
    assert EPOConfig.from_dict({"use_smoothing": False}).use_entropy_term


def test_direct_construction_validates_too():
    with pytest.raises(EPOConfigError, match="epo.alpha"):
        EPOConfig(alpha=-1.0)
    with pytest.raises(EPOConfigError, match="epo.reference.mode"):
        EPOConfig(reference={"mode": "bogus"})


# ----- checks against verl's own settings ---------------------------------------------------------


def verl_config(overrides):
    return compose_verl(["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", *overrides])


def test_verl_defaults_pass():
    validate_with_verl(EPOConfig(), verl_config([]))


def test_verl_entropy_bonus_while_epo_enabled_fails():
    config = verl_config(["actor_rollout_ref.actor.entropy_coeff=0.001"])
    with pytest.raises(EPOConfigError) as info:
        validate_with_verl(EPOConfig(), config)
    assert "actor_rollout_ref.actor.entropy_coeff" in str(info.value)
    # the baseline (EPO disabled) may use verl's own entropy bonus
    validate_with_verl(EPOConfig(enable=False), config)


def test_mini_batch_larger_than_train_batch_fails():
    config = verl_config(["data.train_batch_size=16", "actor_rollout_ref.actor.ppo_mini_batch_size=32"])
    with pytest.raises(EPOConfigError) as info:
        validate_with_verl(EPOConfig(), config)
    assert "data.train_batch_size" in str(info.value)
    assert "ppo_mini_batch_size" in str(info.value)
    validate_with_verl(
        EPOConfig(),
        verl_config(["data.train_batch_size=96", "actor_rollout_ref.actor.ppo_mini_batch_size=32"]),
    )


def test_micro_batch_larger_than_mini_batch_times_n_fails():
    actor = "actor_rollout_ref.actor"
    base = ["data.train_batch_size=16", f"{actor}.ppo_mini_batch_size=8", "actor_rollout_ref.rollout.n=4"]
    config = compose_verl([*base, f"{actor}.ppo_micro_batch_size_per_gpu=33"])
    with pytest.raises(EPOConfigError) as info:
        validate_with_verl(EPOConfig(), config)
    assert "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu" in str(info.value)
    # exactly mini batch x n rows is fine
    validate_with_verl(EPOConfig(), compose_verl([*base, f"{actor}.ppo_micro_batch_size_per_gpu=32"]))
    # with dynamic batch size verl packs by tokens and ignores the micro-batch size
    validate_with_verl(
        EPOConfig(),
        compose_verl([*base, f"{actor}.ppo_micro_batch_size_per_gpu=33", f"{actor}.use_dynamic_bsz=true"]),
    )


def test_epo_section_in_verl_config_goes_through_the_trainer_loader():
    """The trainer's loader reads ``epo:`` from the composed config and applies both checks."""
    from verl_epo.trainer import load_epo_config

    config = verl_config([])
    with open_dict(config):
        config.epo = {"alpha": 0.1, "reference": {"mode": "ema", "decay": 0.5}}
    epo = load_epo_config(config)
    assert epo.alpha == 0.1 and epo.reference.decay == 0.5
    with open_dict(config):
        config.epo = {"alpha": -0.1}
    with pytest.raises(EPOConfigError, match="epo.alpha"):
        load_epo_config(config)
    with open_dict(config):
        config.epo = {}
        config.actor_rollout_ref.actor.entropy_coeff = 0.01
    with pytest.raises(EPOConfigError, match="actor_rollout_ref.actor.entropy_coeff"):
        load_epo_config(config)


def test_log_prob_micro_batch_must_divide_the_mini_batch_rows():
    actor, rollout = "actor_rollout_ref.actor", "actor_rollout_ref.rollout"
    base = ["data.train_batch_size=16", f"{actor}.ppo_mini_batch_size=8", f"{rollout}.n=4",
            f"{actor}.ppo_micro_batch_size_per_gpu=8"]
    config = compose_verl([*base, f"{rollout}.log_prob_micro_batch_size_per_gpu=24"])
    with pytest.raises(EPOConfigError) as info:
        validate_with_verl(EPOConfig(), config)
    assert "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=24" in str(info.value)
    validate_with_verl(EPOConfig(), compose_verl([*base, f"{rollout}.log_prob_micro_batch_size_per_gpu=16"]))


def test_rollout_correction_bypass_mode_is_refused():
    config = compose_verl(["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
                           "algorithm.rollout_correction.bypass_mode=true"])
    with pytest.raises(EPOConfigError) as info:
        validate_with_verl(EPOConfig(), config)
    assert "algorithm.rollout_correction.bypass_mode" in str(info.value)


# ----- the README's table -------------------------------------------------------------------------


def readme_table(title: str) -> dict[str, str]:
    """{key: default cell} of the README table that follows the line starting with ``title``."""
    lines = (Path(__file__).resolve().parents[2] / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = {}
    for line in lines[start + 1 :]:
        if rows and not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] in ("key", "---") or set(cells[0]) <= {"-"}:
            continue
        keys = [k.strip().strip("`") for k in cells[0].split(",")]
        defaults = [d.strip() for d in cells[1].split(",")] if len(keys) > 1 else [cells[1]]
        assert len(keys) == len(defaults), line
        rows.update(zip(keys, defaults, strict=True))
    return rows


def test_every_epo_key_is_in_the_readme_with_its_default():
    documented = readme_table("`epo:`")
    defaults = flatten(EPOConfig().to_dict())
    assert sorted(documented) == sorted(defaults), "README's epo: table and EPOConfig list different keys"
    for key, value in defaults.items():
        assert yaml.safe_load(documented[key]) == value, f"README says epo.{key} defaults to {documented[key]}"
