"""A short supervised warm start (cold-start SFT) of a small model on CPU, before RL.

``python -m verl_epo.embedded.warm_start --model DIR --data sft.parquet --out DIR --steps 100``
trains on chat rows (the ``messages`` column of a verl multi-turn SFT parquet file, e.g. written by
``python -m env_adapters.expert``) with plain ``torch`` + ``transformers`` in fp32, and saves an
ordinary Hugging Face model directory (model + tokenizer) that RL then starts from.

The loss is the mean cross-entropy over the assistant's answer tokens only: the tokens after the
generation prompt (``<|im_start|>assistant\\n``) up to and including the end-of-turn token
(the tokenizer's eos, ``<|im_end|>``), which is where generation stops in the agent loop. The
prompt is tokenized exactly as the agent loop does it (chat template with the generation prompt),
so the model is trained on the token sequences it will later see and sample.

Why: a randomly initialised tiny model never writes ``<action>...</action>`` on its own, so every
GRPO group would be all failures; a brief warm start makes sampled episodes succeed sometimes
(mixed groups), without making the policy so sharp that every sample succeeds.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IGNORE = -100
DEFAULT_STEPS = 1000
"""Sampled (T = 1) success on synthetic/val of the hidden-64, 2-layer tiny model (seed 0; max_turns 24,
history_turns 2; lr 1e-3, batch 8) after a warm start on the expert rows of synthetic/train.
Clean expert, game step limit 3 x rooms: 400 steps 19%, 450: 22%, 500: 34%, 550: 66%, 600: 100%;
the rule (copy the sign's direction) is learned abruptly between 500 and 600 steps, and before that
the model plays at the level of random admissible actions. With half of the expert's moves random
(``env_adapters.expert --explore 0.5``): 600 steps 25%, 1000: 100% at a 3 x rooms limit, 56% at
2 x, 19% at 1.5 x (the demo's setting): the rule is learned, and the sampled policy mixes it with
random moves, so RL has something to sharpen."""
DEFAULT_LR = 1e-3
DEFAULT_BATCH = 8
DEFAULT_THREADS = 1
"""torch intra-op threads while training: for a hidden-64 model, synchronising threads costs more
than it saves (measured: 75 ms CPU a step on 1 thread, 370-570 ms on 2 on a loaded 2-core host)."""
STATS_FILE = "warm_start.json"

Messages = list[dict[str, str]]


def _text(tokenizer: Any, messages: Messages, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)


def tokenize_row(tokenizer: Any, messages: Messages) -> tuple[list[int], list[int]]:
    """Token ids of one chat row and its labels (``IGNORE`` except on the assistant's answer).

    Args:
        tokenizer: a tokenizer with a chat template and an eos token (the end of a turn).
        messages: system/user/... messages ending with one assistant message.

    Returns:
        input_ids, labels: two lists of length ``len(prompt) + len(answer)``; ``labels`` copies the
        answer's ids (answer text + eos) and is ``IGNORE`` on the prompt.
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("an SFT row must end with the assistant's answer (role 'assistant'); "
                         f"got roles {[m.get('role') for m in messages]}")
    prompt_text = _text(tokenizer, messages[:-1], generation_prompt=True)
    full_text = _text(tokenizer, messages, generation_prompt=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template does not render the conversation as prompt + generation prompt + "
                         "answer, so the answer tokens cannot be found; use a Qwen-style template")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is None or eos not in answer_ids:
        raise ValueError(f"the rendered answer has no end-of-turn token (eos={tokenizer.eos_token!r}); "
                         "the model would never learn to stop")
    answer_ids = answer_ids[: answer_ids.index(eos) + 1]  # whatever follows eos is never generated
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded tensors: input_ids, attention_mask, labels, each (bs, max_len)."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, : len(lab)] = torch.tensor(lab)
    return input_ids, mask, labels


def answer_loss(model: Any, input_ids, mask, labels):
    """Mean next-token cross-entropy over the answer tokens of the batch (a scalar tensor).

    The model computes logits only at the positions where some row predicts an answer token
    (transformers' ``logits_to_keep``: ``(bs, positions, vocab)``, not ``(bs, len, vocab)``), through
    its own output head (any logit scaling or soft-capping included). Answers are a few tokens of each
    row, so at Qwen's 151,936-row vocabulary this is most of the step's time and memory saved."""
    import torch.nn.functional as F

    target = labels[:, 1:]  # (bs, len-1): the token each position predicts
    positions = (target != IGNORE).any(dim=0).nonzero().squeeze(1)  # (positions,)
    logits = model(input_ids=input_ids, attention_mask=mask, logits_to_keep=positions).logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target[:, positions].reshape(-1),
                           ignore_index=IGNORE)


def evaluate_loss(model: Any, tokenizer: Any, rows: Sequence[Messages], batch_size: int = DEFAULT_BATCH) -> float:
    """Mean answer-token loss over ``rows`` (token-weighted, no gradient)."""
    import torch

    examples = [tokenize_row(tokenizer, m) for m in rows]
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            input_ids, mask, labels = collate(examples[start : start + batch_size], tokenizer.pad_token_id)
            tokens = int((labels[:, 1:] != IGNORE).sum())
            total += float(answer_loss(model, input_ids, mask, labels)) * tokens
            count += tokens
    model.train(was_training)
    return total / max(count, 1)


def check_rows(rows: Sequence[Any]) -> list[Messages]:
    """Rows as plain lists of {role, content} dicts; anything else is an error."""
    if not rows:
        raise ValueError("no SFT rows to train on; write some with `python -m env_adapters.expert`")
    out = []
    for i, messages in enumerate(rows):
        try:
            out.append([{"role": str(m["role"]), "content": str(m["content"])} for m in messages])
        except (TypeError, KeyError) as err:
            raise ValueError(f"SFT row {i} is not a list of {{role, content}} messages ({err!r})") from err
    return out


def warm_start(model_dir: str | Path, rows: Sequence[Messages], out_dir: str | Path, steps: int = DEFAULT_STEPS,
               lr: float = DEFAULT_LR, batch_size: int = DEFAULT_BATCH, seed: int = 0,
               log_every: int = 25, threads: int | None = DEFAULT_THREADS) -> dict[str, Any]:
    """Fine-tune ``model_dir`` on ``rows`` for ``steps`` AdamW steps and save it to ``out_dir``.

    Batches are drawn without replacement from a seeded shuffle (a new shuffle each epoch); the
    learning rate warms up linearly over the first 10% of steps and then stays constant.
    ``threads`` sets torch's intra-op threads for the run (None: leave torch's setting).

    Returns:
        stats: steps, rows, answer tokens seen, loss at the first and last logged steps, the
        logged loss curve, seconds, out_dir (also written to ``out_dir/warm_start.json``).
    """
    import torch


    if steps < 0 or batch_size < 1 or lr <= 0 or log_every < 1:
        raise ValueError(f"need steps >= 0, batch_size >= 1, lr > 0, log_every >= 1; got steps={steps}, "
                         f"batch_size={batch_size}, lr={lr}, log_every={log_every}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(model_dir, rows, out_dir, steps, lr, batch_size, seed, log_every)
    finally:
        torch.set_num_threads(previous_threads)


def _train(model_dir: str | Path, rows: Sequence[Messages], out_dir: str | Path, steps: int, lr: float,
           batch_size: int, seed: int, log_every: int) -> dict[str, Any]:
    import torch

    from verl_epo.embedded.tiny_model import load_model_and_tokenizer, save_model

    start = time.perf_counter()
    torch.manual_seed(seed)
    model, tokenizer = load_model_and_tokenizer(model_dir)
    examples = [tokenize_row(tokenizer, m) for m in check_rows(rows)]
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(len(ids) for ids, _ in examples)
    if limit is not None and longest > limit:
        raise ValueError(f"an SFT row has {longest} tokens, more than the model's {limit} positions; "
                         "write the data with fewer --history-turns")
    order_rng = random.Random(seed)
    order: list[int] = []
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    model.train()
    curve: list[tuple[int, float]] = []
    window: list[float] = []
    tokens_seen = 0
    for step in range(1, steps + 1):
        batch = []
        while len(batch) < batch_size:
            if not order:
                order = list(range(len(examples)))
                order_rng.shuffle(order)
            batch.append(examples[order.pop()])
        input_ids, mask, labels = collate(batch, tokenizer.pad_token_id)
        loss = answer_loss(model, input_ids, mask, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        tokens_seen += int((labels[:, 1:] != IGNORE).sum())
        window.append(loss.item())
        if step == 1 or step % log_every == 0 or step == steps:
            mean = sum(window) / len(window)
            curve.append((step, round(mean, 4)))
            print(f"warm start step {step}/{steps}: answer loss {mean:.4f} "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)
            window = []
    stats = {
        "model": str(model_dir),
        "out_dir": str(out_dir),
        "steps": steps,
        "rows": len(examples),
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "answer_tokens": tokens_seen,
        "first_loss": curve[0][1] if curve else None,
        "final_loss": curve[-1][1] if curve else None,
        "loss_curve": curve,
        "seconds": round(time.perf_counter() - start, 2),
    }
    save_model(model, tokenizer, out_dir, STATS_FILE, stats)
    return stats


def read_rows(path: str | Path, messages_key: str = "messages") -> list[Messages]:
    """The chat rows of a parquet file (its ``messages_key`` column; other columns are ignored)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SFT parquet file at {path}; write one with "
                                "`python -m env_adapters.expert --task-set synthetic/train --out DIR`")
    frame = pd.read_parquet(path)
    if messages_key not in frame.columns:
        raise ValueError(f"{path} has no {messages_key!r} column (columns: {list(frame.columns)})")
    return check_rows([list(cell) for cell in frame[messages_key]])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hugging Face model directory to start from")
    parser.add_argument("--data", required=True, help="SFT parquet file with a 'messages' column")
    parser.add_argument("--out", required=True, help="where to save the warm-started model directory")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help="AdamW learning rate")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="rows per step")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order")
    parser.add_argument("--log-every", type=int, default=25, help="print the loss every N steps")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="torch intra-op threads (1 is fastest for a tiny model)")
    parser.add_argument("--messages-key", default="messages", help="the parquet column holding the chat rows")
    args = parser.parse_args(argv)
    rows = read_rows(args.data, args.messages_key)
    stats = warm_start(args.model, rows, args.out, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                       seed=args.seed, log_every=args.log_every, threads=args.threads)
    print(json.dumps({k: v for k, v in stats.items() if k != "loss_curve"}))
    return stats


if __name__ == "__main__":
    main()
