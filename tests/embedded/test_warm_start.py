"""Supervised warm start of the tiny model: answer-only loss, fewer nats after a few steps, reload."""

import subprocess
import sys

import pandas as pd
import pytest
import torch

from verl_epo.embedded.tiny_model import build_tiny_model, load_model_and_tokenizer
from verl_epo.embedded.warm_start import (
    IGNORE,
    answer_loss,
    collate,
    evaluate_loss,
    main,
    read_rows,
    tokenize_row,
    warm_start,
)


def chat(sign, action):
    return [
        {"role": "system", "content": "You are an agent in a text game."},
        {"role": "user", "content": f"Task: walk the corridor.\n\nRoom 1 of 5. A sign points {sign}.\n\nYour action:"},
        {"role": "assistant", "content": f"<action>{action}</action>"},
    ]


ROWS = [chat(d, f"go {d}") for d in ("north", "south", "east", "west")] + [chat("east", "open door")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    corpus = root / "corpus.txt"
    subprocess.run([sys.executable, "-m", "env_adapters.corpus", "--games", "synthetic", "--out", str(corpus),
                    "--episodes", "10"], check=True, capture_output=True)
    build_tiny_model([corpus], root / "tiny", hidden=32, layers=2, heads=1, vocab_size=600)
    return root / "tiny"


def test_labels_cover_the_answer_and_end_of_turn_only(model_dir):
    _, tok = load_model_and_tokenizer(model_dir)
    messages = ROWS[2]
    ids, labels = tokenize_row(tok, messages)
    prompt = tok(tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False),
                 add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [IGNORE] * len(prompt)
    answer = [t for t in labels if t != IGNORE]
    assert tok.decode(answer) == "<action>go east</action><|im_end|>"
    assert answer[-1] == tok.eos_token_id and ids[len(prompt):] == answer


def test_answer_loss_equals_the_cross_entropy_of_the_full_logits(model_dir):
    """Only the answer positions go through the output layer; the loss and its gradient are those
    of the model's full (bs, len, vocab) logits with the prompt masked out."""
    model, tok = load_model_and_tokenizer(model_dir)
    input_ids, mask, labels = collate([tokenize_row(tok, m) for m in ROWS], tok.pad_token_id)
    logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
    full = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=IGNORE)
    full_grad = torch.autograd.grad(full, model.lm_head.weight)[0]
    loss = answer_loss(model, input_ids, mask, labels)
    grad = torch.autograd.grad(loss, model.lm_head.weight)[0]
    assert torch.allclose(loss, full, atol=1e-6), (loss, full)
    assert torch.allclose(grad, full_grad, atol=1e-7)


def test_a_few_steps_lower_the_answer_loss_and_the_directory_reloads(model_dir, tmp_path):
    model, tok = load_model_and_tokenizer(model_dir)
    before = evaluate_loss(model, tok, ROWS)
    stats = warm_start(model_dir, ROWS, tmp_path / "out", steps=15, lr=3e-3, batch_size=4, seed=0, log_every=5)
    assert stats["steps"] == 15 and stats["rows"] == 5 and (tmp_path / "out" / "warm_start.json").is_file()
    trained, tok2 = load_model_and_tokenizer(tmp_path / "out")
    after = evaluate_loss(trained, tok2, ROWS)
    assert after < before - 1.0, (before, after)
    assert tok2.get_vocab() == tok.get_vocab() and tok2.chat_template == tok.chat_template
    # the saved weights are the trained ones, not the start
    assert not torch.equal(trained.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert stats["final_loss"] < stats["first_loss"]


def test_same_seed_same_model(model_dir, tmp_path):
    for name in ("a", "b"):
        warm_start(model_dir, ROWS, tmp_path / name, steps=3, batch_size=2, seed=7)
    a, _ = load_model_and_tokenizer(tmp_path / "a")
    b, _ = load_model_and_tokenizer(tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_command_reads_the_messages_column_of_a_parquet_file(model_dir, tmp_path):
    data = tmp_path / "sft.parquet"
    pd.DataFrame({"messages": ROWS, "extra_info": [{"turn": i} for i in range(len(ROWS))]}).to_parquet(data)
    assert read_rows(data) == ROWS
    stats = main(["--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "out"), "--steps", "2",
                  "--batch-size", "2"])
    assert stats["steps"] == 2 and (tmp_path / "out" / "config.json").is_file()


def test_bad_input_names_the_problem(model_dir, tmp_path):
    _, tok = load_model_and_tokenizer(model_dir)
    with pytest.raises(ValueError, match="must end with the assistant's answer"):
        tokenize_row(tok, ROWS[0][:-1])
    with pytest.raises(ValueError, match="no SFT rows"):
        warm_start(model_dir, [], tmp_path / "x", steps=1)
    with pytest.raises(ValueError, match="not a list of"):
        warm_start(model_dir, [["just text"]], tmp_path / "x", steps=1)
    with pytest.raises(ValueError, match="steps >= 0"):
        warm_start(model_dir, ROWS, tmp_path / "x", steps=-1)
    with pytest.raises(FileNotFoundError, match="python -m env_adapters.expert"):
        read_rows(tmp_path / "missing.parquet")
    pd.DataFrame({"prompt": ["x"]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="no 'messages' column"):
        read_rows(tmp_path / "other.parquet")
