"""Real verl training on CPU with the EPO trainer, the text-game agent loop and the synthetic game."""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid

import pytest
from run_watch import weight_sync_socket

EPO_KEYS = ["epo/beta", "epo/trajectory_entropy", "epo/smooth_penalty", "epo/frac_above_band",
            "epo/frac_below_band", "epo/batch_entropy"]
UPDATE_KEYS = ["epo/update/grad_share", "epo/update/step_share", "epo/update/gradient_step_share",
               "epo/update/grad_cos"]


@pytest.fixture(scope="module")
def straight_run(tiny_setup, train):
    """4 GRPO + EPO steps, checkpoints at steps 2 and 4."""
    out = tiny_setup["root"] / "straight"
    rows = train(tiny_setup, out, overrides=["trainer.total_training_steps=4", "trainer.save_freq=2"])
    return out, rows


def test_grpo_epo_trains_end_to_end(straight_run):
    out, rows = straight_run
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        data = row["data"]
        for key in EPO_KEYS + ["actor/pg_loss", "actor/epo_loss/objective", "env/success", "env/return"]:
            assert key in data, f"{key} missing at step {row['step']}"
            assert math.isfinite(data[key]), f"{key}={data[key]} at step {row['step']}"
        # the rollout's weights equal the actor's: same log-probs on the same tokens (fp32)
        assert data["training/rollout_log_probs_diff_max"] < 1e-3
    # no reference at step 1 (k = 0); from step 2 on the reference is the mean of earlier steps
    assert "epo/reference_entropy" not in rows[0]["data"]
    assert rows[1]["data"]["epo/reference_entropy"] == pytest.approx(rows[0]["data"]["epo/batch_entropy"], rel=1e-6)
    mean_12 = (rows[0]["data"]["epo/batch_entropy"] + rows[1]["data"]["epo/batch_entropy"]) / 2
    assert rows[2]["data"]["epo/reference_entropy"] == pytest.approx(mean_12, rel=1e-6)
    # Eq. 5 with K = 4: beta_k = 1 + exp(-3 k / 2)
    for row in rows:
        assert row["data"]["epo/beta"] == pytest.approx(1 + math.exp(-3 * (row["step"] - 1) / 2))
    assert (out / "ckpt" / "global_step_2" / "epo_state.json").exists()
    assert (out / "ckpt" / "global_step_4" / "actor").is_dir()
    # the update share is measured at step 1 (epo.diagnostic_every=10: steps 1, 11, ...) and only then
    for key in UPDATE_KEYS:
        assert 0.0 <= rows[0]["data"][key] <= 1.0, (key, rows[0]["data"][key])
    assert all("epo/update/step_share" not in row["data"] for row in rows[1:])
    for row in rows:
        assert 0.0 <= row["data"]["epo/update/zero_adv_groups"] <= row["data"]["epo/update/zero_adv_rows"] <= 1.0
        if row["step"] > 1:  # the band needs a reference
            assert 0.0 <= row["data"]["epo/band/traj_inside"] <= 1.0 and row["data"]["epo/band/batch_ratio"] > 0


def test_resume_restores_entropy_history_and_step(straight_run, tiny_setup, train):
    """2 steps + resume from the step-2 checkpoint + 2 steps == 4 straight steps. Two Ray clusters,
    both with job id 01000000: their weight-sync sockets differ all the same."""
    straight, rows = straight_run
    resumed = tiny_setup["root"] / "resumed"
    (resumed / "ckpt").mkdir(parents=True)
    shutil.copytree(straight / "ckpt" / "global_step_2", resumed / "ckpt" / "global_step_2")
    (resumed / "ckpt" / "latest_checkpointed_iteration.txt").write_text("2")
    resumed_rows = train(tiny_setup, resumed, overrides=["trainer.total_training_steps=4", "trainer.save_freq=2"])
    assert [r["step"] for r in resumed_rows] == [3, 4]
    assert weight_sync_socket(resumed) != weight_sync_socket(straight)
    log = (resumed / "train.log").read_text()
    assert "restored entropy history" in log
    # the history of steps 1-2 came back from the checkpoint: same reference at step 3
    assert resumed_rows[0]["data"]["epo/reference_entropy"] == pytest.approx(
        rows[2]["data"]["epo/reference_entropy"], rel=1e-9)
    straight_state = json.loads((straight / "ckpt" / "global_step_4" / "epo_state.json").read_text())
    resumed_state = json.loads((resumed / "ckpt" / "global_step_4" / "epo_state.json").read_text())
    assert resumed_state["global_step"] == straight_state["global_step"] == 4
    # same batches, same seeds, same weights: the whole history and the losses match
    assert resumed_state["history"]["values"] == pytest.approx(straight_state["history"]["values"], rel=1e-5)
    for a, b in zip(rows[2:], resumed_rows, strict=True):
        assert b["data"]["epo/beta"] == a["data"]["epo/beta"]
        for key in ["actor/pg_loss", "actor/epo_loss/objective", "epo/trajectory_entropy"]:
            assert b["data"][key] == pytest.approx(a["data"][key], rel=1e-4, abs=1e-6), key


