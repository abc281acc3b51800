"""``recipes/prompt_lengths.py`` replays real episodes through the agent loop's prompt and measures them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load():
    spec = importlib.util.spec_from_file_location("recipes_prompt_lengths", REPO / "recipes" / "prompt_lengths.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


prompt_lengths = load()


def test_evenly_spaced_covers_the_whole_set():
    assert prompt_lengths.evenly_spaced(list(range(100)), 4) == [0, 25, 50, 75]
    assert prompt_lengths.evenly_spaced([1, 2], 5) == [1, 2]


def test_measures_the_prompts_the_policy_sees(tmp_path):
    from env_adapters.base import task_set
    from env_adapters.prompting import build_messages

    out = tmp_path / "lengths.json"
    result = prompt_lengths.main(["cpu_synthetic", "--task-set", "synthetic/train", "--sample", "4",
                                  "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    played = result["played"]
    assert played["episodes"] == 4 and played["won"] == 4  # the expert wins the corridor
    assert result["prompts"] == played["turns"] > 4
    chars = result["chars"]
    assert chars["p50"] <= chars["p90"] <= chars["p99"] <= chars["p100"]
    # a lower bound the rendered prompt of a first turn cannot undercut: its system + user text
    first = task_set("synthetic/train")[0]
    assert chars["p100"] >= len(build_messages(first.task, "", [], None, 0, 1)[0]["content"])
    assert result["qwen_estimate"]["p100"] == -(-chars["p100"] // 4)
    assert 0 < result["tokens"]["p50"] < chars["p50"]


def test_counts_real_qwen_tokens_by_default_and_other_tokenizers_on_request(tmp_path):
    """The default count is the real Qwen BPE's (checked against tiktoken on the same rendered
    prompts); ``--tokenizer tiny`` and a tokenizer folder still work."""
    import asyncio
    import unicodedata

    import numpy as np

    from verl_epo.embedded.qwen_tokenizer import DEFAULT_SYSTEM, tiktoken_encoding
    from verl_epo.embedded.tiny_model import build_tiny_model

    prompts, _ = asyncio.run(prompt_lengths.replay("cpu_synthetic", "synthetic/train", 3, "random", 0))
    qwen = prompt_lengths.measure(prompts)
    assert "Qwen2.5" in qwen["tokenizer"]
    encoding = tiktoken_encoding()

    def chatml(messages):  # Qwen2.5's layout, written out here independently of the template
        head = "" if messages[0]["role"] == "system" else f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return head + body + "<|im_start|>assistant\n"

    counts = [len(encoding.encode(unicodedata.normalize("NFC", chatml(m)), allowed_special="all")) for m in prompts]
    assert qwen["tokens"]["p100"] == max(counts)
    assert qwen["tokens"]["p50"] == int(np.ceil(np.percentile(counts, 50)))
    tiny = prompt_lengths.measure(prompts, "tiny")
    assert tiny["tokenizer"].startswith("tiny BPE") and tiny["chars"] == qwen["chars"]
    assert tiny["tokens"] != qwen["tokens"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(m["content"] for messages in prompts for m in messages))
    build_tiny_model([corpus], tmp_path / "model", hidden=32, layers=1, heads=1, vocab_size=300)
    folder = prompt_lengths.measure(prompts, str(tmp_path / "model"))
    assert folder["tokenizer"] == str(tmp_path / "model") and folder["tokens"]["p100"] > qwen["tokens"]["p100"]
