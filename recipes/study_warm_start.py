"""Warm-start one mini-study seed until its sampled play wins often enough for GRPO to learn, measured.

GRPO learns only from groups that mix wins and losses; the tiny model trained on the demo's noisy
expert (half its moves random) learns the synthetic corridor's rule (go where the sign points)
abruptly, and how often it then *wins when sampling* differs a lot between seeds. The first study's
fixed step count left two of three seeds before that point, and the next criterion (greedy rule
accuracy >= 0.9) was met by seed 1 at 1,000 steps while its sampled play won 0 of 64 validation
episodes (``docs/results.md``), so every method of that seed trained on all-lost groups.

The criterion is therefore measured the way validation plays: **sampled success**, the fraction of
``synthetic/val`` episodes won at temperature 1 (seeds ``CHECK_SEEDS``, 64 episodes, the recipe's
game settings) by ``env_adapters.evaluate``'s vLLM engine, in a subprocess. Rule accuracy (greedy
decoding reproduces the clean expert's turns, teacher-forced) and the answer loss on those turns
are recorded beside it.

Rounds: ``first_steps`` supervised steps (``recipes/demo.py::prepare_model``, the demo's noisy
expert), then ``round_steps`` more at a time (``verl_epo.embedded.warm_start.warm_start`` from the
previous round's model: a fresh AdamW with its 10 % warm-up each round) until sampled success
reaches ``threshold`` or ``max_steps`` are spent. The record (``warm_start_check.json``) lists every
round; a seed that never reaches the threshold is reported and not trained.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo import GAMES, log, prepare_model, recipe_settings

GAME = "synthetic"
RULE_SET = "synthetic/val"
CHECK_FILE = "warm_start_check.json"
CHECK_SEEDS = (0, 1, 2, 3)
"""Sampling seeds of the check: 4 x 16 validation tasks = 64 episodes (~60 s with vLLM's start-up)."""


@dataclass(frozen=True)
class WarmStartPlan:
    """How long a seed's warm start may run and when it counts as having learned the rule."""

    first_steps: int = 1000
    """Supervised steps before the first check (the demo's warm start)."""
    round_steps: int = 500
    """Further steps per round while sampled success is below the threshold."""
    max_steps: int = 3000
    """Give up (the seed is reported, not trained) past this many steps."""
    threshold: float = 0.15
    """Sampled (T = 1) validation success that counts as ready: the demo's warm start, from which GRPO
    learns, validates at 0.19; at 0.15 a group of 4 episodes mixes wins and losses 48 % of the time."""

    def __post_init__(self) -> None:
        if not (1 <= self.first_steps <= self.max_steps and self.round_steps >= 1 and 0 < self.threshold <= 1):
            raise ValueError(f"warm start plan needs 1 <= first_steps <= max_steps, round_steps >= 1 and "
                             f"0 < threshold <= 1; got {self}")


def rule_rows(seed: int) -> list[list[dict[str, str]]]:
    """The clean expert's turns on ``RULE_SET`` as chat rows (prompt messages + the expert's answer)."""
    from env_adapters.expert import expert_rows

    episode, _ = recipe_settings(GAMES[GAME])
    rows, _ = expert_rows(RULE_SET, episode, explore=0.0, seed=seed)
    return [row["messages"] for row in rows]


def rule_accuracy(model_dir: str | Path, rows: list[list[dict[str, str]]], batch_size: int = 16) -> dict[str, float]:
    """Greedy reproduction of the expert's answers, teacher-forced.

    Args:
        model_dir: a Hugging Face model directory.
        rows: chat rows ending with the expert's answer (``rule_rows``).

    Returns:
        ``accuracy``: fraction of rows whose every answer token is the argmax of the model's
        next-token distribution (what greedy decoding would write); ``answer_loss``: mean
        cross-entropy over the answer tokens; ``turns``: number of rows.
    """
    import torch

    from verl_epo.embedded.tiny_model import load_model_and_tokenizer
    from verl_epo.embedded.warm_start import IGNORE, collate, evaluate_loss, tokenize_row

    model, tokenizer = load_model_and_tokenizer(model_dir)
    model.eval()
    examples = [tokenize_row(tokenizer, messages) for messages in rows]
    exact = 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            input_ids, mask, labels = collate(examples[start:start + batch_size], tokenizer.pad_token_id)
            predicted = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].argmax(-1)  # (bs, len-1)
            target = labels[:, 1:]
            answer = target != IGNORE
            exact += int(((predicted == target) | ~answer).all(dim=1).sum())
    return {"accuracy": exact / max(len(examples), 1), "answer_loss": evaluate_loss(model, tokenizer, rows),
            "turns": len(examples)}


