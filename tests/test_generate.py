"""Real generation from the embedded SmolLM2-135M on both backends (greedy, so reproducible)."""

from __future__ import annotations

import threading

import pytest

from phikit import BadRequestError, Done, TextDelta

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def collect(events):
    deltas, done = [], None
    for ev in events:
        if isinstance(ev, TextDelta):
            deltas.append(ev.text)
        else:
            assert isinstance(ev, Done)
            done = ev
    return deltas, done


# Ten short facts and instructions from src/phikit/data/facts.jsonl. A 135M model's greedy text shifts with
# the llama.cpp build and the quantization, so its behaviour is asserted as a rate over a set, never as one
# string. bench/quant_bench.py scores the whole set (docs/benchmarks.md).
FACT_IDS = ["capital-france", "capital-germany", "mona-lisa", "red-planet", "romeo-juliet",
            "largest-ocean", "moon-walk", "giza", "add", "translate-hola"]


@pytest.fixture(scope="module")
def facts10():
    from phikit.facts import load_facts

    return load_facts(ids=FACT_IDS)


def test_default_model_answers_most_facts_right(any_llm, facts10):
    from phikit.facts import score

    result = score(any_llm, facts10, max_new_tokens=16)
    wrong = [(r["id"], r["answer"]) for r in result["rows"] if not r["right"]]
    assert result["rate"] >= 0.8, wrong


def test_answer_reports_usage_and_timings(any_llm):
    result = any_llm.chat(FRANCE, temperature=0, max_new_tokens=40)
    assert result.text.strip()
    assert result.finish_reason in ("stop", "length")
    assert result.usage.prompt_tokens > 5
    assert 0 < result.usage.completion_tokens <= 40
    assert result.ttft_ms > 0 and result.tokens_per_s > 0


def test_streamed_deltas_join_to_decoded_tokens_and_to_non_streamed_text(any_llm):
    q = [{"role": "user", "content": "Write a short poem about the sea, with an emoji 🌊 and the word café."}]
    deltas, done = collect(any_llm.chat(q, stream=True, temperature=0, max_new_tokens=60))
    assert len(deltas) > 5  # really streamed, not one blob
    joined = "".join(deltas)
    assert joined == done.text
    assert joined == any_llm.engine.decode(done.token_ids)
    assert "\ufffd" not in joined
    again = any_llm.chat(q, temperature=0, max_new_tokens=60)
    assert again.text == joined


def test_max_new_tokens_is_honoured(any_llm):
    result = any_llm.chat("Write a long story about a cat who learns to sail.", temperature=0, max_new_tokens=7)
    assert result.usage.completion_tokens == 7
    assert result.finish_reason == "length"


def test_stop_string_ends_generation_and_is_not_included(any_llm):
    free = any_llm.chat("List the days of the week, one per line.", temperature=0, max_new_tokens=60).text
    assert "Tuesday" in free
    result = any_llm.chat(
        "List the days of the week, one per line.", temperature=0, max_new_tokens=60, stop=["Tuesday"]
    )
    assert result.finish_reason == "stop"
    assert "Tuesday" not in result.text
    assert free.startswith(result.text)


def test_closing_the_stream_stops_generation(llama_llm):
    events = llama_llm.chat("Tell me a long story about a dragon.", stream=True, temperature=0, max_new_tokens=200)
    first = next(events)
    assert isinstance(first, TextDelta)
    events.close()
    with pytest.raises(StopIteration):
        next(events)


def test_cancel_event_finishes_with_cancelled(any_llm):
    cancel = threading.Event()
    n = 0
    done = None
    for ev in any_llm.chat("Tell me a long story.", stream=True, temperature=0, max_new_tokens=200, cancel=cancel):
        if isinstance(ev, TextDelta):
            n += 1
            if n == 3:
                cancel.set()
        else:
            done = ev
    assert done.finish_reason == "cancelled"
    assert done.usage.completion_tokens < 20


def test_seeded_sampling_is_reproducible(any_llm):
    kw = dict(temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_new_tokens=20)
    a = any_llm.chat("Name a colour and an animal.", **kw).text
    b = any_llm.chat("Name a colour and an animal.", **kw).text
    assert a == b


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"bogus": 1}, "unknown parameter"),
    ],
)
def test_bad_parameters_raise_one_clear_error(llama_llm, params, needle):
    with pytest.raises(BadRequestError, match=needle):
        llama_llm.chat("hi", **params)


@pytest.fixture(scope="module")
def small_window():
    """The embedded model with a 1,024-token window, so filling it is quick (the default is the trained 8,192)."""
    import phikit

    return phikit.load("smollm2-135m", backend="llamacpp", n_ctx=1024)


def test_prompt_over_context_window_is_refused(small_window):
    with pytest.raises(BadRequestError, match="context window"):
        small_window.chat("word " * 1500)


def test_generation_stops_at_the_end_of_the_context_window(small_window):
    engine = small_window.engine

    def prompt_tokens(n_words: int) -> int:
        return len(engine.encode_prompt([{"role": "system", "content": small_window.system_prompt},
                                         {"role": "user", "content": "word " * n_words}]))

    overhead = prompt_tokens(100) - 100  # about one token per "word "
    words = "word " * (engine.context_length - overhead - 20)
    room = engine.context_length - prompt_tokens(engine.context_length - overhead - 20)
    assert 0 < room < 40
    result = small_window.chat(words, temperature=0, max_new_tokens=500)
    assert result.usage.completion_tokens <= room
    assert result.usage.prompt_tokens + result.usage.completion_tokens <= small_window.engine.context_length
