"""GRPO + EPO on CPU with the real Qwen vocabulary: the offline Qwen tokenizer and a tiny model with
Qwen2.5's 151,936 embedding rows (same sizes, warm start and run as the small-vocabulary e2e tests,
in 3-turn episodes).

verl's entropy with gradient, the rollout's sampling and the weight sync then run over the full
vocabulary, which is where EPO's memory goes on GPU; docs/benchmarks.md compares the two runs.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from test_train_cpu import EPO_KEYS

pytestmark = [pytest.mark.slow, pytest.mark.recipes]  # make test-recipes

GAP = 5e-3  # rollout vs actor log-prob tolerance; the test says why
TURNS = 3
SIZES = {"hidden": 32, "layers": 2, "heads": 1}  # the shared e2e model's (conftest.tiny_setup)


def real_vocab_model(root: Path, seed: int = 0) -> Path:
    """The e2e model's recipe with the Qwen vocabulary: build, then a 40-step warm start at lr 1e-2.

    At the small model's lr 1e-3 the answer loss only fell 11.94 -> 9.84 (entropy 11.92 nats, all but
    uniform over 151,936 rows): then the 290 rows past the tokenizer's 151,646 ids carry 0.19 % of the
    probability, which verl's vLLM rollout masks (ids >= len(tokenizer) get -inf) and the actor does
    not, and the log-prob check saw that gap (ln(151936 / 151646) = 0.0019). At 1e-2 the loss falls to
    1.09 and the tail's mass below 3e-4, as in a trained Qwen, whose tail rows are never targets."""
    from env_adapters.episode import EpisodeSettings
    from env_adapters.expert import expert_rows
    from verl_epo.embedded.qwen_tokenizer import build_real_vocab_model
    from verl_epo.embedded.warm_start import warm_start

    build_real_vocab_model(root / "init", seed=seed, **SIZES)
    rows, _ = expert_rows("synthetic/train", EpisodeSettings(max_turns=6, history_turns=1), limit=16)
    warm_start(root / "init", [r["messages"] for r in rows], root / "model", steps=40, lr=1e-2,
               seed=seed)
    return root / "model"


@pytest.fixture(scope="module")
def real_vocab_run(tiny_setup, train):
    root = tiny_setup["root"] / "real_vocab"
    setup = {**tiny_setup, "model": real_vocab_model(root)}
    # 3 turns, not the e2e tests' 6: the update (22 ms a token over 151,936 rows) is most of the run
    rows = train(setup, root / "run", overrides=["trainer.total_training_steps=2", "trainer.save_freq=-1",
                                                  f"env.max_turns={TURNS}"])
    return setup, root / "run", rows


def test_grpo_epo_trains_with_the_qwen_vocabulary(real_vocab_run):
    setup, _, rows = real_vocab_run
    config = json.loads((Path(setup["model"]) / "config.json").read_text())
    assert config["vocab_size"] == 151936
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        data = row["data"]
        for key in EPO_KEYS + ["actor/pg_loss", "actor/epo_loss/objective", "env/success"]:
            assert math.isfinite(data[key]), f"{key}={data.get(key)} at step {row['step']}"
    first, second = (row["data"] for row in rows)
    # entropy over 151,936 logits: a uniform token would have ln(151936) = 11.9 nats
    assert 0 < first["epo/batch_entropy"] < 0.5 * math.log(151936), first["epo/batch_entropy"]
    # The rollout's log-probs equal the actor's up to GAP: the rows past the tokenizer's 151,646 ids
    # are -inf in verl's vLLM rollout but part of the actor's softmax, so their mass is a gap of its
    # own (measured 2026-12-07, 3-turn episodes: 5.7e-4 at step 1, 1.4e-3 at step 2, after the update raised the
    # entropy over all 151,936 rows). Step 2 samples with the weights synced after update 1, which
    # moved the policy far more than GAP (entropy 1.67 -> 3.91 nats; every episode failed, so EPO's
    # terms alone made Adam's step): a missed sync would show.
    for row in rows:
        gap = row["data"]["training/rollout_log_probs_diff_max"]
        assert gap < GAP, f"rollout vs actor log-prob gap {gap} at step {row['step']}"
    assert abs(second["epo/batch_entropy"] - first["epo/batch_entropy"]) > 0.5


def test_cpu_run_console_shows_no_engine_warnings(real_vocab_run):
    """verl's five "engine is not available" warnings came from every Ray process; the CPU mode
    silences them. The log has the workers' output (Ray's pid prefixes) and the step lines."""
    _, out, _ = real_vocab_run
    log = (out / "train.log").read_text()
    assert len(set(re.findall(r"\((\w+) pid=\d+", log))) >= 2, "no Ray worker output in the log"
    assert re.search(r"step:2 ", log), "no step line in the log"
    for name in ("torchtitan", "veomni", "automodel", "mindspeed", "megatron"):
        assert f"{name} engine is not available" not in log
