"""The CPU rollout's sampler and batched decoder, against direct computations (no Ray, no verl)."""

from __future__ import annotations

import pytest
import torch

from verl_epo.embedded.hf_server import GenerationRequest, generate_batch, parse_sampling_params
from verl_epo.embedded.sampling import sample_next_tokens


def _rows(n: int, value: float, dtype=torch.float32) -> torch.Tensor:
    return torch.full((n,), value, dtype=dtype)


def test_greedy_and_top_k_one_pick_argmax_with_tempered_log_probs():
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    temperature = torch.tensor([0.0, 0.0, 0.0, 1.5, 1.5, 1.5])
    top_k = torch.tensor([-1, -1, -1, 1, 1, 1])
    tokens, log_probs = sample_next_tokens(logits, temperature, top_k, _rows(6, 1.0))
    assert torch.equal(tokens, logits.argmax(-1))
    safe_t = torch.tensor([1.0, 1.0, 1.0, 1.5, 1.5, 1.5])
    expected = torch.log_softmax(logits / safe_t[:, None], -1).gather(-1, tokens[:, None])[:, 0]
    torch.testing.assert_close(log_probs, expected)


def test_plain_sampling_follows_softmax_of_tempered_logits():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    generator = torch.Generator().manual_seed(1)
    tokens, _ = sample_next_tokens(logits, _rows(20000, 0.7), _rows(20000, -1, torch.long),
                                   _rows(20000, 1.0), generator)
    observed = torch.bincount(tokens, minlength=4).float() / 20000
    expected = torch.softmax(logits[0] / 0.7, -1)
    assert (observed - expected).abs().max() < 0.015


def test_top_k_and_top_p_restrict_the_support():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()[None].repeat(5000, 1)
    generator = torch.Generator().manual_seed(2)
    k_tokens, _ = sample_next_tokens(logits, _rows(5000, 1.0), _rows(5000, 2, torch.long),
                                     _rows(5000, 1.0), generator)
    assert set(k_tokens.tolist()) == {0, 1}
    # nucleus 0.7: tokens 0 (mass before 0) and 1 (mass before 0.5) stay, 2 (0.8) goes
    p_tokens, p_log_probs = sample_next_tokens(logits, _rows(5000, 1.0), _rows(5000, -1, torch.long),
                                               _rows(5000, 0.7), generator)
    assert set(p_tokens.tolist()) == {0, 1}
    # log-probs are the unfiltered ones the actor recomputes
    torch.testing.assert_close(p_log_probs, probs.log()[p_tokens])


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         attn_implementation="sdpa")
    return Qwen2ForCausalLM(config).eval()


def test_left_padded_batch_decoding_matches_each_sequence_alone(tiny_model):
    requests = [
        GenerationRequest(prompt_ids=list(range(3, 3 + n)), max_tokens=12, temperature=1.0,
                          top_k=-1, top_p=1.0, want_logprobs=True, stop_ids=frozenset())
        for n in (2, 9, 17)
    ]
    generate_batch(tiny_model, requests, pad_token_id=0, generator=torch.Generator().manual_seed(3))
    for request in requests:
        assert len(request.token_ids) == 12
        ids = torch.tensor([request.prompt_ids + request.token_ids])
        with torch.no_grad():
            log_probs = torch.log_softmax(tiny_model(ids).logits[0].float(), -1)
        start = len(request.prompt_ids) - 1
        expected = log_probs[start:-1].gather(-1, torch.tensor(request.token_ids)[:, None])[:, 0]
        assert (expected - torch.tensor(request.log_probs)).abs().max() < 1e-5


def test_generation_stops_at_a_stop_token(tiny_model):
    probe = GenerationRequest(prompt_ids=[5, 6, 7], max_tokens=1, temperature=0.0, top_k=-1,
                              top_p=1.0, want_logprobs=False, stop_ids=frozenset())
    generate_batch(tiny_model, [probe], pad_token_id=0, generator=torch.Generator())
    first = probe.token_ids[0]
    request = GenerationRequest(prompt_ids=[5, 6, 7], max_tokens=10, temperature=0.0, top_k=-1,
                                top_p=1.0, want_logprobs=False, stop_ids=frozenset({first}))
    generate_batch(tiny_model, [request], pad_token_id=0, generator=torch.Generator())
    assert request.token_ids == [first]


def test_sampling_params_are_validated_with_actionable_errors():
    def parse(prompt, params):
        return parse_sampling_params(prompt, params, default_max_tokens=8, max_model_len=16,
                                     eos_ids=frozenset({2}))

    request = parse([1, 2, 3], {"temperature": 0.5, "top_k": 4, "top_p": 0.9, "logprobs": True,
                                "max_tokens": 100})
    assert (request.temperature, request.top_k, request.top_p) == (0.5, 4, 0.9)
    assert request.max_tokens == 13 and request.want_logprobs and request.stop_ids == {2}
    assert parse([1], {"ignore_eos": True}).stop_ids == frozenset()
    with pytest.raises(ValueError, match="repetition_penalty"):
        parse([1], {"repetition_penalty": 1.2})
    with pytest.raises(ValueError, match="max_model_len"):
        parse(list(range(16)), {})
