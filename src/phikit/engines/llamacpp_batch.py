"""Continuous batching on llama.cpp: every active sequence advances in one ``llama_decode`` call per step.

One scheduler thread owns a second llama.cpp context on the engine's weights, with ``n_slots`` sequences
(``n_seq_max``), each in its own KV stream (``kv_unified = false``: a sequence attends only to its own
cells, so one slot's numerics do not depend on where the others sit). The step loop:

1. **Leave**: sequences whose consumer went away, whose ``cancel`` is set, that sampled end-of-sequence or
   reached ``max_new_tokens`` give their slot back (so a disconnect frees its slot within one step).
2. **Join**: waiting sequences take free slots. A slot keeps the prompt tokens whose KV it holds; the
   new sequence takes the free slot sharing the longest prefix with its prompt, drops the rest of that
   slot's KV (``llama_memory_seq_rm``) and prefills only what differs (prefix reuse). The kept KV is
   bit-identical to what a cold prefill computes (tests/test_serve_batching.py). Copying a busy slot's KV
   into a free one (``llama_memory_seq_cp`` across KV streams) is not used: in llama-cpp-python 0.3.36 the
   copied sequence's logits differed from the source's by up to 0.04.
3. **Plan**: one token for every decoding sequence, then prompt chunks of the prefilling ones, up to the
   token budget (chunked prefill, as vLLM and llama-server's slots do), all sequences of one adapter group.
4. **Decode** the one ``llama_batch``; each sequence whose last token was in it samples from its own row of
   logits (``llama_sampler_sample(chain, ctx, i)``) with its own sampler chain — built exactly as
   ``llama_cpp.Llama`` builds it (penalties, greedy or top-k/top-p/temperature/seeded dist, and phikit's
   logits processors such as JSON-schema grammars first) — and its token goes to its consumer's queue.

Consumers see a plain iterator of token ids (:meth:`LlamaBatcher.submit`), so the engine interface, the
stream loop (stop strings, detokenization) and the request pipeline are unchanged. Ideas from llama.cpp's
``examples/parallel`` and ``llama-server`` (slots, per-sequence KV removal), vLLM (continuous batching,
chunked prefill).

LoRA adapters are per llama.cpp context: sequences carry a ``group`` key (the adapter) and a step decodes
one group only; groups take turns step by step, and ``on_group(ctx, group)`` switches the context's
adapter before a step of another group. KV is reused only between sequences of the same group.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .base import SamplingParams

_END = object()
PENALTY_LAST_N = 64  # llama_cpp.Llama's ``last_n_tokens_size`` default, so sampling matches the one-slot path
IDLE_EXIT_S = 5.0  # the scheduler thread exits after this long with nothing to do (and restarts on demand)


@dataclass
class BatchStats:
    """What the scheduler has done, for ``/health`` and ``/metrics``.

    Attributes:
        steps: decode calls made; step_tokens: tokens in them; step_seqs: sequences in them.
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
        """Mean sequences per decode step."""
        return self.step_seqs / self.steps if self.steps else 0.0


