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

from .engines import Done, TextDelta, Usage
from .errors import PhikitError
from .prompt import normalize_messages
from .tools.chat import StepDone, ToolCallEvent, check_choice, step
from .tools.provenance import ask_user, label, missing_identifiers
from .tools.resolve import as_tools
from .tools.schema import Tool, ToolCallError, validate_call

Guard = Callable[[dict, list], "str | None"]  # guard(call, messages) -> a reason to block, or None
ToolCall = ToolCallEvent
RAW_CALL = ("functools", "<|tool_call|>", "<tool_call>")  # call syntax written as text in an answer-only turn


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one call: ``content`` is the JSON text the model sees; ``error`` is True when the tool
    failed, timed out or was blocked (``status`` says which: ``ok`` | ``error`` | ``timeout`` | ``blocked`` |
    ``denied`` | ``repeated``)."""

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


def record_refused(audit_log: Any, result: ToolResult, arguments: dict) -> None:
    """Audit a call that policy blocked or the user declined (it never ran); no-op without a log."""
    if audit_log is not None:
        audit_log.append({"event": "refused", "tool": result.name, "call_id": result.call_id, "arguments": arguments,
                          "status": result.status, "result": result.content})


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
    check_identifiers: bool = True,
    **params: Any,
) -> Iterator[Any]:
    """Answer with tools, streaming events.

    Three rules keep the loop honest. An identifier argument (an order id, e-mail, account number:
    :mod:`phikit.tools.provenance`) whose value the user never wrote is not executed: the model gets an
    error result, and the run ends by asking the user for it. A call identical to an earlier one (same name
    and arguments) is not run again: the model gets the earlier result and must answer in text. The run
    always ends with a non-empty answer.

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
        check_identifiers: block identifier arguments that do not appear in the user's messages.
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
    user_texts = [_text(m) for m in msgs if m.get("role") == "user"]  # before any repair turn is added
    calls_made: list[dict] = []
    results: list[ToolResult] = []
    seen: dict[str, ToolResult] = {}  # name + canonical arguments -> the result of the first such call
    prompt_tokens = completion_tokens = 0
    ttft_ms, decode_s = None, 0.0
    repaired = answer_now = False
    for n in range(max_steps):
        choice = tool_choice if n == 0 else "auto"
        if (n == max_steps - 1 and n > 0) or answer_now:
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
            text = turn.content
            if not text.strip() or text.lstrip().startswith(RAW_CALL):  # always an answer, never a raw call
                text = _fallback_answer(results)
                yield TextDelta(text)
            yield _final(d.finish_reason, text, (), n + 1, prompt_tokens, completion_tokens, ttft_ms, decode_s, calls_made, results, msgs)
            return
        msgs = [*msgs, {"role": "assistant", "content": turn.content, "tool_calls": turn.calls}]
        pending, missing, repeats = [], [], 0
        for call in turn.calls:
            yield ToolCall(call)
            tool, args = validate_call(call, tool_list)  # step() validated; this returns the parsed args
            key = f"{tool.name}\0{json.dumps(args, sort_keys=True, ensure_ascii=False)}"
            lacking = missing_identifiers(tool.parameters, args, user_texts) if check_identifiers else []
            missing += lacking
            if lacking:
                result = _not_from_user(call["id"], tool.name, lacking)
            elif key in seen:
                repeats += 1
                result = ToolResult(call["id"], tool.name, json.dumps({"error": (
                    f"not run again: this exact call was already made and returned {seen[key].content}; "
                    "answer the user in plain text now")}, ensure_ascii=False), "repeated")
            else:
                result = _policy(call, tool, msgs, allowed, guards, confirm)
            if result == "pending":
                pending.append(call)
                continue
            if result is None:
                result = seen[key] = execute(tool, args, call["id"], timeout_s, log)  # audits intent and result itself
            else:  # blocked or declined: recorded, never run
                record_refused(log, result, args)
            calls_made.append(call)
            results.append(result)
            yield result
            msgs = [*msgs, {"role": "tool", "tool_call_id": call["id"], "name": tool.name,
                            "content": result.content}]
        if pending:
            yield _final("tool_calls", turn.content, pending, n + 1, prompt_tokens, completion_tokens, ttft_ms, decode_s, calls_made, results, msgs)
            return
        if missing:  # ask the user for the id; the model's guess is never looked up
            text = ask_user(missing)
            msgs = [*msgs, {"role": "assistant", "content": text}]
            yield TextDelta(text)
            yield _final("stop", text, (), n + 1, prompt_tokens, completion_tokens, ttft_ms, decode_s, calls_made, results, msgs)
            return
        answer_now = answer_now or repeats == len(turn.calls)  # only repeats: the next turn must answer
    text = _fallback_answer(results)  # every turn called tools: end with an answer all the same
    yield TextDelta(text)
    yield _final("stop", text, (), max_steps, prompt_tokens, completion_tokens, ttft_ms, decode_s, calls_made, results, msgs)


def _text(message: dict) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _not_from_user(call_id: str, name: str, lacking: Sequence[tuple[str, str]]) -> ToolResult:
    """The error result for a call whose identifier arguments the user never gave."""
    shown = ", ".join(f"{arg}={value!r}" for arg, value in lacking)
    wanted = " and ".join(dict.fromkeys(label(arg) for arg, _ in lacking))
    return ToolResult(call_id, name, json.dumps({"error": (
        f"not run: {shown} does not appear in the user's messages; ask the user for the {wanted} "
        "instead of guessing it")}, ensure_ascii=False), "blocked")


def _fallback_answer(results: Sequence[ToolResult]) -> str:
    """The answer when the model wrote none: the last successful tool result, shown as data, or an apology."""
    ok = [r for r in results if not r.error]
    if ok:
        return f"(the model wrote no answer; the last tool result was {ok[-1].name}: {ok[-1].content})"
    return "Sorry, I could not answer that. Please rephrase the question or add detail."


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
    """:func:`run_agent` drained into a :class:`~phikit.result.ChatResult` (by :func:`phikit.result.finish`).

    ``result.extra`` holds ``tool_calls`` (OpenAI shape), ``tool_results``, ``steps`` and, when a call
    awaits confirmation, ``pending_tool_calls``.
    """
    from .result import finish

    return finish(run_agent(llm, messages, tools, **kwargs), model=llm.model, backend=llm.backend)
