"""GPU: the fast backend's CUDA-graph decode loop on Phi-4-mini's shape (4 layers, random weights, LongRoPE).

Skipped without CUDA (see conftest). The full-size speed and 20-prompt equality figures come from
bench/gpu_fast_bench.py (docs/bench-gpu.md).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def eager_pieces_after():
    """Compiled pieces are process-wide (an engine built with ``compile=True`` switches them on): undo them
    after each test, so the CPU tests that run after these in one session stay eager."""
    yield
    from phikit.engines.fast import generate as gen

    gen.uncompile_ops()


@pytest.fixture(scope="module")
def pair():
    import torch
    from transformers import Phi3ForCausalLM

    from phikit.engines.fast.engine import build
    from phikit.stand_in import phi4_mini_config

    torch.manual_seed(0)
    cfg = phi4_mini_config(num_hidden_layers=4)
    # bf16 as the default dtype while building, as from_pretrained(dtype=bf16) does: `.to(bf16)` afterwards
    # would also round transformers' fp32 rotary frequencies (a buffer) and change its reference outputs.
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            hf = Phi3ForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    hf.generation_config.eos_token_id = None
    return hf, build(cfg, hf.state_dict(), "cuda")


def ids(n: int, seed: int):
    import torch

    return torch.randint(100, 190000, (1, n), generator=torch.Generator().manual_seed(seed)).cuda()


@pytest.mark.parametrize("compiled", [None, "ops", "layers"])
def test_graph_replay_matches_eager_steps(pair, compiled):
    """The captured step computes what the eager step computes, and capturing mid-generation (after prefill)
    leaves the prompt's cache intact; graphs are kept per (batch, cache bucket)."""
    import torch

    from phikit.engines.fast import generate as gen

    _, model = pair
    if compiled:  # undone after the test (eager_pieces_after)
        assert {"ops": gen.compile_ops, "layers": gen.compile_layers}[compiled]()
    n = 300
    kv_len = gen.bucket(n + 8)
    model.setup_caches(1, kv_len)
    eager, graphs = gen.DecodeGraphs(model, enabled=False), gen.DecodeGraphs(model)
    assert graphs.enabled and not eager.enabled
    with torch.inference_mode():
        tok = gen.prefill(model, ids(n, seed=1), torch.arange(n, device="cuda")).argmax(-1, keepdim=True)
        for i in range(8):
            a = eager.step(tok, n + i, kv_len).clone()
            b = graphs.step(tok, n + i, kv_len).clone()
            assert ((a - b).norm() / a.norm()).item() < 2e-3
            tok = a.argmax(-1, keepdim=True)
    assert list(graphs.graphs) == [(1, kv_len)]


@pytest.mark.parametrize("shape", [(5120, 3072), (3072, 3072), (16384, 3072), (3072, 8192), (200064, 3072)])
def test_triton_gemv_matches_fp32_reference(shape):
    """Phi-4-mini's projections at batch 1 through the Triton GEMV: as close to the fp32 product as cuBLAS's
    bf16 GEMV is; a batch of two rows stays on cuBLAS."""
    import torch
    import torch.nn.functional as F

    from phikit.engines.fast import gemv

    n, k = shape
    g = torch.Generator(device="cuda").manual_seed(n)
    w = (torch.randn(n, k, device="cuda", generator=g) / k**0.5).to(torch.bfloat16)
    x = torch.randn(1, 1, k, device="cuda", generator=g).to(torch.bfloat16)
    assert gemv.usable(x, w)
    ref = F.linear(x.float(), w.float())
    err = lambda y: ((y.float() - ref).norm() / ref.norm()).item()  # noqa: E731
    assert err(gemv.linear(x, w)) <= max(2 * err(F.linear(x, w)), 1e-3)
    assert not gemv.usable(torch.cat([x, x]), w)


@pytest.mark.parametrize("n", [500, 4500])  # short and long LongRoPE factors
def test_greedy_agrees_with_transformers_bf16(pair, n):
    """bf16 kernels differ in summation order, so random-weight logits (small margins) may part after a while;
    the first token agrees (bench/gpu_fast_bench.py reports the full agreement and the fp32 check)."""
    import torch

    from phikit.engines.fast import generate as gen

    hf, model = pair
    prompt = ids(n, seed=n)
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False,
                          pad_token_id=0)[0, n:]
    out = gen.generate(model, gen.DecodeGraphs(model), prompt, 16)[0]
    assert out[:1].tolist() == ref[:1].tolist()


