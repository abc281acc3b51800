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
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from env_adapters.base import TaskSpec, TextGame, make_game, task_set
from env_adapters.episode import EpisodeSettings, Policy, play_episode
from verl_epo.embedded.shm_cleanup import install_exit_cleanup

EPISODES_FILE = "episodes.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "eval_config.json"
PAPER_TEMPERATURE = 0.4
KEY_FIELDS = ("set", "game", "task", "variation", "task_seed", "seed")
"""An episode's identity in ``episodes.jsonl``: resuming skips keys already there."""


@dataclass(frozen=True)
class EvalSettings:
    """What decides an episode's outcome; a resumed evaluation must use the same values."""

    model: str
    temperature: float = PAPER_TEMPERATURE
    top_p: float = 1.0
    max_turns: int = 30
    history_turns: int = 3
    parser: str = "strict"
    success_reward: float = 10.0
    invalid_penalty: float = 0.1
    max_response_tokens: int = 512
    """Per turn, as ``data.max_response_length`` in training."""
    max_prompt_tokens: int | None = None
    """Per turn; longer prompts are left-truncated as verl's agent loop does. None: no limit."""
    game_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Constructor kwargs per game name (as ``env.games`` in training)."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"--temperature {self.temperature} must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p {self.top_p} must be in (0, 1]")
        if self.max_response_tokens < 1:
            raise ValueError(f"--max-response-tokens {self.max_response_tokens} must be >= 1")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(f"--max-prompt-tokens {self.max_prompt_tokens} must be >= 1")
        self.episode_settings()  # validates max_turns, history_turns, parser, penalty

    def episode_settings(self) -> EpisodeSettings:
        return EpisodeSettings(max_turns=self.max_turns, history_turns=self.history_turns,
                               success_reward=self.success_reward,
                               invalid_penalty=self.invalid_penalty, parser=self.parser)


# --- model: a Hugging Face directory, or one made from a verl checkpoint --------------------------


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def find_actor_dir(path: Path) -> Path | None:
    """The ``actor`` folder of a verl checkpoint at ``path`` (root, ``global_step_N`` or ``actor``)."""
    if (path / "latest_checkpointed_iteration.txt").is_file():
        step = (path / "latest_checkpointed_iteration.txt").read_text().strip()
        path = path / f"global_step_{step}"
    if (path / "actor").is_dir():
        path = path / "actor"
    if path.name == "huggingface" and (path.parent / "fsdp_config.json").is_file():
        path = path.parent
    return path if (path / "fsdp_config.json").is_file() else None


