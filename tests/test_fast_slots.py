"""Continuous batching on the fast path (engines/fast/slots.py), on CPU with a tiny random Phi-3 (no graphs).

Batched and prefix-reused outputs must equal the one-request-at-a-time loop's: greedy and seeded sampling,
prompts of different lengths decoding side by side, across LongRoPE's switch; cancellation frees the slot;
a prompt past the switch is not reused (its cold prefill uses the long factors everywhere).
"""

from __future__ import annotations

import itertools
import threading

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from phikit.engines.base import SamplingParams  # noqa: E402
from phikit.engines.fast import generate as gen  # noqa: E402
from phikit.engines.fast.engine import FastEngine, build  # noqa: E402
from phikit.engines.fast.slots import batch_bucket  # noqa: E402
from phikit.errors import BadRequestError  # noqa: E402
from test_fast_model import ORIG, tiny_config  # noqa: E402  (tests/ is on sys.path under pytest)


def engines(device: str = "cpu"):
    """(one-at-a-time engine, batching engine with 4 slots) over two copies of the same fp32 weights.

    The attention and MLP weights are scaled up: at the default init a tiny model's residual stream is its
    input embedding, so with a tied head it greedily repeats the last token whatever the context, and a
    wrong attention mask could not change its output.
    """
    from transformers import Phi3ForCausalLM

    from phikit.stand_in import tiny_tokenizer

    torch.manual_seed(0)
    cfg = tiny_config()
    sd = Phi3ForCausalLM(cfg).eval().state_dict()
    for name, w in sd.items():
        if name.endswith(("qkv_proj.weight", "o_proj.weight", "gate_up_proj.weight", "down_proj.weight")):
            w.mul_(SCALE)
    tok = tiny_tokenizer()
    ref = FastEngine.from_model(build(cfg, sd, device, torch.float32), tok, name="tiny")
    bat = FastEngine.from_model(build(cfg, {k: v.clone() for k, v in sd.items()}, device, torch.float32), tok, name="tiny")
    assert bat.enable_batching(4, cache_len=ORIG * 4) == 4 and bat.max_concurrency == 4
    return ref, bat


@pytest.fixture(scope="module")
def pair():
    return engines()


SCALE = 6.0


def ids(n: int, seed: int, prefix: list[int] = ()) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return [*prefix, *torch.randint(1, 640, (n - len(prefix),), generator=g).tolist()]


def cold(ref: FastEngine, prompt: list[int], params: SamplingParams) -> list[int]:
    return list(itertools.islice(ref.token_steps(prompt, params), params.max_new_tokens))