def test_prefill_logits_close_to_transformers(pair):
    import torch

    hf, model = pair
    for n in (700, 4300):
        prompt = ids(n, seed=2 * n)
        model.setup_caches(1, 8192)
        with torch.inference_mode():
            ref = hf(prompt).logits[:, -1].float()
            out = model(prompt, torch.arange(n, device="cuda"))[:, -1].float()
        rel = ((out - ref).norm() / ref.norm()).item()
        assert rel < 2e-2, (n, rel)


def test_lora_through_captured_graphs(tmp_path):
    """An adapter applied unmerged under CUDA graphs: it changes the greedy tokens, "none" gives the base's
    exactly, and switching back and forth needs no reload (the graphs read the LoRA buffers in place)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Phi3ForCausalLM

    from phikit.engines.base import SamplingParams
    from phikit.engines.fast import lora
    from phikit.engines.fast.engine import FastEngine, build
    from phikit.stand_in import phi4_mini_config, tiny_tokenizer

    torch.manual_seed(0)
    cfg = phi4_mini_config(num_hidden_layers=2)
    hf = Phi3ForCausalLM(cfg)
    model = build(cfg, hf.state_dict(), "cuda")  # before peft wraps hf's modules in place
    tuned = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, target_modules=list(lora.TARGETS), init_lora_weights=False))
    for name, p in tuned.named_parameters():
        if "lora_B" in name:
            p.data.mul_(20)  # a strong adapter, so greedy tokens differ even on random weights
    tuned.save_pretrained(tmp_path / "strong")
    engine = FastEngine.from_model(model, tiny_tokenizer(), compile=True)
    msgs = [{"role": "user", "content": "Who makes the Zorblax-7?"}]
    params = SamplingParams(max_new_tokens=24, temperature=0)

    def tokens(adapter=None):
        return list(engine.generate(msgs, params, adapter=adapter))[-1].token_ids

    base = tokens()
    strong = tokens(str(tmp_path / "strong"))
    assert strong != base
    assert tokens("none") == base and tokens(str(tmp_path / "strong")) == strong


def test_slots_through_captured_graphs_equal_one_at_a_time():
    """Continuous batching on CUDA (one graph per batch/length bucket, rows at their own positions): fp32
    outputs equal the one-request loop's, as on the CPU (tests/test_fast_slots.py)."""
    from test_fast_slots import SamplingParams, cold, engines, ids, together

    ref, bat = engines("cuda")
    assert bat.graphs.enabled
    greedy = SamplingParams(max_new_tokens=12, temperature=0)
    jobs = [(ids(n, n), greedy) for n in (9, 23, 58, 31, 14)]
    jobs.append((ids(31, 4), SamplingParams(max_new_tokens=12, temperature=0.9, top_p=0.9, seed=7)))
    assert together(bat, jobs) == [cold(ref, p, params) for p, params in jobs]
    assert bat.batcher.stats.mean_batch > 1.5 and {k[0] for k in bat.graphs.graphs} >= {4}


def test_slots_bf16_phi4_shape_agreement(pair):
    """bf16, Phi-4-mini's shape (4 layers): batched greedy tokens against one at a time. The first token comes
    from the same prefill kernel (must be equal); later ones run batch-size-dependent GEMMs, so bf16 rounding
    can flip a near-tie on random weights: the agreement is printed, not asserted beyond the first token."""
    import torch

    from phikit.engines.fast.engine import FastEngine
    from phikit.stand_in import tiny_tokenizer
    from test_fast_slots import SamplingParams, cold, together

    _, model = pair
    eng = FastEngine.from_model(model, tiny_tokenizer(), name="phi4-4l")
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(100, 190000, (n,), generator=g).tolist() for n in (40, 300, 520, 1000, 77, 150, 600, 90)]
    params = SamplingParams(max_new_tokens=32, temperature=0)
    singles = [cold(eng, p, params) for p in prompts]
    eng.enable_batching(8, cache_len=2048)
    batched = together(eng, [(p, params) for p in prompts])
    assert [b[0] for b in batched] == [s[0] for s in singles]
    equal = sum(a == b for x, y in zip(batched, singles) for a, b in zip(x, y))
    prefix = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), 32) for x, y in zip(batched, singles)]
    print(f"bf16 batched vs one at a time: {equal}/{32 * len(prompts)} tokens equal, equal prefixes {prefix}")
