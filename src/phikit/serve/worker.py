"""The generation worker: one model, shared by every request, driven off the event loop.

Each request's generation runs in its own thread and hands its events to the event loop through
``loop.call_soon_threadsafe`` (the bridge vLLM's and mlx-lm's servers use), one wake-up per batch of events.
At most ``concurrency`` run at once: on llama.cpp and the fast GPU backend with ``--parallel N`` that is N slots whose sequences one
scheduler thread decodes together (:mod:`phikit.engines.batching`); otherwise llama.cpp and our transformers decode loop are
not thread-safe, so a lock serialises generations per model (**queued, not batched**). A remote engine
(vLLM, another server) runs several at once and its server batches. The queue is bounded; past it
:class:`QueueFullError` (HTTP 429 with Retry-After).
A request that goes away (client disconnect, timeout) sets its ``cancel`` event, which the shared stream
loop (and the batch scheduler, before every step) checks, so the model stops within one token and the slot
is free for the next request.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..engines import Done

_END = object()


class QueueFullError(Exception):
    """Too many requests are waiting for the model.

    Attributes:
        retry_after: seconds after which a retry is likely to be admitted.
    """

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(
            f"the server is busy: {waiting} requests are already waiting for the model; retry in {retry_after} s"
        )
        self.retry_after = retry_after


class GenerationTimeout(Exception):
    """A request ran past the server's per-request timeout."""


@dataclass
class WorkerStats:
    """Counters read by ``/health`` and ``/metrics`` (and by the cancellation test)."""

    started: int = 0
    finished: int = 0
    cancelled: int = 0  # generations stopped early by a disconnect or timeout
    timed_out: int = 0
    rejected: int = 0  # 429s
    abandoned_in_queue: int = 0  # cancelled before they reached the model
    last_cancelled_tokens: int = -1  # completion tokens of the last cancelled generation
    busy_s: float = 0.0  # seconds the model spent generating
    recent_s: list[float] = field(default_factory=list)  # durations of the last few requests


_SLOTS_GUARD = threading.Lock()


def slots_of(owner: Any, concurrency: int) -> threading.Semaphore:
    """The generation slots of one loaded model, shared by every app and worker that serves it: two servers
    on one in-process engine must never decode in the same llama.cpp context at once (that crashes)."""
    if owner is None:
        return threading.Semaphore(concurrency)
    with _SLOTS_GUARD:
        slots = getattr(owner, "_phikit_slots", None)
        if slots is None:
            slots = threading.Semaphore(concurrency)
            owner._phikit_slots = slots
        return slots


