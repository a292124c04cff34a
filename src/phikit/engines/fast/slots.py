"""Continuous batching on the fast GPU path: slots in the model's static KV cache, each at its own position.

Cache row ``i`` is slot ``i``. Each scheduler step (:class:`phikit.engines.batching.SlotScheduler` runs the
loop, frees finished slots and seats waiting requests):

1. **Prefill** newly seated sequences into their own rows, up to a token budget per step (so a burst of
   arrivals does not stall the running ones for long): several in one forward, each row at its own slot and
   positions (:meth:`.model.Transformer.prefill_rows`), replayed from a captured graph when the rows are
   short (:class:`.generate.PrefillGraphs`): an eager prefill is ~1,300 kernel launches from Python. A sequence
   seated in a slot whose cached prompt shares a prefix with its own keeps those positions' keys and values
   and prefills only the rest (prefix reuse; it attends to the cached prefix exactly as a cold prefill
   would). Its first token is sampled from the prefill's logits.
2. **Decode** one token for every running sequence of one adapter group in one captured CUDA graph: the
   graph for ``(batch bucket, cache-length bucket)`` covers rows ``0 .. B-1`` (B the next power of two over
   the highest running slot), each row at its own position (``input_pos`` [B]); rows with nothing to decode
   write to the cache's last position, which no slot uses, and their logits are ignored.
3. **Sample** greedy rows with one ``argmax`` over the batch, left on the GPU: those picks are the next step's
   inputs, and the host reads and hands them out while the GPU runs that next step (asynchronous scheduling,
   as vLLM's), so the host's per-token work does not leave the GPU idle. Rows with temperature, a repetition
   penalty or logits processors (JSON-schema constraints) go through the transformers backend's ``sample``,
   each with its own parameters and seeded generator, and that step waits for the host.

LoRA adapters are buffers of the model (:mod:`.lora`), so a step decodes one adapter group; groups take
turns. Prefix reuse is skipped for prompts past LongRoPE's switch (``original_max_position``): a cold
prefill that long uses the long factors at every position, a cached short prefix does not.
Ideas from vLLM (continuous batching, per-sequence positions, CUDA graphs per batch size) and gpt-fast.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import BadRequestError
from ..base import SamplingParams
from ..batching import Seq, SlotScheduler
from . import generate as gen
from .generate import to_device
from .model import Transformer

PREFILL_TOKENS = 2048  # prompt tokens prefilled per step at most (at least one whole prompt)


def batch_bucket(n: int, limit: int) -> int:
    """The batch size a step runs at for ``n`` rows: the next power of two, at most ``limit``."""
    return min(limit, 1 << max(0, n - 1).bit_length())


def plain_greedy(p: SamplingParams) -> bool:
    """True when a row's next token is simply the argmax of its logits."""
    return p.greedy and not p.logits_processors and p.repetition_penalty == 1.0


@dataclass
class Ahead:
    """A decode step's greedy picks that the host has not read yet.

    Attributes:
        seqs: the step's sequences; each one's pick is at its slot's row.
        picks: [B] token ids on the model's device (the next step's inputs); host: their copy on its way.
        ready: a CUDA event recorded after the copy (None on the CPU, where the copy is done at once).
    """

    seqs: list[Seq]
    picks: torch.Tensor
    host: torch.Tensor
    ready: Any


