"""Knowledge-base commands: ``phikit kb add|remove|search|stats|versions|rollback`` and ``phikit eval rag``."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from . import app

kb_app = typer.Typer(help="Build and query a knowledge base for grounded answers (phikit ask --kb DIR).",
                     no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate phikit features on your data.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(eval_app, name="eval")

KbOpt = Annotated[str, typer.Option("--kb", envvar="PHIKIT_KB", help="Knowledge-base folder (or $PHIKIT_KB).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _console():
    from rich.console import Console

    return Console()


@kb_app.command("add")
def add(
    paths: Annotated[list[str], typer.Argument(help="Files or folders (recursive): .md .txt .html .pdf .docx")],
    kb: KbOpt,
    embedding_model: Annotated[Optional[str], typer.Option("--embedding-model", help="sentence-transformers name or folder (new KB only).")] = None,
    chunk_tokens: Annotated[Optional[int], typer.Option("--chunk-tokens", help="Tokens per chunk (new KB only; default 256).")] = None,
    overlap: Annotated[Optional[int], typer.Option("--overlap", help="Overlap tokens (new KB only; default 32).")] = None,
    index: Annotated[str, typer.Option("--index", help="auto | flat | hnsw (new KB only).")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Add or update documents; unchanged files are skipped, changed ones replaced, unreadable ones reported."""
    from ..rag.chunk import ChunkSettings
    from ..rag.store import KnowledgeBase, require_paths

    require_paths(paths)  # a typo must not leave an empty KB behind
    settings = None
    if chunk_tokens is not None or overlap is not None:
        settings = ChunkSettings(max_tokens=chunk_tokens or 256, overlap=32 if overlap is None else overlap)
    base = KnowledgeBase.create(kb, embedding_model=embedding_model, settings=settings, index=index)
    report = base.add(paths, progress=sys.stderr.isatty())
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if as_json:
        print(json.dumps({"version": report.version or base.version, "added": report.added, "replaced": report.replaced,
                          "unchanged": report.unchanged, "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
                          "chunks": report.chunks, "seconds": round(report.seconds, 2)}))
        return
    unsupported = sum(r.startswith("unsupported file type") for _, r in report.skipped)
    summary = (f"{len(report.added)} added, {len(report.replaced)} replaced, {len(report.unchanged)} unchanged, "
               f"{len(report.skipped)} skipped ({unsupported} unsupported) · {report.chunks} new chunks in {report.seconds:.1f} s")
    print(summary + (f" · version {report.version}" if report.version else " · no change"), file=sys.stderr)


@kb_app.command("remove")
def remove(paths: Annotated[list[str], typer.Argument(help="Document paths, folders or sha256 prefixes.")], kb: KbOpt) -> None:
    """Drop documents (writes a new version)."""
    from ..rag.store import KnowledgeBase

    report = KnowledgeBase.open(kb).remove(paths)
    for p in report.removed:
        print(f"removed {p}", file=sys.stderr)
    print(f"version {report.version}", file=sys.stderr)


@kb_app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    kb: KbOpt,
    k: Annotated[int, typer.Option("-k", "--top-k", help="Results to show.")] = 5,
    mode: Annotated[str, typer.Option("--mode", help="hybrid | dense | bm25")] = "hybrid",
    as_json: JsonOpt = False,
) -> None:
    """Show the ranked chunks for a query, with scores and sources."""
    from ..rag.retrieve import search

    hits = search(kb, query, k=k, mode=mode)
    if as_json:
        print(json.dumps([{**h.to_dict(), "text": h.chunk.text} for h in hits], ensure_ascii=False))
        return
    for h in hits:
        c = h.chunk
        where = c.source + (f" › {c.heading()}" if c.headings else "") + (f" · p. {c.page}" if c.page else "")
        print(f"#{h.rank}  rrf {h.score:.4f}  cos {h.dense:.3f}  bm25 {h.bm25:.2f}  {where} · chars {c.start}-{c.end}")
        text = " ".join(c.text.split())
        print(f"    {text[:320]}{'…' if len(text) > 320 else ''}\n")


