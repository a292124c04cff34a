"""``phikit bench``: the backend matrix (:mod:`phikit.bench.matrix`) with a progress bar, tables and files."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from . import app

QUICK = dict(batches="1,2", prompt_lengths="128", max_tokens=16, runs=1)
FULL = dict(batches="1,8,32", prompt_lengths="128,512,2048", max_tokens=128, runs=3)


@app.command()
def bench(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry name, .gguf file, checkpoint or ONNX directory; default: the embedded model.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="A random-weight model of Phi-4-mini's exact shape (phikit.stand_in), for machines without the checkpoint; with --quick on CPU a tiny one.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="CPU-sized (CI): prompt 128, batches 1,2, 16 tokens, 1 run; flags given still win.")] = False,
    backends: Annotated[Optional[str], typer.Option("--backends", help="Comma-separated: llamacpp, transformers (HF generate, the baseline), fast, onnx; default: every one available here.")] = None,
    precisions: Annotated[Optional[str], typer.Option("--precisions", help="Comma-separated, for the backends that have them (bf16, fp32, int4, nf4) or per backend (fast:int4); default: bf16 on CUDA.")] = None,
    batches: Annotated[Optional[str], typer.Option("--batches", help="Comma-separated batch sizes (default 1,8,32).")] = None,
    prompt_lengths: Annotated[Optional[str], typer.Option("--prompt-lengths", help="Comma-separated prompt lengths in tokens (default 128,512,2048).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", "-n", help="New tokens per row (default 128).")] = None,
    runs: Annotated[Optional[int], typer.Option("--runs", help="Timed runs per cell, after a warm-up; the median is shown (default 3).")] = None,
    gpu_price: Annotated[Optional[float], typer.Option("--gpu-price-per-hour", help="US$ per GPU-hour (default: phikit/data/prices.json's on-demand H100).")] = None,
    cpu_price: Annotated[Optional[float], typer.Option("--cpu-price-per-hour", help="US$ per hour of this CPU machine (default: prices.json's 2-vCPU VM).")] = None,
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", help="Query profile for the cost: prompt tokens per query.")] = 512,
    answer_tokens: Annotated[int, typer.Option("--answer-tokens", help="Query profile for the cost: answer tokens per query.")] = 128,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Write bench.json, bench.md and bench.png into this folder.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report instead of the Markdown tables.")] = False,
    stream: Annotated[bool, typer.Option("--stream", help="Instead of the matrix: each backend's chat answer through the event stream users see, and a fresh `phikit ask` process's start to first token.")] = False,
    fast_compile: Annotated[str, typer.Option("--fast-compile", help="What the fast backend compiles: auto (default: layers for bf16, ops for int4/nf4), layers (one layer of the one-token step, reused by every layer), ops (only the elementwise pieces), step (the whole step: ~50 s compile per batch/length bucket) or none.")] = "auto",
    redraw: Annotated[Optional[str], typer.Option("--redraw", help="Measure nothing: write the tables and plot of an earlier run's bench.json (or bench.partial.json) into --out.")] = None,
) -> None:
    """Backends side by side: TTFT, decode tok/s per batch and prompt length, memory, load time, ratios to HF
    generate, cost per 1,000 queries beside hosted APIs."""
    from ..bench.matrix import Spec, parse_ints
    from ..bench.report import markdown, save_partial, write

    if redraw:
        report = _read_report(redraw)
        if out:
            for path in write(report, out):
                print(f"wrote {path}", file=sys.stderr)
        print(json.dumps(report, default=str) if as_json else markdown(report))
        return
    if stream:
        return _stream_table(model, backends or "llamacpp,transformers", runs or 3, max_tokens or 128, as_json)
    d = QUICK if quick else FULL
    spec = Spec(model=model, random_weights=random_weights, quick=quick,
                backends=[b.strip() for b in (backends or "").split(",") if b.strip()],
                precisions=[p.strip() for p in (precisions or "").split(",") if p.strip()],
                batches=parse_ints(batches or d["batches"], "--batches"),
                prompt_lengths=parse_ints(prompt_lengths or d["prompt_lengths"], "--prompt-lengths"),
                max_tokens=d["max_tokens"] if max_tokens is None else max_tokens,
                runs=d["runs"] if runs is None else runs, gpu_price_per_hour=gpu_price, cpu_price_per_hour=cpu_price,
                prompt_tokens=prompt_tokens, answer_tokens=answer_tokens, fast_compile=fast_compile)
    spec.check()  # before the progress bar: a bad flag is one line
    report = _run_with_progress(spec, (lambda r: save_partial(r, out)) if out else None)

    if out:
        for path in write(report, out):
            print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(report, default=str) if as_json else markdown(report))


def _run_with_progress(spec, on_row) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..bench.machine import has_cuda
    from ..bench.matrix import plan, run

    total = len(plan(spec, "cuda" if has_cuda() else "cpu")) * len(spec.batches) * len(spec.prompt_lengths)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("phikit bench", total=total)
        return run(spec, progress=lambda desc, n: bar.update(task, description=desc, advance=n), on_row=on_row)


def _read_report(path: str) -> dict:
    from pathlib import Path

    from ..errors import BadRequestError

    try:
        report = json.loads(Path(path).read_text())
        report["rows"], report["spec"]  # noqa: B018 - a bench report has both
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadRequestError(f"--redraw needs a bench.json written by phikit bench; {path}: {exc}") from None
    report.setdefault("hosted", [])
    return report


def _stream_table(model: str | None, backends: str, runs: int, max_tokens: int, as_json: bool) -> None:
    """``--stream``: load time, TTFT and decode tok/s of a chat answer per backend (:mod:`phikit.bench.stream`)."""
    from .. import bench as bench_mod
    from ..errors import BadRequestError

    if runs < 1 or max_tokens < 2:
        raise BadRequestError("--runs must be at least 1 and --max-tokens at least 2")
    rows = [bench_mod.bench_backend(model, b.strip(), runs=runs, max_new_tokens=max_tokens)
            for b in backends.split(",") if b.strip()]
    meta = {"device": bench_mod.device(), "versions": bench_mod.versions()}
    if as_json:
        print(json.dumps({**meta, "results": bench_mod.as_dicts(rows)}))
        return
    print(f"{meta['device']}; " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "\n")
    print("| model | backend | load s | TTFT ms | decode tok/s | start→first token s |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        first = f"{r.first_token_s:.2f}" if r.first_token_s is not None else "-"
        print(f"| {r.model} | {r.backend} | {r.load_s:.2f} | {r.ttft_ms:.0f} | {r.decode_tok_s:.1f} | {first} |")
