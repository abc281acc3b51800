"""The tiny-model command: tokenizer + random Qwen2 saved as a HF directory, reloaded, used."""

import json
import subprocess
import sys
import time

import pytest
import torch

from verl_epo.embedded.tiny_model import (
    CHAT_TEMPLATE,
    build_model,
    load_model_and_tokenizer,
    main,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    corpus = root / "corpus.txt"
    subprocess.run([sys.executable, "-m", "env_adapters.corpus", "--games", "synthetic",
                    "--out", str(corpus), "--episodes", "30"], check=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "verl_epo.embedded.tiny_model", "--corpus", str(corpus),
                    "--out", str(root / "model"), "--hidden", "64", "--layers", "2", "--heads",
                    "2", "--vocab-size", "2000", "--seed", "0"], check=True)
    print(f"tiny model build (command, incl. interpreter start): "
          f"{time.perf_counter() - start:.1f} s")
    return root / "model"


def test_directory_is_a_normal_hf_model(model_dir):
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]:
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (
        64, 2, 2)


def test_reload_and_generate(model_dir):
    model, tok = load_model_and_tokenizer(model_dir)
    assert model.dtype == torch.float32
    assert model.config.vocab_size == len(tok)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert model.config.eos_token_id == tok.eos_token_id
    ids = tok.apply_chat_template([{"role": "user", "content": "Room 1 of 5. A sign points east."}],
                                  add_generation_prompt=True, tokenize=False)
    prompt = tok(ids, add_special_tokens=False, return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**prompt, max_new_tokens=5, do_sample=True, min_new_tokens=5)
    new = out[0, prompt["input_ids"].shape[1]:]
    assert len(new) == 5 and int(new.max()) < len(tok)
    assert isinstance(tok.decode(new), str)


def test_chat_template_round_trip(model_dir):
    _, tok = load_model_and_tokenizer(model_dir)
    messages = [
        {"role": "system", "content": "You play a text game."},
        {"role": "user", "content": "Task: reach the end.\nAdmissible actions: go north, go east"},
        {"role": "assistant", "content": "<action>go east</action>"},
        {"role": "user", "content": "Room 2 of 5: ünïcode ok 🙂"},
    ]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    expected = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    assert text == expected + "<|im_start|>assistant\n"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    # the chat markers and the action tags are single tokens
    for marker in ["<|im_start|>", "<|im_end|>", "<action>", "</action>"]:
        assert len(tok.encode(marker, add_special_tokens=False)) == 1, marker
    assert ids.count(tok.eos_token_id) == len(messages)
    # the tokenized form (BatchEncoding or list, by transformers version) gives the same ids
    tokenized = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    tokenized = tokenized["input_ids"] if not isinstance(tokenized, list) else tokenized
    assert list(tokenized) == ids
    assert tok.chat_template == CHAT_TEMPLATE


def test_verl_tokenizer_loader_accepts_it(model_dir):
    from verl.utils.tokenizer.tokenizer import hf_tokenizer

    tok = hf_tokenizer(str(model_dir))
    assert tok.pad_token_id is not None and tok.eos_token == "<|im_end|>"


def test_seed_fixes_weights_and_sizes_are_configurable():
    tok = train_tokenizer(["go north go south open door"] * 20, vocab_size=300)
    a = build_model(tok, hidden=32, layers=1, heads=1, seed=3)
    b = build_model(tok, hidden=32, layers=1, heads=1, seed=3)
    c = build_model(tok, hidden=32, layers=1, heads=1, seed=4)
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.config.hidden_size == 32 and a.config.num_hidden_layers == 1


def test_bad_input_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="env_adapters.corpus"):
        main(["--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "m")])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no text"):
        main(["--corpus", str(empty), "--out", str(tmp_path / "m")])
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a b c"], vocab_size=100)
    tok = train_tokenizer(["go north"] * 5, vocab_size=300)
    with pytest.raises(ValueError, match="divisible"):
        build_model(tok, hidden=30, heads=4)
    with pytest.raises(ValueError, match="head size 16 .* vLLM's CPU attention"):
        build_model(tok, hidden=64, heads=4)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model_and_tokenizer(tmp_path)