@kb_app.command("stats")
def stats(kb: KbOpt, as_json: JsonOpt = False) -> None:
    """Version, documents, chunks, embedding model, chunker and index of the live version."""
    from ..rag.store import KnowledgeBase

    base = KnowledgeBase.open(kb)
    s = base.stats()
    if as_json:
        s["documents_list"] = base.manifest["documents"]
        print(json.dumps(s))
        return
    for key, value in s.items():
        print(f"{key:>18}: {value}")
    for d in base.manifest["documents"]:
        print(f"  {d['sha256'][:12]}  {d['chunks']:>4} chunks  {d['path']}")


@kb_app.command("versions")
def versions(kb: KbOpt, as_json: JsonOpt = False) -> None:
    """Every kept version, oldest first; * marks the live one."""
    from ..rag.store import KnowledgeBase

    rows = KnowledgeBase.open(kb).versions()
    if as_json:
        print(json.dumps(rows))
        return
    for v in rows:
        print(f"{'*' if v['live'] else ' '} {v['version']}  {v['created']}  {v['documents']:>4} docs  {v['chunks']:>6} chunks  {v['change']}")


@kb_app.command("rollback")
def rollback(version: Annotated[str, typer.Argument(help="Version id or unique prefix (see phikit kb versions).")], kb: KbOpt) -> None:
    """Make an earlier version live again (atomic)."""
    from ..rag.store import KnowledgeBase

    print(f"live version: {KnowledgeBase.open(kb).rollback(version)}", file=sys.stderr)


@eval_app.command("rag")
def eval_rag(
    qa: Annotated[str, typer.Argument(help="JSONL: {question, answer|answers, doc, answerable}")],
    kb: KbOpt,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Chat model (default: the embedded one).")] = None,
    backend: Annotated[str, typer.Option("--backend", "-b", help="auto | llamacpp | transformers")] = "auto",
    adapter: Annotated[Optional[str], typer.Option("--adapter", help="LoRA adapter from phikit tune (registered name or folder; none = the base model): grounded answers through it.")] = None,
    k: Annotated[int, typer.Option("-k", "--top-k", help="Passages retrieved (recall@k, MRR@k).")] = 4,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N questions.")] = None,
    retrieval_only: Annotated[bool, typer.Option("--retrieval-only", help="Skip generation: recall@k and MRR only.")] = False,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens per answer.")] = 96,
    out: Annotated[Optional[str], typer.Option("--out", help="Also write the JSON report (with per-question rows) here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval recall@k and MRR, grounded accuracy, hallucination rate and abstention precision."""
    from ..errors import BadRequestError
    from ..rag.eval import evaluate, load_qa, render_table
    from .core import load_llm, params_from_cli

    params_from_cli(max_tokens)
    if retrieval_only and adapter:
        raise BadRequestError("--adapter changes the answers, and --retrieval-only generates none; drop one of them")
    items = load_qa(qa)[: limit or None]
    llm = None if retrieval_only else load_llm(model, backend, None, adapter=adapter)
    through = f" through adapter {adapter}" if adapter else ""
    print(f"eval rag: {len(items)} questions, k={k}" + (f", {llm.model} on {llm.backend}{through}" if llm else ", retrieval only"),
          file=sys.stderr)
    report = evaluate(items, kb, llm, k=k, max_new_tokens=max_tokens, progress=sys.stderr.isatty())
    if adapter:
        report["adapter"] = adapter
    if out:
        from pathlib import Path

        from ..cache import atomic_write

        atomic_write(Path(out), json.dumps(report, indent=1))
    if as_json:
        print(json.dumps({k_: v for k_, v in report.items() if k_ != "rows"}))
    else:
        _console().print(render_table(report))
