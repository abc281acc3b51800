"""verl platform "cpu": device cpu, collective backend gloo, no-op memory functions.

Registered in verl's platform registry (``verl/plugin/platform``) under the name ``cpu`` and
selected with ``VERL_PLATFORM=cpu``. Ray still schedules workers on (fake) ``GPU`` resources,
because verl's resource pools always ask for GPUs.
"""

from __future__ import annotations

import os
import types
from contextlib import contextmanager
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

PLATFORM_NAME = "cpu"


def _zero(*_args: Any, **_kwargs: Any) -> int:
    return 0


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


def _mem_get_info(*_args: Any, **_kwargs: Any) -> tuple[int, int]:
    """(free, total) bytes of host memory, standing in for device memory."""
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


def _build_device_module() -> types.ModuleType:
    """A ``torch.cuda``-shaped namespace for the CPU: what verl calls on ``get_torch_device()``."""
    module = types.ModuleType("verl_epo_cpu_device")
    for name in ("Event", "Stream", "StreamContext", "current_stream", "stream", "synchronize"):
        setattr(module, name, getattr(torch.cpu, name))
    module.is_available = lambda: True
    module.is_initialized = lambda: True
    module.current_device = _zero
    module.device_count = lambda: 1
    module.set_device = _noop
    module.get_device_name = lambda *_a, **_k: "cpu"
    module.empty_cache = _noop
    module.ipc_collect = _noop
    module.set_per_process_memory_fraction = _noop
    module.reset_peak_memory_stats = _noop
    module.memory_allocated = _zero
    module.memory_reserved = _zero
    module.max_memory_allocated = _zero
    module.max_memory_reserved = _zero
    module.mem_get_info = _mem_get_info
    module.manual_seed = torch.manual_seed
    module.manual_seed_all = torch.manual_seed
    module.get_rng_state = lambda *_a, **_k: torch.get_rng_state()
    module.set_rng_state = lambda state, *_a, **_k: torch.set_rng_state(state)
    return module


_DEVICE_MODULE = _build_device_module()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """Host CPU as verl's accelerator: every rank computes on ``cpu`` and talks over gloo."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: CPU mode is opt-in through VERL_PLATFORM=cpu.
        return False

    def current_device(self) -> str:  # type: ignore[override]
        # verl passes this straight to ``.to(...)``/``device=``; an int would mean an accelerator
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets it for the fake GPUs it hands out; harmless on a CPU-only torch.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None
