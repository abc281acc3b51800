"""EPO's loss and gradient through verl's fused log-prob / entropy path equal the unfused ones.

With ``actor_rollout_ref.model.use_fused_kernels=true`` verl replaces the causal LM's forward by one
that computes each token's log-prob and entropy from the last hidden states chunk by chunk
(``verl.models.transformers.dense_common.forward_with_torch_backend``, ``impl_backend=torch``),
never materialising the ``[tokens, vocab]`` logits; its backward takes a gradient for the entropy
as well. EPO's terms need exactly that gradient. Here a real tiny ``Qwen2ForCausalLM`` produces
verl-shaped outputs both ways, from the same weights, and ``epo_loss`` (verl's real ``ppo_loss`` plus
EPO's terms) is differentiated on every parameter. The unfused path is the FSDP engine's: logits
over temperature, ``logprobs_from_logits`` and ``entropy_from_logits``.

Only the torch backend runs here; the triton backend (``verl.utils.kernel.linear_cross_entropy``)
needs a GPU.
"""

import pytest
import torch
from test_loss import EPO, ROWS, VOCAB, make_batch, nested
from transformers import Qwen2Config, Qwen2ForCausalLM
from verl.models.transformers.dense_common import forward_with_torch_backend
from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits

from verl_epo.loss import epo_loss


def tiny_lm(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    return Qwen2ForCausalLM(config).float()


def lm_outputs(model: Qwen2ForCausalLM, data, fused: bool, temperature: float) -> dict:
    """verl-shaped outputs: nested (rows, prompt + response) log-probs and entropy, position t
    scoring token t + 1 (the last position wraps to the first, as verl's rolled labels)."""
    log_probs, entropy = [], []
    for row in range(len(ROWS)):
        seq = torch.cat([data["prompts"][row], data["responses"][row]]).unsqueeze(0)
        labels = torch.roll(seq, shifts=-1, dims=-1)
        if fused:
            out = forward_with_torch_backend(model, input_ids=seq, return_dict=True, temperature=temperature)
            lp, ent = out.log_probs[0], out.entropy[0]
        else:
            logits = model(input_ids=seq).logits[0] / temperature
            lp, ent = logprobs_from_logits(logits, labels[0]), entropy_from_logits(logits)
        log_probs.append(lp)
        entropy.append(ent)
    return {"log_probs": nested(log_probs), "entropy": nested(entropy)}


def loss_and_gradient(actor_config, fused: bool, part: str, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    data, _, _ = make_batch()
    model = tiny_lm()
    loss, _ = epo_loss(actor_config, lm_outputs(model, data, fused, temperature), data, epo=EPO, part=part)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert grad.numel() == sum(p.numel() for p in model.parameters())  # every parameter has a gradient
    return loss.detach(), grad


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("part", ["all", "epo"])
def test_fused_path_gives_epos_loss_and_gradient(actor_config, part, temperature):
    loss_u, grad_u = loss_and_gradient(actor_config, fused=False, part=part, temperature=temperature)
    loss_f, grad_f = loss_and_gradient(actor_config, fused=True, part=part, temperature=temperature)
    assert grad_u.norm() > 1e-3  # EPO's part alone moves the weights: the entropy carries a gradient
    torch.testing.assert_close(loss_f, loss_u, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_f, grad_u, rtol=1e-4, atol=1e-6)
