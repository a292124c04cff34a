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
from .llamacpp_lora import LlamaCppAdapters
from .llamacpp_slots import BatchedSlots
from .local import LocalEngine

DEFAULT_CONTEXT = 4096  # when the file does not say its trained context
KV_MEMORY_SHARE = 0.25  # the default context's KV cache may take at most this share of available memory


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_header(path: str | Path, keys: set[str]) -> dict:
    """The scalar values of ``keys`` in a GGUF file's key/value header.

    Reads only as far as the last wanted key (architecture keys come before the tokenizer's large arrays),
    so it takes milliseconds where ``gguf.GGUFReader`` parses every field and tensor (20 s on 2 busy cores).
    Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md

    Raises:
        ValueError: not a GGUF file.
    """
    import struct

    out: dict = {}
    with open(path, "rb") as f:
        def read(fmt):
            size = struct.calcsize(fmt)
            return struct.unpack(fmt, f.read(size))[0]

        def string():
            return f.read(read("<Q")).decode("utf-8", errors="replace")

        def skip(kind):
            if kind == 8:
                f.seek(read("<Q"), 1)
            elif kind == 9:
                elem, count = read("<I"), read("<Q")
                if elem in _GGUF_SCALARS:
                    f.seek(struct.calcsize(_GGUF_SCALARS[elem]) * count, 1)
                else:
                    for _ in range(count):
                        skip(elem)
            else:
                f.seek(struct.calcsize(_GGUF_SCALARS[kind]), 1)

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        read("<I")
        read("<Q")
        for _ in range(read("<Q")):
            key, kind = string(), read("<I")
            if key in keys and kind in _GGUF_SCALARS:
                out[key] = read(_GGUF_SCALARS[kind])
            elif key in keys and kind == 8:
                out[key] = string()
            else:
                skip(kind)
            if len(out) == len(keys):
                break
    return out


