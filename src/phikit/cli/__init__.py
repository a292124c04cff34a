"""``phikit`` command line: thin commands that parse, call the library and render.

Answers go to stdout; stats, notes and errors to stderr. A :class:`~phikit.errors.PhikitError` becomes one
line ``error: ...`` and exit code 2; ``PHIKIT_RAISE_ERRORS=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

import click
import typer

from ..errors import PhikitError

app = typer.Typer(
    name="phikit",
    help="Run Phi-4-mini privately and cheaply: chat, chain-of-thought, tools, RAG, serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines its commands on `app` when imported.
COMMAND_MODULES = ["core", "tools", "kb", "serve"]
for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def fail(message: str, code: int = 2) -> None:
    """Print one error line on stderr and exit."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``phikit`` script."""
    try:
        app(args=argv, standalone_mode=False)
    except PhikitError as exc:
        if os.environ.get("PHIKIT_RAISE_ERRORS"):
            raise
        fail(str(exc))
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("", file=sys.stderr)
        raise SystemExit(130) from None
