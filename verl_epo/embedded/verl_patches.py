"""The few behaviours of stock verl 0.9.1 that CPU mode must change, each a small wrapper.

Applied by :func:`verl_epo.embedded.activate` only; nothing here runs on the GPU path. Each
wrapper is idempotent and marks itself with ``_verl_epo_cpu`` so a second activation is a no-op.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from verl_epo.embedded.import_hooks import after_import

logger = logging.getLogger(__name__)

CPU_BACKEND = "cpu:gloo"
FP32_MIXED_PRECISION = {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}


def _mark(fn: Callable) -> Callable:
    fn._verl_epo_cpu = True
    return fn


def _is_patched(fn: Any) -> bool:
    return getattr(fn, "_verl_epo_cpu", False)


def patch_process_group_backend() -> None:
    """verl builds ``cpu:gloo,{device}:{backend}`` = ``cpu:gloo,cpu:gloo``, which torch rejects."""
    import verl.utils.distributed as dist_utils

    original = dist_utils.initialize_global_process_group_ray
    if _is_patched(original):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=backend or CPU_BACKEND)

    patched = _mark(initialize_global_process_group_ray)
    dist_utils.initialize_global_process_group_ray = patched
    # modules that imported the name before activation keep their own reference
    for module_name in ("verl.workers.engine_workers", "verl.checkpoint_engine.base"):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, "initialize_global_process_group_ray"):
            module.initialize_global_process_group_ray = patched


def _adjust_before_post_init(cls: type, adjust: Callable[[Any], None]) -> None:
    """Run ``adjust(self)`` before ``cls.__post_init__`` (verl's configs validate and freeze there)."""
    original = cls.__post_init__
    if _is_patched(original):
        return

    @functools.wraps(original)
    def __post_init__(self):
        adjust(self)
        original(self)

    cls.__post_init__ = _mark(__post_init__)


def patch_model_config() -> None:
    """No flash-attn on CPU: sdpa attention and padded (not packed) sequences for every model."""
    from verl.workers.config.model import HFModelConfig

    def adjust(self) -> None:
        override = dict(self.override_config or {})
        if str(override.get("attn_implementation", "flash_attention_2")).startswith("flash"):
            override["attn_implementation"] = "sdpa"
        # BaseConfig freezes fields after construction; these two are set before verl reads them.
        object.__setattr__(self, "override_config", override)
        object.__setattr__(self, "use_remove_padding", False)

    _adjust_before_post_init(HFModelConfig, adjust)


def _fsdp2(self) -> None:
    if self.strategy == "fsdp":
        object.__setattr__(self, "strategy", "fsdp2")  # see patch_fsdp_strategy


def patch_fsdp_precision() -> None:
    """FSDP2, fp32 compute (no bf16 mixed precision unless asked for) and no torch.compile."""
    from verl.workers.config.engine import FSDPEngineConfig

    def adjust(self) -> None:
        _fsdp2(self)
        if self.mixed_precision is None:
            object.__setattr__(self, "mixed_precision", dict(FP32_MIXED_PRECISION))
        # inductor needs a C++ toolchain and its compile time dwarfs a small model's step
        object.__setattr__(self, "use_torch_compile", False)

    _adjust_before_post_init(FSDPEngineConfig, adjust)


def patch_fsdp_strategy() -> None:
    """FSDP1 wraps with ``device_id=<accelerator index>``, which torch refuses without one: use FSDP2.

    The actor and critic configs copy their ``strategy`` onto the engine config, so both are
    switched before they do.
    """
    from verl.workers.config.actor import FSDPActorConfig
    from verl.workers.config.critic import FSDPCriticConfig

    for cls in (FSDPActorConfig, FSDPCriticConfig):
        _adjust_before_post_init(cls, _fsdp2)


def patch_fsdp_offload_policy() -> None:
    """verl offloads the reference model with ``CPUOffloadPolicy(pin_memory=True)``; pinning needs
    an accelerator, and on CPU the parameters already live in host memory: never pin."""
    import verl.workers.engine.fsdp.transformer_impl as fsdp_impl

    original = fsdp_impl.CPUOffloadPolicy
    if original is None or _is_patched(original):
        return

    def unpinned_offload_policy(*args: Any, **kwargs: Any):
        kwargs["pin_memory"] = False
        return original(*args, **kwargs)

    fsdp_impl.CPUOffloadPolicy = _mark(unpinned_offload_policy)


def patch_logprob_gap_metrics() -> None:
    """Add rollout-vs-actor LOG-prob gaps to verl's debug metrics (verl reports prob gaps only).

    Adds ``training/rollout_log_probs_diff_max`` and ``..._mean``: max/mean over response tokens of
    ``|rollout_log_probs - old_log_probs|``. Zero up to fp32 error when rollout weights equal the
    actor's.
    """
    import verl.utils.debug.metrics as debug_metrics

    original = debug_metrics.calculate_debug_metrics
    if _is_patched(original):
        return

    @functools.wraps(original)
    def calculate_debug_metrics(data):
        metrics = original(data)
        rollout = data.batch["rollout_log_probs"]
        actor = data.batch["old_log_probs"]
        mask = data.batch["response_mask"][:, -rollout.shape[-1] :].bool()
        if rollout.shape == actor.shape and bool(mask.any()):
            gap = (rollout.float() - actor.float()).abs()[mask]
            metrics["training/rollout_log_probs_diff_max"] = gap.max().item()
            metrics["training/rollout_log_probs_diff_mean"] = gap.mean().item()
        else:
            metrics["training/rollout_log_probs_diff_max"] = float("nan")
            metrics["training/rollout_log_probs_diff_mean"] = float("nan")
        return metrics

    debug_metrics.calculate_debug_metrics = _mark(calculate_debug_metrics)
    module = sys.modules.get("verl.trainer.ppo.v1.trainer_base")
    if module is not None:
        module.calculate_debug_metrics = debug_metrics.calculate_debug_metrics


def patch_value_model_attention() -> None:
    """verl loads a critic's value model with flash-attention hard-coded: load it with sdpa."""
    import verl.utils.model as model_utils

    original = model_utils.load_valuehead_model
    if _is_patched(original):
        return

    @functools.wraps(original)
    def load_valuehead_model(local_path, torch_dtype, model_config, trust_remote_code):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(
            pretrained_model_name_or_path=local_path,
            torch_dtype=torch_dtype,
            config=model_config,
            attn_implementation="sdpa",
            trust_remote_code=trust_remote_code,
        )

    # the FSDP engine imports it inside a function, so the module attribute is what it gets
    model_utils.load_valuehead_model = _mark(load_valuehead_model)


SOCKET_PREFIX = "ipc:///tmp/rl-colocate-zmq-"
RAY_JOB_ENV = "VERL_RAY_JOB_ID"
SENDER_MODULE = "verl.workers.rollout.vllm_rollout.vllm_rollout"
RECEIVER_MODULE = "verl.workers.rollout.vllm_rollout.vllm_async_server"


def cluster_token() -> str:
    """This Ray node's id, short: new for every local Ray cluster, the same for every process of
    one node (and the socket is a file on that node)."""
    import ray

    return ray.get_runtime_context().get_node_id()[:12]


def _wrap_init(cls: type, after: Callable[[Any], None]) -> None:
    original = cls.__init__
    if _is_patched(original):
        return

    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        after(self)

    cls.__init__ = _mark(__init__)


def _sender_socket(module: Any) -> None:
    def per_cluster(adapter: Any) -> None:
        adapter.zmq_handle = adapter.zmq_handle.replace(SOCKET_PREFIX, f"{SOCKET_PREFIX}{cluster_token()}-", 1)
        logger.info("weight-sync socket (trainer side): %s", adapter.zmq_handle)

    _wrap_init(module.ServerAdapter, per_cluster)


def _receiver_socket(module: Any) -> None:
    def per_cluster(_server: Any) -> None:  # before the server starts vLLM's worker processes
        os.environ[RAY_JOB_ENV] = f"{cluster_token()}-{os.environ[RAY_JOB_ENV]}"
        logger.info("weight-sync socket job id (vLLM side): %s", os.environ[RAY_JOB_ENV])

    _wrap_init(module.vLLMHttpServer, per_cluster)


def patch_weight_sync_socket() -> None:
    """One weight-sync socket per Ray cluster, not per Ray job id.

    verl names the socket through which the trainer sends new weights to its colocated vLLM
    worker ``/tmp/rl-colocate-zmq-{ray job id}-replica-{r}-rank-{k}.sock``: the sender in
    ``ServerAdapter.__init__`` (``vllm_rollout.py``), the receiver from ``VERL_RAY_JOB_ID``, which
    ``vLLMHttpServer.__init__`` (``vllm_async_server.py``) exports to vLLM's workers
    (``vllm_rollout/utils.py::_get_zmq_handle``). Every local Ray cluster numbers its first job
    ``01000000``, so two trainings on one machine bind the same path: one engine loads the other
    run's weights (an error when the shapes differ, silently when they match), or both hang. Both
    names get :func:`cluster_token` in front of the job id.
    """
    after_import(SENDER_MODULE, _sender_socket)
    after_import(RECEIVER_MODULE, _receiver_socket)


def _log_weight_versions(module: Any) -> None:
    cls = module.vLLMHttpServer
    original = cls.generate
    if _is_patched(original):
        return

    @functools.wraps(original)
    async def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen = self.__dict__.setdefault("_verl_epo_weight_versions", set())
        if self.global_steps not in seen:
            seen.add(self.global_steps)
            import ray

            logger.info("rollout replica %s on node %s generates with the weights of step %s", self.replica_rank,
                        ray.get_runtime_context().get_node_id(), self.global_steps)
        return await original(self, *args, **kwargs)

    cls.generate = _mark(generate)


def patch_weight_version_log() -> None:
    """Each vLLM replica logs, once per weight version, that it generates with it.

    verl tags a replica's weights with the trainer step of the last weight sync that reached it
    (``set_global_steps`` at the end of ``ServerAdapter.update_weights``). The line names the
    replica, its Ray node and that step, so a run with several replicas shows which of them served
    each step's rollout, and with which weights; together with the batch-wide rollout-vs-actor
    log-prob gap this checks every replica's weight sync (tests/e2e/test_train_two_nodes.py).
    """
    after_import(RECEIVER_MODULE, _log_weight_versions)


def apply_all() -> None:
    patch_process_group_backend()
    patch_model_config()
    patch_fsdp_precision()
    patch_fsdp_strategy()
    patch_fsdp_offload_policy()
    patch_logprob_gap_metrics()
    patch_value_model_attention()
    patch_weight_sync_socket()
    patch_weight_version_log()
