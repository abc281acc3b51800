"""Generation for evaluation: vLLM's offline engine, the engine verl's rollout serves in training,
with one seed per episode."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from env_adapters.base import TaskSpec
from env_adapters.episode import Policy

if TYPE_CHECKING:
    from env_adapters.evaluation.settings import EvalSettings

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


class EngineFailed(RuntimeError):
    """vLLM's engine failed a generate call: the evaluation stops (an episode is never recorded as
    lost because the engine, not the policy, failed)."""


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
            from verl_epo.embedded.vllm_cpu import set_env_defaults

            set_env_defaults()
        from vllm import LLM

        self.concurrency = concurrency  # episodes in flight: each holds a game (a JVM for ScienceWorld)
        # CPU: no chunked prefill. A prompt split across engine steps rewinds its request's seeded
        # generator (gpu_model_runner._bookkeeping_sync: gen.set_offset), which a CPU generator
        # refuses ("CPU Generator does not use offset"): any turn whose batch of prompts exceeded the
        # token budget (4,096 tokens, e.g. 64 episodes of 100 tokens) killed the engine.
        cpu = {"dtype": "float32", "enforce_eager": True, "enable_chunked_prefill": False}
        self.llm = LLM(model=str(model_dir), seed=0, enable_prefix_caching=True, **(cpu if on_cpu else {}))
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
            try:
                outputs = await asyncio.to_thread(self.llm.generate, prompts, params, use_tqdm=False)
            except Exception as err:  # a dead engine: every waiting episode learns it, none waits forever
                for _, _, future in batch:
                    future.set_exception(EngineFailed(f"vLLM generate failed: {type(err).__name__}: {err}"))
                return
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
