"""Expert trajectories as verl multi-turn SFT data, in exactly the agent loop's prompt format.

``python -m env_adapters.expert --task-set synthetic/train --out DIR`` plays every task of the set
with the game's expert through ``play_episode`` (so each turn's prompt is the one
``build_messages`` gives the policy in training, with the same ``max_turns`` and
``history_turns``) and writes ``DIR/sft.parquet``: one row per turn of every WON episode.

The experts:

- ``synthetic``: ``CorridorGame.expert_action()``, asked every turn.
- ``sciworld``: ``ScienceWorldGame.gold_actions()``, the simulator's gold path, replayed in order.
- ``alfworld``: ``AlfworldGame.expert_actions()``, the PDDL planner's plan, replayed in order.

Episodes the expert does not win (e.g. a gold path longer than ``max_turns``, or a plan that runs
out) are left out and counted.

``--explore ε`` (per-turn experts only) makes the demonstrator noisy: each turn, with probability
ε, it plays a uniformly random admissible action instead, and those actions are in the rows too.
Supervised training on such rows gives a policy that has learned the expert's rule but mixes it
with random play, the usual starting point of RL after SFT on imperfect demonstrations: RL then
has to sharpen a behaviour the model can already compute, which a tiny model does within minutes.

Row format (read by verl's ``MultiTurnSFTDataset`` with ``messages_key: messages``):

- ``messages``: the turn's chat messages (system, user) plus the assistant's answer,
  ``format_action(expert action)``, e.g. ``<action>go east</action>``. Every turn is its own
  prompt in the agent loop, so every turn is its own row.
- ``extra_info``: ``game, task, variation, seed, task_type`` (the ``TaskSpec``), ``turn`` (0-based),
  ``episode_turns``, ``episode`` (index of the episode in the file), ``task_set``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from env_adapters.base import TaskSpec, TextGame, make_game, task_set
from env_adapters.episode import EpisodeResult, EpisodeSettings, Policy, play_episode
from env_adapters.prompting import format_action

SFT_FILE = "sft.parquet"
PER_TURN, REPLAY = "per_turn", "replay"
EXPERTS: dict[str, tuple[str, str]] = {
    "synthetic": ("expert_action", PER_TURN),
    "sciworld": ("gold_actions", REPLAY),
    "alfworld": ("expert_actions", REPLAY),
}
"""Game name -> (method on the game object, how it is used): ``per_turn`` asks the method for
the next action every turn; ``replay`` asks it once right after reset for the whole action
sequence and plays it in order."""


class PlanExhausted(RuntimeError):
    """A replayed expert plan ended while the episode was still running."""


def expert_method(game_name: str, game: TextGame) -> tuple[Callable[[], Any], str]:
    """The bound expert method of ``game`` and its mode; a clear error when there is none."""
    if game_name not in EXPERTS:
        raise KeyError(
            f"game {game_name!r} has no expert for SFT data; games with one: {sorted(EXPERTS)} "
            "(add the game's expert method to env_adapters.expert.EXPERTS)"
        )
    method, mode = EXPERTS[game_name]
    bound = getattr(game, method, None)
    if not callable(bound):
        raise AttributeError(
            f"game {game_name!r} ({type(game).__name__}) has no method {method}() that "
            "env_adapters.expert needs for its expert actions; implement it on the game"
        )
    return bound, mode


def expert_policy(game_name: str, game: TextGame, explore: float = 0.0,
                  rng: random.Random | None = None) -> Policy:
    """A ``play_episode`` policy that answers ``format_action(expert action)`` each turn.

    A replayed plan is fetched at turn 0, right after ``play_episode`` reset the game (the
    ScienceWorld gold path must be generated before any step). With ``explore`` = ε > 0 (per-turn
    experts only), each turn plays a random admissible action (drawn from ``rng``) with probability ε.
    """
    method, mode = expert_method(game_name, game)
    if not 0.0 <= explore < 1.0:
        raise ValueError(f"explore={explore} must be in [0, 1): the probability of a random action per turn")
    if explore and mode != PER_TURN:
        raise ValueError(f"explore={explore} needs an expert asked every turn; {game_name!r} replays a fixed "
                         "plan that a random action would derail (use explore=0 for it)")
    rng = rng or random.Random(0)
    plan: list[str] = []

    async def policy(messages: list[dict[str, str]], turn: int) -> str:
        if mode == PER_TURN:
            actions = game.admissible_actions() if explore else None
            if actions and rng.random() < explore:
                return format_action(rng.choice(actions))
            return format_action(str(method()))
        if turn == 0:
            plan[:] = [str(a) for a in method()]
        if turn >= len(plan):
            raise PlanExhausted(f"the expert plan has {len(plan)} actions; turn {turn + 1} needs one more")
        return format_action(plan[turn])

    return policy


@dataclass
class ExpertReport:
    """What one expert run produced."""

    won_turns: list[int] = field(default_factory=list)
    """Turn count of each episode the expert completed; only these give training rows."""
    lost: list[dict[str, Any]] = field(default_factory=list)
    """One record per episode not completed: its task and why."""
    rows: int = 0
    """SFT rows written (one per turn of a completed episode)."""
    seconds: float = 0.0
    """Wall-clock time of the run."""

    @property
    def won(self) -> int:
        return len(self.won_turns)

    @property
    def episodes(self) -> int:
        return self.won + len(self.lost)

    @property
    def turns(self) -> int:
        """Turns of the completed episodes."""
        return sum(self.won_turns)

    def counts(self) -> dict[str, Any]:
        return {"episodes": self.episodes, "won": self.won, "not_won": len(self.lost),
                "turns": self.turns, "rows": self.rows, "seconds": round(self.seconds, 1)}


def episode_rows(result: EpisodeResult, episode: int, set_name: str) -> list[dict[str, Any]]:
    """One SFT row per turn of an episode: the turn's prompt messages + the expert's answer."""
    rows = []
    for turn, record in enumerate(result.turns):
        messages = [dict(m) for m in record.messages] + [{"role": "assistant", "content": record.response}]
        info = {**result.task.to_row(), "turn": turn, "episode_turns": len(result.turns),
                "episode": episode, "task_set": set_name}
        rows.append({"messages": messages, "extra_info": info})
    return rows


async def _play_all(tasks: list[TaskSpec], settings: EpisodeSettings, game_kwargs: dict[str, dict[str, Any]],
                    set_name: str, report: ExpertReport, explore: float, seed: int) -> list[dict[str, Any]]:
    games: dict[str, TextGame] = {}
    rows: list[dict[str, Any]] = []
    try:
        for spec in tasks:
            if spec.game not in games:
                games[spec.game] = make_game(spec.game, **game_kwargs.get(spec.game, {}))
            game = games[spec.game]
            rng = random.Random(f"{seed}|{spec.game}|{spec.task}|{spec.variation}|{spec.seed}")
            policy = expert_policy(spec.game, game, explore=explore, rng=rng)
            result = await play_episode(game, spec, policy, settings)
            if isinstance(result.error, PlanExhausted):
                report.lost.append({**spec.to_row(), "reason": str(result.error)})
                continue
            if not result.won:
                reason = result.failure or f"not won after {len(result.turns)} turns (max_turns={settings.max_turns})"
                report.lost.append({**spec.to_row(), "reason": reason})
                continue
            rows += episode_rows(result, report.won, set_name)
            report.won_turns.append(len(result.turns))
    finally:
        for game in games.values():
            game.close()
    report.rows = len(rows)
    return rows


def expert_rows(set_name: str, settings: EpisodeSettings | None = None, limit: int | None = None,
                game_kwargs: dict[str, dict[str, Any]] | None = None, explore: float = 0.0,
                seed: int = 0) -> tuple[list[dict[str, Any]], ExpertReport]:
    """SFT rows from the expert's won episodes on the first ``limit`` tasks of ``set_name``
    (``explore``: probability of a random admissible action per turn, drawn from ``seed``)."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit} must be >= 1 (omit it to play every task)")
    settings = settings or EpisodeSettings()
    tasks = task_set(set_name)[:limit]
    if not tasks:
        raise ValueError(f"task set {set_name!r} is empty; nothing to play")
    report = ExpertReport()
    start = time.perf_counter()
    rows = asyncio.run(_play_all(tasks, settings, game_kwargs or {}, set_name, report, explore, seed))
    report.seconds = time.perf_counter() - start
    return rows, report