class ModelWorker:
    """Runs generations in worker threads, at most ``concurrency`` at once, with a bounded wait queue.

    Args:
        max_queue: requests allowed to wait while ``concurrency`` run; the next one gets :class:`QueueFullError`.
        timeout_s: wall-clock seconds a request may take, queueing included.
        concurrency: generations at once: 1 for in-process engines (llama.cpp and our transformers loop are
            not thread-safe); more for a remote engine, whose server batches them.
    """

    def __init__(self, *, max_queue: int = 16, timeout_s: float = 600.0, concurrency: int = 1, owner: Any = None):
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.concurrency = max(1, concurrency)
        self.lock = slots_of(owner, self.concurrency)
        self._count = threading.Lock()
        self.admitted = 0  # running + waiting; touched only on the event loop
        self.running = 0
        self.stats = WorkerStats()

    @property
    def waiting(self) -> int:
        return max(0, self.admitted - self.running)

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained by one request (mean recent duration x waiting / slots)."""
        recent = self.stats.recent_s[-20:]
        mean = sum(recent) / len(recent) if recent else 1.0
        return max(1, math.ceil(mean * max(1, self.waiting) / self.concurrency))

    def admit(self) -> None:
        """Reserve a place, or raise :class:`QueueFullError`. Call :meth:`stream` right after."""
        if self.admitted >= self.max_queue + self.concurrency:
            self.stats.rejected += 1
            raise QueueFullError(self.waiting, self.retry_after())
        self.admitted += 1

    async def stream(self, start: Callable[[threading.Event], Iterator[Any]],
                     merge: Callable[[Any, Any], Any] | None = None) -> AsyncIterator[Any]:
        """Run ``start(cancel)`` in a worker thread under the model lock and yield its events here.

        Args:
            start: called in the worker thread once the model is free; returns the event iterator (raising
                ``BadRequestError`` there is fine: it is re-raised to the caller before any event).
            merge: ``(a, b)`` -> one event standing for both, or None. Events that are already waiting when
                the loop gets to them are merged (e.g. text deltas: one SSE chunk for several tokens when the
                server is busy, as vLLM's stream interval), so the loop's cost per token falls as load rises;
                an event that is alone is yielded at once, so an idle server still streams token by token.

        Yields:
            The iterator's events. Exceptions from the thread are re-raised here.

        Raises:
            GenerationTimeout: past ``timeout_s``; generation is cancelled.

        Closing this generator (a client disconnect) cancels the generation within one decode step.
        The caller must have called :meth:`admit`.

        The thread appends to a deque and wakes the loop only when no wake-up is already on its way
        (one ``call_soon_threadsafe`` per batch of events, not per token).
        """
        loop = asyncio.get_running_loop()
        ready: deque = deque()
        wake = asyncio.Event()
        scheduled = [False]  # a wake-up is on its way to the loop
        cancel = threading.Event()

        def put(item) -> None:  # worker thread: append first, then wake (the loop re-checks after clearing)
            ready.append(item)
            if not scheduled[0]:
                scheduled[0] = True
                try:
                    loop.call_soon_threadsafe(wake.set)
                except RuntimeError:  # the event loop is gone (server shutting down): nobody is listening
                    cancel.set()

        expired = [False]

        def expire() -> None:  # one timer for the whole stream, not a wait_for per wake-up (GIL: bench-serve-gpu.md)
            expired[0] = True
            wake.set()

        thread = threading.Thread(target=self._run, args=(start, cancel, put), daemon=True, name="phikit-gen")
        timer = loop.call_later(self.timeout_s, expire)
        finished = False
        try:
            thread.start()
            while True:
                if expired[0]:
                    self._time_out(cancel)
                if not ready:
                    wake.clear()
                    scheduled[0] = False
                    if not ready:
                        await wake.wait()
                        continue
                item = ready.popleft()
                while merge is not None and ready and (both := merge(item, ready[0])) is not None:
                    ready.popleft()
                    item = both
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            timer.cancel()
            if not finished:
                cancel.set()
            self.admitted -= 1

    def _time_out(self, cancel: threading.Event) -> None:
        cancel.set()
        self.stats.timed_out += 1
        raise GenerationTimeout(f"the request took longer than the server's {self.timeout_s:g} s timeout and was stopped")

    def _run(self, start, cancel: threading.Event, put) -> None:
        """Worker thread: wait for the model (giving up if cancelled), generate, forward events."""
        while not self.lock.acquire(timeout=0.05):
            if cancel.is_set():
                self.stats.abandoned_in_queue += 1
                put(_END)
                return
        t0 = time.perf_counter()
        with self._count:
            self.running += 1
            self.stats.started += 1
        try:
            if cancel.is_set():
                self.stats.abandoned_in_queue += 1
                return
            for ev in start(cancel):
                if isinstance(ev, Done) and ev.finish_reason == "cancelled":
                    with self._count:
                        self.stats.cancelled += 1
                        self.stats.last_cancelled_tokens = ev.usage.completion_tokens
                put(ev)
        except BaseException as exc:  # noqa: BLE001 - forwarded to the request; the server decides the status code
            put(exc)
        finally:
            dt = time.perf_counter() - t0
            with self._count:
                self.stats.finished += 1
                self.stats.busy_s += dt
                self.stats.recent_s = [*self.stats.recent_s[-19:], dt]
                self.running -= 1
            self.lock.release()
            put(_END)
