"""The README's two reuse examples work as written."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.filterwarnings("error")  # a user copying the snippet sees no warning either
def test_algorithm_snippet_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    snippet = next(b for b in blocks if "trajectory_token_weights" in b)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["entropy"].grad is not None
    assert scope["history"].num_updates == 2


def test_one_switch_turns_a_verl_recipe_into_epo():
    """A stock verl config + trainer.v1.trainer_mode=epo (+ epo overrides) selects our trainer."""
    import verl  # noqa: F401  (loads the plug-in through its entry point, as in every verl process)
    from verl.trainer.ppo.v1 import get_trainer_cls

    from verl_epo.trainer import EPOTrainer, load_epo_config

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        config = compose(config_name="ppo_trainer", overrides=[
            "trainer.v1.trainer_mode=epo", "+epo.alpha=0.1", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        ])
    assert "trainer.v1.trainer_mode=epo" in README.read_text()
    assert get_trainer_cls(config.trainer.v1.trainer_mode) is EPOTrainer
    epo = load_epo_config(config)
    assert epo.enable and epo.alpha == 0.1 and epo.entropy_coef == 1e-3


def test_multi_node_launch_composes(tmp_path):
    """The README's multi-node launch (``bash recipes/run.sh ...``) composes and passes every
    check run.sh makes before it starts anything, over all its nodes' GPUs."""
    import shlex
    import sys

    from verl_epo.embedded.tiny_model import build_tiny_model

    sys.path.insert(0, str(README.parent / "recipes"))
    import compose

    section = README.read_text().split("## Running on a multi-node cluster", 1)[1].split("\n## ", 1)[0]
    launches = [shlex.split(line)[2:] for line in section.splitlines() if line.startswith("bash recipes/run.sh ")]
    assert launches, "no launch command in the README's multi-node section"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["look around", "open door to kitchen", "take apple"] * 30))
    build_tiny_model([corpus], tmp_path / "model", vocab_size=300)
    for recipe, *overrides in launches:
        config = compose.compose_recipe(recipe, overrides)
        assert config.trainer.nnodes == 2 and config.ray_kwargs.ray_init.address == "auto", overrides
        compose.check_recipe(config, stand_in_model=str(tmp_path / "model"))
