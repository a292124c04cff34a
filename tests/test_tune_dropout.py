"""LoRA dropout shared by the projections that read one input (phikit.tune.dropout)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from phikit.tune.dropout import SharedDropout, share_dropout  # noqa: E402


def tiny_llama_with_lora(p: float):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
    cfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=p, init_lora_weights=False,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    return peft.get_peft_model(model, cfg)


def test_one_mask_per_input_tensor_and_a_new_one_for_a_new_tensor():
    drop = SharedDropout(0.5).train()
    x = torch.ones(64, 64)
    a, b = drop(x), drop(x)
    assert a is b  # q, k and v on one hidden state: one mask
    c = drop(x.clone())
    assert not torch.equal(a, c)  # another input: another mask
    assert set(a.unique().tolist()) <= {0.0, 2.0}  # inverted dropout, scaled by 1 / (1 - p)
    assert drop.eval()(x) is x


def test_the_rate_is_kept():
    drop = SharedDropout(0.05).train()
    dropped = (drop(torch.ones(1000, 1000)) == 0).float().mean().item()
    assert abs(dropped - 0.05) < 0.002


def test_a_llama_layer_draws_four_masks_instead_of_seven(monkeypatch):
    model = tiny_llama_with_lora(0.05)
    assert share_dropout(model) == 14  # 7 projections x 2 layers
    draws = []
    real = torch.nn.functional.dropout
    monkeypatch.setattr(torch.nn.functional, "dropout", lambda *a, **k: draws.append(1) or real(*a, **k))
    model.train()
    model(torch.randint(0, 100, (1, 12)))
    assert len(draws) == 8  # per layer: attention input, o_proj input, MLP input, down_proj input


def test_eval_outputs_and_gradients_flow_as_without_sharing():
    shared, plain = tiny_llama_with_lora(0.05), tiny_llama_with_lora(0.05)
    share_dropout(shared)
    ids = torch.randint(0, 100, (1, 12))
    shared.eval(), plain.eval()
    assert torch.equal(shared(ids).logits, plain(ids).logits)  # eval: dropout is the identity either way
    shared.train()
    shared(ids).logits.sum().backward()
    grads = [p.grad for n, p in shared.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_zero_rate_keeps_peft_identity():
    model = tiny_llama_with_lora(0.0)
    assert share_dropout(model) == 0
