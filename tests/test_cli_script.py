"""The installed ``phikit`` script as a user runs it: usage mistakes are one line and exit 2, exit codes are
the command's, ``--help`` reads cleanly. CliRunner would hide both a traceback and a wrong exit code, so
these run the console script pip wrote next to this interpreter, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import phikit
from phikit.cli import app, main

SCRIPT = Path(sys.executable).parent / "phikit"


def phikit_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: install phikit into this environment (make test does)"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PHIKIT_RAISE_ERRORS": "", **(env or {})})


def error_lines(p: subprocess.CompletedProcess) -> list[str]:
    return [line for line in p.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["ask"], "Missing argument 'QUESTION'"),
        (["ask", "--foo"], "No such option: --foo"),
        (["ask", "-n", "abc"], "'--max-tokens'"),
        (["ask", "hi", "-n", "abc"], "'--max-tokens'"),
        (["nosuchcmd"], "No such command 'nosuchcmd'"),
        (["kb", "search", "x"], "Missing option '--kb'"),
        (["ask", "hi", "--max-tokens", "0"], "--max-tokens must be > 0"),  # the flag, not max_new_tokens
        (["ask", "hi", "--top-p", "2"], "--top-p must be in (0, 1]"),
        (["ask", "hi", "--adapter", "no-such-adapter"], "adapter 'no-such-adapter' not found"),  # on llama.cpp
        (["serve", "--adapter", "no-such-adapter"], "adapter 'no-such-adapter' not found"),
    ],
)
def test_usage_mistake_is_one_line_and_exit_2(args, needle):
    p = phikit_script(*args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = error_lines(p)
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert p.stdout == ""


@pytest.mark.parametrize("args, needle", [
    (["--adapter", "no-such-adapter"], "adapter 'no-such-adapter' not found"),  # checked before the KB is read
    (["--adapter", "zorblax", "--retrieval-only"], "--retrieval-only generates none"),
])
def test_eval_rag_adapter_mistakes_are_one_line_and_exit_2(tmp_path, args, needle):
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "What is the warranty?", "answer": "2 years", "doc": "terms.md"}\n')
    p = phikit_script("eval", "rag", str(qa), "--kb", str(tmp_path / "kb"), *args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = error_lines(p)
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr


def test_audit_verify_exit_codes_through_the_script(tmp_path, monkeypatch):
    """A clean log exits 0; the same log with one value edited exits 1 (`raise typer.Exit(1)` really exits 1)."""
    from phikit.tools.audit import AuditLog

    # The key by environment, so the log written here and the script's check agree whatever the key lookup.
    monkeypatch.setenv("PHIKIT_AUDIT_KEY", "test-key")
    monkeypatch.setenv("PHIKIT_AUDIT_KEY_FILE", str(tmp_path / "audit.key"))
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(3):
        log.append({"tool": "calculate", "arguments": {"expression": f"{i} + 1000"}, "result": str(1000 + i)})

    ok = phikit_script("audit", "verify", str(path))
    assert ok.returncode == 0, ok.stderr
    assert "Traceback" not in ok.stderr

    lines = path.read_text().splitlines(keepends=True)
    assert '"1001"' in lines[1]
    lines[1] = lines[1].replace('"1001"', '"9001"')  # edit the second call's result
    path.write_text("".join(lines))
    bad = phikit_script("audit", "verify", str(path))
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert "Traceback" not in bad.stderr and "2" in bad.stderr  # names the line


def test_missing_audit_log_is_one_line_exit_2(tmp_path):
    p = phikit_script("audit", "verify", str(tmp_path / "nope.jsonl"))
    assert p.returncode == 2 and len(error_lines(p)) == 1, p.stderr


def test_version():
    p = phikit_script("--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"phikit {phikit.__version__}"


def all_commands(command, path=("phikit",)):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from all_commands(sub, (*path, name))


COMMANDS = [path for path, _ in all_commands(typer.main.get_command(app))]


def test_every_option_and_argument_has_a_description():
    missing = [f"{' '.join(path)} {p.opts[0] if p.opts else p.name}"
               for path, cmd in all_commands(typer.main.get_command(app)) for p in cmd.params if not p.help]
    assert not missing, f"give these a help= text: {missing}"


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p))
def test_help_names_values_not_types(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        main([*path[1:], "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "Usage: phikit" in out
    for label in ("<bool>", "<str>", "<int>", "<float>", "<list"):
        assert label not in out, f"{' '.join(path)} --help shows {label}:\n{out}"


def test_help_through_the_script():
    p = phikit_script("ask", "--help")
    assert p.returncode == 0 and "--max-tokens" in p.stdout and "MAX_TOKENS" in p.stdout, p.stderr
    assert "<int>" not in p.stdout and "<bool>" not in p.stdout
