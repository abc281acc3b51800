"""Every CPU twin of a GPU recipe and every estimator variant trains 2 steps through verl's vLLM
rollout (``make test-recipes``; recipes/README.md lists which test runs which recipe).

- The six game twins (``cpu_<game>_<grpo|ppo|ppo_epo>``; the GRPO + EPO twins train in
  ``test_train_games.py``) on the real games, at the paper's update schedule scaled to the test's
  batch. Independent checks share a training: three baseline twins train with one of verl's own
  entropy controls (the EPO-off ablations clip_cov, kl_cov, entropy_bonus).
- RLOO, REINFORCE++, GSPO and Dr. GRPO with EPO on (``ablation=<variant>``) on the synthetic game;
  RLOO's advantage and GSPO's loss are independent settings and share one training
  (``ablation=[rloo,gspo]``), Dr. GRPO stays with GRPO's advantage, whose std it drops.
- The Qwen3 twins (``cpu_sciworld_grpo_epo_qwen3_8b``, ``cpu_alfworld_grpo_epo_qwen3_4b``) on a tiny
  ``Qwen3ForCausalLM`` (head_dim 32).
- The LoRA twin (``cpu_sciworld_grpo_epo_lora``): verl's LoRA actor, vLLM's LoRA, the adapter synced
  after every update, the reference policy the base model with the adapter off. Its model is
  warm-started on a few expert turns so that rewards differ within a group at step 1: the first
  update is a real one, so a stale adapter in vLLM would show as a log-prob gap.

Each run checks finite ``epo/*`` metrics and that the rollout's log-probs equal the actor's after
every update (the weights were synced).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from config_tree import flatten
from omegaconf import OmegaConf
from test_train_cpu import EPO_KEYS
from test_train_games import (
    GAMES,
    game_setup,  # noqa: F401  (the per-game model and data fixture)
)

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
sys.path.insert(0, str(RECIPES))
import compose  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.recipes]  # make test-recipes; 2-4 min a training on 2 cores

TURNS = 4  # the test's episodes: 2 tasks x 2 rollouts x 4 turns = 16 turn rows per step
# (twin, ablation) per game
TWINS = {
    "sciworld": [("cpu_sciworld_ppo_epo", None), ("cpu_sciworld_grpo", "clip_cov"),
                 ("cpu_sciworld_ppo", "entropy_bonus")],
    "alfworld": [("cpu_alfworld_ppo_epo", None), ("cpu_alfworld_grpo", "kl_cov"), ("cpu_alfworld_ppo", None)],
}
# estimator / loss variants, one training each; a pair selects both ablations (Hydra's multi-select)
ESTIMATORS = [("rloo", "gspo"), ("reinforce_plus_plus",), ("dr_grpo",)]


def scaled_rows_per_update(twin: str, tasks: int, n: int) -> int:
    """The GPU recipe's rows per update scaled to ``tasks x n`` episodes of ``TURNS`` turns, as the
    paper's step of 16 x 8 episodes of ``env.max_turns`` turns: the same updates per step."""
    gpu = compose.compose_recipe(compose.gpu_twin(twin))
    gpu_rows = int(gpu.data.train_batch_size) * int(gpu.actor_rollout_ref.rollout.n) * int(gpu.env.max_turns)
    return max(1, round(gpu.epo.rows_per_update * tasks * n * TURNS / gpu_rows))


def schedule_overrides(twin: str, tasks: int = 2, n: int = 2, critic: Path | None = None) -> list[str]:
    """2 steps of ``TURNS``-turn episodes at the twin's GPU update schedule scaled to ``tasks x n``
    episodes (with ``critic``, that model as the critic), with micro-batches no larger than an
    update: every update is a multiple of each micro-batch size, so larger ones would make the
    trainer lower the update count (``updates_with_real_rows``)."""
    rows_per_update = scaled_rows_per_update(twin, tasks, n)
    micro = min(4, rows_per_update)
    critic_overrides = [f"critic.model.path={critic}", f"critic.ppo_micro_batch_size_per_gpu={micro}"] if critic else []
    return ["trainer.total_training_steps=2", "trainer.save_freq=-1", f"env.max_turns={TURNS}",
            "data.max_prompt_length=2048", f"epo.rows_per_update={rows_per_update}",
            f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
            f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}", *critic_overrides]


def check_rows(rows: list[dict], epo_on: bool) -> None:
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        data = row["data"]
        for key in EPO_KEYS + ["actor/pg_loss", "env/success", "env/turns"]:
            assert math.isfinite(data[key]), (key, data.get(key))
        if epo_on:
            assert math.isfinite(data["actor/epo_loss/objective"])
        assert data["training/rollout_log_probs_diff_max"] < 1e-3
        assert data["env/env_failure"] == 0.0


@pytest.mark.parametrize("position", range(3))
def test_cpu_twin_trains_two_steps_at_the_papers_schedule(game_setup, train, position):  # noqa: F811
    twin, ablation = TWINS[game_setup["game"]][position]
    rows_per_update = scaled_rows_per_update(twin, tasks=2, n=2)
    ablated = [f"ablation={ablation}"] if ablation else []
    config = compose.compose_recipe(twin, ["actor_rollout_ref.model.path=/m", *ablated])
    rows = train(game_setup, game_setup["root"] / f"{twin}-{ablation}", recipe=twin, overrides=[
        *schedule_overrides(twin, critic=game_setup["model"]), *ablated,
    ])
    check_rows(rows, epo_on=config.epo.enable)
    for row in rows:
        data = row["data"]
        turn_rows = round(4 * data["env/turns"])  # mean turns x 4 episodes
        assert data["epo/updates_per_step"] == math.ceil(turn_rows / rows_per_update) >= 2, data["env/turns"]
        if config.critic.enable:
            assert math.isfinite(data["critic/vf_loss"])


