"""A CPU recipe is its GPU recipe plus the overrides written in recipes/base/cpu.yaml and in its own
file: nothing else differs, so a CPU run exercises the GPU run's agent loop, vLLM rollout path,
validation, checkpoint and EPO settings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
sys.path.insert(0, str(RECIPES))

import compose  # noqa: E402

GPU_TWIN = {"cpu_sciworld": "sciworld_grpo_epo", "cpu_alfworld": "alfworld_grpo_epo"}
CPU_RECIPES = compose.recipe_names()
CPU_RECIPES = [n for n in CPU_RECIPES if n.startswith("cpu_")]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf value (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


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
    declared = written(RECIPES / "base" / "cpu.yaml") | written(RECIPES / f"{cpu}.yaml")
    undeclared = sorted(key for key in differ if not any(key == d or key.startswith(d + ".") for d in declared))
    assert not undeclared, f"{cpu} differs from {GPU_TWIN[cpu]} outside base/cpu.yaml and {cpu}.yaml: {undeclared}"
    # the paths users depend on are the GPU run's
    for key in ("actor_rollout_ref.rollout.name", "actor_rollout_ref.rollout.mode",
                "actor_rollout_ref.rollout.agent.default_agent_loop", "trainer.v1.trainer_mode",
                "algorithm.adv_estimator", "trainer.val_before_train", "trainer.resume_mode", "epo.alpha"):
        assert mine[key] == twin[key], key


@pytest.mark.parametrize("name", CPU_RECIPES)
def test_cpu_recipe_runs_verl_vllm_rollout_on_cpu(name):
    config = compose.compose_recipe(name, ["actor_rollout_ref.model.path=/models/tiny"])
    rollout = config.actor_rollout_ref.rollout
    assert rollout.name == "vllm" and rollout.mode == "async"
    assert rollout.dtype == "float32" and rollout.enforce_eager and not rollout.enable_sleep_mode
    assert config.trainer.device == "cpu" and config.trainer.n_gpus_per_node == 1
    assert config.recipe.model == config.critic.model.path == "/models/tiny"
    assert config.trainer.v1.trainer_mode == "epo" and config.epo.enable
    assert config.epo.rows_per_update is None