def write_sft(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """Write rows to ``out/sft.parquet`` (pyarrow: ``messages`` becomes a list of structs)."""
    import pandas as pd

    if not rows:
        raise ValueError("no expert episode was won, so there are no SFT rows to write; "
                         "check the lost episodes' reasons (e.g. raise --max-turns)")
    path = Path(out) / SFT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _plain(value: Any) -> Any:
    # parquet hands lists back as numpy arrays; callers want plain Python
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def load_sft_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an SFT parquet file (a file, or a directory holding ``sft.parquet``)."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / SFT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no SFT parquet at {path}; write one with "
                                "`python -m env_adapters.expert --task-set synthetic/train --out DIR`")
    frame = pd.read_parquet(path)
    if "messages" not in frame.columns:
        raise ValueError(f"{path} has no 'messages' column (columns: {list(frame.columns)}); "
                         "it is not an SFT file written by env_adapters.expert")
    return [_plain(row) for row in frame.to_dict(orient="records")]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-set", required=True, help="named task set, e.g. synthetic/train")
    parser.add_argument("--out", required=True, help=f"output directory (gets {SFT_FILE})")
    parser.add_argument("--limit", type=int, default=None, help="play only the first N tasks")
    parser.add_argument("--max-turns", type=int, default=EpisodeSettings.max_turns,
                        help="episode turn limit (the agent loop's env.max_turns)")
    parser.add_argument("--history-turns", type=int, default=EpisodeSettings.history_turns,
                        help="recent turns shown in the prompt (the agent loop's env.history_turns)")
    parser.add_argument("--explore", type=float, default=0.0,
                        help="probability of a random admissible action per turn (per-turn experts only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random actions of --explore")
    parser.add_argument("--game-kwargs", default="{}",
                        help='JSON of constructor kwargs per game, e.g. \'{"sciworld": {"env_step_limit": 100}}\'')
    args = parser.parse_args(argv)
    try:
        game_kwargs = json.loads(args.game_kwargs)
    except json.JSONDecodeError as err:
        parser.error(f"--game-kwargs is not valid JSON ({err}); e.g. '{{\"sciworld\": {{}}}}'")
    if not isinstance(game_kwargs, dict):
        parser.error("--game-kwargs must be a JSON object mapping game names to kwargs")
    settings = EpisodeSettings(max_turns=args.max_turns, history_turns=args.history_turns)
    rows, report = expert_rows(args.task_set, settings, args.limit, game_kwargs, args.explore, args.seed)
    for lost in report.lost:
        print(f"not won: {lost['game']} {lost['task']} variation {lost['variation']}: {lost['reason']}")
    path = write_sft(rows, args.out)
    counts = {**report.counts(), "path": str(path)}
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
