"""The fast path's decode loop, in gpt-fast's shape: :func:`prefill` -> :func:`decode_one_token` (replayed from
a CUDA graph by :class:`DecodeGraphs`) -> greedy pick or sampling on the GPU.

Why it is fast: the KV cache is a buffer of the model (written in place, nothing copied per step), so the
one-token step has fixed shapes and addresses and is captured once per (batch, cache-length bucket) in a
CUDA graph; a step is then one graph launch instead of ~1,300 kernel launches from Python. Cache lengths
are bucketed (powers of two from 256) so graphs are reused across prompt lengths, and attention reads only
the bucket's prefix of the cache. Inside the graph, one layer of the step is ``torch.compile``'d and reused by
every layer (:func:`compile_layers`, the bf16 default), or only the elementwise pieces (RMSNorm, rotary,
SiLU x up) are (:func:`compile_ops`); the projections keep their own kernels (at batch 1 a Triton GEMV, :mod:`.gemv`;
else cuBLAS).
Source: pytorch-labs/gpt-fast ``generate.py`` (prefill / decode_one_token / decode_n_tokens).
"""

from __future__ import annotations

import os

import torch

from ...cache import cache_root
from . import model as model_mod
from .model import Transformer

MIN_BUCKET = 256  # a short chat's step reads 256 positions of KV per row, not 1,024 (bench-serve-gpu.md)
PREFILL_BUCKETS = (16, 32, 64, 128, 256, 512)  # tokens per row of a prefill replayed from a graph
ROW_BUCKETS = (1, 2, 4, 8, 16, 32)  # rows of a prefill replayed from a graph
GRAPH_TOKENS = 2048  # rows x tokens of a captured prefill at most (its activations live in the graphs' pool)
COMPILE_MODES = ("auto", "layers", "ops", "step", "none")  # what FastEngine(compile=...) and --fast-compile accept


def default_compile(precision: str) -> str:
    """What ``compile="auto"`` compiles: ``layers`` for bf16 (1.15-1.24x the decode speed of ``ops`` for a
    cold-cache load of ~20 s), ``ops`` for int4 and nf4 (compiling their quantized layer took 30-53 s at load,
    past the 20 s load target; docs/bench-gpu.md)."""
    return "layers" if precision in ("bf16", "bfloat16") else "ops"


def bucket(n: int, limit: int | None = None) -> int:
    """The cache length for ``n`` positions: the next power of two, at least :data:`MIN_BUCKET`, at most ``limit``."""
    b = max(MIN_BUCKET, 1 << max(0, n - 1).bit_length())
    return min(b, limit) if limit else b


def to_device(rows: list[list[int]], device: torch.device) -> torch.Tensor:
    """``rows`` as an int64 tensor [len(rows), n] on ``device``. On CUDA the copy goes through pinned memory
    with ``non_blocking``, so it is queued on the stream instead of waiting for the GPU to finish its
    queued work (a plain ``torch.tensor(..., device="cuda")`` copies from pageable memory and waits)."""
    t = torch.tensor(rows, dtype=torch.long)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


def pad_rows(rows: list[list[int]], starts: list[int], width: int, scratch: int) -> tuple[list[list[int]], list[list[int]]]:
    """Tokens and positions for :meth:`.model.Transformer.prefill_rows`: row i's tokens at positions
    ``starts[i]`` on, padded to ``width`` with token 0 at the ``scratch`` position (one no slot uses)."""
    tokens = [r + [0] * (width - len(r)) for r in rows]
    positions = [[*range(s, s + len(r))] + [scratch] * (width - len(r)) for r, s in zip(rows, starts)]
    return tokens, positions


@torch.inference_mode()
def prefill(model: Transformer, idx: torch.Tensor, input_pos: torch.Tensor, slot: int = 0, start: int = 0) -> torch.Tensor:
    # idx: [B, T]; input_pos: [T] (start..start+T-1) -> logits of the last position [B, V] (fp32);
    # fills cache rows slot..slot+B-1 at [start, start+T), reusing what the rows hold in [0, start)
    return model(idx, input_pos, slot=slot, start=start)[:, -1].float()


