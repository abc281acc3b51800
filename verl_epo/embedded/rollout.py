"""verl rollout backend ``hf_cpu``: a replica of :class:`HFGenerationServer` actors plus the adapter
that lives in verl's hybrid actor worker and pushes the actor's weights to them.

Weight sync (hybrid mode, checkpoint engine ``naive``): after each actor update verl calls
``ActorRolloutRefWorker.update_weights`` -> ``self.rollout.update_weights(per_tensor_param)`` on
every actor rank; :class:`HFServerAdapter` gathers the full tensors and hands them to the
generation server of its replica, so rollout weights equal the actor's before the next rollout.

Select it with ``actor_rollout_ref.rollout.name=hf_cpu`` (tensor parallel size 1).
"""

from __future__ import annotations

import os
from typing import Any

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica

from verl_epo.embedded import ROLLOUT_NAME
from verl_epo.embedded.hf_server import HFGenerationServer


def server_actor_name(replica_rank: int, suffix: str = "") -> str:
    """Ray actor name of a replica's generation server (the adapter looks it up by this name)."""
    return f"{ROLLOUT_NAME}_server_{replica_rank}{suffix}"


def _check_single_rank(config: Any) -> None:
    sizes = (
        config.tensor_model_parallel_size,
        config.data_parallel_size,
        config.pipeline_model_parallel_size,
    )
    if sizes != (1, 1, 1):
        raise ValueError(
            f"rollout '{ROLLOUT_NAME}' runs one unsharded model per replica; set "
            "actor_rollout_ref.rollout.tensor_model_parallel_size=1 (and data/pipeline parallel size "
            f"1), got tp/dp/pp={sizes}"
        )


class HFCpuReplica(RolloutReplica):
    """One :class:`HFGenerationServer` per replica (one replica per actor rank)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _check_single_rank(self.config)

    async def launch_servers(self) -> None:
        name = server_actor_name(self.replica_rank, self.name_suffix)
        node_id = None
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(
                lambda _self: ray.get_runtime_context().get_node_id()
            )
        options: dict[str, Any] = {"name": name, "max_concurrency": self.max_concurrency, "num_cpus": 0}
        if node_id is not None:
            options["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            )
        server = ray.remote(HFGenerationServer).options(**options).remote(
            config=self.config,
            model_config=self.model_config,
            replica_rank=self.replica_rank,
            max_batch_size=int(self.config.max_num_seqs),
        )
        await server.ready.remote()
        self.servers = [server]
        self._server_handle = server
        # verl keys its load balancer by address; there is no HTTP endpoint, the name is unique.
        self._server_address = name

    async def sleep(self) -> None:
        return None

    async def wake_up(self) -> None:
        return None


class HFServerAdapter(BaseRollout):
    """Rollout handle inside verl's actor worker: forwards weight updates to its replica's server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, *args: Any, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        _check_single_rank(self.config)
        self.replica_rank = int(os.environ.get("RANK", "0"))
        self.is_leader_rank = True
        self._server = None

    def _server_handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(self, weights: Any, wire_format: str = "named_tensors", **kwargs: Any) -> None:
        """Send full fp32 copies of the actor's tensors (all ranks iterate: gathering is collective)."""
        if wire_format != "named_tensors":
            raise ValueError(
                f"rollout '{ROLLOUT_NAME}' takes full weights only, got wire_format={wire_format!r}; "
                "use actor_rollout_ref.rollout.checkpoint_engine.backend=naive"
            )
        if kwargs.get("peft_config") is not None:
            raise ValueError(
                f"rollout '{ROLLOUT_NAME}' cannot load LoRA adapters; set actor_rollout_ref.model.lora.merge=true"
            )
        state = {}
        async for name, tensor in _iterate(weights):
            state[name] = tensor.detach().to("cpu", torch.float32).clone()
        await self._server_handle().update_weights.remote(state, global_steps=kwargs.get("global_steps"))


async def _iterate(weights: Any):
    if hasattr(weights, "__aiter__"):
        async for item in weights:
            yield item
    else:
        for item in weights:
            yield item
