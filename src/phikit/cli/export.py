"""``phikit export onnx|gguf`` and ``phikit parity``: artifacts for other runtimes, and proof they answer alike."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from . import app

export_app = typer.Typer(help="Write the model (and an adapter) for another runtime, with a manifest and a parity report.",
                         no_args_is_help=True)
app.add_typer(export_app, name="export")

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Registry name, .gguf file or checkpoint directory (default: the default model).")]
AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help="LoRA adapter (name or folder) merged into the weights first.")]
ParityOpt = Annotated[bool, typer.Option("--parity/--no-parity", help="Run `phikit parity` against transformers on the source and record it in the manifest.")]
TokensOpt = Annotated[int, typer.Option("--tokens", help="Greedy tokens compared per prompt.")]
PromptsOpt = Annotated[Optional[str], typer.Option("--prompts", help="JSON-lines prompts file (default: the packaged 20 prompts).")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Use only the first N prompts.")]


def _finish(out, manifest: dict) -> None:
    """Print where the artifact is and the parity verdict; exit 1 when parity failed."""
    print(out)
    parity = manifest.get("parity")
    if parity:
        s = parity["summary"]
        print(f"parity ({parity['tier']}): {'passed' if parity['passed'] else 'FAILED'} · identical "
              f"{s['identical']}/{s['prompts']} · top-1 {s['top1']:.3f} · mean KL {s['mean_kl']:.3g} · "
              f"report {out}: {', '.join(parity['report'])}", file=sys.stderr)
        if not parity["passed"]:
            print(f"error: parity below the {parity['tier']} thresholds: {'; '.join(parity['failures'])}",
                  file=sys.stderr)
            raise typer.Exit(1)


@export_app.command("onnx")
def export_onnx(
    out: Annotated[str, typer.Option("--out", "-o", help="Model directory to write (replaced atomically).")],
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    precision: Annotated[str, typer.Option("--precision", help="fp32 | int4 (MatMulNBits); fp16 is for GPUs.")] = "fp32",
    parity: ParityOpt = True,
    tokens: TokensOpt = 32,
    prompts: PromptsOpt = None,
    limit: LimitOpt = None,
) -> None:
    """Export to an onnxruntime-genai model directory (run it with --backend onnx --model DIR)."""
    from ..artifacts import export_onnx as run
    from ..export.onnx import check_precision

    check_precision(precision)  # before anything loads
    path, manifest = run(model, out, precision=precision, adapter=adapter, parity=parity, parity_tokens=tokens,
                         parity_prompts=prompts, parity_limit=limit)
    _finish(path, manifest)


@export_app.command("gguf")
def export_gguf(
    out: Annotated[str, typer.Option("--out", "-o", help="GGUF file to write (replaced atomically).")],
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    type: Annotated[str, typer.Option("--type", help="f16 | q8_0 | q4_k_m (llama.cpp's quantizer).")] = "f16",
    parity: ParityOpt = True,
    tokens: TokensOpt = 32,
    prompts: PromptsOpt = None,
    limit: LimitOpt = None,
) -> None:
    """Export to a GGUF file for llama.cpp (and Ollama, LM Studio, ...)."""
    from ..artifacts import export_gguf as run
    from ..errors import BadRequestError
    from ..export.gguf import K_QUANTS, TYPES

    if type not in (*TYPES, *K_QUANTS):
        raise BadRequestError(f"unknown --type {type!r}; use one of {', '.join((*TYPES, *K_QUANTS))}")
    path, manifest = run(model, out, type=type, adapter=adapter, parity=parity, parity_tokens=tokens,
                         parity_prompts=prompts, parity_limit=limit)
    _finish(path, manifest)


@app.command()
def parity(
    reference: Annotated[str, typer.Option("--reference", help="BACKEND:MODEL the candidate must match, e.g. transformers:smollm2-135m.")],
    candidate: Annotated[str, typer.Option("--candidate", help="BACKEND:MODEL under test, e.g. onnx:out/smollm2-onnx or llamacpp:model.gguf.")],
    prompts: PromptsOpt = None,
    tokens: TokensOpt = 32,
    limit: LimitOpt = None,
    tier: Annotated[str, typer.Option("--tier", help="Thresholds: auto (from the candidate's weights) | exact | 8bit | 4bit.")] = "auto",
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Write the reports to OUT.json and OUT.md.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report instead of Markdown.")] = False,
) -> None:
    """Compare two runtimes of one model on a fixed prompt set; exit 1 below the precision tier's thresholds."""
    from ..parity import run_parity
    from ..parity.report import markdown, write_reports
    from ..parity.suite import load_prompts, parse_spec

    parse_spec(reference)  # a typo fails before anything loads
    parse_spec(candidate)
    load_prompts(prompts, limit)
    report = run_parity(reference, candidate, prompts=prompts, tokens=tokens, limit=limit, tier=tier)
    if out:
        js, md = write_reports(report, out)
        print(f"reports: {js} {md}", file=sys.stderr)
    print(json.dumps(report.to_dict(), ensure_ascii=False) if as_json else markdown(report))
    if not report.passed:
        print(f"error: parity below the {report.tier} thresholds: {'; '.join(report.failures)}", file=sys.stderr)
        raise typer.Exit(1)
