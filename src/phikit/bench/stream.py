"""Speed figures through the event stream users see: load time, TTFT, decode tokens/s of a chat answer, and a
fresh ``phikit ask`` process's start to first token (the pre-matrix ``phikit bench``; ``bench/quant_bench.py``
uses its prompt).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

PROMPT = "Explain in a short paragraph why the sky is blue."


@dataclass
class BackendFigures:
    """Medians over ``runs`` generations of ``max_new_tokens`` greedy tokens.

    Attributes:
        load_s: seconds for ``phikit.load`` in this process (a warm file cache; GGUF conversion cached).
        ttft_ms: request to first token (tokenize + prefill + one step), median.
        decode_tok_s: decode tokens per second after the first token, median.
        completion_tokens: tokens generated per run.
        first_token_s: a fresh ``phikit ask`` process: start to first byte of answer on stdout.
    """

    model: str
    backend: str
    load_s: float
    ttft_ms: float
    decode_tok_s: float
    completion_tokens: int
    first_token_s: float | None = None


def first_token_seconds(model: str | None, backend: str, prompt: str = PROMPT) -> float:
    """Start ``phikit ask`` in a new process and time until its first answer byte on stdout."""
    cmd = [sys.executable, "-m", "phikit", "ask", prompt, "--temperature", "0", "--max-tokens", "16", "--backend", backend]
    if model:
        cmd += ["--model", model]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    proc.stdout.read(1)
    elapsed = time.perf_counter() - t0
    proc.stdout.read()
    proc.wait()
    return elapsed


def bench_backend(model: str | None, backend: str, *, runs: int = 3, max_new_tokens: int = 128, subprocess_ttft: bool = True) -> BackendFigures:
    """Load ``model`` on ``backend`` and time ``runs`` greedy generations (after one warm-up).

    ``onnx`` on a model that is not an ONNX directory runs its fp32 export from phikit's cache (written
    once, before timing starts: :func:`phikit.artifacts.cached_onnx`).
    """
    from ..engines import Done
    from ..llm import load

    name = None
    if backend == "onnx":
        from ..models import resolve

        if resolve(model).format != "onnx":
            from ..artifacts import cached_onnx

            name = f"{resolve(model).name} (onnx fp32)"
            model = str(cached_onnx(model))
    t0 = time.perf_counter()
    llm = load(model, backend=backend)
    load_s = time.perf_counter() - t0
    ttfts, rates, n = [], [], 0
    for i in range(runs + 1):
        done = None
        for ev in llm.chat(PROMPT, stream=True, temperature=0, max_new_tokens=max_new_tokens):
            if isinstance(ev, Done):
                done = ev
        if i:  # the first run warms caches and is not counted
            ttfts.append(done.ttft_ms)
            rates.append(done.tokens_per_s)
            n = done.usage.completion_tokens
    return BackendFigures(
        model=name or llm.model,
        backend=llm.backend,
        load_s=load_s,
        ttft_ms=statistics.median(ttfts),
        decode_tok_s=statistics.median(rates),
        completion_tokens=n,
        first_token_s=first_token_seconds(model, backend) if subprocess_ttft else None,
    )


def as_dicts(rows: list[BackendFigures]) -> list[dict]:
    return [asdict(r) for r in rows]
