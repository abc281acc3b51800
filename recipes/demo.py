"""`make demo`: real GRPO + EPO training on CPU, from nothing to plots, in one command.

1. text from the game → a tiny Qwen2 model and BPE tokenizer (random init);
2. expert episodes → a short supervised warm start, so GRPO groups mix wins and losses;
3. verl parquet files for the game's fixed train / validation sets;
4. ``python -m verl.trainer.main_ppo`` with ``recipes/cpu_<game>.yaml`` and the embedded CPU mode
   (real verl trainer, real Ray, the EPO trainer and the text-game agent loop), with one progress
   line per step;
5. the same fixed validation episodes played by the warm-started and by the trained model
   (``env_adapters.evaluate``, with the recipe's game settings, at the training temperature and at
   the paper's evaluation temperature 0.4), a summary and plots.

Usage: ``python recipes/demo.py --game synthetic --out outputs/demo-synthetic [--steps N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from env_adapters.episode import EpisodeSettings
    from env_adapters.game_pool import GameSettings

RECIPES = Path(__file__).resolve().parent


@dataclass(frozen=True)
class DemoGame:
    """What the demo needs to know about one game."""

    recipe: str
    train_set: str
    val_set: str
    expert_set: str
    warm_start_steps: int
    steps: int
    corpus_episodes: int = 30
    expert_explore: float = 0.0
    """Probability of a random admissible action per expert turn (``env_adapters.expert``)."""


GAMES = {
    # warm start on a noisy expert (half its moves random): the model learns the rule (follow the
    # sign) but samples a diluted policy, which GRPO then sharpens; see docs/evaluation.md
    "synthetic": DemoGame("cpu_synthetic", "synthetic/train", "synthetic/val", "synthetic/train",
                          warm_start_steps=1000, steps=30, expert_explore=0.5),
    "sciworld": DemoGame("cpu_sciworld", "sciworld/l0-train-small", "sciworld/l0-test-small",
                         "sciworld/l0-train-small", warm_start_steps=300, steps=6,
                         corpus_episodes=10),
    "alfworld": DemoGame("cpu_alfworld", "alfworld/train-small", "alfworld/valid-seen-small",
                         "alfworld/train-small", warm_start_steps=300, steps=6,
                         corpus_episodes=10),
}


def log(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def prepare_model(game_name: str, game: DemoGame, out: Path, seed: int) -> Path:
    """Tiny model + tokenizer from game text, then a warm start on expert play."""
    from env_adapters.corpus import write_corpus
    from env_adapters.expert import expert_rows, write_sft
    from verl_epo.embedded.tiny_model import build_tiny_model
    from verl_epo.embedded.warm_start import warm_start

    warm = out / "model"
    if (warm / "config.json").exists():
        log(f"reusing the warm-started model in {warm}")
        return warm
    corpus = out / "corpus.txt"
    counts = write_corpus([game_name], corpus, episodes=game.corpus_episodes, seed=seed)
    log(f"corpus: {counts} lines of game text -> {corpus}")
    summary = build_tiny_model([corpus], out / "model_init", seed=seed)
    log(f"tiny model: {summary['parameters']:,} parameters, vocabulary {summary['vocab_size']}")
    episode, _ = recipe_settings(game)  # the expert's prompts are the agent loop's: same turn limit and history
    rows, report = expert_rows(game.expert_set, episode, explore=game.expert_explore, seed=seed)
    write_sft(rows, out / "expert")
    noisy = f", {game.expert_explore:.0%} of moves random" if game.expert_explore else ""
    log(f"expert data: {len(rows)} turns from {report.won} won episodes of {game.expert_set}{noisy}")
    stats = warm_start(out / "model_init", [r["messages"] for r in rows], warm,
                       steps=game.warm_start_steps, seed=seed)
    log(f"warm start: {stats['steps']} steps, loss {stats['first_loss']} -> {stats['final_loss']}")
    return warm


def train(game: DemoGame, model: Path, data: dict[str, Path], out: Path, steps: int, seed: int,
          overrides: list[str]) -> float:
    """Run verl's trainer in CPU mode; print one line per step from verl's file logger."""
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    env = {**os.environ, "VERL_EPO_CPU": "1", "VERL_FILE_LOGGER_PATH": str(metrics_path.resolve()),
           "HYDRA_FULL_ERROR": "1"}
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(RECIPES), "--config-name", game.recipe,
        f"actor_rollout_ref.model.path={model.resolve()}",
        f"data.train_files={data['train'].resolve()}", f"data.val_files={data['val'].resolve()}",
        f"trainer.total_training_steps={steps}", f"trainer.default_local_dir={(out / 'checkpoints').resolve()}",
        f"trainer.test_freq={max(1, steps // 3)}", f"trainer.save_freq={steps}",
        f"recipe.seed={seed}", f"recipe.root={out.resolve()}", *overrides,
    ]
    log("training: " + " ".join(cmd[2:]))
    start = time.perf_counter()
    with open(out / "train.log", "w") as train_log:
        proc = subprocess.Popen(cmd, stdout=train_log, stderr=subprocess.STDOUT, env=env)
        seen = 0
        while proc.poll() is None:
            time.sleep(2)
            seen = print_new_steps(metrics_path, seen)
        print_new_steps(metrics_path, seen)
    if proc.returncode != 0:
        raise SystemExit(f"[demo] training failed (exit {proc.returncode}); see {out / 'train.log'}")
    return time.perf_counter() - start


def read_metrics(path: Path) -> list[dict]:
    from verl_epo.analysis.runs import read_jsonl

    return read_jsonl(path) if path.exists() else []


def print_new_steps(path: Path, seen: int) -> int:
    rows = read_metrics(path)
    for row in rows[seen:]:
        d = row["data"]
        parts = [f"step {row['step']:>3}"]
        for key, label in [("env/success", "success"), ("env/return", "return"),
                           ("epo/trajectory_entropy", "H_traj"), ("epo/reference_entropy", "H_ref"),
                           ("epo/beta", "beta"), ("epo/frac_above_band", "above"),
                           ("timing_s/step", "s/step")]:
            if key in d:
                parts.append(f"{label} {d[key]:.3f}")
        for key, value in d.items():
            if key.startswith("val-aux/") and key.endswith("success/mean@1"):
                parts.append(f"val success {value:.3f}")
        print("  ".join(parts), flush=True)
    return len(rows)


def recipe_settings(game: DemoGame) -> tuple[EpisodeSettings, GameSettings]:
    """The game recipe's ``env:`` section as training reads it: (EpisodeSettings, GameSettings)."""
    from compose import compose_recipe

    from env_adapters.agent_loop import env_settings

    return env_settings(compose_recipe(game.recipe))