def merge_fsdp_checkpoint(actor_dir: Path, target: Path) -> Path:
    """Merge verl's FSDP shards into a Hugging Face model directory at ``target``.

    verl's FSDP checkpoint manager saves ``model_world_size_W_rank_R.pt`` (one state dict per rank;
    FSDP2 parameters are DTensors sharded on one dimension) and ``huggingface/`` (config, tokenizer,
    generation config; weights only when ``checkpoint.save_contents`` includes ``hf_model``). The
    shards are concatenated in rank order along their shard dimension and cast to the config's dtype
    (fp32 for the tiny CPU models, whose fp32 weights are then kept exactly; verl's own
    ``python -m verl.model_merger`` always writes bf16). LoRA and tensor-parallel checkpoints are
    not handled here: use verl's merger for those.
    """
    import torch
    from torch.distributed.tensor import DTensor
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_dir = actor_dir / "huggingface"
    world = int(json.loads((actor_dir / "fsdp_config.json").read_text())["world_size"])
    if (actor_dir / "lora_train_meta.json").exists():
        raise ValueError(f"{actor_dir} is a LoRA checkpoint; merge it with `python -m verl.model_merger merge "
                         f"--backend fsdp --local_dir {actor_dir} --target_dir DIR` and evaluate DIR")
    paths = [actor_dir / f"model_world_size_{world}_rank_{rank}.pt" for rank in range(world)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing or not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"{actor_dir} is not a complete verl FSDP checkpoint: missing "
                                f"{missing or ['huggingface/config.json']}")
    shards = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    state: dict[str, Any] = {}
    for key, first in shards[0].items():
        if not isinstance(first, DTensor):
            state[key] = first
            continue
        if len(first.placements) != 1:
            raise ValueError(f"{key}: {len(first.placements)}-D device mesh (HSDP/TP) is not handled here; "
                             "use `python -m verl.model_merger merge --backend fsdp ...`")
        placement = first.placements[0]
        local = [shard[key]._local_tensor for shard in shards]
        state[key] = torch.cat(local, dim=placement.dim) if placement.is_shard() else local[0]
    config = AutoConfig.from_pretrained(hf_dir, local_files_only=True)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(hf_dir, partial)
    model.save_pretrained(partial)
    (partial / "merged_from.json").write_text(json.dumps({"checkpoint": str(actor_dir.resolve())}) + "\n")
    # rename last: a killed merge never leaves a directory that looks complete
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def resolve_model(path: str | Path, out: Path) -> Path:
    """A Hugging Face model directory for ``path`` (merging a verl checkpoint into ``out`` if needed)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist; pass a Hugging Face model directory or a verl "
                                "checkpoint folder (global_step_N)")
    if (path / "config.json").is_file() and _has_weights(path):
        return path
    actor = find_actor_dir(path)
    if actor is None:
        raise FileNotFoundError(f"{path} is neither a Hugging Face model directory (config.json + weights) nor "
                                "a verl checkpoint (global_step_N/actor/fsdp_config.json)")
    if _has_weights(actor / "huggingface"):
        return actor / "huggingface"
    target = out / "hf_model" / actor.parent.name
    if (target / "config.json").is_file() and _has_weights(target):
        return target
    print(f"[eval] merging FSDP checkpoint {actor} -> {target}", file=sys.stderr, flush=True)
    return merge_fsdp_checkpoint(actor, target)


# --- policies ------------------------------------------------------------------------------------


def episode_seed(seed: int, index: int, task: TaskSpec) -> int:
    """The sampling seed of one episode: a hash of (evaluation seed, task index, task identity)."""
    text = f"{seed}|{index}|{task.game}|{task.task}|{task.variation}|{task.seed}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], max_prompt_tokens: int | None) -> list[int]:
    """Token ids of one turn's prompt, as verl's agent loop builds them (chat template with the
    generation prompt, left-truncated to ``max_prompt_tokens``)."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys") and "input_ids" in ids:  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    ids = [int(t) for t in ids]
    return ids[-max_prompt_tokens:] if max_prompt_tokens else ids


class EpisodeCounter:
    """What the policy saw in one episode: response tokens and texts (for the digest)."""

    def __init__(self) -> None:
        self.response_tokens = 0
        self.digest = hashlib.sha256()

    def add(self, token_ids: list[int], text: str) -> None:
        self.response_tokens += len(token_ids)
        self.digest.update(text.encode() + b"\x00")


