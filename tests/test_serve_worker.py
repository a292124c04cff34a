"""The generation worker's bridge from a generation thread to the event loop: merging waiting text deltas,
token by token when idle, and the timeout on a stream that never pauses."""

from __future__ import annotations

import asyncio
import threading

import pytest

from phikit.cot import ReasoningDelta
from phikit.engines import TextDelta
from phikit.serve.generation import merge_deltas
from phikit.serve.worker import GenerationTimeout, ModelWorker


def collect(worker: ModelWorker, start, merge=merge_deltas, after_first: threading.Event | None = None,
            received: threading.Event | None = None) -> list:
    """Stream ``start`` through ``worker``; ``after_first``: wait for it after the first event (a busy loop,
    while the thread's events pile up); ``received``: set after each event arrives."""
    async def main():
        worker.admit()
        out = []
        async for ev in worker.stream(start, merge=merge):
            out.append(ev)
            if after_first is not None and len(out) == 1:
                await asyncio.to_thread(after_first.wait, 10)
            if received is not None:
                received.set()
        return out

    return asyncio.run(main())


def piled_up(done: threading.Event):
    def start(cancel):
        def events():
            yield ReasoningDelta("think ")
            for i in range(200):
                yield TextDelta(f"t{i} ")
            yield "end"
            done.set()
        return events()
    return start


def test_waiting_deltas_are_merged_and_nothing_is_lost():
    done = threading.Event()
    out = collect(ModelWorker(), piled_up(done), after_first=done)
    texts = [e for e in out if isinstance(e, TextDelta)]
    assert "".join(e.text for e in texts) == "".join(f"t{i} " for i in range(200))
    assert len(texts) == 1  # all 200 were waiting: one chunk
    assert out == [ReasoningDelta("think "), texts[0], "end"]  # kinds never merge across each other


def test_without_merge_every_event_arrives_alone():
    done = threading.Event()
    out = collect(ModelWorker(), piled_up(done), merge=None, after_first=done)
    assert out == [ReasoningDelta("think "), *[TextDelta(f"t{i} ") for i in range(200)], "end"]


def test_an_idle_stream_is_token_by_token():
    received = threading.Event()

    def start(cancel):
        def events():
            for i in range(5):
                received.clear()
                yield TextDelta(str(i))
                assert received.wait(10)  # the next token comes after the loop has sent this one
        return events()

    assert collect(ModelWorker(), start, received=received) == [TextDelta(str(i)) for i in range(5)]


def test_timeout_applies_to_a_stream_that_never_pauses():
    def start(cancel):
        def events():
            while not cancel.is_set():
                yield TextDelta("x")
                threading.Event().wait(0.001)
        return events()

    worker = ModelWorker(timeout_s=0.3)
    with pytest.raises(GenerationTimeout):
        collect(worker, start, merge=None)
    assert worker.stats.timed_out == 1


def test_merge_deltas_pairs():
    assert merge_deltas(TextDelta("a"), TextDelta("b")) == TextDelta("ab")
    assert merge_deltas(ReasoningDelta("a"), ReasoningDelta("b")) == ReasoningDelta("ab")
    assert merge_deltas(TextDelta("a"), ReasoningDelta("b")) is None
    assert merge_deltas(TextDelta("a"), "done") is None
