"""``phikit ask``, ``phikit chat`` and ``phikit models``."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Optional

import typer

from . import app

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Registry name, hub id, directory or .gguf path.")]
BackendOpt = Annotated[str, typer.Option("--backend", "-b", help="auto | llamacpp | transformers | fast (CUDA) | onnx | openai")]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help="transformers backend: auto | nf4 | bf16 | fp32")]
SystemOpt = Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt.")]
MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens to generate.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", "-t", help="0 is greedy.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed for reproducible sampling.")]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="--backend openai: the server, e.g. http://gpu-box:8000/v1 (or $PHIKIT_BASE_URL).")]
AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help="LoRA adapter from phikit tune (registered name or folder; none = the base model); llama.cpp and transformers backends.")]
AttnOpt = Annotated[Optional[str], typer.Option("--attn", help="transformers backend: attention kernels, auto | flash | sdpa | eager (auto: eager on V100 and older GPUs).")]
ApiKeyOpt = Annotated[Optional[str], typer.Option("--api-key", help="--backend openai: the server's key (or $OPENAI_API_KEY).")]


def load_llm(model: str | None, backend: str, precision: str | None, base_url: str | None = None,
             api_key: str | None = None, adapter: str | None = None, attn: str | None = None):
    """Load the model the flags name; ``--base-url``/``--api-key`` only go with ``--backend openai``;
    ``--adapter`` (a LoRA adapter, checked now) becomes every request's default."""
    from ..errors import BadRequestError
    from ..llm import load

    opts = engine_opts(precision, adapter, attn)
    if backend == "openai":
        opts.update(base_url=base_url, api_key=api_key)
    elif base_url or api_key:
        raise BadRequestError("--base-url and --api-key are for --backend openai")
    return load(model, backend=backend, **opts)


def engine_opts(precision: str | None, adapter: str | None, attn: str | None) -> dict:
    """The backend options the flags ``--precision``, ``--adapter`` and ``--attn`` give (only those set, so a
    backend that takes none of them still loads)."""
    return {k: v for k, v in (("precision", precision), ("adapter", adapter), ("attn", attn)) if v}


# The library's errors name parameters as Python does; the CLI's name the flags.
CLI_FLAGS = {"max_new_tokens": "--max-tokens", "temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k"}


def params_from_cli(max_tokens: int, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                    seed: int | None = None, stop: list[str] | tuple[str, ...] = ()):
    """Validate sampling flags before anything is loaded, so a typo fails in milliseconds.

    Raises:
        BadRequestError: an invalid value, named by its flag (``--max-tokens must be > 0``).
    """
    from ..errors import BadRequestError
    from ..result import sampling_params

    params = dict(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=tuple(stop))
    try:
        sampling_params(**params)
    except BadRequestError as exc:
        flags = re.sub(r"\b(" + "|".join(CLI_FLAGS) + r")\b", lambda m: CLI_FLAGS[m[1]], str(exc))
        raise BadRequestError(flags) from None
    return params


