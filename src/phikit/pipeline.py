"""One request, one path: ``LLM.chat``, the CLI and the server build a :class:`Request` and render the events
:func:`run` yields.

The stages, in order: refuse what cannot compose (one place, one message naming the pair) → execute tools
(the agent loop: guards, allowlist, confirmation, audit) → retrieve and answer from the knowledge base
(verified sentences, citations) → split reasoning from the answer. Each capability is one stage, so kb,
executed tools and cot compose in one request: the headline support-bot turn "Where is order A1001, and
how long do I have to return it?" runs ``get_order_status`` and answers the returns part from the KB.
The layout follows vLLM's serving layer (one internal request per route) and smolagents (one generator of
typed events serves streaming and the final result).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .cot import split_reasoning
from .engines import Done, TextDelta
from .errors import BadRequestError


@dataclass
class Request:
    """One chat request in phikit's terms.

    Attributes:
        messages: the conversation (OpenAI-shaped list or one user string).
        tools: tool definitions (names of built-ins, ``@tool`` functions, OpenAI or plain dicts).
        tool_choice: ``auto`` | ``none`` | ``required`` | a function.
        execute_tools: run the calls (agent loop) instead of returning them (OpenAI semantics).
        kb: a knowledge base (directory or loaded): answer from it with citations.
        cot: reason in steps; the answer and the reasoning come back apart.
        response_format: ``{"type": "json_schema", ...}`` constrains the answer.
        params: sampling parameters (and RAG options ``k``, ``min_score``... when ``kb`` is set).
        audit_log, confirm, allow, guards: the execution policy (see :func:`phikit.agent.run_agent`).
    """

    messages: Any
    tools: Any = None
    tool_choice: Any = "auto"
    execute_tools: bool = False
    kb: Any = None
    cot: bool = False
    response_format: dict | None = None
    params: dict[str, Any] = field(default_factory=dict)
    audit_log: Any = None
    confirm: Callable[[dict], bool] | None = None
    allow: Sequence[str] | None = None
    guards: Sequence[Callable] = ()


# Pairs that cannot be honoured together, refused before any work, with the reason and what to do.
REFUSED = {
    ("response_format", "kb"): "a grounded answer is prose with checked citations, not a JSON document; drop one",
    ("response_format", "execute_tools"): "the final answer after tool calls is prose; constrain a plain turn instead",
    ("response_format", "cot"): "labelled reasoning steps cannot be valid JSON; drop one",
}


def check(req: Request) -> None:
    """Refuse a combination that cannot work, naming the pair.

    Raises:
        BadRequestError: e.g. ``response_format`` with ``kb``.
    """
    on = {"response_format": req.response_format is not None and req.response_format.get("type") not in (None, "text"),
          "kb": req.kb is not None, "execute_tools": req.execute_tools and bool(req.tools), "cot": req.cot}
    for (a, b), why in REFUSED.items():
        if on[a] and on[b]:
            raise BadRequestError(f"{a} cannot be combined with {b}: {why}")
    if req.execute_tools and not req.tools:
        raise BadRequestError("execute_tools needs tools: name the tools the agent may run")


def run(llm: Any, req: Request) -> Iterator[Any]:
    """Answer ``req`` on ``llm``: a stream of typed events ending with one ``Done``.

    Events: :class:`TextDelta` (answer text), :class:`phikit.cot.ReasoningDelta` (with ``cot``), tool calls
    and results (:class:`phikit.tools.chat.ToolCallEvent`, :class:`phikit.agent.ToolResult`), the KB's
    ``Checking`` and ``Citations``, then ``Done`` (an ``AgentDone`` when tools ran).

    Raises:
        BadRequestError: a refused combination or bad parameters (before any token).
    """
    check(req)
    if req.execute_tools and req.kb is not None:
        return _tools_then_kb(llm, req)
    if req.execute_tools:
        events = _agent(llm, req, req.params)
    elif req.kb is not None:  # splits its own reasoning: only the answer is checked against the passages
        from .rag.grounded import grounded_chat

        return grounded_chat(llm, req.messages, req.kb, stream=True, cot=req.cot, tools=req.tools,
                             tool_choice=req.tool_choice, **req.params)
    elif req.tools or req.response_format:
        from .tools.chat import turn

        events = turn(llm, req.messages, tools=req.tools, tool_choice=req.tool_choice,
                      response_format=req.response_format, cot=req.cot, **req.params)
    else:
        events = llm.stream(req.messages, cot=req.cot, **req.params)
    return split_reasoning(events) if req.cot else events


def _agent(llm: Any, req: Request, params: dict[str, Any], *, cot: bool | None = None, **overrides: Any) -> Iterator[Any]:
    from .agent import run_agent
    from .cot import with_cot_prompt
    from .prompt import normalize_messages

    msgs = normalize_messages(req.messages)
    if req.cot if cot is None else cot:
        msgs = with_cot_prompt(msgs)
    overrides.setdefault("tool_choice", req.tool_choice)
    return run_agent(llm, msgs, req.tools, audit_log=req.audit_log, confirm=req.confirm, allow=req.allow,
                     guards=req.guards, **params, **overrides)


def _tools_then_kb(llm: Any, req: Request) -> Iterator[Any]:
    """Tools first (calls and results shown as they happen), then the KB answers what the tools did not: the
    question without the values the calls consumed, so an order id does not trip the KB's unknown-name
    abstention. The text is the verified KB answer, then each successful tool result reported as data (not
    paraphrased by the model), so a CoT answer parsed from it keeps both. The final ``AgentDone`` carries
    the calls and results."""
    import dataclasses

    from .agent import AgentDone
    from .prompt import normalize_messages
    from .rag.grounded import RagOptions, grounded_chat, last_user_text

    rag_keys = {f.name for f in dataclasses.fields(RagOptions)}
    sampling = {k: v for k, v in req.params.items() if k not in rag_keys}
    agent_done = None
    choice = _tool_phase_choice(req)
    for ev in _agent(llm, req, sampling, cot=False, max_steps=2, **({"tool_choice": choice} if choice else {})):
        if isinstance(ev, AgentDone):
            agent_done = ev
        elif not isinstance(ev, TextDelta):  # the tool turn's prose is replaced by the reported results
            yield ev
    question = last_user_text(normalize_messages(req.messages))
    for call in agent_done.tool_calls:
        for value in _strings(call["function"].get("arguments")):
            question = question.replace(value, "")
    kb_done = None
    for ev in grounded_chat(llm, question, req.kb, stream=True, cot=req.cot, **req.params):
        if isinstance(ev, Done):
            kb_done = ev
        else:
            yield ev
    reported = "".join(f"\n\n{r['name']}: {r['content']}" for r in agent_done.tool_results if r.get("status") == "ok")
    if reported:
        yield TextDelta(reported)
    yield dataclasses.replace(
        agent_done, text=kb_done.text + reported, finish_reason=kb_done.finish_reason,
        usage=type(kb_done.usage)(agent_done.usage.prompt_tokens + kb_done.usage.prompt_tokens,
                                  agent_done.usage.completion_tokens + kb_done.usage.completion_tokens),
    )


# A record id as people type it: letters and digits mixed (A1001, ORD-77812), or an e-mail address.
_RECORD_ID = re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9][\w-]{3,}\b|[\w.+-]+@[\w-]+\.[\w.]+")


def _tool_phase_choice(req: Request) -> Any:
    """With a KB, the tool turn is forced when the user names a record (an id-like token) and a tool takes
    an identifier argument: a small model left on ``auto`` tends to answer from the passages instead, and
    the passages cannot know an order's status. ``None`` keeps the request's own ``tool_choice``."""
    from .prompt import normalize_messages
    from .tools.resolve import as_tools

    if req.tool_choice != "auto":
        return None
    with_ids = [t for t in as_tools(req.tools) if t.identifiers]
    users = " ".join(m["content"] for m in normalize_messages(req.messages)
                     if m["role"] == "user" and isinstance(m.get("content"), str))
    if not with_ids or not _RECORD_ID.search(users):
        return None
    return {"type": "function", "function": {"name": with_ids[0].name}} if len(with_ids) == 1 else "required"


def _strings(arguments: Any) -> list[str]:
    """String values in a call's arguments (a JSON string or a dict), longest first."""
    import json

    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return [arguments]
    values = [v for v in (arguments or {}).values() if isinstance(v, str) and v.strip()] if isinstance(arguments, dict) else []
    return sorted(values, key=len, reverse=True)
