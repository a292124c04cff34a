"""The agent loop: model -> calls -> validate, check policy, run (with a timeout) -> results -> model, until the
model answers in text or ``max_steps`` model turns are used.

One generator serves streaming and non-streaming use, as in smolagents: :func:`run_agent` yields
:class:`~phikit.engines.TextDelta`, :class:`ToolCall`, :class:`ToolResult` and one final
:class:`AgentDone`; :func:`agent_chat` drains it into a :class:`~phikit.llm.ChatResult`. Tool errors
(exceptions, timeouts, blocked calls) go back to the model as error results; an invalid call gets one repair
turn; generation errors end the run.

Tool results are untrusted text: they are fed back as JSON data in ``tool`` messages, with chat special-token
markers broken (see :func:`phikit.tools.chat.neutralize`), never merged into the system or user turn.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .engines import Done, Usage
from .errors import PhikitError
from .prompt import normalize_messages
from .tools.chat import StepDone, ToolCallEvent, check_choice, step
from .tools.schema import Tool, ToolCallError, as_tools, validate_call

Guard = Callable[[dict, list], "str | None"]  # guard(call, messages) -> a reason to block, or None
ToolCall = ToolCallEvent


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one call: ``content`` is the JSON text the model sees; ``error`` is True when the tool
    failed, timed out or was blocked (``status`` says which: ``ok`` | ``error`` | ``timeout`` | ``blocked`` |
    ``denied``)."""

    call_id: str
    name: str
    content: str
    status: str = "ok"

    @property
    def error(self) -> bool:
        return self.status != "ok"

    def __str__(self) -> str:
        return f"← {self.name}: {self.content}" if not self.error else f"← {self.name} [{self.status}]: {self.content}"

    def to_dict(self) -> dict:
        return {"tool_call_id": self.call_id, "name": self.name, "content": self.content, "status": self.status}


@dataclass(frozen=True)
class AgentDone(Done):
    """The final event: a :class:`Done` (text = the final answer, usage summed over all turns) plus the
    calls made, their results, calls awaiting confirmation, and the full message list."""

    tool_calls: tuple = ()
    tool_results: tuple = ()
    pending_calls: tuple = ()
    messages: tuple = field(default=(), repr=False)
    steps: int = 0


def execute(tool: Tool, arguments: dict, call_id: str, timeout_s: float | None = None, audit_log: Any = None,
            caller: str = "agent") -> ToolResult:
    """Run one validated call isolated in a limited child process (:mod:`phikit.tools.sandbox`, killed at its
    time limit), with ``intent``/``result`` audit entries around it; errors and timeouts become error results."""
    from .tools.execute import run_call

    content, status = run_call(tool, arguments, call_id, timeout_s=timeout_s, audit=audit_log, caller=caller)
    return ToolResult(call_id, tool.name, content, status)


def run_agent(
    llm: Any,
    messages: Any,
    tools: Any,
    *,
    tool_choice: Any = "auto",
    max_steps: int = 5,
    guards: Sequence[Guard] = (),
    audit_log: Any = None,
    confirm: Callable[[dict], bool] | None = None,
    allow: Sequence[str] | None = None,
    timeout_s: float | None = None,
    **params: Any,
) -> Iterator[Any]:
    """Answer with tools, streaming events.

    Args:
        llm: a loaded :class:`~phikit.llm.LLM`.
        messages: the conversation (OpenAI-shaped list or one user string).
        tools: tools in any accepted form (functions, ``@tool`` tools, built-in names, OpenAI or plain dicts).
        tool_choice: for the first turn: ``auto`` | ``none`` | ``required`` | a function (later turns are
            ``auto``; the last allowed turn is ``none`` so the run ends with an answer).
        max_steps: most model turns (>= 1).
        guards: ``guard(call, messages) -> reason | None``; any reason blocks the call.
        audit_log: an :class:`~phikit.tools.audit.AuditLog` or a path; every executed or blocked call and its
            result is appended.
        confirm: ``confirm(call) -> bool`` for tools with ``requires_confirmation``; without it such calls
            are returned unexecuted in ``AgentDone.pending_calls`` and the run stops.
        allow: the tool names this agent may run (default: all declared tools).
        timeout_s: per-call time limit overriding each tool's ``timeout_s``.
        **params: sampling parameters for every turn.

    Yields:
        :class:`TextDelta`, :class:`ToolCall`, :class:`ToolResult`, then one :class:`AgentDone`.

    Raises:
        BadRequestError: bad tools, tool_choice or parameters (before any token).
        ToolCallError: the model's call was still invalid after one repair turn.
    """
    from .tools.audit import AuditLog

    tool_list = as_tools(tools)
    check_choice(tool_choice, tool_list)
    if max_steps < 1:
        raise PhikitError("max_steps must be >= 1")
    allowed = set(allow) if allow is not None else {t.name for t in tool_list}
    log = AuditLog(audit_log) if audit_log is not None and not isinstance(audit_log, AuditLog) else audit_log
    msgs = normalize_messages(messages)
    calls_made: list[dict] = []
    results: list[ToolResult] = []
    prompt_tokens = completion_tokens = 0
    ttft_ms, decode_s = None, 0.0
    repaired = False
    for n in range(max_steps):
        choice = tool_choice if n == 0 else "auto"
        if n == max_steps - 1 and n > 0:
            choice = "none"
        turn = None
        for ev in step(llm, msgs, tool_list, tool_choice=choice, **params):
            if isinstance(ev, StepDone):
                turn = ev
            else:
                yield ev
        d = turn.done
        prompt_tokens += d.usage.prompt_tokens
        completion_tokens += d.usage.completion_tokens
        ttft_ms = d.ttft_ms if ttft_ms is None else ttft_ms
        decode_s += (d.usage.completion_tokens - 1) / d.tokens_per_s if d.tokens_per_s else 0.0

        if turn.errors and not turn.calls:
            if repaired:
                raise ToolCallError(f"the model's tool call is still invalid after a repair turn: {turn.errors[0]}")
            repaired = True
            msgs = [*msgs, {"role": "assistant", "content": d.text},
                    {"role": "user", "content": f"Your tool call was rejected: {'; '.join(turn.errors)}. "
                     "Reply with one corrected call, or answer in plain text."}]
            continue
        if not turn.calls:
            yield _final(d.finish_reason, turn.content, (), n + 1, prompt_tokens, completion_tokens, ttft_ms, decode_s, calls_made, results, msgs)
            return
        msgs = [*msgs, {"role": "assistant", "content": turn.content, "tool_calls": turn.calls}]
        pending = []
        for call in turn.calls:
            yield ToolCall(call)
            tool, args = validate_call(call, tool_list)  # step() validated; this returns the parsed args
            result = _policy(call, tool, msgs, allowed, guards, confirm)
            if result == "pending":
                pending.append(call)
                continue
            if result is None:
                result = execute(tool, args, call["id"], timeout_s, log)  # audits intent and result itself
            elif log is not None:  # blocked or declined: recorded, never run
                log.append({"event": "refused", "tool": tool.name, "call_id": call["id"], "arguments": args,
                            "status": result.status, "result": result.content})
            calls_made.append(call)
            results.append(result)
            yield result
            msgs = [*msgs, {"role": "tool", "tool_call_id": call["id"], "name": tool.name,
                            "content": result.content}]
        if pending:
            yield _final("tool_calls", turn.content, pending, n + 1, prompt_tokens, completion_tokens, ttft_ms, decode_s, calls_made, results, msgs)
            return
    yield _final("tool_calls", "", (), max_steps, prompt_tokens, completion_tokens, ttft_ms, decode_s, calls_made, results, msgs)