@dataclass(eq=False)
class _Seq:
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
    sampler: Any = None

    def gone(self) -> bool:
        return self.closed or (self.params.cancel is not None and self.params.cancel.is_set())


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class LlamaBatcher:
    """Slots on one llama.cpp model, decoded together; thread-safe :meth:`submit`.

    Args:
        model: the engine's ``llama_cpp._internals.LlamaModel`` (weights are shared, not copied).
        n_slots: sequences decoded at once (llama.cpp's ``n_seq_max``).
        slot_ctx: context window of each slot in tokens (the KV cache holds ``n_slots * slot_ctx`` tokens:
            ~22.5 KiB each for SmolLM2-135M in f16).
        n_threads: CPU threads for llama.cpp.
        n_batch: token budget of one step (decode tokens first, then prompt chunks); at least ``n_slots``.
        prefix_cache: reuse a slot's cached prompt prefix.
        eos_ids: token ids that end a sequence (the stream loop also stops there; this frees the slot).
        on_group: ``(llama_context_p, group)`` called before a step whose adapter group differs from the last.

    Raises:
        PhikitError: llama.cpp could not create the context (e.g. out of memory).
    """

    def __init__(self, model: Any, *, n_slots: int, slot_ctx: int, n_threads: int, n_batch: int = 512,
                 prefix_cache: bool = True, eos_ids: set[int] = frozenset(),
                 on_group: Callable[[Any, Hashable], None] | None = None):
        import llama_cpp
        from llama_cpp import _internals

        from ..errors import PhikitError

        self._lc, self.model = llama_cpp, model
        self.n_slots, self.slot_ctx = max(1, n_slots), slot_ctx
        self.n_batch = max(n_batch, self.n_slots)
        self.prefix_cache, self.eos_ids, self.on_group = prefix_cache, set(eos_ids), on_group
        p = llama_cpp.llama_context_default_params()
        p.n_ctx = slot_ctx * self.n_slots
        p.n_batch = self.n_batch
        p.n_ubatch = min(512, self.n_batch)
        p.n_seq_max = self.n_slots
        p.kv_unified = False  # one KV stream per slot
        p.n_threads = p.n_threads_batch = n_threads
        p.no_perf = True
        try:
            self.ctx = _internals.LlamaContext(model=model, params=p, verbose=False)
        except ValueError as exc:
            raise PhikitError(f"llama.cpp could not make {self.n_slots} slots of {slot_ctx} tokens: {exc}; "
                              "use a smaller --parallel or --ctx") from None
        self.slot_ctx = llama_cpp.llama_n_ctx_seq(self.ctx.ctx) if hasattr(llama_cpp, "llama_n_ctx_seq") else slot_ctx
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.n_vocab = model.n_vocab()
        self.stats = BatchStats()
        self._cached: list[list[int]] = [[] for _ in range(self.n_slots)]  # prompt tokens whose KV each slot holds
        self._slot_group: list[Hashable] = [None] * self.n_slots
        self._slots: list[_Seq | None] = [None] * self.n_slots
        self._waiting: list[_Seq] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._group: Hashable = None  # the adapter group the context is set to
        self._turn = 0

    def __del__(self):
        try:
            self._lc.llama_batch_free(self.batch)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # --- the consumer side -------------------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams, group: Hashable = None) -> Iterator[int]:
        """Queue a sequence; iterate the result for its token ids, one per step it takes part in.

        The iterator ends after end-of-sequence (yielded), ``max_new_tokens``, or ``params.cancel``; closing
        it early frees the slot at the next step. A decode failure is raised from it.
        """
        seq = _Seq(list(prompt_ids), params, group, ids=list(prompt_ids))
        with self._cv:
            self._waiting.append(seq)
            self.stats.waiting = len(self._waiting)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name="phikit-batch")
                self._thread.start()
            self._cv.notify()
        return self._tokens(seq)

    def _tokens(self, seq: _Seq) -> Iterator[int]:
        try:
            while True:
                item = seq.out.get()
                if item is _END:
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
                self._join()
                plan = self._plan()
                if plan:
                    self._decode(plan)
                else:
                    with self._cv:  # nothing to feed (only closed consumers): wait for a change
                        self._cv.wait(0.01)
            except Exception as exc:  # noqa: BLE001 - a bug must reach every waiting request, not hang them
                self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        """End every sequence with ``exc`` and clear the slots (their KV may be half written)."""
        for seq in [s for s in self._slots if s is not None]:
            self._finish(seq, exc)
        with self._cv:
            waiting, self._waiting = self._waiting, []
        for seq in waiting:
            seq.out.put(exc)
        self._lc.llama_memory_clear(self.ctx.memory, True)
        self._cached = [[] for _ in range(self.n_slots)]

    def _finish(self, seq: _Seq, item: Any = _END) -> None:
        if seq.slot >= 0:
            self._slots[seq.slot] = None
            self.stats.active = sum(s is not None for s in self._slots)
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None
        seq.out.put(item)

    def _leave(self) -> None:
        for seq in [s for s in self._slots if s is not None and s.gone()]:
            self._finish(seq)
        with self._cv:
            for seq in [s for s in self._waiting if s.gone()]:
                self._waiting.remove(seq)
                seq.out.put(_END)
            self.stats.waiting = len(self._waiting)
        self.stats.active = sum(s is not None for s in self._slots)

    def _join(self) -> None:
        mem = self.ctx.memory
        while True:
            free = [i for i, s in enumerate(self._slots) if s is None]
            with self._cv:
                if not free or not self._waiting:
                    self.stats.waiting = len(self._waiting)
                    break
                seq = self._waiting.pop(0)
            try:  # this request's own parameters (e.g. a logits processor) may fail: it alone gets the error
                seq.sampler = self._sampler(seq)
            except Exception as exc:  # noqa: BLE001
                seq.out.put(exc)
                continue
            slot, reuse = self._pick_slot(seq, free)
            self._lc.llama_memory_seq_rm(mem, slot, reuse, -1)
            self._cached[slot] = seq.prompt[:reuse]
            self._slot_group[slot] = seq.group
            seq.slot, seq.pos, seq.reused, seq.todo = slot, reuse, reuse, seq.prompt[reuse:]
            self._slots[slot] = seq
            self.stats.prompt_tokens += len(seq.prompt)
            self.stats.reused_tokens += reuse
        self.stats.active = sum(s is not None for s in self._slots)

    def _pick_slot(self, seq: _Seq, free: list[int]) -> tuple[int, int]:
        """The free slot to use and how many leading prompt tokens it can keep (always leaving one to decode,
        whose logits give the first token)."""
        last = len(seq.prompt) - 1

        def shared(i: int) -> int:
            if not self.prefix_cache or self._slot_group[i] != seq.group:
                return 0
            return min(_common(self._cached[i], seq.prompt), last)

        best = max(free, key=shared)
        return best, shared(best)

    def _sampler(self, seq: _Seq):
        """A sampler chain built as ``llama_cpp.Llama._init_sampler`` builds it for these parameters."""
        from llama_cpp import _internals

        p, s = seq.params, _internals.LlamaSampler()
        if p.logits_processors:
            import ctypes

            import numpy as np
            import torch

            def apply(cur_p) -> None:
                size = cur_p.contents.size
                arr = (self._lc.llama_token_data * size).from_address(ctypes.addressof(cur_p.contents.data.contents))
                rec = np.recarray((size,), dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)],
                                                          align=True), buf=arr)
                for proc in p.logits_processors:
                    out = proc(seq.ids, torch.from_numpy(np.array(rec.logit)))
                    rec.logit[:] = out.numpy() if hasattr(out, "numpy") else out

            s.add_custom(apply)
        s.add_penalties(n_vocab=self.n_vocab, penalty_last_n=PENALTY_LAST_N, penalty_repeat=p.repetition_penalty,
                        penalty_freq=0.0, penalty_present=0.0)
        if p.temperature == 0:
            s.add_greedy()
        else:
            s.add_top_k(p.top_k)
            s.add_typical(1.0, 1)
            s.add_top_p(p.top_p, 1)
            s.add_min_p(0.0, 1)
            s.add_temp(p.temperature)
            s.add_dist(self._lc.LLAMA_DEFAULT_SEED if p.seed is None else p.seed & 0xFFFFFFFF)
        return s

    def _plan(self) -> list[tuple[_Seq, list[int], bool]]:
        """This step's work: ``(sequence, tokens, wants logits)``, decoding sequences first, then prompt chunks,
        within the token budget, all of one adapter group (groups take turns)."""
        active = [s for s in self._slots if s is not None and s.todo]
        if not active:
            return []
        groups = list(dict.fromkeys(s.group for s in active))
        group = groups[self._turn % len(groups)]
        self._turn += 1
        mine = [s for s in active if s.group == group]
        if group != self._group and self.on_group is not None:
            try:
                self.on_group(self.ctx.ctx, group)
            except Exception as exc:  # noqa: BLE001 - the group's requests get the error; the others go on
                for seq in mine:
                    self._finish(seq, exc)
                return []
        self._group = group
        budget, plan = self.n_batch, []
        for seq in sorted(mine, key=lambda s: len(s.todo) > 1):  # decoders (one token) before prefills
            if budget <= 0:
                break
            if seq.pos + 1 > self.slot_ctx:
                self._finish(seq, RuntimeError(f"llama_decode returned 1: slot {seq.slot}'s context window of "
                                               f"{self.slot_ctx} tokens is full"))
                continue
            take = min(len(seq.todo), budget, self.slot_ctx - seq.pos)
            plan.append((seq, seq.todo[:take], take == len(seq.todo)))
            budget -= take
        return plan

    def _decode(self, plan: list[tuple[_Seq, list[int], bool]]) -> None:
        b, lc = self.batch, self._lc
        b.n_tokens = 0
        rows = []
        for seq, toks, wants in plan:
            for k, tok in enumerate(toks):
                j = b.n_tokens
                b.token[j], b.pos[j], b.n_seq_id[j] = tok, seq.pos + k, 1
                b.seq_id[j][0] = seq.slot
                b.logits[j] = wants and k == len(toks) - 1
                b.n_tokens += 1
            rows.append(b.n_tokens - 1)
        rc = lc.llama_decode(self.ctx.ctx, b)
        self.stats.steps += 1
        self.stats.step_tokens += b.n_tokens
        self.stats.step_seqs += len(plan)
        self.stats.last_batch = len(plan)
        if rc != 0:
            for seq, _, _ in plan:
                lc.llama_memory_seq_rm(self.ctx.memory, seq.slot, -1, -1)
                self._cached[seq.slot] = []
                self._finish(seq, RuntimeError(f"llama_decode returned {rc}"))
            return
        for (seq, toks, wants), row in zip(plan, rows):
            if seq.pos < len(seq.prompt):  # prompt tokens now in the slot's KV
                self._cached[seq.slot] = seq.prompt[: min(seq.pos + len(toks), len(seq.prompt))]
            seq.pos += len(toks)
            seq.todo = seq.todo[len(toks):]
            if not wants:
                continue
            tok = seq.sampler.sample(self.ctx, row)
            seq.ids.append(tok)
            seq.produced += 1
            seq.out.put(tok)
            if tok in self.eos_ids or seq.produced >= seq.params.max_new_tokens:
                self._finish(seq)
            else:
                seq.todo = [tok]