@pytest.mark.parametrize("variants", ESTIMATORS, ids="+".join)
def test_estimator_variant_trains_with_epo(tiny_setup, train, variants):
    ablation = f"ablation=[{','.join(variants)}]"
    config = compose.compose_recipe("cpu_synthetic", ["actor_rollout_ref.model.path=/m", ablation])
    for variant in variants:  # every setting of each selected variant is in the run's config
        settings = OmegaConf.to_container(OmegaConf.load(RECIPES / "ablation" / f"{variant}.yaml"))
        for key, value in flatten(settings).items():
            assert OmegaConf.select(config, key) == value, (variant, key)
    assert config.epo.enable
    rows = train(tiny_setup, tiny_setup["root"] / f"variant-{'+'.join(variants)}", overrides=[
        "trainer.total_training_steps=2", "trainer.save_freq=-1", ablation,
    ])
    check_rows(rows, epo_on=True)


# the Qwen3 recipes' twins, one per game
QWEN3_TWINS = {"sciworld": "cpu_sciworld_grpo_epo_qwen3_8b", "alfworld": "cpu_alfworld_grpo_epo_qwen3_4b"}


@pytest.fixture(scope="module", params=sorted(QWEN3_TWINS))
def qwen3_setup(request, tmp_path_factory):
    """A random tiny Qwen3ForCausalLM (head_dim 32) with a tokenizer trained on the game's text, and
    2 tasks of data."""
    from env_adapters.corpus import write_corpus
    from env_adapters.dataset import build_dataset
    from verl_epo.embedded.tiny_model import build_tiny_model

    game = request.param
    _, train_set, val_set = GAMES[game]
    root = tmp_path_factory.mktemp(f"qwen3-{game}")
    write_corpus([game], root / "corpus.txt", episodes=3, max_steps=10)
    summary = build_tiny_model([root / "corpus.txt"], root / "model", hidden=32, layers=2, heads=1, arch="qwen3")
    assert summary["architecture"] == "Qwen3ForCausalLM"
    data = build_dataset(root / "data", train_set=train_set, val_set=val_set, limit=2)
    return {"game": game, "root": root, "model": root / "model", **data}


def test_qwen3_twin_trains_two_steps(qwen3_setup, train):
    twin = QWEN3_TWINS[qwen3_setup["game"]]
    rows = train(qwen3_setup, qwen3_setup["root"] / "run", recipe=twin, overrides=schedule_overrides(twin))
    check_rows(rows, epo_on=True)
    log = (qwen3_setup["root"] / "run" / "train.log").read_text()
    assert "Qwen3ForCausalLM contains" in log, "verl's actor did not build a Qwen3ForCausalLM"


@pytest.fixture(scope="module")
def lora_setup(tmp_path_factory):
    """A tiny Qwen2 with a ScienceWorld tokenizer, briefly warm-started on expert turns (some of its
    actions are valid, some not: rewards differ within a group), and 2 tasks of data."""
    from env_adapters.corpus import write_corpus
    from env_adapters.dataset import build_dataset
    from env_adapters.episode import EpisodeSettings
    from env_adapters.expert import expert_rows
    from verl_epo.embedded.tiny_model import build_tiny_model
    from verl_epo.embedded.warm_start import warm_start

    _, train_set, val_set = GAMES["sciworld"]
    root = tmp_path_factory.mktemp("lora")
    write_corpus(["sciworld"], root / "corpus.txt", episodes=3, max_steps=10)
    build_tiny_model([root / "corpus.txt"], root / "init", hidden=32, layers=2, heads=1)
    # the expert wins these 2 tasks in 29 and 36 turns: every turn of both episodes is a row
    rows, _ = expert_rows(train_set, EpisodeSettings(max_turns=40, history_turns=1), limit=2)
    warm_start(root / "init", [r["messages"] for r in rows], root / "model", steps=LORA_WARM_STEPS, seed=0)
    data = build_dataset(root / "data", train_set=train_set, val_set=val_set, limit=2)
    return {"game": "sciworld", "root": root, "model": root / "model", **data}


LORA_WARM_STEPS = 400  # answer loss about 6.8 -> 0.5: many turns valid, some not (T = 1 sampling)
LORA_N = 4  # rollouts per task: a larger group than the other twins' 2, so that rewards differ in one
# the policy must move by far more than the log-prob check's 1e-3 tolerance: a low_var_kl of 5e-5
# (actor after step 1's updates vs the base model, averaged over step 2's tokens) is a root mean
# square log-prob shift of about 1e-2
MIN_STEP2_KL = 5e-5


def test_lora_twin_trains_two_steps_with_the_adapter_synced(lora_setup, train):
    twin = "cpu_sciworld_grpo_epo_lora"
    rows = train(lora_setup, lora_setup["root"] / "run", recipe=twin, overrides=[
        *schedule_overrides(twin, n=LORA_N), f"actor_rollout_ref.rollout.n={LORA_N}",
    ])
    check_rows(rows, epo_on=True)
    first, second = (row["data"] for row in rows)
    # step 1's update is a real one: some rows have a nonzero advantage, and the loss moves the adapter
    assert first["epo/update/zero_adv_rows"] < 1.0 and first["actor/pg_loss"] != 0.0, first
    # the reference policy is the base model (adapter off): at step 2 the adapter trained at step 1
    # separates the actor from it by far more than the tolerance, while vLLM (given the new adapter)
    # still matches the actor within 1e-3
    assert second["actor/kl_loss"] > MIN_STEP2_KL, second["actor/kl_loss"]
    assert second["actor/kl_loss"] > first["actor/kl_loss"]
    assert second["training/rollout_log_probs_diff_max"] < 1e-3
