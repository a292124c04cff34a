"""Continuous batching on llama.cpp: every active sequence advances in one ``llama_decode`` call per step.

One scheduler thread owns a second llama.cpp context on the engine's weights, with ``n_slots`` sequences
(``n_seq_max``), each in its own KV stream (``kv_unified = false``: a sequence attends only to its own
cells, so one slot's numerics do not depend on where the others sit). The step loop (1 and 2 are shared
with the fast GPU path: :mod:`.batching`):

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

from collections.abc import Callable, Hashable
from typing import Any

from .batching import Seq, SlotScheduler

PENALTY_LAST_N = 64  # llama_cpp.Llama's ``last_n_tokens_size`` default, so sampling matches the one-slot path


class LlamaBatcher(SlotScheduler):
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

        super().__init__(n_slots, prefix_cache=prefix_cache, eos_ids=eos_ids)
        self._lc, self.model, self.slot_ctx, self.on_group = llama_cpp, model, slot_ctx, on_group
        self.n_batch = max(n_batch, self.n_slots)
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
        self._group: Hashable = None  # the adapter group the context is set to

    def __del__(self):
        try:
            self._lc.llama_batch_free(self.batch)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _step(self) -> bool:
        self._join()
        plan = self._plan()
        if plan:
            self._decode(plan)
        return bool(plan)

    def _reset(self) -> None:
        self._lc.llama_memory_clear(self.ctx.memory, True)

    def _join(self) -> None:
        while (nxt := self._next_waiting()) is not None:
            seq, free = nxt
            try:  # this request's own parameters (e.g. a logits processor) may fail: it alone gets the error
                seq.sampler = self._sampler(seq)
            except Exception as exc:  # noqa: BLE001
                seq.out.put(exc)
                continue
            slot = self._take_slot(seq, free)
            self._lc.llama_memory_seq_rm(self.ctx.memory, slot, seq.pos, -1)

    def _sampler(self, seq: Seq):
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

    def _plan(self) -> list[tuple[Seq, list[int], bool]]:
        """This step's work: ``(sequence, tokens, wants logits)``, decoding sequences first, then prompt chunks,
        within the token budget, all of one adapter group (groups take turns)."""
        active = [s for s in self._slots if s is not None and s.todo]
        if not active:
            return []
        group = self._next_group(active)
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

    def _decode(self, plan: list[tuple[Seq, list[int], bool]]) -> None:
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
        self._count_step(b.n_tokens, len(plan))
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
            self._emit(seq, seq.sampler.sample(self.ctx, row))
