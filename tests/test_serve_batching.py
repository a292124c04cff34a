"""Continuous batching on llama.cpp (engines/llamacpp_batch.py): batched and prefix-reused greedy outputs
equal one-at-a-time and cold ones, per-sequence parameters and constraints, cancellation, adapter groups,
and the server's slot counters. Embedded SmolLM2-135M, 1,024-token slots, short greedy generations."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from phikit.engines import Done, SamplingParams, TextDelta

QUESTIONS = [
    "What is the capital of France?",
    "List five animal names, one per line.",
    "Write a short story about a dragon who learns to cook.",
    "Explain how a bicycle works.",
    "Give three tips for sleeping well.",
    "Describe a walk through a busy city market.",
]
# A long shared system prompt, as every support-bot request carries (tools block, KB instructions).
SYSTEM = ("You are the support assistant of Zorblax Ltd. Answer briefly and politely. " * 12).strip()
GREEDY = SamplingParams(temperature=0, max_new_tokens=20)


@pytest.fixture(scope="module")
def engine():
    import phikit

    eng = phikit.load("smollm2-135m", backend="llamacpp", n_ctx=1024).engine
    assert eng.enable_batching(4) == 4
    return eng


def ids_of(engine, question: str, system: str | None = None) -> list[int]:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return engine.encode_prompt(msgs)


def tokens(engine, ids: list[int], params: SamplingParams = GREEDY) -> list[int]:
    return list(engine.batcher.submit(ids, params))


def together(engine, prompts: list[list[int]], params: SamplingParams = GREEDY) -> list[list[int]]:
    """Submit every prompt at once (they share decode steps) and drain them from threads."""
    its = [engine.batcher.submit(p, params) for p in prompts]
    out: list[list[int]] = [[] for _ in its]
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, list(its[i]))) for i in range(len(its))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def cold(engine, ids: list[int], params: SamplingParams = GREEDY) -> list[int]:
    """The same sequence with the prefix cache off: prefilled from position 0."""
    engine.batcher.prefix_cache = False
    try:
        return tokens(engine, ids, params)
    finally:
        engine.batcher.prefix_cache = True


def test_batched_greedy_equals_one_at_a_time(engine):
    prompts = [ids_of(engine, q) for q in QUESTIONS]
    alone = [tokens(engine, p) for p in prompts]
    steps_before = engine.batcher.stats.steps
    batched = together(engine, prompts)
    assert engine.batcher.stats.steps - steps_before < sum(len(t) for t in batched)  # steps were shared
    same = sum(a == b for a, b in zip(alone, batched))
    # Same build, same slots: measured 6/6 identical; llama.cpp's batched kernels may differ in the last
    # bits from single-sequence ones, so the bound is a rate (BRIEF: a 135M model's greedy path is fragile).
    assert same >= len(prompts) - 1, f"{same}/{len(prompts)} identical"


def test_batched_greedy_equals_the_single_slot_engine(engine):
    """The batcher's sequences against the engine's own one-slot path (llama_cpp.Llama.generate)."""
    import phikit

    single = phikit.load("smollm2-135m", backend="llamacpp", n_ctx=1024, prefix_cache=False).engine
    msgs = [[{"role": "user", "content": q}] for q in QUESTIONS[:4]]
    ref = [list(ev for ev in single.generate(m, GREEDY))[-1].token_ids for m in msgs]
    batched = together(engine, [engine.encode_prompt(m) for m in msgs])
    batched = [tuple(t for t in ids if t not in engine.eos_ids) for ids in batched]
    assert sum(a == b for a, b in zip(ref, batched)) >= len(msgs) - 1


def test_prefix_reuse_equals_a_cold_run(engine):
    first = ids_of(engine, QUESTIONS[0], SYSTEM)
    tokens(engine, first)  # a slot now holds the system prompt's KV
    for q in QUESTIONS[1:4]:
        ids = ids_of(engine, q, SYSTEM)
        reused_before = engine.batcher.stats.reused_tokens
        warm = tokens(engine, ids)
        reused = engine.batcher.stats.reused_tokens - reused_before
        assert reused >= len(engine.encode(SYSTEM)), reused  # the whole system prompt came from the cache
        assert warm == cold(engine, ids)


def test_each_sequence_keeps_its_own_sampling_and_seed(engine):
    """Sequences in one batch keep their own parameters: top_k=1 decodes greedily next to hot sampling, and a
    seed reproduces its draws."""
    ids = ids_of(engine, QUESTIONS[2])
    hot = SamplingParams(temperature=1.5, seed=3, max_new_tokens=20)
    its = [engine.batcher.submit(ids, SamplingParams(temperature=1.0, top_k=1, seed=5, max_new_tokens=20)),
           engine.batcher.submit(ids, hot), engine.batcher.submit(ids, GREEDY)]
    top1, sampled, greedy = [list(it) for it in its]
    assert top1 == greedy and sampled != greedy
    seeded = SamplingParams(temperature=0.9, seed=7, max_new_tokens=20)
    assert tokens(engine, ids, seeded) == tokens(engine, ids, seeded)
    assert tokens(engine, ids, seeded) != tokens(engine, ids, SamplingParams(temperature=0.9, seed=8, max_new_tokens=20))


def test_constraint_applies_to_its_own_sequence_only(engine):
    """A JSON-schema request and a plain one decode together; only the first is constrained."""
    import phikit

    llm = phikit.LLM(engine)
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    out: dict = {}

    def constrained():
        out["json"] = llm.chat("Invent a person. Reply in JSON.", max_new_tokens=60, temperature=0,
                               response_format={"type": "json_schema", "json_schema": {"schema": schema}}).text

    def plain():
        out["plain"] = llm.chat(QUESTIONS[1], max_new_tokens=30, temperature=0).text

    threads = [threading.Thread(target=constrained), threading.Thread(target=plain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    person = json.loads(out["json"])
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)
    assert not out["plain"].lstrip().startswith("{")


def test_cancel_frees_the_slot_within_a_step(engine):
    cancel = threading.Event()
    params = SamplingParams(temperature=0, max_new_tokens=500, cancel=cancel)
    events = engine.generate([{"role": "user", "content": QUESTIONS[2]}], params)
    deltas = 0
    for ev in events:
        if isinstance(ev, TextDelta):
            deltas += 1
            if deltas == 3:
                cancel.set()
        elif isinstance(ev, Done):
            done = ev
    assert done.finish_reason == "cancelled" and done.usage.completion_tokens < 10
    deadline = time.monotonic() + 5
    while engine.batcher.stats.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.batcher.stats.active == 0


def test_adapter_groups_never_share_a_step(engine):
    """Sequences of different LoRA groups take turns; every decode step holds one group."""
    b = engine.batcher
    seen: list[set] = []
    switched: list = []
    original_decode, original_hook = b._decode, b.on_group
    b._decode = lambda plan: (seen.append({s.group for s, _, _ in plan}), original_decode(plan))[1]
    b.on_group = lambda ctx, group: switched.append(group)
    try:
        its = [b.submit(ids_of(engine, q), GREEDY, group=g) for q, g in zip(QUESTIONS[:4], ["a", "b", "a", "b"])]
        outs = [list(it) for it in its]
    finally:
        b._decode, b.on_group = original_decode, original_hook
        b._group = None
    assert all(len(g) == 1 for g in seen) and {"a", "b"} <= set().union(*seen)
    assert switched[:2] in (["a", "b"], ["b", "a"])
    assert all(outs)


def test_server_reports_slots_batch_size_and_prefix_hits(engine):
    import phikit
    from phikit.serve import create_app
    from phikit.serve.background import background

    llm = phikit.LLM(engine)
    with background(create_app(llm, parallel=4)) as url:
        body = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[0]}],
                "max_tokens": 8, "temperature": 0}
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(httpx.post(url + "/v1/chat/completions", json=body,
                                                                               timeout=120)))
                   for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [r.status_code for r in replies] == [200, 200, 200]
        slots = httpx.get(url + "/health").json()["slots"]
        assert slots["total"] == 4 and slots["active"] == 0 and slots["batch_size_mean"] >= 1
        assert slots["prefix_cache_hit_rate"] > 0
        text = httpx.get(url + "/metrics").text
        for name in ("phikit_slots_active", "phikit_slots_waiting", "phikit_batch_size_mean",
                     "phikit_prefix_cache_hit_rate", "phikit_queue_waiting"):
            assert name in text


def test_a_failing_sequence_gets_its_error_and_the_next_one_works(engine):
    b = engine.batcher
    original = b._sampler
    b._sampler = lambda seq: (_ for _ in ()).throw(ValueError("boom"))
    try:
        with pytest.raises(ValueError, match="boom"):
            tokens(engine, ids_of(engine, QUESTIONS[0]))
    finally:
        b._sampler = original
    assert len(tokens(engine, ids_of(engine, QUESTIONS[0]), SamplingParams(temperature=0, max_new_tokens=3))) == 3