def sampled_success(model_dir: Path, out: Path) -> float:
    """Success at T = 1 on ``RULE_SET`` x ``CHECK_SEEDS``, with the recipe's game settings, played by
    ``env_adapters.evaluate`` in a subprocess (its vLLM engine and memory are gone when it returns)."""
    episode, games = recipe_settings(GAMES[GAME])
    cmd = [sys.executable, "-m", "env_adapters.evaluate", str(model_dir), "--set", RULE_SET,
           "--seeds", *map(str, CHECK_SEEDS), "--temperature", "1.0", "--max-turns", str(episode.max_turns),
           "--history-turns", str(episode.history_turns), "--parser", episode.parser,
           "--max-response-tokens", "12", "--game-kwargs", json.dumps(games.games),
           "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the warm-start check's evaluation failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())["sets"][RULE_SET]["success"]["mean"]


def read_check(folder: Path) -> dict[str, Any] | None:
    path = folder / CHECK_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def warm_start_until_learned(folder: Path, seed: int, plan: WarmStartPlan) -> dict[str, Any]:
    """Warm-start ``seed``'s tiny model in ``folder`` until sampled success reaches the threshold (or
    ``max_steps``).

    Returns the record written to ``folder/warm_start_check.json``: ``seed``, ``plan``, ``rounds``
    (per round: total supervised steps, final training loss of the round, sampled success, rule
    accuracy, answer loss), ``learned`` (the threshold was reached), ``steps`` and ``model`` (the
    directory RL starts from). A finished record with the same plan is returned as is, so a study
    resumes without retraining.
    """
    from env_adapters.expert import load_sft_rows
    from verl_epo.embedded.warm_start import STATS_FILE, warm_start

    done = read_check(folder)
    if done is not None and done.get("plan") == dataclasses.asdict(plan) and done.get("finished"):
        log(f"seed {seed}: warm start already checked ({done['steps']} steps, learned: {done['learned']})")
        return done
    game = dataclasses.replace(GAMES[GAME], warm_start_steps=plan.first_steps)
    model = prepare_model(GAME, game, folder, seed)
    rows = rule_rows(seed)
    train_rows = [row["messages"] for row in load_sft_rows(folder / "expert")]

    def check(model_dir: Path, steps: int) -> dict[str, Any]:
        stats = json.loads((model_dir / STATS_FILE).read_text())
        record = {"steps": steps, "train_loss": stats["final_loss"], "model": str(model_dir),
                  "sampled_success": sampled_success(model_dir, folder / f"check_{steps}"),
                  **rule_accuracy(model_dir, rows)}
        log(f"seed {seed}: {steps} warm-start steps, training loss {record['train_loss']}, sampled success "
            f"{record['sampled_success']:.3f} on {RULE_SET} (T = 1, sampling seeds {list(CHECK_SEEDS)}), rule "
            f"accuracy {record['accuracy']:.2f} on {record['turns']} clean expert turns, answer loss "
            f"{record['answer_loss']:.3f}")
        return record

    rounds = [check(model, plan.first_steps)]
    while rounds[-1]["sampled_success"] < plan.threshold and rounds[-1]["steps"] + plan.round_steps <= plan.max_steps:
        steps = rounds[-1]["steps"] + plan.round_steps
        target = folder / f"model_{steps}"
        shutil.rmtree(target, ignore_errors=True)  # a round cut short is redone
        warm_start(rounds[-1]["model"], train_rows, target, steps=plan.round_steps, seed=seed * 1000 + len(rounds))
        rounds.append(check(target, steps))
    last = rounds[-1]
    record = {"seed": seed, "plan": dataclasses.asdict(plan), "rounds": rounds, "rule_set": RULE_SET,
              "learned": last["sampled_success"] >= plan.threshold, "steps": last["steps"], "model": last["model"],
              "sampled_success": last["sampled_success"], "accuracy": last["accuracy"],
              "answer_loss": last["answer_loss"], "finished": True}
    (folder / CHECK_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record