def _step(model: Transformer, cur_token: torch.Tensor, input_pos: torch.Tensor, kv_len: int) -> torch.Tensor:
    return model(cur_token, input_pos, kv_len)[:, -1].float()


@torch.inference_mode()
def decode_one_token(model: Transformer, cur_token: torch.Tensor, input_pos: torch.Tensor, kv_len: int) -> torch.Tensor:
    # cur_token: [B, 1]; input_pos: [B] (each row's position) -> logits [B, V] (fp32);
    # row i writes cache row i at input_pos[i] and reads its [0, kv_len)
    return _step(model, cur_token, input_pos, kv_len)


def recompute_at(model: Transformer, pos: int) -> bool:
    """True when the token fed at position ``pos`` is the one that first takes the sequence past LongRoPE's
    switch (``original_max_position``): transformers' Phi-3 ``generate`` then drops its KV cache and prefills
    the whole sequence again, so every position's keys use the long factors from there on
    (``Phi3ForCausalLM.prepare_inputs_for_generation``). The fast path does the same at that one step.
    """
    return model.args.long_factor is not None and pos == model.args.original_max_position


STEP = {"fn": _step}  # what a graph captures: the eager step, or the whole step compiled (compile_step)


def keep_compile_cache() -> None:
    """Keep inductor's compiled kernels under phikit's cache (``<cache>/inductor``) instead of ``/tmp``, so a start
    after a reboot finds them (a warm start loads bf16 in 10.3-11.3 s against 18.8-22.3 s cold; docs/bench-gpu.md),
    as vLLM keeps its torch.compile cache under ``~/.cache/vllm``. A ``TORCHINDUCTOR_CACHE_DIR`` already set wins.
    Call before the process's first compile: inductor reads the variable once."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))


def _compile_settings(*, emulate_casts: bool, recompiles: bool) -> None:
    """The process-wide settings a compile mode needs, set before its ``torch.compile``: the kept cache
    (:func:`keep_compile_cache`); ``emulate_casts``: inductor keeps bf16 roundings where eager PyTorch has them,
    so outputs stay close to transformers' eager ones; ``recompiles``: dynamo may keep up to 64 compiled
    versions of a function (one per shape the mode compiles for)."""
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    keep_compile_cache()
    if emulate_casts and hasattr(inductor_config, "emulate_precision_casts"):
        inductor_config.emulate_precision_casts = True
    if recompiles:
        dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 64)


def compile_step() -> None:
    """Capture the whole one-token step ``torch.compile``'d (inductor fuses the cache writes, rotary, norms and
    attention's small kernels; the projections stay the GEMV or cuBLAS), as gpt-fast compiles ``decode_one_token``.

    One compile per (batch, cache-length bucket), so the first request of each bucket waits for it (tens of
    seconds): the slower start is the price of the faster step (bench/fast_compile_step.py measures both).
    """
    _compile_settings(emulate_casts=False, recompiles=True)
    STEP["fn"] = torch.compile(_step, fullgraph=True, dynamic=False)


def compile_ops() -> bool:
    """Use ``torch.compile``'d elementwise pieces in the one-token step (CUDA only; inductor + Triton).

    Compiled with fixed shapes (one compile per batch size); prefill keeps the eager pieces, so prompts of
    any length cost no recompilation.

    ``emulate_precision_casts`` keeps bf16 roundings where eager PyTorch has them, so outputs stay close to
    transformers' eager ones. Returns False (and leaves the eager pieces) if compiling is unavailable.
    """
    if model_mod.STEP.rms_norm is not model_mod.rms_norm:
        return True  # already compiled
    try:
        _compile_settings(emulate_casts=True, recompiles=False)
        names = ("rms_norm", "add_rms_norm", "rotate_qk", "silu_mul")
        model_mod.STEP.__init__(**{n: torch.compile(getattr(model_mod, n), fullgraph=True, dynamic=False) for n in names})
        return True
    except Exception:  # noqa: BLE001 - any failure here only costs speed
        return False


def compile_layers() -> bool:
    """Run the one-token step through a ``torch.compile``'d :func:`.model.layer_step`: each layer's cache write,
    rotary, norms, attention's small kernels and residual adds fused (the projections stay the GEMV or cuBLAS), compiled once
    for every layer, as PyTorch's regional-compilation recipe compiles one repeated block instead of the
    whole model. About the whole-step compile's gain over :func:`compile_ops` (1.15-1.24x against its 1.23x)
    at a third of its load (~20 s cold against 56 s): one compile, dynamic in the cache length
    (:meth:`.model.Transformer.forward` marks it), serves every cache-length bucket, and one more every batch
    size above 1 (dynamo makes the batch dynamic at its first change; docs/bench-gpu.md).

    Returns False (and leaves the eager step) if compiling is unavailable.
    """
    if model_mod.STEP.layer is not None:
        return True
    try:
        _compile_settings(emulate_casts=True, recompiles=True)
        model_mod.STEP.__init__(layer=torch.compile(model_mod.layer_step, fullgraph=True))
        return True
    except Exception:  # noqa: BLE001 - any failure here only costs speed
        return False


def uncompile_ops() -> None:
    """Back to the eager elementwise pieces and the eager step (after a failed warm-up of the compiled ones)."""
    model_mod.STEP.__init__()
    STEP["fn"] = _step


class DecodeGraphs:
    """``decode_one_token`` captured in one CUDA graph per (batch, cache length).

    On CPU (or with ``enabled=False``) :meth:`step` simply calls :func:`decode_one_token`, so the loop's logic
    is the same everywhere and testable without a GPU.
    """

    def __init__(self, model: Transformer, enabled: bool = True):
        self.model = model
        self.enabled = enabled and model.device.type == "cuda"
        self.graphs: dict[tuple[int, int], tuple] = {}
        self.version = model.cache_version

    def step(self, tokens: torch.Tensor, pos: int | torch.Tensor, kv_len: int) -> torch.Tensor:
        """One decode step. tokens: [B, 1] (on the model's device); pos: every row's position (int) or each
        row's own ([B] tensor) -> logits [B, V] (fp32).

        The returned tensor is the graph's static output: read it before the next step.
        """
        b = tokens.shape[0]
        if not self.enabled:
            positions = pos if isinstance(pos, torch.Tensor) else torch.full((b,), pos, device=tokens.device)
            return decode_one_token(self.model, tokens, positions.to(tokens.device), kv_len)
        if self.version != self.model.cache_version:  # the cache was reallocated: old graphs point at freed memory
            self.graphs.clear()
            self.version = self.model.cache_version
        key = (tokens.shape[0], kv_len)
        if key not in self.graphs:
            self.graphs[key] = self.capture(*key)
        graph, tok, input_pos, logits = self.graphs[key]
        with torch.inference_mode():  # the static buffers are inference tensors
            tok.copy_(tokens)
            if isinstance(pos, torch.Tensor):
                input_pos.copy_(pos)
            else:
                input_pos.fill_(pos)
            graph.replay()
        return logits

    @torch.inference_mode()
    def capture(self, batch: int, kv_len: int) -> tuple:
        """Warm up (runs any compilation) on a side stream, then capture.

        The warm-up steps write the cache at its last position, which no step reads before writing it itself
        (and batched slots never use), so a capture in the middle of a generation leaves the prompts' keys and values intact.
        """
        dev = self.model.device
        tok = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        input_pos = torch.full((batch,), self.model.max_len - 1, dtype=torch.long, device=dev)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        step = STEP["fn"]
        with torch.cuda.stream(stream):
            for _ in range(2):
                step(self.model, tok, input_pos, kv_len)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()  # its own memory pool: a shared one outlived by its graphs trips an assert
        with torch.cuda.graph(graph):
            logits = step(self.model, tok, input_pos, kv_len)
        return graph, tok, input_pos, logits


class PrefillGraphs:
    """Prefills of up to 32 sequences at once (each up to 512 tokens after any cached prefix in its slot, at
    most :data:`GRAPH_TOKENS` padded tokens in all), replayed from a CUDA graph per (rows bucket, tokens bucket,
    cache-length bucket): an eager prefill is ~1,300 kernel launches from Python, which on a busy server cost
    more than the GPU's work for short prompts, and a wave of requests joining a running batch is many short
    prompts. vLLM V1 likewise replays captured graphs for batches of up to 512 tokens. Rows are padded to their
    buckets at the scratch position (:meth:`.model.Transformer.prefill_rows`; a padding row writes only there).
    The graphs share one memory pool: each replay's logits are copied out before the next replay. On CPU (or
    ``enabled=False``) the same padded forward runs eagerly.
    """

    def __init__(self, model: Transformer, enabled: bool = True):
        self.model = model
        self.enabled = enabled and model.device.type == "cuda"
        self.graphs: dict[tuple[int, int, int], tuple] = {}
        self.pool = None  # the graphs' shared memory pool (made at the first capture)
        self.version = model.cache_version

    def fits(self, n: int, start: int) -> bool:
        """Whether a row of ``n`` tokens after ``start`` cached ones can be prefilled here (short rotary factors only)."""
        end = start + n
        return n <= PREFILL_BUCKETS[-1] and (self.model.args.long_factor is None
                                             or end <= self.model.args.original_max_position)

    def shape(self, lengths: list[int]) -> tuple[int, int] | None:
        """The (rows, tokens) buckets a prefill of rows of these lengths runs at, or None past the buckets."""
        r = next((b for b in ROW_BUCKETS if b >= len(lengths)), None)
        t = next((b for b in PREFILL_BUCKETS if b >= max(lengths)), None)
        return (r, t) if r is not None and t is not None and r * t <= GRAPH_TOKENS else None

    def prefill(self, tokens: list[int], start: int, slot: int) -> torch.Tensor:
        """One row: :meth:`prefill_rows` of ``[tokens]``; returns the last token's logits [V] (fp32)."""
        return self.prefill_rows([tokens], [start], [slot])[0]

    @torch.inference_mode()
    def prefill_rows(self, rows: list[list[int]], starts: list[int], slots: list[int]) -> torch.Tensor:
        """Prefill ``rows[i]`` into cache row ``slots[i]`` at positions ``starts[i]`` on (keeping what the row holds
        before ``starts[i]``); returns each row's last token's logits [len(rows), V] (fp32, a tensor of its own).

        From a graph when every row :meth:`fits` and the rows fit a :meth:`shape`; otherwise eagerly: one row
        with :func:`prefill` (a prompt past LongRoPE's switch uses the long factors), several with
        :meth:`.model.Transformer.prefill_rows` (the caller keeps those below the switch).
        """
        m, dev, scratch = self.model, self.model.device, self.model.max_len - 1
        end = max(s + len(x) for x, s in zip(rows, starts))
        fit = all(self.fits(len(x), s) for x, s in zip(rows, starts))
        shape = self.shape([len(x) for x in rows]) if fit else None
        if shape is None:
            if len(rows) == 1:
                return prefill(m, torch.tensor(rows, device=dev), torch.arange(starts[0], end, device=dev),
                               slot=slots[0], start=starts[0])
            tokens, positions = pad_rows(rows, starts, max(map(len, rows)), scratch)
            meta = to_device([slots, [len(x) - 1 for x in rows]], dev)
            return m.prefill_rows(to_device(tokens, dev), to_device(positions, dev), meta[0], meta[1], kv_len=end)
        r, t = shape
        pad = r - len(rows)  # padding rows: token 0 at the scratch position of the first row's slot
        tokens, positions = pad_rows([*rows, *[[]] * pad], [*starts, *[scratch] * pad], t, scratch)
        meta = zip(tokens, positions, [*slots, *[slots[0]] * pad], [len(x) - 1 for x in rows] + [0] * pad)
        host = to_device([[*tk, *ps, slot, last] for tk, ps, slot, last in meta], dev)  # [r, 2t + 2]
        kv_len = bucket(end, m.max_len)
        if not self.enabled:
            return self._run(host, t, kv_len)[: len(rows)]
        graph, static, logits = self._graph(r, t, kv_len)
        static.copy_(host)
        graph.replay()
        return logits[: len(rows)].clone()  # the pool is shared: the next replay may overwrite it

    def _run(self, static: torch.Tensor, t: int, kv_len: int) -> torch.Tensor:
        return self.model.prefill_rows(static[:, :t], static[:, t: 2 * t], static[:, 2 * t], static[:, 2 * t + 1], kv_len)

    def warm(self, kv_len: int, max_rows: int = 1) -> None:
        """Capture every (rows, tokens) bucket's graph up to ``max_rows`` rows at cache length ``kv_len`` now (at
        start-up, not on a request)."""
        if self.enabled:
            for r in [b for b in ROW_BUCKETS if b <= max_rows]:
                for t in PREFILL_BUCKETS:
                    if r * t <= GRAPH_TOKENS:
                        self._graph(r, t, kv_len)

    def _graph(self, r: int, t: int, kv_len: int) -> tuple:
        if self.version != self.model.cache_version:  # the cache was reallocated: old graphs point at freed memory
            self.graphs.clear()
            self.pool = None
            self.version = self.model.cache_version
        if (r, t, kv_len) not in self.graphs:
            self.graphs[r, t, kv_len] = self.capture(r, t, kv_len)
        return self.graphs[r, t, kv_len]

    @torch.inference_mode()
    def capture(self, r: int, t: int, kv_len: int) -> tuple:
        """Warm up on a side stream, then capture. The static inputs start at the scratch position of row 0,
        so the warm-up writes nothing any slot reads."""
        m = self.model
        static = torch.zeros(r, 2 * t + 2, dtype=torch.long, device=m.device)  # tokens, positions, slot, last
        static[:, t: 2 * t].fill_(m.max_len - 1)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._run(static, t, kv_len)
        torch.cuda.current_stream().wait_stream(stream)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self._run(static, t, kv_len)
        return graph, static, logits


@torch.inference_mode()
def generate(model: Transformer, graphs: DecodeGraphs, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding of a batch of equal-length prompts, with no host sync inside the loop (benchmarks).

    Args:
        prompt: [B, T] token ids on the model's device.
        max_new_tokens: tokens to generate per row (no early stop at end-of-sequence).

    Returns:
        [B, max_new_tokens] token ids.
    """
    b, t = prompt.shape
    kv_len = bucket(t + max_new_tokens, model.args.max_position)
    model.setup_caches(b, kv_len)
    tok = prefill(model, prompt, torch.arange(t, device=prompt.device)).argmax(-1, keepdim=True)  # [B, 1]
    out = [tok]
    for i in range(max_new_tokens - 1):
        if recompute_at(model, t + i):  # past LongRoPE's switch: the whole sequence again, long factors
            seq = torch.cat([prompt, *out], dim=1)
            tok = prefill(model, seq, torch.arange(seq.shape[1], device=prompt.device)).argmax(-1, keepdim=True)
        else:
            tok = graphs.step(tok, t + i, kv_len).argmax(-1, keepdim=True)
        out.append(tok)
    return torch.cat(out, dim=1)
