"""Run a tool in a separate, limited process: a wall-clock timeout that kills it, memory/CPU/file-size limits
(``resource.setrlimit``) and an environment without secrets.

Two ways in, one protocol (JSON in, one JSON line out):

- A tool that can be imported by name (``module:attribute``: the built-ins and any tool defined at the top of an
  importable module) runs in a **fresh interpreter** (``python -I``) started with a scrubbed environment: it
  never holds the parent's memory, keys or open files.
- A tool that cannot be imported by name (defined in ``__main__`` or inside a function) runs in a **forked
  child** of this process: the same limits and scrubbed ``os.environ``, descriptors closed, but the child
  starts as a copy of this process's memory. Prefer importable tools for anything that matters.

Either way the child is killed (SIGKILL, with its process group) when the wall-clock limit passes, so a tool
can never hold the caller's GIL or event loop: Python threads cannot be killed, processes can. This is the
isolation Python's own docs recommend for untrusted work (``multiprocessing``, not threads) and the
"limit what a tool can do" mitigation of OWASP's LLM06 (excessive agency).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import resource
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PhikitError

MEMORY_MB = int(os.environ.get("PHIKIT_TOOL_MEMORY_MB") or 512)  # address space a tool may add, MiB
FILE_MB = 256  # largest file a tool may write, MiB
MAX_OUTPUT = 1 << 20  # bytes of result a tool may send back
# Environment variables a tool child never sees: anything that looks like a credential, plus phikit's own keys.
SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE", re.IGNORECASE)
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PHIKIT_ORDERS_DB", "PYTHONHASHSEED")


class ToolRunError(PhikitError):
    """The tool raised, was killed by a limit, or sent back something that is not JSON.

    Attributes:
        status: ``error`` (the tool raised), ``timeout`` (past its wall-clock or CPU limit) or ``killed``
            (another limit, e.g. memory).
        kind: the exception's class name inside the child (``CalculationError``, ``MemoryError``, ...).
    """

    def __init__(self, message: str, status: str = "error", kind: str = "ToolError"):
        super().__init__(message)
        self.status, self.kind = status, kind


@dataclass(frozen=True)
class Limits:
    """What one tool call may use: wall-clock seconds, extra address space (MiB), file size (MiB)."""

    timeout_s: float = 10.0
    memory_mb: int = MEMORY_MB
    file_mb: int = FILE_MB


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a tool child gets: a short allowlist, never a variable whose name looks secret."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if (k in KEEP_ENV or k.startswith("PHIKIT_TOOL_")) and not SECRET_ENV.search(k)}


def apply_limits(limits: Limits) -> None:
    """In the child: cap address space (current + ``memory_mb``), CPU seconds and file size."""
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    space = current + limits.memory_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (space, space))
    cpu = int(limits.timeout_s) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    size = limits.file_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def tool_ref(tool: Any) -> tuple[str, str] | None:
    """``(module, attribute)`` under which ``tool`` can be imported afresh, or None (``__main__``, locals)."""
    fn = getattr(tool, "fn", None)
    module = getattr(fn, "__module__", None)
    if not module or module == "__main__" or "<locals>" in getattr(fn, "__qualname__", "<locals>"):
        return None
    mod = sys.modules.get(module)
    for attr in (tool.name, fn.__name__):
        if getattr(mod, attr, None) in (tool, fn):  # the Tool, or the plain function it was built from
            return module, attr
    return None


def _outcome(value: Any) -> dict:
    """A tool's return value as the one JSON line a child sends back."""
    return {"ok": json.dumps(value, ensure_ascii=False, default=str)}


def _failure(exc: BaseException) -> dict:
    text = str(exc).strip()
    message = text.splitlines()[0] if text else type(exc).__name__
    return {"error": message[:2000], "kind": type(exc).__name__}


def _run_in_child(tool: Any, arguments: dict) -> dict:
    try:
        return _outcome(tool.run(arguments))
    except MemoryError:
        return {"error": "the tool ran out of its memory limit", "kind": "MemoryError", "status": "killed"}
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent as data
        return _failure(exc)


# The fresh interpreter's first lines: take the caller's sys.path (it knows where phikit and the tool live).
BOOTSTRAP = ("import json, sys; req = json.loads(sys.stdin.readline()); "
             "sys.path[:0] = [p for p in req['sys_path'] if p not in sys.path]; "
             "from phikit.tools.sandbox import child_main; child_main(req)")