def stream_to_terminal(events) -> object:
    """Write text deltas to stdout as they arrive, reasoning steps to stderr; return the final Done event."""
    from ..cot import ReasoningDelta
    from ..engines import Done, TextDelta

    done = None
    for ev in events:
        if isinstance(ev, TextDelta):
            sys.stdout.write(ev.text)
            sys.stdout.flush()
        elif isinstance(ev, ReasoningDelta):
            sys.stderr.write(ev.text)
            sys.stderr.flush()
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
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    adapter: AdapterOpt = None,
    attn: AttnOpt = None,
) -> None:
    """Answer one question, streaming tokens to the terminal."""
    from ..errors import BadRequestError
    from ..pipeline import Request, run
    from ..result import finish

    if not question.strip():
        raise BadRequestError("the question is empty: pass the text to ask, e.g. phikit ask \"What is RAG?\"")
    params = params_from_cli(max_tokens, temperature, top_p, top_k, seed, stop)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    llm = load_llm(model, backend, precision, base_url, api_key, adapter, attn)
    tool_names = [t.strip() for t in tools.split(",") if t.strip()] if tools else None
    # The CLI runs the tools it is given (the agent loop: policy, isolation, audit log), with or without a KB.
    req = Request(messages, tools=tool_names, tool_choice=tool_choice, execute_tools=bool(tool_names), kb=kb,
                  cot=cot, params=params)
    if tool_names:
        from ..tools.audit import AuditLog

        req.audit_log, req.confirm = AuditLog(), _confirm_on_terminal
    events = run(llm, req)
    if as_json:
        result = finish(events, model=llm.model, backend=llm.backend, cot=cot)
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    done = stream_to_terminal(events)
    if cot:
        from ..cot import parse_cot

        parsed = parse_cot(done.text)
        if not parsed.answer:
            print(f"note: {parsed.note}", file=sys.stderr)
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
    ctx: Annotated[Optional[int], typer.Option("--ctx", help="Context window in tokens (default: the model's trained context where memory allows; SmolLM2: 8192).")] = None,
    tools: Annotated[Optional[str], typer.Option("--tools", help="Comma-separated built-in tools the agent may call, e.g. get_order_status.")] = None,
    tool_choice: Annotated[str, typer.Option("--tool-choice", help="auto | none | required | a tool name")] = "auto",
    kb: Annotated[Optional[str], typer.Option("--kb", help="Answer only from this knowledge base, with citations.")] = None,
    adapter: AdapterOpt = None,
    attn: AttnOpt = None,
) -> None:
    """Multi-turn chat with history; the KV cache is reused across turns. Commands: /help, /reset, /exit.

    When the history nears the context window the oldest turns are dropped (the system prompt is kept),
    with a note on stderr.
    """
    from ..errors import BadRequestError, PhikitError
    from ..pipeline import Request, run
    from ..session import ChatSession, command, help_text, message_text

    params = params_from_cli(max_tokens, temperature, 1.0, 0, seed, [])
    if ctx is not None and ctx < 64:
        raise BadRequestError("--ctx must be at least 64 tokens")
    llm = _load_for_chat(model, backend, precision, ctx, adapter, attn)
    tool_names = [t.strip() for t in tools.split(",") if t.strip()] if tools else None
    # each turn is one pipeline request, as in `phikit ask`: tools run through the agent loop, kb grounds
    policy: dict = {}
    if tool_names:
        from ..tools.audit import AuditLog
        from ..tools.resolve import as_tools

        as_tools(tool_names)  # an unknown tool name fails here, before the first turn
        policy = {"audit_log": AuditLog(), "confirm": _confirm_on_terminal}
    # room for the reply plus what the request adds to the prompt (retrieved passages, the tools block)
    reserve = max_tokens + (1536 if kb else 0) + (512 if tool_names else 0) + (128 if cot else 0)
    session = ChatSession(llm, system=system, window=ctx, reserve=reserve)
    print(f"phikit chat · {llm.model} on {llm.backend} · {session.window}-token window · /help for commands",
          file=sys.stderr)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            print(file=sys.stderr)
            break
        cmd = command(line)
        if cmd == "exit":
            break
        if cmd == "reset":
            session.reset()
            print("history cleared", file=sys.stderr)
            continue
        if cmd == "help":
            print(help_text(), file=sys.stderr)
            continue
        if cmd == "unknown":
            print(f"unknown command {line.split()[0]}; /help lists the commands (start a message with // to "
                  "send a leading /)", file=sys.stderr)
            continue
        text = message_text(line)
        if not text:
            continue
        dropped = session.add_user(text)
        if dropped:
            print(dropped, file=sys.stderr)
        try:
            req = Request(session.messages(), tools=tool_names, tool_choice=tool_choice,
                          execute_tools=bool(tool_names), kb=kb, cot=cot, params=params, **policy)
            done = stream_to_terminal(run(llm, req))
        except KeyboardInterrupt:
            session.undo_user()
            print("\n(interrupted)", file=sys.stderr)
            continue
        except PhikitError as exc:  # the session goes on: say what failed, forget the message
            session.undo_user()
            print(f"error: {exc}", file=sys.stderr)
            continue
        session.add_reply(done.text)
        cached = getattr(llm.engine, "reused_tokens", None)
        print(stats_line(llm.model, llm.backend, done) + (f" · {cached} cached" if cached is not None else ""),
              file=sys.stderr)


def _load_for_chat(model: str | None, backend: str, precision: str | None, ctx: int | None,
                   adapter: str | None = None, attn: str | None = None):
    """Load the model; ``--ctx`` sizes llama.cpp's KV cache (other backends only trim the history to it)."""
    from ..llm import load
    from ..models import resolve

    opts = engine_opts(precision, adapter, attn)
    if ctx is not None and (backend == "llamacpp" or (backend == "auto" and resolve(model).is_gguf)):
        opts["n_ctx"] = ctx
    return load(model, backend=backend, **opts)


def _confirm_on_terminal(call: dict) -> bool:
    """y/N for tools marked ``requires_confirmation``; declined when stdin is not a terminal."""
    fn = call["function"]
    if not sys.stdin.isatty():
        return False
    return typer.confirm(f"run {fn['name']}({fn['arguments']})?", default=False, err=True)


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
    """Write the cached files a model needs (the default's F16 GGUF) now, not on the first question."""
    from ..models import prepare

    for name in names or [None]:
        ref = prepare(name)
        print(f"{ref.name}: {ref.source}")
