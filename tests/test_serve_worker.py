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


def collect(worker: ModelWorker, start, merge=merge_deltas, delay: float = 0.0) -> list:
    async def main():
        worker.admit()
        out = []
        async for ev in worker.stream(start, merge=merge):
            out.append(ev)
            if delay:
                await asyncio.sleep(delay)  # a busy event loop: events pile up meanwhile
        return out

    return asyncio.run(main())


def test_waiting_deltas_are_merged_and_nothing_is_lost():
    done = threading.Event()

    def start(cancel):
        def events():
            yield ReasoningDelta("think ")
            for i in range(200):
                yield TextDelta(f"t{i} ")
            done.set()
            yield "end"
        return events()

    out = collect(ModelWorker(), start, delay=0.002)
    texts = [e for e in out if isinstance(e, TextDelta)]
    assert "".join(e.text for e in texts) == "".join(f"t{i} " for i in range(200))
    assert len(texts) < 100  # piled-up deltas went out together
    assert out[0] == ReasoningDelta("think ") and out[-1] == "end"  # kinds never merge across each other


def test_without_merge_every_event_arrives_alone():
    def start(cancel):
        return iter([TextDelta(str(i)) for i in range(50)])

    out = collect(ModelWorker(), start, merge=None, delay=0.001)
    assert out == [TextDelta(str(i)) for i in range(50)]


def test_an_idle_stream_is_token_by_token():
    def start(cancel):
        def events():
            for i in range(5):
                yield TextDelta(str(i))
                threading.Event().wait(0.02)  # a slow model: each delta is alone when the loop sees it
        return events()

    assert collect(ModelWorker(), start) == [TextDelta(str(i)) for i in range(5)]


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
