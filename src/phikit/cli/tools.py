"""Tool commands: ``phikit tools list|run``, ``phikit audit verify``,
``phikit demo-db``."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from . import app

audit_app = typer.Typer(help="Check the signed audit log of tool calls.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
tools_app = typer.Typer(help="List the built-in tools, or run one exactly as the agent does.", no_args_is_help=True)
app.add_typer(tools_app, name="tools")


@audit_app.command("verify")
def audit_verify(
    log: Annotated[str, typer.Argument(help="The audit log (JSONL) to check.")],
    expect_seq: Annotated[int | None, typer.Option("--expect-seq", help="Fail unless the log reaches this sequence number (one you noted elsewhere).")] = None,
) -> None:
    """Verify every MAC, link and the anchor; name the first edited, deleted, inserted, reordered or cut line (exit 1)."""
    from ..tools.audit import verify

    verdict = verify(log, expect_seq=expect_seq)
    if verdict.ok:
        print(verdict)
        return
    print(f"{log}: {verdict}", file=sys.stderr)
    raise typer.Exit(1)


@app.command("demo-db")
def demo_db(
    path: Annotated[str, typer.Argument(help="Where to write the SQLite order database.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
) -> None:
    """Create a SQLite order database with demo rows for the get_order_status tool."""
    from ..tools.builtins import ORDERS_ENV, create_demo_db

    out = create_demo_db(path, overwrite=overwrite)
    print(f"wrote {out}; use it with: export {ORDERS_ENV}={out.resolve()}", file=sys.stderr)


def _cli_confirm(call: dict) -> bool:
    fn = call["function"]
    if not sys.stdin.isatty():
        return False
    return typer.confirm(f"run {fn['name']}({fn['arguments']})?", default=False, err=True)


def resolve_tool(name: str):
    """A built-in tool by name, or a user tool as ``module:attribute`` (a ``@phikit.tool`` function).

    Raises:
        PhikitError: no such tool.
    """
    import importlib

    from ..errors import PhikitError
    from ..tools.builtins import BUILTINS
    from ..tools.resolve import as_tool

    if name in BUILTINS:
        return BUILTINS[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return as_tool(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError) as exc:
            raise PhikitError(f"cannot load tool {name!r}: {exc}") from None
    raise PhikitError(f"unknown tool {name!r}; built-ins are {', '.join(sorted(BUILTINS))} (or give module:function)")


@tools_app.command("list")
def tools_list(as_json: Annotated[bool, typer.Option("--json", help="OpenAI tool definitions as JSON.")] = False) -> None:
    """The built-in tools with their arguments."""
    from ..tools.builtins import BUILTINS

    if as_json:
        print(json.dumps([t.to_openai() for t in BUILTINS.values()], ensure_ascii=False, indent=2))
        return
    for t in BUILTINS.values():
        args = ", ".join(t.parameters.get("properties", {}))
        print(f"{t.name}({args})  {t.description}")


@tools_app.command("run")
def tools_run(
    name: Annotated[str, typer.Argument(help="A built-in tool (phikit tools list) or module:function.")],
    arguments: Annotated[str, typer.Argument(help='The arguments as a JSON object, e.g. \'{"expression": "2 + 2"}\'.')] = "{}",
    timeout: Annotated[float | None, typer.Option("--timeout", help="Wall-clock limit in seconds (default: the tool's).")] = None,
) -> None:
    """Run one tool exactly as the agent does: schema check, policy, isolated process with limits, audit log.

    Prints the result (JSON) on stdout; a failing tool is one `error:` line and exit 1.
    """
    import uuid

    from ..agent import _policy, execute, record_refused
    from ..errors import PhikitError
    from ..tools.audit import AuditLog
    from ..tools.schema import ToolCallError, validate_call

    tool = resolve_tool(name)
    call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": tool.name, "arguments": arguments}}
    try:
        tool, args = validate_call(call, [tool])
    except ToolCallError as exc:
        raise PhikitError(str(exc)) from None
    log = AuditLog()
    result = _policy(call, tool, [], {tool.name}, (), _cli_confirm)
    if result is None:
        result = execute(tool, args, call["id"], timeout, log, caller="cli")
    else:  # declined at the prompt: recorded, never run (as the agent does)
        record_refused(log, result, args)
    if not result.error:
        print(result.content)
        return
    try:
        message = json.loads(result.content)["error"]
    except (ValueError, KeyError, TypeError):
        message = result.content
    print(f"error: {tool.name} [{result.status}]: {message}", file=sys.stderr)
    raise typer.Exit(1)
