"""The ``phikit bench`` matrix: every backend (and precision) side by side in one run, at every batch size and
prompt length, with plain HF ``generate`` (the transformers backend) as the baseline for ratios.

:func:`run` loads one backend at a time (the previous one is freed first), times its cells
(:mod:`phikit.bench.cells`), records load time, weights and peak memory, and returns the report
(a plain dict, written by :mod:`phikit.bench.report`).
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import BadRequestError, PhikitError
from .backends import PRECISIONS, Skip, load, random_checkpoint
from .cost import hosted_table, prices, row_costs
from .machine import cpu_name, device, free_memory, has_cuda, load_average, read_peak_gb, reset_peak, versions

BACKENDS = ("llamacpp", "transformers", "fast", "onnx")


@dataclass
class Spec:
    """What to run. ``backends`` empty: every backend available here (:func:`available`).

    ``precisions`` items are a precision for every backend that has it (``bf16``) or ``backend:precision``
    (``fast:int4``); empty: transformers bf16 on CUDA (its own choice on CPU) and fast bf16.
    """

    model: str | None = None
    random_weights: bool = False
    quick: bool = False
    backends: list[str] = field(default_factory=list)
    precisions: list[str] = field(default_factory=list)
    batches: list[int] = field(default_factory=lambda: [1, 8, 32])
    prompt_lengths: list[int] = field(default_factory=lambda: [128, 512, 2048])
    max_tokens: int = 128
    runs: int = 3
    gpu_price_per_hour: float | None = None
    cpu_price_per_hour: float | None = None
    prompt_tokens: int = 512
    answer_tokens: int = 128
    fast_compile: str = "auto"

    def check(self) -> None:
        """Raises BadRequestError naming the first bad setting."""
        from ..engines.fast.generate import COMPILE_MODES  # imports torch, as the run itself will

        if self.fast_compile not in COMPILE_MODES:
            raise BadRequestError(f"unknown --fast-compile {self.fast_compile!r}; use {', '.join(COMPILE_MODES)}")
        bad = [b for b in self.backends if b not in BACKENDS]
        if bad:
            raise BadRequestError(f"unknown backend {bad[0]!r} in --backends; use some of {', '.join(BACKENDS)}")
        for p in self.precisions:
            b, _, prec = p.rpartition(":")
            known = sorted({x for v in PRECISIONS.values() for x in v}) if not b else PRECISIONS.get(b, ())
            if prec not in known:
                raise BadRequestError(f"unknown precision {p!r} in --precisions; use e.g. bf16,fast:int4,fast:nf4")
        checks = [(self.batches and min(self.batches) >= 1, "--batches must be positive integers, e.g. 1,8,32"),
                  (self.prompt_lengths and min(self.prompt_lengths) >= 1, "--prompt-lengths must be positive integers"),
                  (self.max_tokens >= 2, "--max-tokens must be at least 2 (decode speed is measured after the first)"),
                  (self.runs >= 1, "--runs must be at least 1"),
                  (self.prompt_tokens >= 1 and self.answer_tokens >= 1, "--prompt-tokens and --answer-tokens must be >= 1"),
                  (min(self.gpu_price, self.cpu_price) >= 0, "prices per hour must be >= 0")]
        for ok, message in checks:
            if not ok:
                raise BadRequestError(message)

    @property
    def gpu_price(self) -> float:
        return prices()["gpu_default"]["usd_per_hour"] if self.gpu_price_per_hour is None else self.gpu_price_per_hour

    @property
    def cpu_price(self) -> float:
        return prices()["cpu_default"]["usd_per_hour"] if self.cpu_price_per_hour is None else self.cpu_price_per_hour


def parse_ints(text: str, flag: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]`` (sorted, unique). Raises BadRequestError naming ``flag``."""
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise BadRequestError(f"{flag} takes comma-separated integers, e.g. 1,8,32; got {text!r}") from None
    if not out:
        raise BadRequestError(f"{flag} is empty; give comma-separated integers, e.g. 1,8,32")
    return out


def available(spec: Spec) -> list[str]:
    """The backends this machine can run: llama.cpp and transformers when installed, fast on CUDA (or on CPU
    for ``--random-weights``, eagerly), onnx when onnxruntime-genai is installed (not for ``--quick``: its
    one-time export of a non-ONNX model takes longer than the whole quick run)."""
    has = lambda mod: importlib.util.find_spec(mod) is not None  # noqa: E731
    out = [b for b, ok in (("llamacpp", has("llama_cpp")), ("transformers", has("transformers"))) if ok]
    if has("torch") and (has_cuda() or spec.random_weights):
        out.append("fast")
    if has("onnxruntime_genai") and has("phikit.engines.onnx") and not spec.quick:
        out.append("onnx")
    return out


def plan(spec: Spec, dev: str) -> list[tuple[str, str]]:
    """(backend, precision) pairs to run, the baseline (transformers) first."""
    backends = spec.backends or available(spec)
    backends = sorted(dict.fromkeys(backends), key=lambda b: (b != "transformers", BACKENDS.index(b)))
    out = []
    for b in backends:
        if b not in PRECISIONS:
            out.append((b, "auto"))
            continue
        wanted = [p.rpartition(":")[2] for p in spec.precisions if p.rpartition(":")[0] in ("", b)]
        wanted = [p for p in wanted if p in PRECISIONS[b]]
        if not spec.precisions:
            wanted = ["bf16" if dev == "cuda" or b == "fast" else "auto"]
        out += [(b, p) for p in dict.fromkeys(wanted)]
    return out