def test_updates_per_step_one_makes_each_update_on_policy(straight_run, tiny_setup, train):
    """epo.updates_per_step=1: one optimizer update on all turns of the step, so the update's policy
    is the rollout's (PPO ratio 1: verl's ppo_kl 0). The straight run takes the recipe's 4 updates
    per step: the later ones are off-policy (ppo_kl != 0)."""
    _, rows = straight_run
    assert max(abs(r["data"]["actor/ppo_kl"]) for r in rows) > 1e-6
    out = tiny_setup["root"] / "one_update"
    one = train(tiny_setup, out, overrides=["trainer.total_training_steps=2", "trainer.save_freq=-1",
                                            "++epo.updates_per_step=1", "++epo.diagnostic_every=1"])
    assert [r["step"] for r in one] == [1, 2]
    for row in one:
        assert abs(row["data"]["actor/ppo_kl"]) < 1e-6, row["data"]["actor/ppo_kl"]
        assert row["data"]["actor/pg_clipfrac"] == 0.0
        # measured every step here: inside verl's FSDP engine the two parts' gradients add up to the
        # gradient verl then clips and steps with (one update: its grad norm is the step's)
        data = row["data"]
        assert data["epo/update/grad_norm_epo"] > 0
        assert data["epo/update/grad_norm_total"] == pytest.approx(data["actor/grad_norm"], rel=1e-4)


@pytest.mark.slow  # two FSDP ranks and two vLLM tensor-parallel workers on 2 cores
def test_tensor_parallel_two_over_two_fsdp_ranks(tiny_setup, train):
    from verl_epo.embedded.tiny_model import build_tiny_model

    out = tiny_setup["root"] / "tp2"
    # two heads, one per tensor-parallel rank (the shared e2e model has one); random weights suffice
    build_tiny_model([tiny_setup["root"] / "corpus.txt"], out / "model", hidden=64, layers=2, heads=2)
    rows = train({**tiny_setup, "model": out / "model"}, out, overrides=[
        "trainer.n_gpus_per_node=2", "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        "trainer.total_training_steps=2", "trainer.save_freq=-1",
    ])
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["data"]["actor/pg_loss"])
        assert row["data"]["training/rollout_log_probs_diff_max"] < 1e-3  # synced across both shards


@pytest.mark.slow  # two trainings at once on 2 cores: 171 s alone
def test_two_trainings_at_once_keep_their_own_weights(tiny_setup, train, nothing_left):
    """Two local Ray clusters on one host both number their first job 01000000, which is all verl
    puts in its weight-sync socket name. With models of different shapes, a weight sync through
    the other run's socket fails the run (vocab_parallel_embedding's weight_loader asserts), but only
    if their syncs overlap: with the fix switched off, both runs once finished. The check that the
    two runs used different socket names fails without the fix every time."""
    from concurrent.futures import ThreadPoolExecutor

    from verl_epo.embedded.tiny_model import build_tiny_model

    root = tiny_setup["root"] / "concurrent"
    wide = {**tiny_setup, "model": root / "wide-model"}
    build_tiny_model([tiny_setup["root"] / "corpus.txt"], wide["model"], hidden=64, layers=2, heads=2,
                     vocab_size=400)
    steps = ["trainer.total_training_steps=3", "trainer.save_freq=-1"]
    tags = {"narrow": uuid.uuid4().hex, "wide": uuid.uuid4().hex}
    started = time.time()
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(train, setup, root / name, overrides=steps, tag=tags[name])
                for name, setup in (("narrow", tiny_setup), ("wide", wide))]
        rows = [run.result() for run in runs]
    assert [[r["step"] for r in run_rows] for run_rows in rows] == [[1, 2, 3], [1, 2, 3]]
    assert weight_sync_socket(root / "narrow") != weight_sync_socket(root / "wide")
    for tag in tags.values():
        nothing_left(tag, started)
