"""Tool-calling commands: ``phikit ask --tools`` (the agent loop), ``phikit audit verify``, ``phikit demo-db``."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from . import app

audit_app = typer.Typer(help="Check the signed audit log of tool calls.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def ask_with_tools(llm, messages: list, tools: list[str], tool_choice: str, params: dict, *, as_json: bool) -> None:
    """Run the agent loop for ``phikit ask --tools``: calls and results to stderr, the answer to stdout.

    Every executed call is appended to the signed audit log (``$PHIKIT_AUDIT_LOG`` or phikit's data dir).
    Tools marked ``requires_confirmation`` ask y/N on the terminal (declined without one).
    """
    from ..agent import result_from, run_agent
    from ..tools.audit import AuditLog
    from .core import stats_line, stream_to_terminal

    def confirm(call: dict) -> bool:
        fn = call["function"]
        if not sys.stdin.isatty():
            return False
        return typer.confirm(f"run {fn['name']}({fn['arguments']})?", default=False, err=True)

    events = run_agent(llm, messages, tools, tool_choice=tool_choice, audit_log=AuditLog(), confirm=confirm, **params)
    if as_json:
        done = None
        for ev in events:
            done = ev
        print(json.dumps(result_from(done, llm).to_dict(), ensure_ascii=False))
        return
    done = stream_to_terminal(events)
    print(stats_line(llm.model, llm.backend, done), file=sys.stderr)


@audit_app.command("verify")
def audit_verify(log: Annotated[str, typer.Argument(help="The audit log (JSONL) to check.")]) -> None:
    """Verify every MAC and link; name the first edited, deleted, inserted or reordered line (exit 1)."""
    from ..tools.audit import verify

    verdict = verify(log)
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
