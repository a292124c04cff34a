"""One validated tool call, run the one way every surface runs it: audit ``intent``, sandboxed run, audit
``result``.

The agent loop (:func:`phikit.agent.execute`), the server's ``execute_tools`` (through the agent loop) and
``phikit tools run`` all come through :func:`run_call`, so isolation, limits and the audit trail are the same.
"""

from __future__ import annotations

import json
from typing import Any

from .chat import neutralize
from .sandbox import Limits, ToolRunError, run_tool

MAX_RESULT_CHARS = 4_000  # what the model sees of a result; longer results are cut with a marker


def run_call(
    tool: Any,
    arguments: dict,
    call_id: str,
    *,
    timeout_s: float | None = None,
    audit: Any = None,
    caller: str = "agent",
) -> tuple[str, str]:
    """Run one call in the sandbox, auditing before and after.

    Args:
        tool: a :class:`~phikit.tools.Tool` with a function (policy already checked by the caller).
        arguments: the validated arguments.
        call_id: the call's id (``call_...``), recorded in the audit entries.
        timeout_s: wall-clock limit; default the tool's ``timeout_s``.
        audit: an :class:`~phikit.tools.audit.AuditLog` or None; the ``intent`` entry is fsynced before the
            tool starts, so a crash mid-run leaves a record.
        caller: who asked (``agent``, ``server``, ``cli``), recorded in the intent.

    Returns:
        ``(content, status)``: the JSON text the model sees (neutralized, at most ``MAX_RESULT_CHARS``) and
        ``ok`` | ``error`` | ``timeout`` | ``killed``.
    """
    intent = None
    if audit is not None:
        intent = audit.append({"event": "intent", "tool": tool.name, "call_id": call_id, "arguments": arguments,
                               "caller": caller})
    limits = Limits(timeout_s=timeout_s if timeout_s is not None else tool.timeout_s)
    try:
        content, status = json.dumps(run_tool(tool, arguments, limits), ensure_ascii=False), "ok"
    except ToolRunError as exc:  # a tool error goes back to the model, it does not end the run
        content, status = json.dumps({"error": f"{exc.kind}: {exc}"}, ensure_ascii=False), exc.status
    if len(content) > MAX_RESULT_CHARS:
        content = content[:MAX_RESULT_CHARS] + "…[truncated]"
    content = neutralize(content)
    if audit is not None:
        audit.append({"event": "result", "intent": intent["seq"], "tool": tool.name, "call_id": call_id,
                      "status": status, "result": content})
    return content, status