def _ratios(rows: list[dict]) -> None:
    """Each row's decode tok/s and TTFT as multiples of the HF ``generate`` row of the same precision (else HF
    bf16, else the first HF row), cell by cell: ``x_hf_tok_s`` > 1 is faster decoding, ``x_hf_ttft`` < 1 a
    quicker first token."""
    hf = [r for r in rows if r["backend"] == "transformers" and r.get("cells")]
    for r in rows:
        same = [h for h in hf if h["precision"] == r["precision"]] + [h for h in hf if h["precision"] == "bf16"]
        base = (same or hf or [None])[0]
        if base is None or base is r:
            continue
        r["baseline"] = base["name"]
        ref = {(c["batch"], c["prompt_tokens"]): c for c in base["cells"] if c.get("decode_tok_s")}
        for c in r["cells"]:
            b = ref.get((c["batch"], c["prompt_tokens"]))
            if b and c.get("decode_tok_s"):
                c["x_hf_tok_s"] = round(c["decode_tok_s"] / b["decode_tok_s"], 2)
                c["x_hf_ttft"] = round(c["ttft_ms"] / b["ttft_ms"], 2) if b["ttft_ms"] else None


def run(spec: Spec, *, progress: Callable[[str, int], None] = lambda desc, advance: None,
        argv: list[str] | None = None, on_row: Callable[[dict], None] | None = None) -> dict:
    """Run the matrix and return the report.

    Args:
        progress: called with a description and how many cells just finished (for a progress bar).
        argv: the command line to record (default ``sys.argv``).
        on_row: called with the report so far after each backend (to save a run that may be cut short).

    Raises:
        BadRequestError: a bad setting; PhikitError: the model cannot be found.
    """
    spec.check()
    dev = "cuda" if has_cuda() else "cpu"
    started = time.perf_counter()
    report = {"command": " ".join(shlex.quote(a) for a in (argv if argv is not None else ["phikit", *sys.argv[1:]])),
              "device": device(), "cpu": cpu_name(), "versions": versions(), "load_average_start": load_average(),
              "spec": asdict(spec), "prices": {"gpu_per_hour": spec.gpu_price, "cpu_per_hour": spec.cpu_price,
                                               "gpu_default": prices()["gpu_default"],
                                               "cpu_default": prices()["cpu_default"], "note": prices()["note"]},
              "rows": [], "skipped": {}}
    with tempfile.TemporaryDirectory(prefix="phikit-bench-") as tmp:
        if spec.random_weights:
            progress("writing a random-weight Phi-4-mini-shaped checkpoint", 0)
            ref = random_checkpoint(Path(tmp) / "model", dev, tiny=spec.quick and dev == "cpu")
        else:
            from ..models import resolve

            ref = resolve(spec.model)
        report["model"] = {"name": ref.name, "source": ref.source, "format": ref.format,
                           "random_weights": spec.random_weights}
        n_ctx = max(512, -(-(max(spec.prompt_lengths) + spec.max_tokens + 16) // 256) * 256)
        for backend, precision in plan(spec, dev):
            _run_backend(report, spec, backend, precision, ref, dev, n_ctx, progress)
            if on_row:
                on_row(report)
    _ratios(report["rows"])
    hosted = hosted_table(spec.prompt_tokens, spec.answer_tokens)
    for r in report["rows"]:
        price = spec.gpu_price if r["device"] == "cuda" else spec.cpu_price
        r["cost"] = {**row_costs(r["cells"], prompt_tokens=spec.prompt_tokens, answer_tokens=spec.answer_tokens,
                                 usd_per_hour=price), "usd_per_hour": price}
    report["hosted"] = hosted
    report["load_average_end"] = load_average()
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    return report


def _run_backend(report: dict, spec: Spec, backend: str, precision: str, ref, dev: str, n_ctx: int,
                 progress: Callable[[str, int], None]) -> None:
    label = backend if precision == "auto" else f"{backend}-{precision}"
    cells = len(spec.batches) * len(spec.prompt_lengths)
    free_memory()
    # the fast backend and HF generate run on the GPU when there is one; llama.cpp and onnx on the CPU here
    row_dev = dev if backend in ("transformers", "fast") else "cpu"
    reset_peak(row_dev)
    progress(f"loading {label}", 0)
    try:
        loaded = load(backend, precision, ref, dev=row_dev, n_ctx=n_ctx, max_batch=max(spec.batches),
                      fast_compile=spec.fast_compile)
    except Skip as exc:
        report["skipped"][label] = str(exc)
        progress(f"{label}: skipped", cells)
        return
    except (PhikitError, ImportError, OSError, RuntimeError) as exc:
        report["skipped"][label] = f"failed to load: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        progress(f"{label}: failed", cells)
        return
    row = {"name": loaded.name, "backend": backend, "precision": loaded.precision, "device": loaded.device,
           "load_s": loaded.load_s, "weights_gb": loaded.weights_gb, "notes": loaded.notes, "cells": []}
    try:
        for batch in spec.batches:  # ascending: llama.cpp switches to its slots at the first batch > 1
            for length in spec.prompt_lengths:
                progress(f"{loaded.name} batch {batch} prompt {length}", 0)
                cell = {"batch": batch, "prompt_tokens": length}
                if loaded.max_batch is not None and batch > loaded.max_batch:
                    cell["na"] = f"batch > {loaded.max_batch} not supported"
                else:
                    try:
                        cell.update(loaded.cell(batch, length, spec.max_tokens, spec.runs))
                    except Exception as exc:  # noqa: BLE001 - e.g. out of memory: recorded, the run goes on
                        cell["na"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                        free_memory()
                row["cells"].append(cell)
                progress(f"{loaded.name} batch {batch} prompt {length}", 1)
        row["peak_gb"], row["memory"] = read_peak_gb(row_dev)
    finally:
        loaded.close()
        del loaded
        free_memory()
    report["rows"].append(row)
