"""Write the text the games produce, as a corpus to train a small tokenizer on.

``python -m env_adapters.corpus --games synthetic,sciworld --out corpus.txt --episodes 50`` plays
random admissible actions in each named game (on the tasks of its registered task sets) and
writes task descriptions, observations, admissible-action lists and the actions taken, plus the
prompt boilerplate an agent loop uses (``Task:``, ``Admissible actions:``, ``<action>...``), so
the tokenizer's merges fit the text the model will read and write. Games that are not
registered, or that fail to start (e.g. no Java for ScienceWorld), are skipped with a warning.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from pathlib import Path

from env_adapters.base import TaskSpec, make_game, task_set, task_set_names
from env_adapters.episode import INVALID_FORMAT
from env_adapters.prompting import Turn, build_messages


def prompt_boilerplate() -> list[str]:
    """The fixed text of every prompt, built by the functions the agent loop uses (one turn with a
    past turn and an action list) and the game's invalid-action message: never retyped here."""
    messages = build_messages(task="look around", observation="Observation:", history=[Turn("look around", "")],
                              actions_text="look around", turn=1, max_turns=30)
    return [m["content"] for m in messages] + [INVALID_FORMAT]


def tasks_of(game: str) -> list[TaskSpec]:
    """Every task of the task sets named ``<game>/...``, in a fixed order."""
    specs: list[TaskSpec] = []
    for name in task_set_names():
        if name.split("/", 1)[0] == game:
            specs += [t for t in task_set(name) if t.game == game]
    return specs


def play_random(game_name: str, episodes: int, max_steps: int, seed: int) -> Iterator[str]:
    """Lines of text from ``episodes`` random-admissible episodes of one game."""
    tasks = tasks_of(game_name)
    if not tasks:
        raise KeyError(f"game {game_name!r} has no registered task set named '{game_name}/...'")
    rng = random.Random(seed)
    game = make_game(game_name)
    try:
        for episode in range(episodes):
            # spread the episodes over the task list, so every task family gets some
            spec = tasks[(episode * len(tasks)) // episodes if episodes <= len(tasks)
                         else episode % len(tasks)]
            state = game.reset(spec.task, spec.variation, spec.seed)
            yield f"Task: {game.task_description}"
            yield f"Observation: {state.observation}"
            for _ in range(max_steps):
                if state.done:
                    break
                actions = game.admissible_actions()
                if actions:
                    yield "Admissible actions: " + ", ".join(actions)
                    yield "\n".join(actions)
                action = rng.choice(actions) if actions else "look"
                yield f"<action>{action}</action>"
                state = game.step(action)
                yield f"Observation: {state.observation}"
    finally:
        game.close()


def write_corpus(games: list[str], out: str | Path, episodes: int = 50, max_steps: int = 50,
                 seed: int = 0) -> dict[str, int]:
    """Write the corpus; returns lines written per game. Errors if no game could be played."""
    if episodes < 1:
        raise ValueError(f"--episodes {episodes} must be >= 1")
    counts: dict[str, int] = {}
    lines: list[str] = prompt_boilerplate()
    for name in games:
        try:
            game_lines = list(play_random(name, episodes, max_steps, seed))
        except Exception as err:  # noqa: BLE001 - an unavailable engine only narrows the corpus
            print(f"corpus: skipping game {name!r}: {err}", file=sys.stderr)
            continue
        counts[name] = len(game_lines)
        lines += game_lines
    if not counts:
        raise RuntimeError(f"none of the games {games} could be played; registered sets: "
                           f"{task_set_names()}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return counts


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default="synthetic",
                        help="comma-separated game names, e.g. synthetic,sciworld,alfworld")
    parser.add_argument("--out", required=True, help="corpus text file to write")
    parser.add_argument("--episodes", type=int, default=50, help="random episodes per game")
    parser.add_argument("--max-steps", type=int, default=50, help="steps per episode at most")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random actions")
    args = parser.parse_args(argv)
    games = [g.strip() for g in args.games.split(",") if g.strip()]
    counts = write_corpus(games, args.out, args.episodes, args.max_steps, args.seed)
    print(f"wrote {args.out}: " + ", ".join(f"{g} {n} lines" for g, n in counts.items()))
    return counts


if __name__ == "__main__":
    main()
