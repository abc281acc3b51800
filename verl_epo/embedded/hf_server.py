"""Token-in/token-out generation server on CPU with plain ``transformers`` in fp32.

One instance runs as a Ray actor per rollout replica. verl's agent loops reach it through
``server_manager.generate(request_id, prompt_ids, sampling_params)`` (the same call vLLM's
server answers); the actor worker pushes its weights here after every update
(:mod:`verl_epo.embedded.rollout`). Concurrent requests are batched (left padding, KV cache).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from verl_epo.embedded.sampling import sample_next_tokens

logger = logging.getLogger(__name__)

THREADS_ENV_VAR = "VERL_EPO_CPU_ROLLOUT_THREADS"
_BATCH_WINDOW_S = 0.005


@dataclass
class GenerationRequest:
    """One prompt and its sampling settings, as the agent loop sent them."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    want_logprobs: bool
    stop_ids: frozenset[int]
    seed: int | None = None
    """vLLM's per-request ``seed``: the sample then depends on the request alone."""
    token_ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)


def parse_sampling_params(
    prompt_ids: list[int],
    sampling_params: dict[str, Any],
    *,
    default_max_tokens: int,
    max_model_len: int,
    eos_ids: frozenset[int],
) -> GenerationRequest:
    """Validate vLLM-style sampling params and turn them into a :class:`GenerationRequest`."""
    params = dict(sampling_params)
    if len(prompt_ids) >= max_model_len:
        raise ValueError(
            f"prompt of {len(prompt_ids)} tokens leaves no room to generate within max_model_len="
            f"{max_model_len}; shorten the prompt or raise actor_rollout_ref.rollout.max_model_len"
        )
    max_tokens = params.pop("max_tokens", params.pop("max_new_tokens", default_max_tokens))
    max_tokens = max(1, min(int(max_tokens), max_model_len - len(prompt_ids)))
    penalty = float(params.pop("repetition_penalty", 1.0))
    if penalty != 1.0:
        raise ValueError(
            f"repetition_penalty={penalty} is not supported by the CPU rollout (the actor would not "
            "recompute the same log-probs); set it to 1.0"
        )
    top_k = params.pop("top_k", -1)
    stop_ids = set() if params.pop("ignore_eos", False) else set(eos_ids)
    stop_ids |= set(params.pop("stop_token_ids", None) or [])
    return GenerationRequest(
        prompt_ids=[int(t) for t in prompt_ids],
        max_tokens=max_tokens,
        temperature=float(params.pop("temperature", 1.0)),
        top_k=-1 if top_k is None else int(top_k),
        top_p=float(params.pop("top_p", 1.0)),
        want_logprobs=bool(params.pop("logprobs", False)),
        stop_ids=frozenset(stop_ids),
        seed=None if params.get("seed") is None else int(params.pop("seed")),
    )


def eos_token_ids(model_config: Any) -> frozenset[int]:
    """EOS ids from the generation config and the tokenizer (either may list several)."""
    ids: set[int] = set()
    for source in (getattr(model_config, "generation_config", None), getattr(model_config, "tokenizer", None)):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return frozenset(ids)