class VLLMBackend:
    """vLLM's offline engine (a GPU, or vLLM's CPU build in fp32): concurrent episodes' requests are
    batched, each with its own seed."""

    def __init__(self, model_dir: Path, settings: EvalSettings, concurrency: int = 64) -> None:
        import torch

        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # as verl sets it for its rollout
        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            from verl_epo.embedded.vllm_cpu import ENV_DEFAULTS

            for key, value in ENV_DEFAULTS.items():
                os.environ.setdefault(key, value)
        from vllm import LLM
        self.concurrency = concurrency  # episodes in flight: each holds a game (a JVM for ScienceWorld)
        self.llm = LLM(model=str(model_dir), seed=0, enable_prefix_caching=True,
                       **({"dtype": "float32", "enforce_eager": True} if on_cpu else {}))
        self.tokenizer = self.llm.get_tokenizer()
        self.settings = settings
        self.pending: list[tuple[list[int], int, asyncio.Future]] = []
        self.flusher: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones
        self.engine_lock = asyncio.Lock()  # one generate call at a time: the offline engine is not thread-safe

    async def _flush(self) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        async with self.engine_lock:
            await asyncio.sleep(0.01)  # let the other episodes' requests of this turn arrive
            batch, self.pending, self.flusher = self.pending, [], None
            s = self.settings
            params = [SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_response_tokens,
                                     seed=seed) for _, seed, _ in batch]
            prompts = [TokensPrompt(prompt_token_ids=ids) for ids, _, _ in batch]
            outputs = await asyncio.to_thread(self.llm.generate, prompts, params, use_tqdm=False)
        for (_, _, future), output in zip(batch, outputs, strict=True):
            future.set_result(list(output.outputs[0].token_ids))

    def policy(self, seed: int, counter: EpisodeCounter) -> Policy:
        async def act(messages: list[dict[str, str]], turn: int) -> str:
            future = asyncio.get_running_loop().create_future()
            ids = prompt_ids(self.tokenizer, messages, self.settings.max_prompt_tokens)
            self.pending.append((ids, (seed + turn) % 2**63, future))
            if self.flusher is None:
                self.flusher = asyncio.create_task(self._flush())
                self.running.add(self.flusher)
                self.flusher.add_done_callback(self.running.discard)
            token_ids = await future
            text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
            counter.add(token_ids, text)
            return text

        return act

    def close(self) -> None:
        # ends vLLM's engine process now, so its shared-memory queues are released before we exit
        self.llm.llm_engine.engine_core.shutdown()


# --- the episode log: resume without duplicates -------------------------------------------------


def episode_key(row: dict[str, Any]) -> tuple:
    return tuple(row[k] for k in KEY_FIELDS)


def read_episodes(path: Path) -> list[dict[str, Any]]:
    """The complete lines of ``episodes.jsonl``; a torn last line (killed mid-write) is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    rows, seen = [], set()
    for number, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number} is not JSON ({err}); the file was edited by hand? "
                             "remove that line and rerun") from None
        if episode_key(row) not in seen:  # defensive: count an episode once even if written twice
            seen.add(episode_key(row))
            rows.append(row)
    return rows


def append_episode(path: Path, row: dict[str, Any]) -> None:
    """One line, one ``write``, flushed and synced: a kill leaves at most a torn last line."""
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def check_resume(out: Path, settings: EvalSettings) -> None:
    """Refuse to mix episodes played with different settings in one output folder."""
    path = out / CONFIG_FILE
    current = json.loads(json.dumps(asdict(settings)))
    if path.exists():
        previous = json.loads(path.read_text())
        differ = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
        if differ:
            changes = ", ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in differ)
            raise ValueError(f"{out} holds an evaluation with other settings ({changes}); use another --out, "
                             "or the same settings to resume")
    else:
        path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


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


class GameShelf:
    """Idle game objects per game name: a JVM or engine starts once per evaluation, not per episode."""

    def __init__(self, game_kwargs: dict[str, dict[str, Any]], isolate: bool, step_timeout: float) -> None:
        self.game_kwargs, self.isolate, self.step_timeout = game_kwargs, isolate, step_timeout
        self.idle: dict[str, list[TextGame]] = defaultdict(list)
        self.all: list[TextGame] = []

    def take(self, name: str) -> TextGame:
        if self.idle[name]:
            return self.idle[name].pop()
        kwargs = dict(self.game_kwargs.get(name, {}))
        if self.isolate:
            from env_adapters.isolated import IsolatedGame

            game: TextGame = IsolatedGame(name, kwargs, step_timeout=self.step_timeout,
                                          reset_timeout=self.step_timeout)
        else:
            game = make_game(name, **kwargs)
        self.all.append(game)
        return game

    def give(self, name: str, game: TextGame) -> None:
        self.idle[name].append(game)

    def close(self) -> None:
        for game in self.all:
            game.close()


async def play_job(job: Job, backend: Any, shelf: GameShelf, settings: EvalSettings) -> dict[str, Any]:
    """Play one episode and return its ``episodes.jsonl`` row."""
    counter = EpisodeCounter()
    policy = backend.policy(episode_seed(job.seed, job.index, job.task), counter)
    game = shelf.take(job.task.game)
    start = time.perf_counter()
    try:
        result = await play_episode(game, job.task, policy, settings.episode_settings())
    finally:
        shelf.give(job.task.game, game)
    numbers = result.summary(settings.episode_settings())
    return {
        "set": job.set_name, "game": job.task.game, "task": job.task.task,
        "variation": int(job.task.variation), "task_seed": int(job.task.seed), "task_index": job.index,
        "seed": job.seed, "task_type": result.task_type or job.task.task, "success": numbers["success"],
        "score": numbers["score"], "return": round(numbers["return"], 6), "turns": int(numbers["turns"]),
        "invalid_actions": int(numbers["invalid_actions"]), "response_tokens": counter.response_tokens,
        "failure": result.failure, "actions": [t.action for t in result.turns],
        "response_digest": counter.digest.hexdigest()[:16], "seconds": round(time.perf_counter() - start, 3),
    }


async def run_jobs(jobs: list[Job], backend: Any, shelf: GameShelf, settings: EvalSettings, path: Path,
                   progress: Any) -> None:
    slots = asyncio.Semaphore(backend.concurrency)

    async def one(job: Job) -> None:
        async with slots:
            row = await play_job(job, backend, shelf, settings)
        append_episode(path, row)
        progress.update(1)

    if backend.concurrency == 1:
        for job in jobs:  # strictly in order: the log reads the same on every run
            await one(job)
    else:
        await asyncio.gather(*(one(job) for job in jobs))


def _spread(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; None for a single value) of per-seed rates."""
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n_seeds": len(values)}


