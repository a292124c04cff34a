"""``phikit ask``, ``phikit chat`` and ``phikit models``."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Optional

import typer

from . import app

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Registry name, hub id, directory or .gguf path.")]
BackendOpt = Annotated[str, typer.Option("--backend", "-b", help="auto | llamacpp | transformers")]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help="transformers backend: auto | nf4 | bf16 | fp32")]
SystemOpt = Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt.")]
MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens to generate.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", "-t", help="0 is greedy.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed for reproducible sampling.")]


def load_llm(model: str | None, backend: str, precision: str | None):
    from ..llm import load

    opts = {"precision": precision} if precision else {}
    return load(model, backend=backend, **opts)


# The library's errors name parameters as Python does; the CLI's name the flags.
CLI_FLAGS = {"max_new_tokens": "--max-tokens", "temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k"}


def params_from_cli(max_tokens: int, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                    seed: int | None = None, stop: list[str] | tuple[str, ...] = ()):
    """Validate sampling flags before anything is loaded, so a typo fails in milliseconds.

    Raises:
        BadRequestError: an invalid value, named by its flag (``--max-tokens must be > 0``).
    """
    from ..errors import BadRequestError
    from ..llm import sampling_params

    params = dict(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=tuple(stop))
    try:
        sampling_params(**params)
    except BadRequestError as exc:
        flags = re.sub(r"\b(" + "|".join(CLI_FLAGS) + r")\b", lambda m: CLI_FLAGS[m[1]], str(exc))
        raise BadRequestError(flags) from None
    return params


def stream_to_terminal(events) -> object:
    """Write text deltas to stdout as they arrive; return the final Done event."""
    from ..engines import Done, TextDelta

    done = None
    for ev in events:
        if isinstance(ev, TextDelta):
            sys.stdout.write(ev.text)
            sys.stdout.flush()
        elif isinstance(ev, Done):
            done = ev
        else:  # tool calls, tool results, citations: their __str__ is meant for people
            sys.stdout.flush()
            print(f"\n{ev}", file=sys.stderr)
    sys.stdout.write("\n")
    return done


def stats_line(model: str, backend: str, done) -> str:
    return (
        f"{model} · {backend} · {done.usage.prompt_tokens}+{done.usage.completion_tokens} tokens · "
        f"TTFT {done.ttft_ms:.0f} ms · {done.tokens_per_s:.1f} tok/s · {done.finish_reason}"
    )


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question or instruction.")],
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    precision: PrecisionOpt = None,
    system: SystemOpt = None,
    cot: Annotated[bool, typer.Option("--cot", help="Reason in labelled steps; print the final answer.")] = False,
    max_tokens: MaxTokensOpt = 512,
    temperature: TemperatureOpt = 0.3,
    top_p: Annotated[float, typer.Option("--top-p", help="Sample from the smallest set of tokens with this much probability; 1 disables it.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample from the K most likely tokens; 0 disables it.")] = 0,
    seed: SeedOpt = None,
    stop: Annotated[list[str], typer.Option("--stop", help="Stop string (repeatable).")] = [],  # noqa: B006
    tools: Annotated[Optional[str], typer.Option("--tools", help="Comma-separated built-in tools, e.g. calculate.")] = None,
    tool_choice: Annotated[str, typer.Option("--tool-choice", help="auto | none | required | a tool name")] = "auto",
    kb: Annotated[Optional[str], typer.Option("--kb", help="Answer only from this knowledge base, with citations.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of streaming.")] = False,
) -> None:
    """Answer one question, streaming tokens to the terminal."""
    from ..errors import BadRequestError
    from ..llm import finish

    if not question.strip():
        raise BadRequestError("the question is empty: pass the text to ask, e.g. phikit ask \"What is RAG?\"")
    params = params_from_cli(max_tokens, temperature, top_p, top_k, seed, stop)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    llm = load_llm(model, backend, precision)
    extra = {}
    if tools:
        extra.update(tools=[t.strip() for t in tools.split(",") if t.strip()], tool_choice=tool_choice)
    if kb:
        extra["kb"] = kb
    elif tools:  # the agent loop: calls run, results go back to the model (phikit.cli.tools)
        from .tools import ask_with_tools

        return ask_with_tools(llm, messages, extra["tools"], tool_choice, params, as_json=as_json)
    events = llm.chat(messages, stream=True, cot=cot, **extra, **params)
    if as_json:
        result = finish(events, model=llm.model, backend=llm.backend, cot=cot)
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    done = stream_to_terminal(events)
    if cot:
        from ..cot import parse_cot

        parsed = parse_cot(done.text)
        print(f"answer: {parsed.answer}" if parsed.answer else f"note: {parsed.note}", file=sys.stderr)
    print(stats_line(llm.model, llm.backend, done), file=sys.stderr)


@app.command()
def chat(
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    precision: PrecisionOpt = None,
    system: SystemOpt = None,
    cot: Annotated[bool, typer.Option("--cot", help="Reason in labelled steps before each answer.")] = False,
    max_tokens: MaxTokensOpt = 512,
    temperature: TemperatureOpt = 0.3,
    seed: SeedOpt = None,
) -> None:
    """Multi-turn chat with history. Commands: /reset clears the history, /exit leaves."""
    params = params_from_cli(max_tokens, temperature, 1.0, 0, seed, [])
    llm = load_llm(model, backend, precision)
    base = [{"role": "system", "content": system}] if system else []
    history = list(base)
    print(f"phikit chat · {llm.model} on {llm.backend} · /reset clears history, /exit leaves", file=sys.stderr)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            print(file=sys.stderr)
            break
        text = line.strip()
        if text in ("/exit", "/quit", "/bye"):
            break
        if text == "/reset":
            history = list(base)
            print("history cleared", file=sys.stderr)
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        try:
            done = stream_to_terminal(llm.chat(history, stream=True, cot=cot, **params))
        except KeyboardInterrupt:
            history.pop()
            print("\n(interrupted)", file=sys.stderr)
            continue
        history.append({"role": "assistant", "content": done.text})
        print(stats_line(llm.model, llm.backend, done), file=sys.stderr)


models_app = typer.Typer(help="Known models and whether each is available on this machine.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """Known models and whether each is available on this machine; `phikit models prepare` builds them."""
    if ctx.invoked_subcommand:
        return
    from ..models import default_model, list_models

    rows = list_models()
    if as_json:
        out = [
            {"name": km.name, "source": ref.source if ref else None, "format": ref.format if ref else None,
             "available": ok, "description": km.description}
            for km, ref, ok in rows
        ]
        print(json.dumps({"default": default_model(), "models": out}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("model", "available", "format", "source", "description")
    for km, ref, ok in rows:
        table.add_row(km.name, "[green]yes[/]" if ok else "[red]no[/]", ref.format if ref else "-",
                      ref.source if ref else "-", km.description)
    console = Console()
    console.print(table)
    console.print(f"default: {default_model()} (set PHIKIT_MODEL to change)")


@models_app.command("prepare")
def models_prepare(
    names: Annotated[Optional[list[str]], typer.Argument(help="Registry names; default: the default model.")] = None,
) -> None:
    """Write the cached files a model needs (the default's Q8_0 GGUF) now, not on the first question."""
    from ..models import prepare

    for name in names or [None]:
        ref = prepare(name)
        print(f"{ref.name}: {ref.source}")


@app.command()
def bench(
    model: ModelOpt = None,
    backends: Annotated[str, typer.Option("--backends", help="Comma-separated backends to compare.")] = "llamacpp,transformers",
    runs: Annotated[int, typer.Option("--runs", help="Timed runs per backend (the median is shown).")] = 3,
    max_tokens: MaxTokensOpt = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Compare backends side by side: load time, TTFT, decode tokens/s, process start to first token."""
    from .. import bench as bench_mod

    params_from_cli(max_tokens)
    rows = [bench_mod.bench_backend(model, b.strip(), runs=runs, max_new_tokens=max_tokens) for b in backends.split(",")]
    meta = {"device": bench_mod.device(), "versions": bench_mod.versions()}
    if as_json:
        print(json.dumps({**meta, "results": bench_mod.as_dicts(rows)}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("model", "backend", "load s", "TTFT ms", "decode tok/s", "start→first token s",
                  title=f"{meta['device']} · {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}")
    for r in rows:
        table.add_row(r.model, r.backend, f"{r.load_s:.2f}", f"{r.ttft_ms:.0f}", f"{r.decode_tok_s:.1f}",
                      f"{r.first_token_s:.2f}" if r.first_token_s is not None else "-")
    Console().print(table)
