"""Continuous batching, the part every backend shares: slots, the waiting queue, the scheduler thread, and
the consumer side that turns a sequence's tokens back into a plain iterator.

A backend subclasses :class:`SlotScheduler` and implements one step (:meth:`SlotScheduler._step`: admit
waiting sequences into free slots, run one forward for every active sequence, :meth:`SlotScheduler._emit`
each sampled token) and :meth:`SlotScheduler._reset` (forget every slot's KV after a failure). llama.cpp:
:mod:`.llamacpp_batch`; the fast GPU path: :mod:`.fast.slots`.

The loop, each step: sequences whose consumer went away, whose ``cancel`` is set, that sampled
end-of-sequence or reached ``max_new_tokens`` leave their slot (so a disconnect frees its slot within one
step); waiting sequences join free slots, each taking the free slot whose cached prompt shares the longest
prefix with its own (prefix reuse, as llama-server's slots and vLLM's prefix cache); then the backend's step.
Ideas from llama.cpp's ``examples/parallel`` and ``llama-server``, and vLLM's scheduler.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .base import SamplingParams

END = object()
IDLE_EXIT_S = 5.0  # the scheduler thread exits after this long with nothing to do (and restarts on demand)


@dataclass
class BatchStats:
    """What the scheduler has done, for ``/health`` and ``/metrics``.

    Attributes:
        steps: forward calls made; step_tokens: tokens in them; step_seqs: sequences in them.
        last_batch: sequences in the last step.
        prompt_tokens: prompt tokens of admitted sequences; reused_tokens: of those, taken from the cache.
        active: sequences holding a slot now; waiting: submitted, not yet in a slot.
    """

    steps: int = 0
    step_tokens: int = 0
    step_seqs: int = 0
    last_batch: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    active: int = 0
    waiting: int = 0

    @property
    def prefix_hit_rate(self) -> float:
        """Share of admitted prompt tokens whose KV came from the cache (0 when nothing was admitted)."""
        return self.reused_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def mean_batch(self) -> float:
        """Mean sequences per step."""
        return self.step_seqs / self.steps if self.steps else 0.0


@dataclass(eq=False)
class Seq:
    """One request in the scheduler: its prompt, parameters, adapter group and where it stands."""

    prompt: list[int]
    params: SamplingParams
    group: Hashable
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    ids: list[int] = field(default_factory=list)  # prompt + generated (what logits processors see)
    todo: list[int] = field(default_factory=list)  # tokens still to feed: the prompt's rest, then the last sample
    slot: int = -1
    pos: int = 0  # next position in the slot
    produced: int = 0
    reused: int = 0
    closed: bool = False  # the consumer stopped reading
    sampler: Any = None  # the backend's per-sequence sampling state (closed on finish if it has ``close``)

    def gone(self) -> bool:
        return self.closed or (self.params.cancel is not None and self.params.cancel.is_set())


def check_slots(n_slots: int | None) -> None:
    """Raises BadRequestError unless ``n_slots`` is None (the backend's default) or a positive int."""
    if n_slots is not None and (not isinstance(n_slots, int) or n_slots < 1):
        from ..errors import BadRequestError

        raise BadRequestError(f"--parallel must be at least 1, got {n_slots!r}")


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class SlotScheduler:
    """Slots decoded together by one scheduler thread; thread-safe :meth:`submit`.

    Args:
        n_slots: sequences decoded at once.
        prefix_cache: reuse a slot's cached prompt prefix.
        eos_ids: token ids that end a sequence (the stream loop also stops there; this frees the slot).
    """

    def __init__(self, n_slots: int, *, prefix_cache: bool = True, eos_ids: set[int] = frozenset()):
        self.n_slots = max(1, n_slots)
        self.prefix_cache, self.eos_ids = prefix_cache, set(eos_ids)
        self.reuse_limit: int | None = None  # prompts longer than this neither reuse nor leave a prefix
        self.stats = BatchStats()
        self._cached: list[list[int]] = [[] for _ in range(self.n_slots)]  # prompt tokens whose KV each slot holds
        self._slot_group: list[Hashable] = [None] * self.n_slots
        self._slots: list[Seq | None] = [None] * self.n_slots
        self._waiting: list[Seq] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._turn = 0  # adapter groups take turns, one group per step

    # --- the consumer side -------------------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams, group: Hashable = None) -> Iterator[int]:
        """Queue a sequence; iterate the result for its token ids, one per step it takes part in.

        The iterator ends after end-of-sequence (yielded), ``max_new_tokens``, or ``params.cancel``; closing
        it early frees the slot at the next step. A decode failure is raised from it.
        """
        seq = Seq(list(prompt_ids), params, group, ids=list(prompt_ids))
        with self._cv:
            self._waiting.append(seq)
            self.stats.waiting = len(self._waiting)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name="phikit-batch")
                self._thread.start()
            self._cv.notify()
        return self._tokens(seq)

    def _tokens(self, seq: Seq) -> Iterator[int]:
        try:
            while True:
                item = seq.out.get()
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            seq.closed = True
            with self._cv:
                self._cv.notify()

    # --- the scheduler thread ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                idle_since = time.monotonic()
                while not self._waiting and not any(self._slots):
                    if time.monotonic() - idle_since > IDLE_EXIT_S:
                        self._thread = None
                        return
                    self._cv.wait(0.5)
            try:
                self._leave()
                if not self._step():
                    with self._cv:  # nothing to feed (only closed consumers): wait for a change
                        self._cv.wait(0.01)
            except Exception as exc:  # noqa: BLE001 - a bug must reach every waiting request, not hang them
                self._fail_all(exc)

    def _step(self) -> bool:
        """Admit waiting sequences and run one forward for the active ones; False when there was nothing to run."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Forget every slot's KV (after a failure left it half written)."""
        raise NotImplementedError

    def _fail_all(self, exc: BaseException) -> None:
        """End every sequence with ``exc`` and clear the slots."""
        for seq in [s for s in self._slots if s is not None]:
            self._finish(seq, exc)
        with self._cv:
            waiting, self._waiting = self._waiting, []
        for seq in waiting:
            seq.out.put(exc)
        self._reset()
        self._cached = [[] for _ in range(self.n_slots)]

    def _finish(self, seq: Seq, item: Any = END) -> None:
        if seq.slot >= 0 and self._slots[seq.slot] is seq:
            self._slots[seq.slot] = None
            self.stats.active = sum(s is not None for s in self._slots)
        if seq.sampler is not None and hasattr(seq.sampler, "close"):
            seq.sampler.close()
        seq.sampler = None
        seq.out.put(item)

    def _leave(self) -> None:
        for seq in [s for s in self._slots if s is not None and s.gone()]:
            self._finish(seq)
        with self._cv:
            for seq in [s for s in self._waiting if s.gone()]:
                self._waiting.remove(seq)
                seq.out.put(END)
            self.stats.waiting = len(self._waiting)
        self.stats.active = sum(s is not None for s in self._slots)

    def _next_waiting(self) -> tuple[Seq, list[int]] | None:
        """The oldest waiting sequence and the free slots, or None when either is missing."""
        free = [i for i, s in enumerate(self._slots) if s is None]
        with self._cv:
            if not free or not self._waiting:
                self.stats.waiting = len(self._waiting)
                return None
            return self._waiting.pop(0), free

    def _take_slot(self, seq: Seq, free: list[int]) -> int:
        """Seat ``seq`` in the free slot sharing the longest cached prefix with its prompt; returns the slot.

        Sets ``seq.slot``, ``seq.pos`` (= tokens reused) and ``seq.todo`` (the prompt's rest, at least one
        token: its logits give the first sample). The backend drops the slot's KV from ``seq.pos`` on.
        """
        last = len(seq.prompt) - 1

        def shared(i: int) -> int:
            if not self.prefix_cache or self._slot_group[i] != seq.group or len(seq.prompt) > (self.reuse_limit or last + 1):
                return 0
            return min(common_prefix(self._cached[i], seq.prompt), last)

        slot = max(free, key=shared)
        reuse = shared(slot)
        self._cached[slot] = seq.prompt[:reuse]
        self._slot_group[slot] = seq.group
        seq.slot, seq.pos, seq.reused, seq.todo = slot, reuse, reuse, seq.prompt[reuse:]
        self._slots[slot] = seq
        self.stats.prompt_tokens += len(seq.prompt)
        self.stats.reused_tokens += reuse
        self.stats.active = sum(s is not None for s in self._slots)
        return slot

    def _next_group(self, seqs: list[Seq]) -> Hashable:
        """The adapter group whose turn it is among ``seqs`` (non-empty): groups take turns step by step."""
        groups = list(dict.fromkeys(s.group for s in seqs))
        group = groups[self._turn % len(groups)]
        self._turn += 1
        return group

    def _emit(self, seq: Seq, tok: int) -> None:
        """Hand a sampled token to its consumer; finish the sequence at end-of-sequence or its token limit."""
        seq.ids.append(tok)
        seq.produced += 1
        seq.out.put(tok)
        if tok in self.eos_ids or seq.produced >= seq.params.max_new_tokens:
            self._finish(seq)
        else:
            seq.todo = [tok]

    def _count_step(self, tokens: int, seqs: int) -> None:
        self.stats.steps += 1
        self.stats.step_tokens += tokens
        self.stats.step_seqs += seqs
        self.stats.last_batch = seqs
