"""verl's own config, composed the way ``python -m verl.trainer.main_ppo`` composes it."""

import pytest
from hydra import compose, initialize_config_module
from verl.utils.config import omega_conf_to_dataclass


def compose_verl(overrides: list[str] | None = None):
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides or [])


@pytest.fixture(scope="module")
def verl_config():
    return compose_verl(["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"])


@pytest.fixture(scope="module")
def actor_config(verl_config):
    """verl's actor config dataclass, as the EPO trainer passes it to ``epo_loss``."""
    return omega_conf_to_dataclass(verl_config.actor_rollout_ref.actor)
