"""A CPU recipe is its GPU recipe plus the overrides written in recipes/base/cpu.yaml and in its own
file: nothing else differs, so a CPU run exercises the GPU run's agent loop, vLLM rollout path,
validation, checkpoint and EPO settings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_tree import flatten
from omegaconf import OmegaConf

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
sys.path.insert(0, str(RECIPES))

import compose  # noqa: E402

CPU_RECIPES = [n for n in compose.recipe_names() if n.startswith("cpu_")]
GPU_TWIN = {cpu: compose.gpu_twin(cpu) for cpu in CPU_RECIPES if compose.gpu_twin(cpu) is not None}
# what a twin may set beyond base/cpu.yaml: sizes only (every other key it writes restates its GPU recipe)
SIZE_KEYS = ("epo.rows_per_update", "trainer.experiment_name")


def written(path: Path) -> set[str]:
    """Dotted keys a recipe file sets (Hydra's own sections aside)."""
    tree = yaml.safe_load(path.read_text()) or {}
    tree = {k: v for k, v in tree.items() if k not in ("hydra", "defaults")}
    return set(flatten(tree))


def composed(name: str) -> dict[str, Any]:
    return flatten(OmegaConf.to_container(compose.compose_recipe(name), resolve=False))


@pytest.mark.parametrize("cpu", sorted(GPU_TWIN))
def test_cpu_recipe_differs_from_its_gpu_twin_only_where_written(cpu):
    mine, twin = composed(cpu), composed(GPU_TWIN[cpu])
    differ = {key for key in mine.keys() | twin.keys() if mine.get(key, "<absent>") != twin.get(key, "<absent>")}
    cpu_files = [RECIPES / f"{name}.yaml" for name in cpu_defaults(cpu)] + [RECIPES / f"{cpu}.yaml"]
    declared = set().union(*(written(path) for path in cpu_files))
    own = written(RECIPES / f"{cpu}.yaml")
    restated = sorted(key for key in own - set(SIZE_KEYS) if mine.get(key) != twin.get(key))
    assert not restated, f"{cpu}.yaml sets {restated} to other values than {GPU_TWIN[cpu]}: not a size override"
    undeclared = sorted(key for key in differ if not any(key == d or key.startswith(d + ".") for d in declared))
    assert not undeclared, f"{cpu} differs from {GPU_TWIN[cpu]} outside base/cpu.yaml and {cpu}.yaml: {undeclared}"
    # the paths users depend on are the GPU run's
    for key in ("actor_rollout_ref.rollout.name", "actor_rollout_ref.rollout.mode",
                "actor_rollout_ref.rollout.agent.default_agent_loop", "trainer.v1.trainer_mode",
                "algorithm.adv_estimator", "trainer.val_before_train", "trainer.resume_mode", "epo.alpha"):
        assert mine[key] == twin[key], key


def cpu_defaults(cpu: str) -> list[str]:
    """The CPU files in a twin's defaults: base/cpu.yaml and the game's sizes (base/cpu_<game>.yaml)."""
    defaults = yaml.safe_load((RECIPES / f"{cpu}.yaml").read_text())["defaults"]
    return [d for d in defaults if isinstance(d, str) and d.startswith("base/cpu")]


def test_every_gpu_recipe_has_a_cpu_twin():
    gpu = set(compose.recipe_names(include_cpu=False))
    assert set(GPU_TWIN.values()) == gpu, f"GPU recipes without a CPU twin: {sorted(gpu - set(GPU_TWIN.values()))}"


@pytest.mark.parametrize("cpu", sorted(GPU_TWIN))
def test_cpu_twin_keeps_the_papers_update_schedule_scaled_to_its_batch(cpu):
    """rows_per_update scales with the episodes of a step, so a CPU step makes as many updates as a
    GPU step with episodes of the same length."""
    mine, twin = compose.compose_recipe(cpu), compose.compose_recipe(GPU_TWIN[cpu])
    episodes = lambda c: int(c.data.train_batch_size) * int(c.actor_rollout_ref.rollout.n)  # noqa: E731
    assert mine.epo.rows_per_update * episodes(twin) == twin.epo.rows_per_update * episodes(mine)


@pytest.mark.parametrize("name", CPU_RECIPES)
def test_cpu_recipe_runs_verl_vllm_rollout_on_cpu(name):
    config = compose.compose_recipe(name, ["actor_rollout_ref.model.path=/models/tiny"])
    rollout = config.actor_rollout_ref.rollout
    assert rollout.name == "vllm" and rollout.mode == "async"
    assert rollout.dtype == "float32" and rollout.enforce_eager and not rollout.enable_sleep_mode
    assert config.trainer.device == "cpu" and config.trainer.n_gpus_per_node == 1
    assert config.recipe.model == config.critic.model.path == "/models/tiny"
    assert config.trainer.v1.trainer_mode == "epo"
    if name in GPU_TWIN:
        assert config.epo.enable == compose.compose_recipe(GPU_TWIN[name]).epo.enable
