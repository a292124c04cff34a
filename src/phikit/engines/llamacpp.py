"""llama.cpp backend (llama-cpp-python): GGUF files, the default for the embedded model.

llama.cpp does the forward pass, KV cache and sampling in C++; phikit renders the prompt with the GGUF's
own chat template and runs the shared stream loop, so text, stop strings and timings behave exactly as on
the transformers backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import BadRequestError, PhikitError
from ..models import ModelRef
from .base import SamplingParams
from .local import LocalEngine

DEFAULT_CONTEXT = 4096


def _as_numpy_processor(proc):
    """Adapt a phikit logits processor (ids, torch [V]) to llama-cpp-python's (np ids, np scores)."""
    import torch

    def call(input_ids, scores):
        out = proc(input_ids.tolist(), torch.from_numpy(scores))
        return out.numpy() if hasattr(out, "numpy") else out

    return call


class LlamaCppEngine(LocalEngine):
    """A GGUF model run by llama.cpp.

    Args:
        ref: a resolved ``gguf`` model.
        n_ctx: context window in tokens (capped at the model's training context).
        n_threads: CPU threads; None reads ``$PHIKIT_THREADS``, else uses all cores. llama.cpp's OpenMP
            threads spin while waiting: on a quiet 2-core machine that gives 133-148 tok/s (vs 40 tok/s with
            ``OMP_WAIT_POLICY=PASSIVE``), but on a busy one it collapses to ~10 tok/s; there, set
            ``PHIKIT_THREADS=1`` or ``OMP_WAIT_POLICY=PASSIVE``. Generate from one thread per process:
            a second calling thread gets a second OpenMP pool and ~35% less (docs/benchmarks.md).
        n_gpu_layers: layers to offload when llama.cpp was built with a GPU backend (-1 = all).
        prefix_cache: reuse the KV cache of a shared prompt prefix between calls. Faster multi-turn chat,
            but the last prompt token is then evaluated alone, through different (quantized) kernels than a
            batched prefill, so greedy output can differ from a cold run. Off by default: the same request
            gives the same answer.

    Raises:
        BadRequestError: ``ref`` is not a GGUF file.
        PhikitError: llama.cpp could not load the file.
    """

    name = "llamacpp"

    def __init__(self, ref: ModelRef, *, n_ctx: int = DEFAULT_CONTEXT, n_threads: int | None = None, n_gpu_layers: int = 0, prefix_cache: bool = False):
        if not ref.is_gguf:
            raise BadRequestError(
                f"the llamacpp backend needs a .gguf file but {ref.source!r} is a transformers checkpoint; "
                "use --backend transformers or convert it with llama.cpp's convert_hf_to_gguf.py"
            )
        from llama_cpp import Llama

        try:
            self.llm = Llama(
                model_path=str(Path(ref.source)),
                n_ctx=n_ctx,
                n_threads=n_threads or int(os.environ.get("PHIKIT_THREADS") or 0) or os.cpu_count(),
                n_gpu_layers=n_gpu_layers,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise PhikitError(f"llama.cpp could not load {ref.source}: {exc}") from None
        self.model_name = ref.name
        self.prefix_cache = prefix_cache
        meta = self.llm.metadata
        self.context_length = min(n_ctx, self.llm.n_ctx())
        self.chat_template = meta.get("tokenizer.chat_template")
        model = self.llm._model
        bos, eos = self.llm.token_bos(), self.llm.token_eos()
        self.special_tokens = {
            "bos_token": model.token_get_text(bos) if bos >= 0 else "",
            "eos_token": model.token_get_text(eos) if eos >= 0 else "",
        }
        self.eos_ids = {i for i in (eos, int(meta.get("tokenizer.ggml.eot_token_id", -1))) if i >= 0}

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)  # data: markers stay text

    def encode_special(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def decode(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids), special=True).decode("utf-8", errors="replace")

    def token_steps(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        """Yield one token id per step from llama.cpp's sampler (prompt-prefix KV reuse included)."""
        if params.seed is not None:
            self.llm.set_seed(params.seed)
        if not self.prefix_cache:
            self.llm.reset()
        procs = [_as_numpy_processor(p) for p in params.logits_processors]
        processor = None
        if procs:
            from llama_cpp import LogitsProcessorList

            processor = LogitsProcessorList(procs)
        yield from self.llm.generate(
            prompt_ids,
            temp=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=0.0,
            repeat_penalty=params.repetition_penalty,
            logits_processor=processor,
            reset=True,
        )
