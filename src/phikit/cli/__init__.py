"""``phikit`` command line: thin commands that parse, call the library and render.

Answers go to stdout; stats, notes and errors to stderr. A :class:`~phikit.errors.PhikitError` or a usage
mistake (a missing argument, an unknown option or command, a value of the wrong type) becomes one line
``error: ...`` and exit code 2; ``PHIKIT_RAISE_ERRORS=1`` shows the traceback of a PhikitError instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Optional

import typer

from ..errors import PhikitError

app = typer.Typer(
    name="phikit",
    help="Run Phi-4-mini privately and cheaply: chat, chain-of-thought, tools, RAG, serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# typer's usage errors derive from click's ClickException: click's own before typer 0.2x, a vendored copy
# (typer._click) after. Found through typer's public BadParameter, so both work.
UsageErrorBase = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
NoArgsIsHelpError = getattr(sys.modules[UsageErrorBase.__module__], "NoArgsIsHelpError", ())


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"phikit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print phikit's version and exit.")] = None,
) -> None:
    pass  # the help comes from `app`'s help above


# Each module defines its commands on `app` when imported.
COMMAND_MODULES = ["core", "tools", "kb", "serve", "tune", "export", "bench"]
for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def fail(message: str, code: int = 2) -> None:
    """Print one error line on stderr and exit."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _clean_help(command) -> None:
    """Name every value in ``--help`` argparse-style (``--model MODEL``) instead of typer's ``<str>`` and
    ``<bool>`` type labels; a flag gets no name. Walks the whole command tree."""
    help_option = command.get_help_option(command.context_class(command))  # cached by click >= 8.2
    for param in [*command.params, *filter(None, [help_option])]:
        if param.metavar is None:
            param.metavar = "" if getattr(param, "is_flag", False) else param.name.upper()
        if param.param_type_name == "argument" and hasattr(param, "display_type_rich"):
            param.display_type_rich = lambda ctx: None  # typer >= 0.27 labels arguments with a type too
    for sub in getattr(command, "commands", {}).values():
        _clean_help(sub)


def _usage_line(exc) -> str:
    """One line for a usage error, with where to read the usage: typer's own shows a usage block."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    return f"{message.rstrip('.')}. Try '{ctx.command_path} --help' for help." if ctx is not None else message


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``phikit`` script: every exit code is the command's, every user mistake one line."""
    command = typer.main.get_command(app)
    _clean_help(command)
    try:
        code = command.main(args=argv, prog_name="phikit", standalone_mode=False)
    except PhikitError as exc:
        if os.environ.get("PHIKIT_RAISE_ERRORS"):
            raise
        fail(str(exc))
    except typer.Exit as exc:  # click returns an Exit's code (below); this is for one raised outside it
        raise SystemExit(exc.exit_code) from None
    except NoArgsIsHelpError as exc:  # `phikit` or `phikit kb` alone: the help, on stderr
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except UsageErrorBase as exc:
        fail(_usage_line(exc), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("", file=sys.stderr)
        raise SystemExit(130) from None
    # Without standalone mode click returns `raise typer.Exit(n)`'s n instead of exiting.
    raise SystemExit(code if isinstance(code, int) else 0)