class FastBatcher(SlotScheduler):
    """Slots on one fast-path model, decoded together; thread-safe :meth:`submit`.

    Args:
        model: the engine's :class:`~.model.Transformer` (its cache is resized to ``n_slots`` rows).
        graphs: the engine's :class:`~.generate.DecodeGraphs` (captures one graph per batch/length bucket).
        n_slots: sequences decoded at once.
        cache_len: positions per row; a slot holds ``cache_len - 1`` tokens (the last is idle rows' scratch).
        lock: held during each step (the engine's: a step and an adapter switch never overlap).
        eos_ids: token ids that end a sequence.
        prefix_cache: reuse a slot's cached prompt prefix.
        on_group: ``(group)`` called before each prefill and step: puts the group's adapter in place.
    """

    def __init__(self, model: Transformer, graphs: gen.DecodeGraphs, *, n_slots: int, cache_len: int, lock,
                 eos_ids: set[int] = frozenset(), prefix_cache: bool = True,
                 on_group: Callable[[Hashable], None] | None = None):
        super().__init__(n_slots, prefix_cache=prefix_cache, eos_ids=eos_ids)
        self.model, self.graphs, self.lock, self.on_group = model, graphs, lock, on_group
        self.prefills = gen.PrefillGraphs(model, enabled=graphs.enabled)
        self.cache_len, self.slot_ctx = cache_len, cache_len - 1
        if model.args.long_factor is not None:
            self.reuse_limit = model.args.original_max_position
        self._ahead: Ahead | None = None  # the last step's greedy picks, not yet read by the host
        with lock:
            model.setup_caches(self.n_slots, cache_len)
            self._cache_version = model.cache_version

    def warm(self) -> None:
        """Capture the step's graph for every batch bucket at the three shortest cache buckets, and the
        prefill's for every length bucket at the shortest, now (compiling the pieces for each batch size), as
        vLLM captures its graphs at start-up, so the first requests of a busy server do not wait for it. Idle
        rows only: writes nothing but the scratch position."""
        if not self.graphs.enabled:
            return
        dev = self.model.device
        sizes = sorted({batch_bucket(1 << i, self.n_slots) for i in range(self.n_slots.bit_length() + 1)})
        lengths = sorted({gen.bucket(n, self.cache_len) for n in (1, 2 * gen.MIN_BUCKET, 4 * gen.MIN_BUCKET)})
        with self.lock:
            for kv_len in lengths:  # the cache lengths of chats up to ~1,000 tokens
                for b in sizes:
                    scratch = torch.full((b,), self.cache_len - 1, device=dev)
                    self.graphs.step(torch.zeros(b, 1, dtype=torch.long, device=dev), scratch, kv_len)
            self.prefills.warm(lengths[0], self.n_slots)  # and the prefills of joining prompts

    def _reset(self) -> None:
        self._ahead = None  # stale KV is overwritten before it is read; reuse trusts only ``_cached`` (cleared by the caller)

    def _use_group(self, group: Hashable) -> None:
        if self.on_group is not None:  # the engine's switch is a no-op when the group's adapter is in place
            self.on_group(group)

    def _step(self) -> bool:
        with self.lock:
            if self.model.cache_version != self._cache_version:  # reallocated by another user: the KV is gone
                self.model.setup_caches(self.n_slots, self.cache_len)
                self._cached = [[] for _ in range(self.n_slots)]
                self._cache_version = self.model.cache_version
            joined = self._join()
            decoded = self._decode()
        return joined or decoded

    def _join(self) -> bool:
        """Seat waiting sequences and prefill them, up to :data:`PREFILL_TOKENS` prompt tokens: consecutive
        seats of one adapter group in one forward (:meth:`_prefill_together`), a prompt past LongRoPE's
        switch alone; each sequence's first token is sampled from its prefill's logits."""
        budget, batch = PREFILL_TOKENS, []
        while budget > 0 and (nxt := self._next_waiting()) is not None:
            seq, free = nxt
            if len(seq.prompt) + 1 > self.slot_ctx:
                seq.out.put(BadRequestError(f"the prompt ({len(seq.prompt)} tokens) does not fit a slot's "
                                            f"{self.slot_ctx}-token context window; shorten it"))
                continue
            self._take_slot(seq, free)
            if seq.params.seed is not None and not seq.params.greedy:
                seq.sampler = torch.Generator(device=self.model.device).manual_seed(seq.params.seed)
            budget -= len(seq.todo)
            long = self.reuse_limit is not None and len(seq.prompt) > self.reuse_limit  # past LongRoPE's switch
            if batch and (long or batch[0].group != seq.group):
                self._prefill_together(batch)
                batch = []
            batch.append(seq)
            if long:
                self._prefill_together(batch)
                batch = []
        if batch:
            self._prefill_together(batch)
        return budget < PREFILL_TOKENS

    def _prefill_together(self, seqs: list[Seq]) -> None:
        """Prefill the seated ``seqs`` (one adapter group) in one forward (a graph replay when short), record what
        each slot now caches, and sample each one's first token. A failure is those requests' error; their slots'
        KV is then unknown."""
        try:
            self._use_group(seqs[0].group)
            logits = self.prefills.prefill_rows([s.todo for s in seqs], [s.pos for s in seqs], [s.slot for s in seqs])
            self._count_step(sum(len(s.todo) for s in seqs), len(seqs))
        except Exception as exc:  # noqa: BLE001
            for seq in seqs:
                self._cached[seq.slot] = []
                self._finish(seq, exc)
            return
        for seq in seqs:
            short = self.reuse_limit is None or len(seq.prompt) <= self.reuse_limit
            self._cached[seq.slot] = list(seq.prompt) if short else []
            seq.pos = len(seq.prompt)
        self._sample(seqs, logits)

    def _decode(self) -> bool:
        running = [s for s in self._slots if s is not None and s.todo and not s.gone()]
        if not running:
            return self._flush()
        group = self._next_group(running)
        mine = [s for s in running if s.group == group]
        greedy = all(plain_greedy(s.params) for s in mine)
        if not greedy or any(gen.recompute_at(self.model, s.pos) for s in mine):
            self._flush()  # these rows need every token on the host first (sampling state, a recompute)
            mine = [s for s in mine if self._slots[s.slot] is s]
        for seq in [s for s in mine if s.pos >= self.slot_ctx]:
            mine.remove(seq)
            self._finish(seq, RuntimeError(f"slot {seq.slot}'s context window of {self.slot_ctx} tokens is full"))
        try:
            self._use_group(group)
        except Exception as exc:  # noqa: BLE001 - the group's requests get the error; the others go on
            for seq in mine:
                self._finish(seq, exc)
            return True
        for seq in [s for s in mine if gen.recompute_at(self.model, s.pos)]:  # crossing LongRoPE's switch
            mine.remove(seq)
            self._recompute(seq)
        if not mine:
            return True
        logits = self._launch(mine)
        if greedy:
            self._pick_ahead(mine, logits)
        else:
            self._sample(mine, logits[[s.slot for s in mine]])
        return True

    def _launch(self, mine: list[Seq]) -> torch.Tensor:
        """Queue one decode step for ``mine`` (one graph replay); returns the step's logits [B, V] on the GPU,
        row ``seq.slot`` for each sequence (B the batch bucket; other rows are idle).

        A row's input token is its last sample: on the host (``seq.todo``), or, for a row whose last step is
        still ahead of the host (:meth:`_pick_ahead`), taken on the GPU from that step's picks. The inputs go
        over in one copy that does not wait for the GPU (:func:`to_device`), so the step queues behind the
        one still running."""
        dev, ahead = self.model.device, self._ahead
        fed = set(ahead.seqs) if ahead is not None else set()  # rows whose last pick is still on the GPU
        b = batch_bucket(max(s.slot for s in mine) + 1, self.n_slots)
        kv_len = gen.bucket(max(s.pos for s in mine) + 1, self.cache_len)
        # per row: its token from the host, its position, and 1 if its token is the last step's pick instead
        tokens, positions, from_picks = [0] * b, [self.cache_len - 1] * b, [0] * b
        for seq in mine:  # idle rows: token 0 at the scratch position
            positions[seq.slot] = seq.pos
            if seq in fed:
                from_picks[seq.slot] = 1
            else:
                tokens[seq.slot] = seq.todo[0]
        inputs = to_device([tokens, positions, from_picks], dev)
        tok = inputs[0]
        if any(from_picks):  # the last step's picks, resized to this step's rows (a row's pick is at its slot)
            last = ahead.picks[:b] if len(ahead.picks) >= b else torch.cat([ahead.picks, tok[len(ahead.picks):]])
            tok = torch.where(inputs[2] == 1, last, tok)
        logits = self.graphs.step(tok[:, None], inputs[1], kv_len)
        self._count_step(len(mine), len(mine))
        for seq in mine:
            seq.pos += 1
        return logits

    def _pick_ahead(self, mine: list[Seq], logits: torch.Tensor) -> None:
        """Greedy picks stay on the GPU and feed the next step; the host reads and emits them one step later.

        So the host's work for a step (handing out tokens, admitting requests, building the next inputs)
        overlaps the GPU's next step instead of leaving it idle, as vLLM's asynchronous scheduling does. A row
        that ends on a token decodes one step more than it needs; that pick is dropped."""
        picks = logits.argmax(-1)  # [B]: every row of the step, read at each sequence's slot
        host = picks.to("cpu", non_blocking=True)
        ready = None
        if picks.is_cuda:
            ready = torch.cuda.Event()
            ready.record()
        last, self._ahead = self._ahead, Ahead(list(mine), picks, host, ready)
        if last is not None:
            self._emit_ahead(last)

    def _flush(self) -> bool:
        """Emit the picks still ahead of the host; False when there were none."""
        last, self._ahead = self._ahead, None
        if last is not None:
            self._emit_ahead(last)
        return last is not None

    def _emit_ahead(self, ahead: Ahead) -> None:
        if ahead.ready is not None:
            ahead.ready.synchronize()
        host = ahead.host.tolist()
        for seq in ahead.seqs:
            if self._slots[seq.slot] is seq:  # not finished, failed or cancelled meanwhile
                self._emit(seq, host[seq.slot])

    def _recompute(self, seq: Seq) -> None:
        """Prefill the slot's whole sequence again with LongRoPE's long factors, as transformers' ``generate``
        does when a sequence first passes the switch (:func:`.generate.recompute_at`), and sample from it."""
        logits = self.prefills.prefill(seq.ids, 0, seq.slot)  # the prompt and every token emitted, the last one to feed now
        self._count_step(len(seq.ids), 1)
        self._cached[seq.slot] = []  # its prompt's keys now use the long factors: no longer a reusable prefix
        seq.pos += 1
        self._sample([seq], logits[None])

    def _sample(self, seqs: list[Seq], logits: torch.Tensor) -> None:
        """Pick and emit each sequence's next token. logits: [len(seqs), V] (fp32)."""
        from ..transformers import sample

        plain = [i for i, s in enumerate(seqs) if plain_greedy(s.params)]
        picks = dict(zip(plain, logits[plain].argmax(-1).tolist())) if plain else {}
        for i, seq in enumerate(seqs):
            if i not in picks:
                try:  # this request's own logits processors may fail: it alone gets the error
                    with torch.inference_mode():
                        picks[i] = sample(logits[i], seq.ids, seq.params, seq.sampler)
                except Exception as exc:  # noqa: BLE001
                    self._finish(seq, exc)
                    continue
            self._emit(seq, picks[i])