def together(bat: FastEngine, jobs: list[tuple[list[int], SamplingParams]]) -> list[list[int]]:
    """Submit every job from its own thread at once; each thread's tokens, in job order."""
    out: list[list[int]] = [[] for _ in jobs]
    start = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        start.wait()
        out[i] = list(bat.token_steps(*jobs[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_batched_outputs_equal_one_at_a_time(pair):
    ref, bat = pair
    greedy = SamplingParams(max_new_tokens=10, temperature=0)
    seeded = SamplingParams(max_new_tokens=10, temperature=0.9, top_p=0.9, seed=7)
    # five requests for four slots (one waits, then joins mid-batch); 58 + 10 crosses LongRoPE's switch at 64
    jobs = [(ids(9, 1), greedy), (ids(23, 2), greedy), (ids(58, 3), greedy), (ids(31, 4), seeded),
            (ids(14, 5), SamplingParams(max_new_tokens=6, temperature=0))]
    steps0 = bat.batcher.stats.steps
    got = together(bat, jobs)
    assert got == [cold(ref, p, params) for p, params in jobs]
    stats = bat.batcher.stats
    assert stats.active == 0 and stats.steps > steps0
    assert stats.mean_batch > 1.5  # sequences really shared steps


def test_prefix_reuse_equals_cold_prefill(pair):
    ref, bat = pair
    params = SamplingParams(max_new_tokens=8, temperature=0)
    shared = ids(40, 11)
    first, second = ids(50, 12, shared), ids(47, 13, shared)
    assert together(bat, [(first, params)]) == [cold(ref, first, params)]
    reused0 = bat.batcher.stats.reused_tokens
    assert together(bat, [(second, params)]) == [cold(ref, second, params)]
    assert bat.batcher.stats.reused_tokens - reused0 == 40  # the shared prefix was not prefilled again


def test_prompt_past_the_longrope_switch_is_not_reused(pair):
    ref, bat = pair
    params = SamplingParams(max_new_tokens=6, temperature=0)
    shared = ids(60, 21)
    long_a, long_b = ids(ORIG + 10, 22, shared), ids(ORIG + 12, 23, shared)
    reused0 = bat.batcher.stats.reused_tokens
    assert together(bat, [(long_a, params)]) == [cold(ref, long_a, params)]
    assert together(bat, [(long_b, params)]) == [cold(ref, long_b, params)]
    assert bat.batcher.stats.reused_tokens == reused0


def test_cancel_frees_the_slot(pair):
    _, bat = pair
    cancel = threading.Event()
    it = bat.token_steps(ids(12, 31), SamplingParams(max_new_tokens=100, temperature=0, cancel=cancel))
    first = next(it)
    assert isinstance(first, int) and bat.batcher.stats.active == 1
    cancel.set()
    assert len(list(it)) < 99
    assert bat.batcher.stats.active == 0


def test_too_long_prompt_is_an_error_for_that_request_only(pair):
    ref, bat = pair
    params = SamplingParams(max_new_tokens=4, temperature=0)
    with pytest.raises(BadRequestError, match="does not fit a slot"):
        list(bat.token_steps(ids(ORIG * 4, 41), params))
    ok = ids(10, 42)
    assert together(bat, [(ok, params)]) == [cold(ref, ok, params)]


def test_outputs_depend_on_context(pair):
    """The check the tests above rely on: greedy tokens are not just the last prompt token repeated."""
    ref, _ = pair
    params = SamplingParams(max_new_tokens=10, temperature=0)
    outs = [cold(ref, ids(30, s), params) for s in range(3)]
    assert all(len(set(o)) > 3 for o in outs)
    same_end = ids(30, 51)[:-1] + [outs[0][0]]  # another context ending in the same token
    assert cold(ref, same_end, params) != cold(ref, ids(30, 52)[:-1] + [outs[0][0]], params)


def test_prefix_reuse_prefill_logits_equal_cold(pair):
    """Prefilling only the suffix over a slot's cached prefix gives the cold prefill's logits."""
    ref, _ = pair
    m = ref.model
    shared = ids(40, 61)
    full = ids(47, 62, shared)
    m.setup_caches(2, ORIG * 4)
    cold_logits = gen.prefill(m, torch.tensor([full]), torch.arange(47))
    gen.prefill(m, torch.tensor([shared]), torch.arange(40), slot=1)
    warm = gen.prefill(m, torch.tensor([full[40:]]), torch.arange(40, 47), slot=1, start=40)
    torch.testing.assert_close(warm, cold_logits, rtol=1e-5, atol=1e-5)


def test_prefill_rows_equals_one_row_prefills(pair):
    """Prefilling several slots in one forward (different lengths, one row after a cached prefix, padding at
    the scratch position) gives each row its own prefill's logits and the same KV cache."""
    ref, _ = pair
    m = ref.model
    m.setup_caches(4, ORIG * 4)
    shared = ids(20, 81)
    prompts = [ids(9, 82), ids(33, 83, shared), ids(60, 84)]  # the longest ends just below LongRoPE's switch
    singles = [gen.prefill(m, torch.tensor([p]), torch.arange(len(p)))[0] for p in prompts]
    cache_row0 = m.model.layers[-1].self_attn.k_cache[0, :, :60].clone()  # prompts[2]'s keys, prefilled last
    gen.prefill(m, torch.tensor([shared]), torch.arange(20), slot=3)  # slot 3 holds the shared prefix
    starts, slots = [0, 20, 0], [1, 3, 2]
    todo = [p[s:] for p, s in zip(prompts, starts)]
    width, scratch = max(map(len, todo)), m.max_len - 1
    tokens = torch.tensor([t + [0] * (width - len(t)) for t in todo])
    positions = torch.tensor([list(range(s, s + len(t))) + [scratch] * (width - len(t)) for s, t in zip(starts, todo)])
    got = m.prefill_rows(tokens, positions, torch.tensor(slots), torch.tensor([len(t) - 1 for t in todo]), kv_len=60)
    for row in range(3):
        torch.testing.assert_close(got[row], singles[row], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m.model.layers[-1].self_attn.k_cache[2, :, :60], cache_row0)


def test_prefill_graphs_padded_prompt_equals_plain_prefill(pair):
    """PrefillGraphs (on CPU: the same padded forward, run eagerly) pads a prompt to its length bucket; the
    logits equal a plain prefill's, cold and after a cached prefix; a prompt past the switch does not fit and
    is prefilled eagerly."""
    ref, _ = pair
    m = ref.model
    m.setup_caches(2, ORIG * 4)
    prefills = gen.PrefillGraphs(m)
    full = ids(45, 91)  # padded to the 64 bucket
    cold_logits = gen.prefill(m, torch.tensor([full]), torch.arange(45))[0]
    torch.testing.assert_close(prefills.prefill(full, 0, 1), cold_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prefills.prefill(full[30:], 30, 1), cold_logits, rtol=1e-5, atol=1e-5)  # row 1 holds 30
    assert prefills.fits(ORIG, 0) and not prefills.fits(ORIG - 5, 10)
    long = ids(ORIG + 6, 92)  # does not fit: the eager prefill (long factors), same logits as calling it
    torch.testing.assert_close(prefills.prefill(long, 0, 1), gen.prefill(m, torch.tensor([long]), torch.arange(ORIG + 6))[0])


@pytest.mark.parametrize("graph_tokens", [2048, 64])
def test_prefill_graphs_rows_equal_one_row_prefills(pair, monkeypatch, graph_tokens):
    """PrefillGraphs.prefill_rows pads 3 rows (one after a cached prefix) to the 4-row, 64-token bucket, a
    padding row at the scratch position: each row's logits and keys equal its own plain prefill. Past the
    buckets (``GRAPH_TOKENS`` 64) the rows go through the eager forward instead, with the same result."""
    monkeypatch.setattr(gen, "GRAPH_TOKENS", graph_tokens)
    ref, _ = pair
    m = ref.model
    m.setup_caches(4, ORIG * 4)
    prefills = gen.PrefillGraphs(m)
    shared = ids(20, 101)
    prompts = [ids(9, 102), ids(33, 103, shared), ids(50, 104)]
    singles, keys = [], []
    for p in prompts:  # each alone in slot 0
        singles.append(gen.prefill(m, torch.tensor([p]), torch.arange(len(p)))[0])
        keys.append(m.model.layers[-1].self_attn.k_cache[0, :, :len(p)].clone())
    gen.prefill(m, torch.tensor([shared]), torch.arange(20), slot=3)  # slot 3 holds the shared prefix
    starts, slots = [0, 20, 0], [1, 3, 2]
    assert prefills.shape([9, 13, 50]) == ((4, 64) if graph_tokens == 2048 else None)
    got = prefills.prefill_rows([p[s:] for p, s in zip(prompts, starts)], starts, slots)
    assert got.shape == (3, m.args.vocab_size)
    for row, slot in enumerate(slots):
        torch.testing.assert_close(got[row], singles[row], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(m.model.layers[-1].self_attn.k_cache[slot, :, :len(prompts[row])], keys[row],
                                   rtol=1e-5, atol=1e-5)


def test_batched_step_logits_equal_single_rows(pair):
    """One decode step over rows at different positions (per-row rotary, cache write and mask) gives each
    row the logits of its own one-row step; an idle row at the scratch position changes nothing."""
    ref, _ = pair
    m = ref.model
    m.setup_caches(4, ORIG * 4)
    prompts = [ids(n, 70 + n) for n in (9, 33, 63)]  # the last steps across LongRoPE's switch at 64
    nxt = [5, 17, 29]
    singles = []
    for p, t in zip(prompts, nxt):
        gen.prefill(m, torch.tensor([p]), torch.arange(len(p)))
        singles.append(gen.decode_one_token(m, torch.tensor([[t]]), torch.tensor([len(p)]), 128)[0])
    for row, p in enumerate(prompts):
        gen.prefill(m, torch.tensor([p]), torch.arange(len(p)), slot=row)
    positions = torch.tensor([len(p) for p in prompts] + [m.max_len - 1])  # row 3 idle
    batched = gen.decode_one_token(m, torch.tensor([[t] for t in nxt] + [[0]]), positions, 128)
    for row in range(3):
        torch.testing.assert_close(batched[row], singles[row], rtol=1e-5, atol=1e-5)


def test_batch_bucket():
    assert [batch_bucket(n, 32) for n in (1, 2, 3, 5, 17, 40)] == [1, 2, 4, 8, 32, 32]
