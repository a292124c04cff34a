"""The fast backend's model and decode loop against transformers' Phi-3, on CPU with a tiny random config.

Checks what the GPU path relies on without a GPU: same logits (LongRoPE short and long factor sets, partial
rotary, GQA, tied head), the same greedy tokens through the cached one-token steps (also across the
LongRoPE switch), the engine's events, stop strings and cancellation, and the clear refusal without CUDA.
The CUDA-graph capture itself is covered by tests/test_gpu_fast.py on the device.
"""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from phikit.engines.base import Done, SamplingParams, TextDelta  # noqa: E402
from phikit.engines.fast import generate as gen  # noqa: E402
from phikit.engines.fast.engine import FastEngine, build  # noqa: E402

ORIG = 64  # LongRoPE's switch point in the tiny config (Phi-4-mini: 4096)


def tiny_config(**overrides):
    from transformers import Phi3Config

    g = torch.Generator().manual_seed(1)
    rotary_half = int(16 * 0.75) // 2  # head_dim 16, partial rotary 0.75 -> 12 rotary dims, 6 factors
    rope = {"type": "longrope",
            "short_factor": (1 + torch.rand(rotary_half, generator=g)).tolist(),
            "long_factor": (1 + 8 * torch.rand(rotary_half, generator=g)).tolist()}
    kw = dict(vocab_size=640, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, partial_rotary_factor=0.75, tie_word_embeddings=True,
              max_position_embeddings=ORIG * 8, original_max_position_embeddings=ORIG, rope_scaling=rope,
              bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return Phi3Config(**{**kw, **overrides})


@pytest.fixture(scope="module")
def pair():
    """(transformers model, fast model) with the same random fp32 weights."""
    from transformers import Phi3ForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config()
    hf = Phi3ForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights, so a wrong norm cannot pass
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith(("qkv_proj.weight", "o_proj.weight", "gate_up_proj.weight", "down_proj.weight")):
                p.mul_(6.0)  # else the residual stream is the input embedding and greedy repeats the last token
    fast = build(cfg, hf.state_dict(), "cpu", torch.float32)
    return hf, fast


def prompt(n: int, seed: int) -> torch.Tensor:
    return torch.randint(1, 640, (1, n), generator=torch.Generator().manual_seed(seed))


def test_longrope_settings_read_from_config(pair):
    hf, fast = pair
    a = fast.args
    assert a.rotary_dim == 12 and a.head_dim == 16 and a.original_max_position == ORIG
    assert a.attention_factor == pytest.approx(hf.model.rotary_emb.attention_scaling)
    assert a.attention_factor > 1.0  # max_position / original = 8 -> sqrt(1 + ln 8 / ln 64)


@pytest.mark.parametrize("n", [20, ORIG, ORIG + 36])  # short factors, the boundary, long factors
def test_prefill_logits_match_transformers(pair, n):
    hf, fast = pair
    ids = prompt(n, seed=n)
    fast.setup_caches(1, gen.bucket(n))
    with torch.no_grad():
        ref = hf(ids).logits
        out = fast(ids, torch.arange(n), last_only=False)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_rope_factor_sets_differ(pair):
    """The long factors change the logits of a long prompt (so the test above could fail on a wrong switch)."""
    hf, fast = pair
    n = ORIG + 36
    ids = prompt(n, seed=7)
    fast.setup_caches(1, gen.bucket(n))
    with torch.no_grad():
        wrong = fast.long_rope, fast.step_rope
        fast.long_rope = fast.step_rope  # pretend there were no long factors
        try:
            out = fast(ids, torch.arange(n))
        finally:
            fast.long_rope, fast.step_rope = wrong
        ref = hf(ids).logits[:, -1:]
    assert (out - ref).abs().max() > 1e-3


@pytest.mark.parametrize("n", [ORIG - 10, ORIG + 20])  # decode crosses the switch; prefill already long
def test_cached_steps_match_transformers_cache(pair, n):
    """Teacher-forced on transformers' greedy tokens, each cached one-token step's logits equal transformers'
    own cached step's (so a near-tie can't make the test flaky, and LongRoPE's switch mid-decode is covered)."""
    from transformers import DynamicCache

    hf, fast = pair
    ids = prompt(n, seed=100 + n)
    steps = 24
    with torch.no_grad():
        ref = hf.generate(ids, max_new_tokens=steps, do_sample=False, pad_token_id=0)[0, n:]
        cache = DynamicCache()
        hf_logits = [hf(ids, past_key_values=cache, use_cache=True).logits[:, -1]]
        for tok in ref[:-1]:
            hf_logits.append(hf(tok.view(1, 1), past_key_values=cache, use_cache=True).logits[:, -1])
    kv_len = gen.bucket(n + steps)
    fast.setup_caches(1, kv_len)
    graphs = gen.DecodeGraphs(fast)
    fast_logits = [gen.prefill(fast, ids, torch.arange(n))]
    for i, tok in enumerate(ref[:-1]):
        fast_logits.append(graphs.step(tok.view(1, 1), n + i, kv_len).clone())
    for a, b in zip(fast_logits, hf_logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # free-running greedy equals transformers' greedy without a cache (each step a full forward: past the switch
    # every position uses the long factors, as the fast loop's one recompute there; the prompt of ORIG - 10
    # crosses it at the 11th new token). transformers >= 5.24's cached generate equals it; 5.17's drops its
    # cache at the switch and feeds only the last token (docs/bench-gpu.md), so it is not the reference.
    with torch.no_grad():
        full = hf.generate(ids, max_new_tokens=steps, do_sample=False, pad_token_id=0, use_cache=False)[0, n:]
    out = gen.generate(fast, graphs, ids, steps)[0]
    assert out.tolist() == full.tolist()


def test_decode_logits_match_transformers_step_by_step(pair):
    """Each cached one-token step's logits equal a full forward of the whole sequence."""
    hf, fast = pair
    ids = prompt(ORIG - 3, seed=3)
    t = ids.shape[1]
    kv_len = gen.bucket(t + 8)
    fast.setup_caches(1, kv_len)
    logits = gen.prefill(fast, ids, torch.arange(t))
    seq = ids
    graphs = gen.DecodeGraphs(fast)
    for i in range(8):  # crosses position ORIG
        tok = logits.argmax(-1, keepdim=True)
        seq = torch.cat([seq, tok], dim=1)
        logits = graphs.step(tok, t + i, kv_len).clone()
        with torch.no_grad():
            hf_logits = hf(seq).logits[:, -1] if seq.shape[1] <= ORIG else None
        if hf_logits is not None:  # past ORIG, transformers' full forward uses long factors everywhere
            torch.testing.assert_close(logits, hf_logits, rtol=1e-5, atol=1e-5)


@pytest.fixture
def layer_step_on():
    """The one-token step through ``STEP.layer`` (what compile_layers sets), undone afterwards."""
    from phikit.engines.fast import model as model_mod

    yield model_mod
    model_mod.STEP.__init__()


@pytest.mark.parametrize("compiled", [False, True])
def test_layer_step_equals_block_steps(pair, layer_step_on, compiled):
    """The per-layer step (the residual add fused with the next layer's norm, the final norm after the last
    layer) gives the Block-by-Block step's logits; compiled, dynamo traces one graph that every layer reuses
    (what makes the regional compile short), and the same graph serves every cache-length bucket, one as long
    as the whole cache included."""
    from torch._dynamo.utils import counters

    _, fast = pair
    ids = prompt(40, seed=4)
    fast.setup_caches(1, 2 * gen.MIN_BUCKET)

    def steps(kv_len):
        graphs = gen.DecodeGraphs(fast)
        logits, out = gen.prefill(fast, ids, torch.arange(40)), []
        for i in range(6):
            tok = logits.argmax(-1, keepdim=True)
            logits = graphs.step(tok, 40 + i, kv_len).clone()
            out.append(logits)
        return torch.stack(out)

    want = steps(gen.MIN_BUCKET)
    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(layer_step_on.layer_step, fullgraph=True, backend="eager") if compiled else layer_step_on.layer_step
    layer_step_on.STEP.__init__(layer=step)
    for kv_len in (gen.MIN_BUCKET, 2 * gen.MIN_BUCKET, 2 * gen.MIN_BUCKET - 128):  # the second: the whole cache
        torch.testing.assert_close(steps(kv_len), want, rtol=1e-5, atol=1e-5)
    assert fast.args.n_layer > 1
    assert counters["stats"]["unique_graphs"] == (1 if compiled else 0)


def test_compile_cache_kept_in_phikit_cache_unless_set(tmp_path, monkeypatch):
    monkeypatch.setenv("PHIKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    gen.keep_compile_cache()
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")
    gen.keep_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"


def test_bucket_sizes():
    assert gen.bucket(1) == gen.MIN_BUCKET
    assert gen.bucket(1025) == 2048 and gen.bucket(2048) == 2048
    assert gen.bucket(5000, limit=4096) == 4096


@pytest.fixture(scope="module")
def engine(pair):
    from phikit.stand_in import tiny_tokenizer

    _, fast = pair
    return FastEngine.from_model(fast, tiny_tokenizer(), name="tiny-phi3")


def run(engine, params: SamplingParams):
    events = list(engine.generate([{"role": "user", "content": "What is the capital of France?"}], params))
    assert all(isinstance(e, TextDelta) for e in events[:-1]) and isinstance(events[-1], Done)
    return events[-1]


def test_engine_matches_transformers_engine(engine, pair):
    from phikit.engines.transformers import TransformersEngine
    from phikit.models import ModelRef

    hf, _ = pair
    ref = TransformersEngine(ModelRef("tiny", "tiny", "hf"), precision="fp32", device="cpu", model=hf,
                            tokenizer=engine.tokenizer)
    params = SamplingParams(max_new_tokens=12, temperature=0)
    fast_done, hf_done = run(engine, params), run(ref, params)
    assert fast_done.token_ids == hf_done.token_ids and fast_done.text == hf_done.text
    assert fast_done.usage == hf_done.usage and fast_done.finish_reason == "length"
    sampled = SamplingParams(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=5)
    assert run(engine, sampled).token_ids == run(engine, sampled).token_ids  # seeded sampling repeats


def test_engine_stop_strings_and_cancellation(engine):
    full = run(engine, SamplingParams(max_new_tokens=16, temperature=0))
    assert len(full.text) > 2
    stop = full.text[len(full.text) // 2:][:2]
    cut = run(engine, SamplingParams(max_new_tokens=16, temperature=0, stop=(stop,)))
    assert cut.finish_reason == "stop" and stop not in cut.text and full.text.startswith(cut.text)
    cancel = threading.Event()
    cancel.set()
    done = run(engine, SamplingParams(max_new_tokens=16, temperature=0, cancel=cancel))
    assert done.finish_reason == "cancelled" and done.usage.completion_tokens == 1


def test_logits_processor_applies(engine):
    banned = set(run(engine, SamplingParams(max_new_tokens=8, temperature=0)).token_ids)

    def ban(seen, logits):
        logits = logits.clone()
        logits[list(banned)] = float("-inf")
        return logits

    done = run(engine, SamplingParams(max_new_tokens=8, temperature=0, logits_processors=(ban,)))
    assert done.token_ids and not banned & set(done.token_ids)


def test_fast_backend_refuses_without_cuda(monkeypatch):
    from phikit.engines import load_engine
    from phikit.errors import PhikitError
    from phikit.models import ModelRef

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PhikitError, match="the fast backend needs CUDA"):
        load_engine(ModelRef("x", "/nonexistent", "hf"), backend="fast")


def test_gemv_dispatch_keeps_cublas_off_its_cases():
    """The Triton GEMV is taken only for one bf16 row on CUDA with a block configuration; the fast model's
    projections keep nn.Linear's state-dict layout, so checkpoints load unchanged."""
    import torch

    from phikit.engines.fast import gemv

    w = torch.randn(3072, 3072, dtype=torch.bfloat16)
    x = torch.randn(1, 1, 3072, dtype=torch.bfloat16)
    assert not gemv.usable(x, w)  # CPU
    assert torch.equal(gemv.linear(x, w), torch.nn.functional.linear(x, w))
    assert gemv.block_config(3072, 8192) == (1, 512, 8, 3) and gemv.block_config(64, 96) is None
    lin = gemv.Linear(8, 4)
    assert list(lin.state_dict()) == ["weight"] and isinstance(lin, torch.nn.Linear)
