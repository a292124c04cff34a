"""The fast path's int4 weights (phikit.engines.fast.int4) on the CPU: packing, error bounds, the dequantized
prefill path, LoRA over them. The Triton GEMV itself is checked on CUDA (tests/test_gpu_fast.py)."""

import pytest

torch = pytest.importorskip("torch")

from phikit.engines.fast import int4  # noqa: E402


def test_quantize_packs_two_columns_a_byte_within_half_a_step():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 256, generator=g)
    packed, scales, mins = int4.quantize(w)
    assert packed.shape == (8, 128) and packed.dtype == torch.uint8 and scales.shape == mins.shape == (8, 2)
    q0 = ((w[0, 0] - mins[0, 0]) / scales[0, 0]).round().clamp(0, 15)
    q1 = ((w[0, 1] - mins[0, 0]) / scales[0, 0]).round().clamp(0, 15)
    assert packed[0, 0] == int(q0) | (int(q1) << 4)  # column 0 low nibble, column 1 high
    back = int4.dequantize(packed, scales, mins)
    step = scales.repeat_interleave(int4.GROUP, dim=1)
    assert ((back - w).abs() <= step / 2 + 1e-6).all()
    assert back.view(8, 2, 128).amin(-1).sub(w.view(8, 2, 128).amin(-1)).abs().max() < 1e-6  # min kept exactly
    with pytest.raises(ValueError, match="multiples of 128"):
        int4.quantize(torch.randn(4, 96))


def test_int4_linear_off_cuda_is_the_dequantized_matmul():
    lin = torch.nn.Linear(256, 64, bias=False)
    q = int4.Int4Linear.from_linear(lin)
    assert (q.in_features, q.out_features) == (256, 64)
    x = torch.randn(3, 1, 256)
    ref = torch.nn.functional.linear(x, int4.dequantize(q.packed, q.scales, q.mins))
    assert torch.equal(q(x), ref)
    assert ((q(x) - lin(x)).norm() / lin(x).norm()) < 0.15  # 4-bit rounding of a random weight


def test_fast_model_quantized_to_int4_runs_the_decode_loop_with_lora(tmp_path):
    """engine.quantize puts Int4Linear in every projection; prefill and the one-token step still run, their
    logits near the unquantized model's, and a LoRA adapter wraps the int4 projections."""
    from transformers import Phi3Config

    from phikit.engines.fast import generate as gen
    from phikit.engines.fast import lora
    from phikit.engines.fast.engine import quantize
    from phikit.engines.fast.model import ModelArgs, Transformer

    cfg = Phi3Config(vocab_size=300, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                     partial_rotary_factor=0.75, tie_word_embeddings=True)
    torch.manual_seed(0)
    ref = Transformer(ModelArgs.from_hf(cfg))
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.05)
    model = Transformer(ModelArgs.from_hf(cfg))
    model.load_state_dict(ref.state_dict())
    quantize(model, "int4")
    assert all(isinstance(layer.mlp.down_proj, int4.Int4Linear) for layer in model.model.layers)
    ids = torch.randint(0, 300, (1, 12))
    for m in (ref, model):
        m.setup_caches(1, 256)
    a = gen.prefill(ref, ids, torch.arange(12))
    b = gen.prefill(model, ids, torch.arange(12))
    assert ((a - b).norm() / a.norm()) < 0.1
    tok = b.argmax(-1, keepdim=True)
    step = gen.DecodeGraphs(model).step(tok, 12, 256)
    assert step.shape == (1, 300) and torch.isfinite(step).all()
    assert lora.attach(model, 4)
    assert isinstance(model.model.layers[0].self_attn.qkv_proj.base, int4.Int4Linear)
