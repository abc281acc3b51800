"""Every CPU twin of a GPU recipe and every estimator variant trains 2 steps through verl's vLLM
rollout (``make test-recipes``; recipes/README.md lists which test runs which recipe).

- The six game twins (``cpu_<game>_<grpo|ppo|ppo_epo>``; the GRPO + EPO twins train in
  ``test_train_games.py``) on the real games, at the paper's update schedule scaled to the test's
  batch. Independent checks share a training: three baseline twins train with one of verl's own
  entropy controls (the EPO-off ablations clip_cov, kl_cov, entropy_bonus).
- RLOO, REINFORCE++, GSPO and Dr. GRPO with EPO on (``ablation=<variant>``) on the synthetic game.

Each run checks finite ``epo/*`` metrics and that the rollout's log-probs equal the actor's after
every update (the weights were synced).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from test_train_cpu import EPO_KEYS
from test_train_games import game_setup  # noqa: F401  (the per-game model and data fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "recipes"))
import compose  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.recipes]  # make test-recipes; 2-4 min a training on 2 cores

TURNS = 4  # the test's episodes: 2 tasks x 2 rollouts x 4 turns = 16 turn rows per step
# (twin, ablation) per game
TWINS = {
    "sciworld": [("cpu_sciworld_ppo_epo", None), ("cpu_sciworld_grpo", "clip_cov"),
                 ("cpu_sciworld_ppo", "entropy_bonus")],
    "alfworld": [("cpu_alfworld_ppo_epo", None), ("cpu_alfworld_grpo", "kl_cov"), ("cpu_alfworld_ppo", None)],
}
ESTIMATORS = ["rloo", "reinforce_plus_plus", "gspo", "dr_grpo"]


def scaled_rows_per_update(twin: str, tasks: int, n: int) -> int:
    """The GPU recipe's rows per update scaled to ``tasks x n`` episodes of ``TURNS`` turns, as the
    paper's step of 16 x 8 episodes of ``env.max_turns`` turns: the same updates per step."""
    gpu = compose.compose_recipe(compose.gpu_twin(twin))
    gpu_rows = int(gpu.data.train_batch_size) * int(gpu.actor_rollout_ref.rollout.n) * int(gpu.env.max_turns)
    return max(1, round(gpu.epo.rows_per_update * tasks * n * TURNS / gpu_rows))


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
    # micro-batches no larger than an update: the trainer pads every update to a multiple of each
    # micro-batch size, and padding beyond the real rows leaves whole updates without a token
    micro = min(4, rows_per_update)
    rows = train(game_setup, game_setup["root"] / f"{twin}-{ablation}", recipe=twin, overrides=[
        "trainer.total_training_steps=2", "trainer.save_freq=-1", f"env.max_turns={TURNS}",
        "data.max_prompt_length=2048", f"epo.rows_per_update={rows_per_update}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        f"critic.model.path={game_setup['model']}", f"critic.ppo_micro_batch_size_per_gpu={micro}", *ablated,
    ])
    check_rows(rows, epo_on=config.epo.enable)
    for row in rows:
        data = row["data"]
        turn_rows = round(4 * data["env/turns"])  # mean turns x 4 episodes
        assert data["epo/updates_per_step"] == math.ceil(turn_rows / rows_per_update) >= 2, data["env/turns"]
        if config.critic.enable:
            assert math.isfinite(data["critic/vf_loss"])


@pytest.mark.parametrize("variant", ESTIMATORS)
def test_estimator_variant_trains_with_epo(tiny_setup, train, variant):
    rows = train(tiny_setup, tiny_setup["root"] / f"variant-{variant}", overrides=[
        "trainer.total_training_steps=2", "trainer.save_freq=-1", f"ablation={variant}",
    ])
    check_rows(rows, epo_on=True)
