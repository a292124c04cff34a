"""Full-sequence packing and the chunked loss (phikit.tune.packing): same loss and gradients as transformers'."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from phikit.tune.data import pack  # noqa: E402
from phikit.tune.packing import chunked_lm_loss, collate_groups, group_by_tokens  # noqa: E402


def tiny_phi3():
    cfg = transformers.Phi3Config(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                  pad_token_id=0, partial_rotary_factor=0.75)
    torch.manual_seed(0)
    return transformers.Phi3ForCausalLM(cfg).eval()


def rows(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(1, 320, (n,), generator=g).tolist()
        labels = [-100] * (n // 2) + ids[n // 2:]  # loss on the second half only, as on assistant tokens
        out.append({"input_ids": ids, "labels": labels})
    return out


def test_groups_respect_the_budget_and_keep_every_example():
    data = rows([50, 10, 30, 70, 20, 90, 5])
    groups = group_by_tokens(data, 100)
    sizes = [sum(len(r["input_ids"]) for r in g["examples"]) for g in groups]
    assert all(s <= 100 for s in sizes)
    assert sorted(len(r["input_ids"]) for g in groups for r in g["examples"]) == sorted([50, 10, 30, 70, 20, 90, 5])
    assert len(groups) == 3  # 275 tokens need at least 3 rows of 100; best-fit finds 3
    one = group_by_tokens(rows([150]), 100)  # longer than the budget: a step of its own
    assert len(one) == 1 and len(one[0]["examples"]) == 1


def test_chunked_loss_equals_transformers_loss_and_gradients():
    model = tiny_phi3()
    batch = collate_groups(group_by_tokens(rows([40, 25, 33]), 200))
    assert batch["input_ids"].shape == (1, 98)
    ref = model(**batch, use_cache=False)
    ref.loss.backward()
    ref_grad = model.model.layers[0].mlp.down_proj.weight.grad.clone()
    model.zero_grad()
    hidden = model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).last_hidden_state
    loss = chunked_lm_loss(hidden, model.lm_head, batch["labels"], chunk=16)  # several chunks, some all-ignored
    loss.backward()
    assert torch.allclose(loss, ref.loss, rtol=1e-5, atol=1e-6)
    assert torch.allclose(model.model.layers[0].mlp.down_proj.weight.grad, ref_grad, rtol=1e-4, atol=1e-7)


def test_chunked_loss_keeps_examples_apart_as_pack_does():
    model = tiny_phi3()
    data = rows([30, 30], seed=1)
    packed = pack(data)
    hidden = model.model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).last_hidden_state
    alone = model.model(input_ids=torch.tensor([data[1]["input_ids"]])).last_hidden_state
    assert torch.allclose(hidden[0, 30:], alone[0], atol=1e-5)  # the second example does not see the first


def test_qlora_preparation_keeps_the_embedding_bf16_and_trains():
    """prepare_qlora: base frozen and left bf16 (peft would make the tied embedding and the norms fp32), gradient
    checkpointing on; the base still runs outside autocast (evaluation), and a LoRA step under bf16 autocast
    gives the adapter finite, non-zero gradients."""
    from peft import LoraConfig, get_peft_model

    from phikit.tune.train import prepare_qlora

    model = tiny_phi3().to(torch.bfloat16)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    prepare_qlora(model)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in model.parameters())
    assert model.is_gradient_checkpointing
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "down_proj"],
                                            task_type="CAUSAL_LM"))
    ids = torch.tensor([r["input_ids"] for r in rows([24, 24])])
    with torch.no_grad():
        assert torch.isfinite(lora(input_ids=ids, labels=ids).loss)  # no autocast: as phikit's perplexity runs
    lora.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = lora(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for n, p in lora.named_parameters() if "lora_B" in n]  # A gets none while B is 0
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
