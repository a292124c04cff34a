"""Timing one cell of the matrix: a batch of equal-length prompts, greedy, a fixed number of new tokens.

Every backend is timed the same way: **TTFT** is prefill plus the first greedy pick for the whole batch
(synchronised), **decode tok/s** is the tokens generated after the first one, summed over the batch, divided
by the time after the first token (aggregate over the batch), and **batch_s** the whole batch's time. The
HF ``generate`` and fast-path timings are those of ``bench/gpu_fast_bench.py`` (which now imports them from
here): median of ``runs`` after one warm-up of the same shape (the warm-up compiles and captures graphs).

Prompts are random token ids (seeded), so every prompt length is exact and no backend can reuse a cached
prefix from the previous run (each run draws new ids).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator

# ids drawn from [LOW, min(vocab, HIGH)): above the special tokens at the bottom of SmolLM2's vocabulary and
# below Phi-4-mini's special tokens (199999 and up).
LOW, HIGH = 100, 190_000


def sync(dev: str) -> None:
    """Wait for the GPU's queued work (no-op on CPU), so wall-clock time covers it."""
    if dev == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], object], dev: str) -> tuple[float, object]:
    """``(seconds, fn())``, synchronised before and after."""
    sync(dev)
    t0 = time.perf_counter()
    out = fn()
    sync(dev)
    return time.perf_counter() - t0, out


def prompt_ids(batch: int, length: int, vocab: int, seed: int = 0, dev: str = "cpu"):
    """``[batch, length]`` random token ids (a torch ``long`` tensor on ``dev``), the same for the same seed."""
    import torch

    g = torch.Generator().manual_seed(seed)
    high = max(LOW + 1, min(vocab, HIGH))
    return torch.randint(min(LOW, high - 1), high, (batch, length), generator=g).to(dev)


def figures(ttft_s: float, total_s: float, decoded: int) -> dict:
    """The cell's figures from its times: TTFT ms, aggregate decode tok/s after the first token, batch seconds.

    Args:
        ttft_s: seconds to the first token of every row; total_s: seconds for the whole batch.
        decoded: tokens generated after each row's first one, summed over the batch.
    """
    rate = decoded / (total_s - ttft_s) if total_s > ttft_s else 0.0
    return {"ttft_ms": round(ttft_s * 1000, 1), "decode_tok_s": round(rate, 1), "batch_s": round(total_s, 3)}


def hf_cell(model, ids, new_tokens: int, runs: int, dev: str) -> dict:
    """Plain transformers ``generate`` (greedy, no early stop) on ``ids`` [B, T]: TTFT from a 1-token
    ``generate``, total from a ``new_tokens`` one (``min_new_tokens`` forbids stopping at end-of-sequence)."""
    import torch
    from transformers import GenerationConfig

    mask = torch.ones_like(ids)

    def gen(n: int):
        cfg = GenerationConfig(do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=0,
                               bos_token_id=None, eos_token_id=None)
        with torch.inference_mode():
            return model.generate(ids, attention_mask=mask, generation_config=cfg)

    gen(min(4, new_tokens))  # warm-up
    ttft = statistics.median(timed(lambda: gen(1), dev)[0] for _ in range(runs))
    total = statistics.median(timed(lambda: gen(new_tokens), dev)[0] for _ in range(runs))
    return figures(ttft, total, ids.shape[0] * (new_tokens - 1))


def fast_cell(model, graphs, ids, new_tokens: int, runs: int, dev: str, prefills=None) -> dict:
    """The fast path's batched greedy loop (``engines.fast.generate.generate``: prefill, then one CUDA-graph
    replay per token, no host sync inside) on ``ids`` [B, T]; TTFT is prefill plus the argmax, synchronised.
    On CPU ``graphs`` runs the same step eagerly. With ``prefills`` (a ``PrefillGraphs``), a one-row prompt
    is prefilled the way ``FastEngine`` prefills it: a graph replay when it fits one."""
    import torch

    from ..engines.fast import generate as gen

    gen.generate(model, graphs, ids, new_tokens)  # warm-up: compile and capture this batch's graph
    pos = torch.arange(ids.shape[1], device=ids.device)
    first = lambda: gen.prefill(model, ids, pos)  # noqa: E731
    if prefills is not None and ids.shape[0] == 1:
        row = ids[0].tolist()
        first = lambda: prefills.prefill(row, 0, 0)  # noqa: E731
        first()  # capture
    ttft = statistics.median(timed(lambda: first().argmax(-1).cpu(), dev)[0] for _ in range(runs))
    total = statistics.median(timed(lambda: gen.generate(model, graphs, ids, new_tokens).cpu(), dev)[0]
                              for _ in range(runs))
    return figures(ttft, total, ids.shape[0] * (new_tokens - 1))


def _consume(steps: Iterator[int], new_tokens: int, t0: float, out: list) -> None:
    """Read up to ``new_tokens`` ids from ``steps``; append (first-token time, last-token time, count)."""
    first = last = None
    n = 0
    try:
        for _ in steps:
            n += 1
            last = time.perf_counter() - t0
            first = last if first is None else first
            if n >= new_tokens:
                break
    finally:
        steps.close()
    out.append((first or 0.0, last or 0.0, n))


def stream_run(token_steps: Callable[[list[int]], Iterator[int]], rows: list[list[int]], new_tokens: int) -> dict:
    """One run of an engine's ``token_steps`` over ``rows`` (one prompt per row): a batch of one in this thread,
    more in one consumer thread per row (the engine batches them, e.g. llama.cpp's slots)."""
    results: list = []
    t0 = time.perf_counter()
    if len(rows) == 1:
        _consume(token_steps(rows[0]), new_tokens, t0, results)
    else:
        threads = [threading.Thread(target=_consume, args=(token_steps(r), new_tokens, t0, results)) for r in rows]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    ttft, total = max(r[0] for r in results), max(r[1] for r in results)
    return {"ttft_s": ttft, "total_s": total, "decoded": sum(max(0, r[2] - 1) for r in results),
            "tokens": min(r[2] for r in results)}


def stream_cell(token_steps: Callable[[list[int]], Iterator[int]], batch: int, length: int, vocab: int,
                new_tokens: int, runs: int) -> dict:
    """An engine's own loop (``token_steps``: llama.cpp, onnxruntime-genai) timed like the others: one short
    warm-up, then the median of ``runs`` runs, each on new random prompts. ``tokens`` is the fewest tokens a
    row produced (below ``new_tokens`` when a row stopped at end-of-sequence)."""
    stream_run(token_steps, prompt_ids(batch, length, vocab, seed=10_000).tolist(), 2)
    done = [stream_run(token_steps, prompt_ids(batch, length, vocab, seed=i).tolist(), new_tokens) for i in range(runs)]
    ttft = statistics.median(d["ttft_s"] for d in done)
    total = statistics.median(d["total_s"] for d in done)
    decoded = statistics.median(d["decoded"] for d in done)
    return {**figures(ttft, total, decoded), "tokens": min(d["tokens"] for d in done)}