def default_context(path: str | Path, available: int | None = None) -> int:
    """The model's trained context length, capped so an f16 KV cache fits in a quarter of available memory.

    Reads the GGUF header (``<arch>.context_length``, ``block_count``, ``embedding_length``,
    ``attention.head_count``/``head_count_kv``): the KV cache takes ``2 * n_layer * n_head_kv * head_dim * 2``
    bytes per token. SmolLM2-135M: 8192 tokens, 22.5 KiB/token, 180 MiB; Phi-4-mini: 131072 trained,
    128 KiB/token, so 32768 tokens where 16 GiB are available.

    Returns:
        Tokens, a multiple of 256 (at least 512); :data:`DEFAULT_CONTEXT` when the header cannot be read.
    """
    try:
        arch = gguf_header(path, {"general.architecture"})["general.architecture"]
        names = ("context_length", "block_count", "embedding_length", "attention.head_count", "attention.head_count_kv")
        h = gguf_header(path, {f"{arch}.{n}" for n in names})
        trained = int(h.get(f"{arch}.context_length") or DEFAULT_CONTEXT)
        n_layer, n_embd = int(h[f"{arch}.block_count"]), int(h[f"{arch}.embedding_length"])
        n_head = int(h[f"{arch}.attention.head_count"])
        n_head_kv = int(h.get(f"{arch}.attention.head_count_kv") or n_head)
    except Exception:  # an unusual header: llama.cpp itself will still say what is wrong with the file
        return DEFAULT_CONTEXT
    per_token = 2 * n_layer * n_head_kv * (n_embd // n_head) * 2
    available = _available_memory() if available is None else available
    fits = int(available * KV_MEMORY_SHARE) // per_token if available else trained
    return max(512, min(trained, fits) // 256 * 256)


def _as_numpy_processor(proc):
    """Adapt a phikit logits processor (ids, torch [V]) to llama-cpp-python's (np ids, np scores)."""
    import torch

    def call(input_ids, scores):
        out = proc(input_ids.tolist(), torch.from_numpy(scores))
        return out.numpy() if hasattr(out, "numpy") else out

    return call


class LlamaCppEngine(BatchedSlots, LlamaCppAdapters, LocalEngine):
    """A GGUF model run by llama.cpp.

    Args:
        ref: a resolved ``gguf`` model.
        n_ctx: context window in tokens; None takes the model's trained context where memory allows
            (:func:`default_context`; SmolLM2: 8192).
        n_threads: CPU threads; None reads ``$PHIKIT_THREADS``, else uses all cores. llama.cpp's OpenMP
            threads spin while waiting: on a quiet 2-core machine that gives 133-148 tok/s (vs 40 tok/s with
            ``OMP_WAIT_POLICY=PASSIVE``), but on a busy one it collapses to ~10 tok/s; there, set
            ``PHIKIT_THREADS=1`` or ``OMP_WAIT_POLICY=PASSIVE``. Generate from one thread per process:
            a second calling thread gets a second OpenMP pool and ~35% less (docs/benchmarks.md).
        n_gpu_layers: layers to offload when llama.cpp was built with a GPU backend (-1 = all).
        n_batch: prompt tokens evaluated per batch (llama.cpp's ``n_batch`` and ``n_ubatch``).
        prefix_cache: reuse the KV cache of the previous prompt's shared prefix (one slot), so a chat turn
            prefills only what is new instead of the whole history. Deterministic: the prompt is always
            prefilled in batches of ``n_batch`` tokens aligned to absolute positions (0, 512, 1024, ...), and
            only whole aligned batches of the previous *prompt* are reused (never generated tokens, whose KV
            came from one-token decode steps). Every batch a warm call evaluates therefore holds the same
            tokens at the same positions over the same cached keys as in a cold run, and goes through the
            same kernels: greedy output is identical to a cold run (tests/test_chat.py). The cost is
            re-evaluating up to ``n_batch - 1`` cached tokens per call. None reads ``$PHIKIT_PREFIX_CACHE``
            (on unless ``0``).
        adapter: a LoRA adapter (registered name or PEFT directory) applied to every request by default;
            converted to a GGUF LoRA once and switched per request (:mod:`phikit.engines.llamacpp_lora`).

    Raises:
        BadRequestError: ``ref`` is not a GGUF file.
        PhikitError: llama.cpp could not load the file.
        AdapterError: ``adapter`` is missing, corrupt or made for another base model.
    """

    name = "llamacpp"
    available_memory = staticmethod(_available_memory)  # sizes the default number of slots

    def __init__(self, ref: ModelRef, *, n_ctx: int | None = None, n_threads: int | None = None, n_gpu_layers: int = 0,
                 prefix_cache: bool | None = None, n_batch: int = 512, adapter: str | None = None):
        if not ref.is_gguf:
            raise BadRequestError(
                f"the llamacpp backend needs a .gguf file but {ref.source!r} is a transformers checkpoint; "
                "use --backend transformers or convert it with llama.cpp's convert_hf_to_gguf.py"
            )
        from llama_cpp import Llama

        if n_ctx is None:
            n_ctx = default_context(ref.source)
        elif not isinstance(n_ctx, int) or n_ctx < 64:
            raise BadRequestError(f"the context window (n_ctx, --ctx) must be at least 64 tokens, got {n_ctx!r}")
        try:
            self.llm = Llama(
                model_path=str(Path(ref.source)),
                n_ctx=n_ctx,
                n_threads=n_threads or int(os.environ.get("PHIKIT_THREADS") or 0) or os.cpu_count(),
                n_gpu_layers=n_gpu_layers,
                n_batch=n_batch,
                n_ubatch=n_batch,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise PhikitError(f"llama.cpp could not load {ref.source}: {exc}") from None
        self.model_name = ref.name
        if prefix_cache is None:  # $PHIKIT_PREFIX_CACHE=0 turns it off (for comparisons)
            prefix_cache = os.environ.get("PHIKIT_PREFIX_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")
        self.prefix_cache = prefix_cache
        self._slot: list[int] = []  # the last prompt whose prefill completed; its KV is in the cache
        self.reused_tokens = 0  # prompt tokens the last call took from the cache (for tests and benchmarks)
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
        self.init_loras(ref, adapter)

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)  # data: markers stay text

    def encode_special(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def decode(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids), special=True).decode("utf-8", errors="replace")

    def reusable(self, prompt_ids: Sequence[int]) -> int:
        """How many leading tokens of ``prompt_ids`` can come from the cache: the prefix shared with the last
        prompt, rounded down to whole ``n_batch`` batches, leaving at least one token to evaluate."""
        if not self.prefix_cache or not self._slot:
            return 0
        common = 0
        for a, b in zip(self._slot, prompt_ids):
            if a != b:
                break
            common += 1
        batch = self.llm.n_batch
        return min(common, len(prompt_ids) - 1, self.llm.n_tokens) // batch * batch

    def token_steps(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        """Yield one token id per step from llama.cpp's sampler, reusing the cached prompt prefix (through
        the slots of :meth:`enable_batching` once it is on: :mod:`phikit.engines.llamacpp_batch`)."""
        if self.batcher is not None:
            yield from self.batched_steps(prompt_ids, params)
            return
        if params.seed is not None:
            self.llm.set_seed(params.seed)
        reuse = self.reusable(prompt_ids)
        self._slot = []  # until this prefill completes, the cache matches no prompt
        self.reused_tokens = reuse
        if reuse:
            self.llm.n_tokens = reuse  # eval() drops the cache after this position, then prefills from it
        else:
            self.llm.reset()
        procs = [_as_numpy_processor(p) for p in params.logits_processors]
        processor = None
        if procs:
            from llama_cpp import LogitsProcessorList

            processor = LogitsProcessorList(procs)
        steps = self.llm.generate(
            prompt_ids[reuse:],
            temp=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=0.0,
            repeat_penalty=params.repetition_penalty,
            logits_processor=processor,
            reset=False,  # phikit chose the reused prefix above; llama-cpp-python's own matching is off
        )
        try:
            first = next(steps, None)
            if first is None:
                return
            self._slot = list(prompt_ids)  # prefilled: the next call may reuse it
            yield first
            yield from steps
        finally:
            steps.close()