def evaluate_before_after(game: DemoGame, model: Path, out: Path, seed: int) -> dict[str, dict[str, float]]:
    """Success on the validation set, same episodes and seed, before and after training, with the
    recipe's game settings, at the training temperature (1.0) and the paper's evaluation temperature."""
    from env_adapters.evaluate import PAPER_TEMPERATURE, EvalSettings, evaluate, format_summary

    episode, games = recipe_settings(game)
    results = {}
    for temperature in (1.0, PAPER_TEMPERATURE):
        for name, path in [("before", model), ("after", out / "checkpoints")]:
            settings = EvalSettings(model=str(path), temperature=temperature, max_response_tokens=12,
                                    episode=episode, game=games)
            summary = evaluate(path, [game.val_set], [seed], out / f"eval_{name}_T{temperature}", settings=settings,
                               progress=False)
            log(f"evaluation {name} training, T={temperature}:\n{format_summary(summary)}")
            results.setdefault(f"T={temperature}", {})[name] = summary["sets"][game.val_set]["success"]["mean"]
    return results


def summarise(out: Path, wall: float, game_name: str) -> dict:
    from verl_epo.analysis.plots import plot_run
    from verl_epo.analysis.runs import series, validation_success_key

    rows = read_metrics(out / "metrics.jsonl")
    val_key = validation_success_key(rows)
    val = list(zip(*series(rows, val_key), strict=True)) if val_key else []
    train_success = list(zip(*series(rows, "env/success"), strict=True))
    summary = {
        "game": game_name,
        "steps": max((r["step"] for r in rows), default=0),
        "wall_seconds": round(wall, 1),
        "val_success_before": val[0][1] if val else None,
        "val_success_after": val[-1][1] if val else None,
        "train_success_first_step": train_success[0][1] if train_success else None,
        "train_success_last_step": train_success[-1][1] if train_success else None,
        "plots": [str(p) for p in plot_run(out / "metrics.jsonl", out / "plots")],
        "checkpoints": str(out / "checkpoints"),
        "metrics": str(out / "metrics.jsonl"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="CPU demo: GRPO + EPO on a text game with a tiny model")
    parser.add_argument("--game", default="synthetic", choices=sorted(GAMES))
    parser.add_argument("--out", default=None, help="output folder (default outputs/demo-<game>)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default per game)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the training run")
    args = parser.parse_args(argv)
    game = GAMES[args.game]
    out = Path(args.out or f"outputs/demo-{args.game}")
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or game.steps
    started = time.perf_counter()

    from env_adapters.dataset import build_dataset

    model = prepare_model(args.game, game, out, args.seed)
    data = build_dataset(out / "data", train_set=game.train_set, val_set=game.val_set)
    log(f"data: {data['train']} and {data['val']}")
    train(game, model, data, out, steps, args.seed, args.overrides)
    evaluation = evaluate_before_after(game, model, out, args.seed)
    summary = summarise(out, time.perf_counter() - started, args.game)
    summary["evaluation_success"] = evaluation
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    evals = "; ".join(f"{t}: {r['before']:.3f} -> {r['after']:.3f}" for t, r in evaluation.items())
    log(f"done in {summary['wall_seconds']:.0f} s: {game.val_set} success before -> after training, "
        f"evaluation {evals}; validation in training (T=1.0) {summary['val_success_before']} -> "
        f"{summary['val_success_after']}; training episodes {summary['train_success_first_step']} -> "
        f"{summary['train_success_last_step']}")
    for plot in summary["plots"]:
        log(f"plot: {plot}")
    log(f"everything is in {out.resolve()} (summary.json, metrics.jsonl, train.log, checkpoints/)")
    return summary


if __name__ == "__main__":
    main()