@torch.no_grad()
def generate_batch(
    model: torch.nn.Module,
    requests: list[GenerationRequest],
    pad_token_id: int,
    generator: torch.Generator,
) -> None:
    """Decode all requests together, filling each one's ``token_ids`` and ``log_probs`` in place.

    Prompts are left padded to (bs, max_prompt_len); positions count real tokens only, so each row
    sees the same positions as it would alone (and as the actor sees it).
    """
    bs = len(requests)
    width = max(len(r.prompt_ids) for r in requests)
    input_ids = torch.full((bs, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((bs, width), dtype=torch.long)
    for row, req in enumerate(requests):
        input_ids[row, width - len(req.prompt_ids) :] = torch.tensor(req.prompt_ids)
        mask[row, width - len(req.prompt_ids) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    temperature = torch.tensor([r.temperature for r in requests])
    top_k = torch.tensor([r.top_k for r in requests], dtype=torch.long)
    top_p = torch.tensor([r.top_p for r in requests])
    done = torch.zeros(bs, dtype=torch.bool)
    if any(r.seed is not None for r in requests):
        rngs = [generator if r.seed is None else torch.Generator().manual_seed(r.seed) for r in requests]
    else:
        rngs = generator
    cache = None
    for _ in range(max(r.max_tokens for r in requests)):
        out = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        tokens, log_probs = sample_next_tokens(out.logits[:, -1], temperature, top_k, top_p, rngs)
        for row, req in enumerate(requests):
            if done[row]:
                continue
            token = int(tokens[row])
            req.token_ids.append(token)
            req.log_probs.append(float(log_probs[row]))
            if token in req.stop_ids or len(req.token_ids) >= req.max_tokens:
                done[row] = True
        if bool(done.all()):
            break
        input_ids = tokens[:, None]
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((bs, 1), dtype=torch.long)], dim=-1)


class HFGenerationServer:
    """Ray actor: holds an fp32 ``transformers`` copy of the policy and answers ``generate``."""

    def __init__(self, config: Any, model_config: Any, replica_rank: int, max_batch_size: int = 256):
        from transformers import AutoModelForCausalLM
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig

        config = omega_conf_to_dataclass(config)
        model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        threads = int(os.environ.get(THREADS_ENV_VAR, "0")) or (os.cpu_count() or 1)
        torch.set_num_threads(threads)
        self.config = config
        self.replica_rank = replica_rank
        self.max_batch_size = max_batch_size
        self.global_steps: int | None = None
        self.model = AutoModelForCausalLM.from_pretrained(
            model_config.local_path,
            dtype=torch.float32,
            attn_implementation="sdpa",
            trust_remote_code=getattr(model_config, "trust_remote_code", False),
        ).eval()
        tokenizer = getattr(model_config, "tokenizer", None)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = int(pad if pad is not None else 0)
        self.eos_ids = eos_token_ids(model_config)
        self.max_model_len = int(
            config.max_model_len or (config.prompt_length + config.response_length)
        )
        self.generator = torch.Generator().manual_seed(int(config.seed) + replica_rank)
        self._model_lock = threading.Lock()
        self._queue: list[tuple[GenerationRequest, asyncio.Future]] = []
        self._wakeup: asyncio.Event | None = None
        self._batcher: asyncio.Task | None = None

    def ready(self) -> bool:
        return True

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        **_unused: Any,
    ):
        """Generate a response for one prompt; returns verl's ``TokenOutput``."""
        from verl.workers.rollout.replica import TokenOutput

        default_max = min(
            self.config.response_length,
            self.config.prompt_length + self.config.response_length - len(prompt_ids),
        )
        request = parse_sampling_params(
            prompt_ids,
            sampling_params,
            default_max_tokens=default_max,
            max_model_len=self.max_model_len,
            eos_ids=self.eos_ids,
        )
        if self._batcher is None:
            self._wakeup = asyncio.Event()
            self._batcher = asyncio.create_task(self._run_batches())
        future = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._wakeup.set()
        await future
        return TokenOutput(
            token_ids=request.token_ids,
            log_probs=request.log_probs if request.want_logprobs else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    async def _run_batches(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(_BATCH_WINDOW_S)  # let requests sent together join one batch
            while self._queue:
                batch = self._queue[: self.max_batch_size]
                del self._queue[: self.max_batch_size]
                try:
                    await asyncio.to_thread(self._generate_locked, [r for r, _ in batch])
                except Exception as error:  # a failed batch fails its requests, not the server
                    for _, future in batch:
                        future.set_exception(error)
                    continue
                for _, future in batch:
                    future.set_result(None)

    def _generate_locked(self, requests: list[GenerationRequest]) -> None:
        with self._model_lock:
            generate_batch(self.model, requests, self.pad_token_id, self.generator)

    async def update_weights(self, state_dict: dict[str, torch.Tensor], global_steps: int | None = None):
        """Load the actor's full (unsharded) weights; every model parameter must be covered."""
        await asyncio.to_thread(self._load_locked, state_dict)
        self.global_steps = global_steps

    def _load_locked(self, state_dict: dict[str, torch.Tensor]) -> None:
        with self._model_lock:
            result = self.model.load_state_dict(state_dict, strict=False)
            # a tied parameter (e.g. lm_head sharing the embedding) is covered by its twin
            params = dict(self.model.named_parameters(remove_duplicate=False))
            loaded = {params[k].data_ptr() for k in state_dict if k in params}
        missing = [k for k in result.missing_keys if params.get(k) is None or params[k].data_ptr() not in loaded]
        if missing or result.unexpected_keys:
            raise RuntimeError(
                f"actor weights do not match the rollout model: missing={missing[:5]}, "
                f"unexpected={result.unexpected_keys[:5]}"
            )

    def state_dict_for_test(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.model.state_dict().items()}

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    # Lifecycle calls verl makes on every rollout server; weights stay resident on CPU.
    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def abort_all_requests(self, reject_request: bool = False, **_unused: Any) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, **_unused: Any) -> dict[str, Any]:
        return {"aborted": False, "request_id": request_id}

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **_unused: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None
