"""``--parallel`` on the llama.cpp engine: how many slots by default, and the mixin that switches the engine's
``token_steps`` to the :class:`~phikit.engines.llamacpp_batch.LlamaBatcher` (each thread's LoRA adapter becomes its
sequences' group)."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from typing import Any

from .base import SamplingParams
from .batching import check_slots
from .llamacpp_batch import LlamaBatcher

MAX_DEFAULT_SLOTS = 16
KV_SHARE = 0.25  # the slots' KV cache may take at most this share of available memory


def default_slots(kv_bytes: int, available: int | None, cores: int) -> int:
    """``--parallel``'s default: 8 slots per core, at most 16, as many as fit ``KV_SHARE`` of available memory.

    Args:
        kv_bytes: bytes of KV cache one slot needs (its whole context window).
        available: bytes of memory available (None: unknown, no memory cap).
        cores: CPU cores.

    On 2 cores a step of 16 one-token sequences costs about as much as a few single-token steps (the
    weights are read once per step), so more slots than cores pays off; past 16 the step time dominates.
    """
    fits = int(available * KV_SHARE) // max(1, kv_bytes) if available else MAX_DEFAULT_SLOTS
    return max(1, min(MAX_DEFAULT_SLOTS, 8 * max(1, cores), fits))


class BatchedSlots:
    """Mixin for :class:`phikit.engines.llamacpp.LlamaCppEngine`: :meth:`enable_batching` switches its
    ``token_steps`` to a :class:`LlamaBatcher`, and each thread's LoRA adapter becomes its sequences' group.

    Until batching is enabled nothing changes (one slot, ``self.llm``'s own prefix cache).
    """

    batcher: LlamaBatcher | None = None
    max_concurrency = 1  # what the server's worker may run at once (app.py reads it)

    @staticmethod
    def available_memory() -> int | None:
        """Bytes of memory available now (the engine module provides its reader); None when unknown."""
        return None

    def kv_bytes_per_token(self) -> int:
        """f16 K and V for one token over all layers: ``2 * n_layer * n_head_kv * head_dim * 2`` bytes."""
        import llama_cpp

        m = self.llm._model.model
        head_dim = llama_cpp.llama_model_n_embd(m) // max(1, llama_cpp.llama_model_n_head(m))
        return 2 * llama_cpp.llama_model_n_layer(m) * llama_cpp.llama_model_n_head_kv(m) * head_dim * 2

    def enable_batching(self, n_slots: int | None = None) -> int:
        """Decode up to ``n_slots`` requests together from now on (None: :func:`default_slots`); returns the
        number of slots. Each slot has the engine's whole context window. Calling it again keeps the first
        batcher (other servers on this engine may be using it) and returns its slot count.

        Raises:
            BadRequestError: ``n_slots`` < 1.
            PhikitError: llama.cpp could not allocate the slots' KV cache.
        """
        import os

        if self.batcher is not None:
            return self.batcher.n_slots
        check_slots(n_slots)
        if n_slots is None:
            n_slots = default_slots(self.kv_bytes_per_token() * self.context_length, self.available_memory(),
                                    os.cpu_count() or 1)
        import llama_cpp

        self._adapter_of_thread = threading.local()  # this engine's; another engine's threads choose their own
        self.batcher = LlamaBatcher(
            self.llm._model, n_slots=n_slots, slot_ctx=self.context_length,
            n_threads=llama_cpp.llama_n_threads(self.llm._ctx.ctx), n_batch=max(512, self.llm.n_batch),
            prefix_cache=self.prefix_cache, eos_ids=self.eos_ids, on_group=self._set_batch_adapter,
        )
        self.max_concurrency = self.batcher.n_slots
        return self.batcher.n_slots

    def activate(self, name: str | None) -> None:
        """Set adapter ``name`` on the engine's own context, as without batching; with batching on, also
        remember it for this thread, whose sequences join that group (the batcher switches its own context per
        step). The engine's context follows even then, so what reads it directly (the retention perplexity,
        :func:`phikit.tune.evaluate.llamacpp_perplexity`) sees the adapter asked for after a server has
        switched batching on."""
        if self.batcher is not None:
            self._adapter_of_thread.adapter = name
        with _ctx_lock:  # the server's threads may switch at once; llama.cpp's context is not thread-safe
            super().activate(name)

    def batched_steps(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        """``token_steps`` through the batcher, in this thread's adapter group."""
        return self.batcher.submit(prompt_ids, params, group=getattr(self._adapter_of_thread, "adapter", None))

    def _set_batch_adapter(self, ctx: Any, name: Hashable) -> None:
        """Apply LoRA ``name`` (None: the base) to the batcher's context (``llama_set_adapters_lora``)."""
        self.loras.apply(ctx, name)


_ctx_lock = threading.Lock()