def child_main(req: dict) -> None:
    """Entry of a fresh tool interpreter: run the request, answer one JSON line on the saved stdout."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the tool's own prints go to stderr, never into the answer
    try:
        from .resolve import as_tool

        tool = as_tool(getattr(importlib.import_module(req["module"]), req["attr"]))
    except BaseException as exc:  # noqa: BLE001 - an import error is the tool's failure, reported as data
        answer = _failure(exc)
    else:
        apply_limits(Limits(**req["limits"]))
        answer = _run_in_child(tool, req["arguments"])
    out.write(json.dumps(answer) + "\n")
    out.flush()


def _read(fd: int, deadline: float) -> bytes | None:
    """Everything from ``fd`` until EOF, or None when ``deadline`` (monotonic) passes first."""
    chunks, size = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_OUTPUT + 1024:
            raise ToolRunError(f"the tool's result is larger than {MAX_OUTPUT} bytes")
        chunks.append(chunk)


def _kill(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass


def _spawn(ref: tuple[str, str], arguments: dict, limits: Limits) -> tuple[int, int, Any]:
    here = str(Path(__file__).resolve().parents[2])  # the directory holding the phikit package
    request = json.dumps({"module": ref[0], "attr": ref[1], "arguments": arguments, "sys_path": [here, *sys.path],
                          "limits": limits.__dict__}, default=str) + "\n"
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", BOOTSTRAP],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=clean_env(), close_fds=True, start_new_session=True,
    )
    try:
        proc.stdin.write(request.encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    return proc.pid, proc.stdout.fileno(), proc


def _fork(tool: Any, arguments: dict, limits: Limits) -> tuple[int, int, None]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's code
        code = 0
        try:
            os.setsid()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            os.dup2(2, 1)  # the tool's own prints go to stderr, as in a fresh interpreter
            os.closerange(3, r)
            os.closerange(r + 1, w)
            os.closerange(w + 1, 65536)
            secret = os.environ.keys() - clean_env().keys()
            for k in list(secret):
                del os.environ[k]
            apply_limits(limits)
            body = json.dumps(_run_in_child(tool, arguments)).encode() + b"\n"
            os.write(w, body)
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r, None


def run_tool(tool: Any, arguments: dict, limits: Limits | None = None) -> Any:
    """Run ``tool`` with validated ``arguments`` in a limited child process and return its (JSON) value.

    Args:
        tool: a :class:`~phikit.tools.Tool` with a Python function.
        arguments: the call's arguments (a JSON object).
        limits: wall-clock seconds, memory and file size; default: the tool's ``timeout_s``.

    Returns:
        The tool's return value after a JSON round trip (what the model sees).

    Raises:
        ToolRunError: the tool raised (``status="error"``), ran past its time (``"timeout"``) or died
            (``"killed"``, e.g. past its memory limit).
    """
    limits = limits or Limits(timeout_s=tool.timeout_s)
    ref = tool_ref(tool)
    deadline = time.monotonic() + limits.timeout_s
    pid, fd, proc = _spawn(ref, arguments, limits) if ref else _fork(tool, arguments, limits)
    data = None
    try:
        data = _read(fd, deadline)
    finally:
        if data is None:
            _kill(pid)
        if proc is None:
            os.close(fd)
        code = _reap(pid, proc)
        if proc is not None:
            proc.stdout.close()
    if data is None:
        raise ToolRunError(f"{tool.name} timed out after {limits.timeout_s:g} s (killed)", "timeout", "Timeout")
    return _decode(tool.name, data, code, limits)


def _reap(pid: int, proc: Any) -> int:
    if proc is not None:
        return proc.wait()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _decode(name: str, data: bytes, code: int, limits: Limits) -> Any:
    line = data.decode("utf-8", errors="replace").strip().splitlines()
    if not line:
        if code in (-signal.SIGXCPU, -signal.SIGKILL):
            raise ToolRunError(f"{name} ran past its CPU limit of {int(limits.timeout_s) + 1} s (killed)", "timeout",
                               "Timeout")
        raise ToolRunError(f"{name} died without an answer (exit {code}; memory limit {limits.memory_mb} MiB?)",
                           "killed", "Killed")
    msg = json.loads(line[-1])
    if "ok" in msg:
        return json.loads(msg["ok"])
    raise ToolRunError(msg["error"], msg.get("status", "error"), msg.get("kind", "ToolError"))
