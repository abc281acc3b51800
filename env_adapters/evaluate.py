"""Evaluate a model on fixed, named task sets with the training loop's prompts, parser and rewards.

``python -m env_adapters.evaluate MODEL --set synthetic/val --seeds 0 1 2 --out DIR``

- ``MODEL`` is a Hugging Face model directory, or a verl checkpoint: a ``global_step_N`` folder, its
  ``actor`` folder, or the checkpoint root (its ``latest_checkpointed_iteration.txt`` picks the step).
  A checkpoint's FSDP shards are merged once into ``DIR/hf_model/global_step_N`` (see
  :func:`merge_fsdp_checkpoint`).
- Every episode goes through :func:`env_adapters.episode.play_episode`, the function verl's agent
  loop runs in training, so prompts (``env_adapters.prompting``), action parsing and rewards are the
  same. Only the policy differs: generation here, not verl's rollout server.
- Sampling is seeded per episode from (evaluation seed, task index, task): the same seed replays the
  same episodes, whatever was evaluated before. ``--temperature 0`` decodes greedily.
- Generation is vLLM's offline engine, the engine verl's rollout serves in training (on a GPU, or
  vLLM's CPU build in fp32 on a CPU): many episodes at once, each request with its own seed.
- Output: ``DIR/episodes.jsonl`` (one line per episode) and ``DIR/summary.json`` (success rate per
  set, per task type and per seed; mean ± sample std over seeds). An interrupted evaluation resumes:
  episodes already in ``episodes.jsonl`` (key: set, game, task, variation, task seed, evaluation seed)
  are skipped. Each line is written with one ``write`` and flushed, and a torn last line (the process
  was killed mid-write) is cut off on restart, so no episode is counted twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from env_adapters.base import TaskSpec, task_set
from env_adapters.episode import EpisodeSettings, play_episode
from env_adapters.evaluation.checkpoint import resolve_model
from env_adapters.evaluation.engine import EngineFailed, EpisodeCounter, VLLMBackend, episode_seed
from env_adapters.evaluation.episode_log import (
    EPISODES_FILE,
    KEY_FIELDS,
    append_episode,
    check_resume,
    episode_key,
    read_episodes,
)
from env_adapters.evaluation.settings import PAPER_TEMPERATURE, EvalSettings
from env_adapters.evaluation.summary import format_summary, summarize
from env_adapters.game_pool import GamePool, GameSettings
from verl_epo.embedded.shm_cleanup import install_exit_cleanup

__all__ = ["EPISODES_FILE", "KEY_FIELDS", "PAPER_TEMPERATURE", "EvalSettings", "append_episode", "evaluate",
           "format_summary", "main", "read_episodes", "summarize"]

SUMMARY_FILE = "summary.json"
# --- running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    set_name: str
    index: int
    task: TaskSpec
    seed: int

    def key(self) -> tuple:
        t = self.task
        return (self.set_name, t.game, t.task, int(t.variation), int(t.seed), self.seed)


def plan(set_names: Iterable[str], seeds: Iterable[int], limit: int | None) -> list[Job]:
    """Every (set, task, seed) to play, in a fixed order (seed-major, then the set's own order)."""
    jobs = []
    for set_name in set_names:
        tasks = task_set(set_name)
        tasks = tasks[:limit] if limit else tasks
        jobs += [Job(set_name, i, task, seed) for seed in seeds for i, task in enumerate(tasks)]
    return jobs


async def play_job(job: Job, backend: Any, pool: GamePool, settings: EvalSettings) -> dict[str, Any]:
    """Play one episode and return its ``episodes.jsonl`` row."""
    counter = EpisodeCounter()
    policy = backend.policy(episode_seed(job.seed, job.index, job.task), counter)
    game = pool.acquire(job.task.game, settings.game)
    start = time.perf_counter()
    try:
        result = await play_episode(game, job.task, policy, settings.episode)
    finally:
        pool.release(game)
    if isinstance(result.error, EngineFailed):
        raise result.error  # not the episode's outcome: stop, so a rerun plays it again
    numbers = result.summary(settings.episode)
    return {
        "set": job.set_name, "game": job.task.game, "task": job.task.task,
        "variation": int(job.task.variation), "task_seed": int(job.task.seed), "task_index": job.index,
        "seed": job.seed, "task_type": result.task_type or job.task.task, "success": numbers["success"],
        "score": numbers["score"], "return": round(numbers["return"], 6), "turns": int(numbers["turns"]),
        "invalid_actions": int(numbers["invalid_actions"]), "response_tokens": counter.response_tokens,
        "failure": result.failure, "actions": [t.action for t in result.turns],
        "response_digest": counter.digest.hexdigest()[:16], "seconds": round(time.perf_counter() - start, 3),
    }


async def run_jobs(jobs: list[Job], backend: Any, pool: GamePool, settings: EvalSettings, path: Path,
                   progress: Any) -> None:
    slots = asyncio.Semaphore(backend.concurrency)

    async def one(job: Job) -> None:
        async with slots:
            row = await play_job(job, backend, pool, settings)
        append_episode(path, row)
        progress.update(1)

    if backend.concurrency == 1:
        for job in jobs:  # strictly in order: the log reads the same on every run
            await one(job)
    else:
        await asyncio.gather(*(one(job) for job in jobs))


def evaluate(model: str | Path, set_names: list[str], seeds: list[int], out: str | Path,
             settings: EvalSettings | None = None, limit: int | None = None, progress: bool = True,
             concurrency: int = 64) -> dict[str, Any]:
    """Evaluate ``model`` on ``set_names`` × ``seeds``; resume what ``out`` already holds.

    Returns the summary also written to ``out/summary.json``.
    """
    from tqdm import tqdm

    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    if concurrency < 1:
        raise ValueError(f"--concurrency {concurrency} must be >= 1")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit} must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(set_names, seeds, limit)  # unknown set names fail here, before any model loads
    model_dir = resolve_model(model, out)
    settings = settings or EvalSettings(model=str(model_dir))
    if settings.model != str(model_dir):
        settings = replace(settings, model=str(model_dir))
    check_resume(out, settings)
    path = out / EPISODES_FILE
    done = {episode_key(r) for r in read_episodes(path)}
    todo = [job for job in jobs if job.key() not in done]
    start = time.perf_counter()
    if todo:
        runner = VLLMBackend(model_dir, settings, concurrency)
        pool = GamePool()
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="episodes", unit="ep",
                   disable=not progress, file=sys.stderr)
        try:
            asyncio.run(run_jobs(todo, runner, pool, settings, path, bar))
        finally:
            bar.close()
            pool.close()
            runner.close()
    expected: dict[str, int] = defaultdict(int)
    for job in jobs:
        expected[job.set_name] += 1
    wanted = {job.key() for job in jobs}
    rows = [r for r in read_episodes(path) if episode_key(r) in wanted]
    summary = {
        "model": str(model), "model_dir": str(model_dir), "sets": summarize(rows, dict(expected)),
        "seeds": list(seeds), "limit": limit, "settings": asdict(settings),
        "episodes_played_now": len(todo), "seconds_now": round(time.perf_counter() - start, 1),
        "episodes_file": str(path),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    eval_d, episode_d, game_d = EvalSettings(model=""), EpisodeSettings(), GameSettings()  # the defaults, once
    p = argparse.ArgumentParser(description="Evaluate a model on fixed, named task sets (resumable).")
    p.add_argument("model", help="Hugging Face model directory, or a verl checkpoint (global_step_N or its root)")
    p.add_argument("--set", dest="sets", nargs="+", required=True,
                   help="named evaluation set(s), e.g. sciworld/l0-test alfworld/valid-seen synthetic/val")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="sampling seeds (default 0 1 2)")
    p.add_argument("--temperature", type=float, default=eval_d.temperature,
                   help="sampling temperature (paper: 0.4; 0 = greedy)")
    p.add_argument("--top-p", type=float, default=eval_d.top_p)
    p.add_argument("--max-turns", type=int, default=episode_d.max_turns,
                   help="turn limit per episode, as env.max_turns (paper: SW 30, ALF 50)")
    p.add_argument("--history-turns", type=int, default=episode_d.history_turns,
                   help="past turns in the prompt (as env.history_turns)")
    p.add_argument("--parser", default=episode_d.parser, help="action parser: strict or lenient (as env.parser)")
    p.add_argument("--max-response-tokens", type=int, default=eval_d.max_response_tokens,
                   help="per turn (as data.max_response_length)")
    p.add_argument("--max-prompt-tokens", type=int, default=eval_d.max_prompt_tokens,
                   help="per turn; longer prompts are left-truncated")
    p.add_argument("--game-kwargs", default="{}",
                   help='kwargs per game as JSON (as env.games), e.g. {"sciworld": {"simplification": "easy"}}')
    p.add_argument("--limit", type=int, default=None, help="only the first N tasks of each set")
    p.add_argument("--concurrency", type=int, default=64, help="episodes played at once (one vLLM batch)")
    p.add_argument("--isolate", action="store_true", help="run games in worker processes (as env.isolate)")
    p.add_argument("--step-timeout", type=float, default=game_d.step_timeout,
                   help="with --isolate: seconds per step (as env.step_timeout)")
    p.add_argument("--reset-timeout", type=float, default=game_d.reset_timeout,
                   help="with --isolate: seconds per reset, a JVM may start (as env.reset_timeout)")
    p.add_argument("--out", required=True, help="output folder (episodes.jsonl, summary.json); reused to resume")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    install_exit_cleanup()  # vLLM's engine leaves /dev/shm segments when this process is killed
    try:
        game_kwargs = json.loads(args.game_kwargs)
    except json.JSONDecodeError as err:
        p.error(f"--game-kwargs is not JSON ({err}); example: '{{\"sciworld\": {{\"simplification\": \"easy\"}}}}'")
    settings = EvalSettings(
        model=str(args.model), temperature=args.temperature, top_p=args.top_p,
        max_response_tokens=args.max_response_tokens, max_prompt_tokens=args.max_prompt_tokens,
        episode=replace(episode_d, max_turns=args.max_turns, history_turns=args.history_turns, parser=args.parser),
        game=GameSettings(games=game_kwargs, isolate=args.isolate, step_timeout=args.step_timeout,
                          reset_timeout=args.reset_timeout))
    summary = evaluate(args.model, args.sets, args.seeds, args.out, settings, limit=args.limit,
                       progress=not args.no_progress, concurrency=args.concurrency)
    print(format_summary(summary))
    print(f"summary: {Path(args.out) / SUMMARY_FILE}; episodes: {summary['episodes_file']}")
    return summary


if __name__ == "__main__":
    main()