def summarize(rows: list[dict[str, Any]], expected: dict[str, int]) -> dict[str, Any]:
    """Per set: success rate per seed, mean ± std over seeds, and the same per task type.

    Args:
        rows: episode rows (any order).
        expected: episodes each set should have (tasks × seeds), to flag an incomplete evaluation.
    """
    sets: dict[str, Any] = {}
    for set_name in sorted({r["set"] for r in rows} | set(expected)):
        mine = [r for r in rows if r["set"] == set_name]
        by_seed: dict[int, list[dict]] = defaultdict(list)
        for r in mine:
            by_seed[r["seed"]].append(r)
        per_seed = {str(s): statistics.fmean(r["success"] for r in rs) for s, rs in sorted(by_seed.items())}
        types: dict[str, Any] = {}
        for task_type in sorted({r["task_type"] for r in mine}):
            rates = [statistics.fmean(r["success"] for r in rs if r["task_type"] == task_type)
                     for _, rs in sorted(by_seed.items()) if any(r["task_type"] == task_type for r in rs)]
            types[task_type] = {**_spread(rates), "episodes": sum(r["task_type"] == task_type for r in mine)}
        sets[set_name] = {
            "episodes": len(mine), "expected_episodes": expected.get(set_name),
            "complete": len(mine) == expected.get(set_name, len(mine)),
            "success": {**_spread(list(per_seed.values())), "per_seed": per_seed},
            "per_task_type": types,
            "mean_return": statistics.fmean(r["return"] for r in mine) if mine else None,
            "mean_turns": statistics.fmean(r["turns"] for r in mine) if mine else None,
            "mean_invalid_actions": statistics.fmean(r["invalid_actions"] for r in mine) if mine else None,
            "mean_response_tokens": statistics.fmean(r["response_tokens"] for r in mine) if mine else None,
            "env_failures": sum(r["failure"] is not None for r in mine),
        }
    return sets


def evaluate(model: str | Path, set_names: list[str], seeds: list[int], out: str | Path,
             settings: EvalSettings | None = None, limit: int | None = None,
             isolate: bool = False, step_timeout: float = 60.0, progress: bool = True,
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
        settings = EvalSettings(**{**asdict(settings), "model": str(model_dir)})
    check_resume(out, settings)
    path = out / EPISODES_FILE
    done = {episode_key(r) for r in read_episodes(path)}
    todo = [job for job in jobs if job.key() not in done]
    start = time.perf_counter()
    if todo:
        runner = VLLMBackend(model_dir, settings, concurrency)
        shelf = GameShelf(settings.game_kwargs, isolate, step_timeout)
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="episodes", unit="ep",
                   disable=not progress, file=sys.stderr)
        try:
            asyncio.run(run_jobs(todo, runner, shelf, settings, path, bar))
        finally:
            bar.close()
            shelf.close()
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