def _final(reason, text, pending, steps, prompt_tokens, completion_tokens, ttft_ms, decode_s, calls, results, msgs):
    decoded = completion_tokens - steps  # the first token of each turn is counted in its TTFT
    return AgentDone(
        finish_reason=reason, usage=Usage(prompt_tokens, completion_tokens), ttft_ms=ttft_ms or 0.0,
        tokens_per_s=decoded / decode_s if decode_s > 0 else 0.0, text=text,
        tool_calls=tuple(calls), tool_results=tuple(r.to_dict() for r in results),
        pending_calls=tuple(pending), messages=tuple(msgs), steps=steps,
    )


def _policy(call: dict, tool: Tool, msgs: list, allowed: set, guards: Sequence[Guard], confirm) -> Any:
    """None to run the call; a blocked/denied :class:`ToolResult`; or ``"pending"`` (needs confirmation)."""
    cid, name = call["id"], tool.name
    if name not in allowed:
        return ToolResult(cid, name, json.dumps({"error": f"{name} is not allowed for this agent"}), "blocked")
    if tool.fn is None:
        return ToolResult(cid, name, json.dumps({"error": f"{name} has no implementation here"}), "error")
    for guard in guards:
        reason = guard(call, msgs)
        if reason:
            return ToolResult(cid, name, json.dumps({"error": f"blocked: {reason}"}, ensure_ascii=False), "blocked")
    if tool.requires_confirmation:
        if confirm is None:
            return "pending"
        if not confirm(call):
            return ToolResult(cid, name, json.dumps({"error": "the user declined this call"}), "denied")
    return None


def agent_chat(llm: Any, messages: Any, tools: Any, **kwargs: Any):
    """:func:`run_agent` drained into a :class:`~phikit.llm.ChatResult`.

    ``result.extra`` holds ``tool_calls`` (OpenAI shape), ``tool_results``, ``steps`` and, when a call
    awaits confirmation, ``pending_tool_calls``.
    """
    from .llm import ChatResult

    done = None
    for ev in run_agent(llm, messages, tools, **kwargs):
        if isinstance(ev, AgentDone):
            done = ev
    return result_from(done, llm, ChatResult)


def result_from(done: AgentDone, llm: Any, cls: Any = None):
    """An :class:`AgentDone` -> :class:`~phikit.llm.ChatResult` with ``tool_calls``/``tool_results`` extras."""
    if cls is None:
        from .llm import ChatResult as cls
    result = cls(
        text=done.text, model=llm.model, backend=llm.backend, finish_reason=done.finish_reason,
        usage=done.usage, ttft_ms=done.ttft_ms, tokens_per_s=done.tokens_per_s, answer=done.text,
    )
    result.extra.update(tool_calls=list(done.tool_calls), tool_results=list(done.tool_results), steps=done.steps)
    if done.pending_calls:
        result.extra["pending_tool_calls"] = list(done.pending_calls)
    return result