def format_summary(summary: dict[str, Any]) -> str:
    """One line per set: success mean ± std over seeds, per seed."""
    lines = []
    for name, s in summary["sets"].items():
        mean, std = s["success"]["mean"], s["success"]["std"]
        spread = "" if std is None or (isinstance(std, float) and math.isnan(std)) else f" ± {100 * std:.1f}"
        shown = "n/a" if mean is None else f"{100 * mean:.1f}{spread}%"
        seeds = ", ".join(f"seed {k}: {100 * v:.1f}%" for k, v in s["success"]["per_seed"].items())
        lines.append(f"{name}: success {shown} over {s['success']['n_seeds']} seed(s) ({seeds}); "
                     f"{s['episodes']}/{s['expected_episodes']} episodes")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="Evaluate a model on fixed, named task sets (resumable).")
    p.add_argument("model", help="Hugging Face model directory, or a verl checkpoint (global_step_N or its root)")
    p.add_argument("--set", dest="sets", nargs="+", required=True,
                   help="named evaluation set(s), e.g. sciworld/l0-test alfworld/valid-seen synthetic/val")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="sampling seeds (default 0 1 2)")
    p.add_argument("--temperature", type=float, default=PAPER_TEMPERATURE,
                   help="sampling temperature (paper: 0.4; 0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-turns", type=int, default=30, help="turn limit per episode (paper: SW 30, ALF 50)")
    p.add_argument("--history-turns", type=int, default=3, help="past turns in the prompt (as env.history_turns)")
    p.add_argument("--parser", default="strict", help="action parser: strict or lenient (as env.parser)")
    p.add_argument("--max-response-tokens", type=int, default=512, help="per turn (as data.max_response_length)")
    p.add_argument("--max-prompt-tokens", type=int, default=None, help="per turn; longer prompts are left-truncated")
    p.add_argument("--game-kwargs", default="{}",
                   help='kwargs per game as JSON (as env.games), e.g. {"sciworld": {"simplification": "easy"}}')
    p.add_argument("--limit", type=int, default=None, help="only the first N tasks of each set")
    p.add_argument("--concurrency", type=int, default=64, help="episodes played at once (one vLLM batch)")
    p.add_argument("--isolate", action="store_true", help="run games in worker processes with a step timeout")
    p.add_argument("--step-timeout", type=float, default=60.0)
    p.add_argument("--out", required=True, help="output folder (episodes.jsonl, summary.json); reused to resume")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    install_exit_cleanup()  # vLLM's engine leaves /dev/shm segments when this process is killed
    try:
        game_kwargs = json.loads(args.game_kwargs)
    except json.JSONDecodeError as err:
        p.error(f"--game-kwargs is not JSON ({err}); example: '{{\"sciworld\": {{\"simplification\": \"easy\"}}}}'")
    settings = EvalSettings(model=str(args.model), temperature=args.temperature, top_p=args.top_p,
                            max_turns=args.max_turns, history_turns=args.history_turns, parser=args.parser,
                            max_response_tokens=args.max_response_tokens, max_prompt_tokens=args.max_prompt_tokens,
                            game_kwargs=game_kwargs)
    summary = evaluate(args.model, args.sets, args.seeds, args.out, settings, limit=args.limit,
                       isolate=args.isolate, step_timeout=args.step_timeout,
                       progress=not args.no_progress, concurrency=args.concurrency)
    print(format_summary(summary))
    print(f"summary: {Path(args.out) / SUMMARY_FILE}; episodes: {summary['episodes_file']}")
    return summary


if __name__ == "__main__":
    main()
