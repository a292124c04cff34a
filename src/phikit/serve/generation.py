"""What both APIs share: a request becomes a :class:`ChatJob`; the job's engine events become :class:`Part` s.

The OpenAI and Ollama routes only format parts (SSE chunks, NDJSON lines, JSON bodies), so tool calls,
citations, CoT and timings behave the same on both.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..agent import ToolResult
from ..cot import ReasoningDelta
from ..engines import Done, TextDelta
from ..errors import BadRequestError
from ..rag.grounded import Citations
from ..tools.chat import ToolCallEvent


@dataclass
class ChatJob:
    """One chat request, validated, in phikit's terms."""

    messages: list[dict]
    params: dict[str, Any]  # SamplingParams fields
    tools: list[dict] | None = None
    tool_choice: Any = None
    response_format: dict | None = None
    cot: bool = False
    kb: Any = None
    execute_tools: bool = False
    raw_prompt: str | None = None  # /v1/completions and /api/generate with raw=true: no chat template
    adapter: str | None = None  # a registered LoRA adapter, "none" for the base, None for the server's default


@dataclass
class Part:
    """A piece of a reply, API-neutral.

    ``kind`` is ``text`` (``text``), ``reasoning`` (``text``: CoT steps), ``tool_calls`` (``tool_calls``: OpenAI-shaped, unexecuted), ``event``
    (``data``: citations, retrieved passages, executed tool calls and results) or ``done`` (``done``:
    the engine's :class:`Done`; ``data``: phikit extras for the response; ``finish_reason``: the API's).
    """

    kind: str
    text: str = ""
    tool_calls: list[dict] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    done: Done | None = None
    finish_reason: str = ""


@dataclass
class Collected:
    """A whole generation, for a non-streamed reply: the text, when its first piece arrived
    (``time.perf_counter()``, None if there was no text) and the final ``done`` part."""

    text: str
    first_at: float | None
    last: Part
    reasoning: str = ""


async def collect(gen: AsyncIterator[Part]) -> Collected:
    """Drain a generation's parts into one :class:`Collected` (every non-streamed route uses this)."""
    text: list[str] = []
    reasoning: list[str] = []
    first_at, last = None, None
    async for p in gen:
        if p.kind in ("text", "reasoning"):
            first_at = first_at or time.perf_counter()
            (text if p.kind == "text" else reasoning).append(p.text)
        elif p.kind == "done":
            last = p
    assert last is not None, "parts() always ends with a done part"
    return Collected("".join(text), first_at, last, "".join(reasoning))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def sampling(
    *, max_tokens=None, temperature=None, top_p=None, top_k=None, seed=None, stop=None, repetition_penalty=None
) -> dict[str, Any]:
    """Map API fields to :class:`~phikit.engines.SamplingParams` names, dropping the unset ones."""
    if isinstance(stop, str):
        stop = [stop]
    out = {"max_new_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
               "stop": tuple(stop) if stop else None, "repetition_penalty": repetition_penalty}
    return {k: v for k, v in out.items() if v is not None}


def check_params(params: dict[str, Any]) -> None:
    """Validate sampling values now, on the event loop, so bad values are a 400 before queueing.

    Raises:
        BadRequestError: an invalid value.
    """
    from ..result import sampling_params

    sampling_params(**params)


def check_pipeline(job: ChatJob) -> None:
    """Refuse a combination the pipeline cannot honour now, as a 400, before the job is queued.

    Raises:
        BadRequestError: the pair at fault (see :data:`phikit.pipeline.REFUSED`).
    """
    from ..pipeline import Request, check

    check(Request(job.messages, tools=job.tools or (builtin_tool_names() if job.execute_tools else None), kb=job.kb,
                  cot=job.cot, response_format=job.response_format, execute_tools=job.execute_tools))


def start_job(llm, job: ChatJob):
    """The callable :meth:`ModelWorker.stream` runs in its thread: ``cancel -> iterator of events``, through
    the one request pipeline (:mod:`phikit.pipeline`) like every other surface."""
    from ..pipeline import Request, run

    def start(cancel) -> Iterator[Any]:
        params = {**job.params, "cancel": cancel, **({"adapter": job.adapter} if job.adapter else {})}
        if job.raw_prompt is not None:
            return context_guard(llm, raw_completion(llm, job.raw_prompt, params))
        req = Request(job.messages, tools=job.tools, tool_choice=job.tool_choice or "auto", kb=job.kb, cot=job.cot,
                      response_format=job.response_format, params=params)
        if job.execute_tools:
            server_policy(req)
        return context_guard(llm, run(llm, req))

    return start


def context_guard(llm, events: Iterator[Any]) -> Iterator[Any]:
    """End a reply that fills llama.cpp's context window with ``finish_reason="length"`` instead of a crash.

    llama.cpp raises ``RuntimeError("llama_decode returned 1")`` when prompt + generated tokens reach
    ``n_ctx``; at that point the window is full, so prompt tokens = window - generated tokens.
    """
    from ..engines import Usage

    texts: list[str] = []
    started = time.perf_counter()
    try:
        for ev in events:
            if isinstance(ev, TextDelta):
                texts.append(ev.text)
            yield ev
    except RuntimeError as exc:
        if "llama_decode" not in str(exc):
            raise
        text = "".join(texts)
        n = llm.engine.count_tokens(text) if text else 0
        ctx = llm.engine.context_length
        yield Done("length", Usage(max(0, ctx - n), n), (time.perf_counter() - started) * 1000, 0.0, text)


def raw_completion(llm, prompt: str, params: dict[str, Any]) -> Iterator[Any]:
    """Continue ``prompt`` as plain text (no chat template) where the engine exposes its tokenizer.

    Engines without one (the remote ``openai`` backend) get the prompt as one user message.
    """
    from ..engines.base import check_context, stream_tokens
    from ..result import sampling_params

    engine = llm.engine
    adapter = params.pop("adapter", None)
    sp = sampling_params(**params)
    if not (hasattr(engine, "encode") and hasattr(engine, "token_steps")):
        return engine.generate([{"role": "user", "content": prompt}], sp, **({"adapter": adapter} if adapter else {}))
    started = time.perf_counter()
    ids = getattr(engine, "encode_special", engine.encode)(prompt)  # a raw prompt carries its own markers
    if not ids:
        raise BadRequestError("the prompt is empty: give some text to continue")
    check_context(len(ids), sp, engine.context_length)
    events = stream_tokens(engine.token_steps(ids, sp), decode=engine.decode, eos_ids=engine.eos_ids,
                           prompt_tokens=len(ids), params=sp, started=started,
                           token_bytes=engine.token_bytes() if hasattr(engine, "token_bytes") else None)
    if getattr(engine, "supports_adapters", False):  # the LoRA adapter a chat request would get
        return engine.through(engine.pick_adapter(adapter), events)
    return events


def builtin_tool_names() -> list[str]:
    """Names of the tools the server may run itself (``phikit.execute_tools``); empty without phikit.tools."""
    try:
        from ..tools.builtins import BUILTINS
    except ImportError:
        return []
    return sorted(BUILTINS)


def server_policy(req) -> None:
    """``phikit.execute_tools``: the same policy as the CLI's agent, for the server's built-in tools only (a
    client cannot make the server run code of its own): an allowlist of built-ins, identifier provenance
    and guards in the agent loop, isolated execution, the audit log; tools that need a person's
    confirmation are returned as ``pending_tool_calls``, never run.

    Raises:
        BadRequestError: a tool that is not built in.
    """
    from ..tools.audit import AuditLog
    from ..tools.builtins import BUILTINS

    names = [t["function"]["name"] for t in req.tools] if req.tools else sorted(BUILTINS)
    unknown = [n for n in names if n not in BUILTINS]
    if unknown:
        raise BadRequestError(f"execute_tools runs only the server's built-in tools ({', '.join(sorted(BUILTINS))}); "
                              f"{', '.join(unknown)} is not one of them: drop execute_tools to get the calls back instead")
    req.tools = [BUILTINS[n] for n in names]
    req.execute_tools, req.allow, req.confirm, req.audit_log = True, names, None, AuditLog()


def _event_data(ev: Any) -> dict[str, Any]:
    """phikit's non-text events (citations, retrieved passages, tool calls/results) as JSON-able dicts; ``type``
    is the event's class name (``Checking``, ``Citations``, ``ToolCallEvent``, ``ToolResult``,
    ``BlockedToolCall``), the wire name the page and clients read."""
    import dataclasses

    if isinstance(getattr(ev, "extra", None), dict):  # rag's Citations: citations, retrieved, abstained...
        data = dict(ev.extra)
    elif dataclasses.is_dataclass(ev):
        data = dataclasses.asdict(ev)
    elif hasattr(ev, "to_dict"):
        data = ev.to_dict()
    else:
        data = dict(vars(ev))
    return {"type": type(ev).__name__, **json.loads(json.dumps(data, default=str))}


def merge_deltas(a: Any, b: Any) -> Any:
    """Two text (or two reasoning) deltas in a row as one; None for any other pair (see ``ModelWorker.stream``)."""
    if type(a) is type(b) and type(a) in (TextDelta, ReasoningDelta):
        return type(a)(a.text + b.text)
    return None


async def parts(events: AsyncIterator[Any], job: ChatJob) -> AsyncIterator[Part]:
    """Turn engine events into :class:`Part` s: text, tool calls, extras, then one ``done``.

    ``LLM.chat`` already holds back text that looks like a tool call and emits each parsed call as a
    ``ToolCallEvent`` before ``Done``; unexecuted calls become one ``tool_calls`` part and finish reason
    ``tool_calls``. With ``execute_tools`` the agent loop's calls and results are events, shown not returned.
    """
    calls: list[dict] = []
    extras: dict[str, Any] = {}
    events_seen: list[dict] = []
    async for ev in events:
        if isinstance(ev, TextDelta):
            yield Part("text", text=ev.text)
        elif isinstance(ev, ReasoningDelta):
            yield Part("reasoning", text=ev.text)
        elif isinstance(ev, Done):
            if calls:
                yield Part("tool_calls", tool_calls=calls)
            if job.cot:
                from ..cot import parse_cot

                parsed = parse_cot(ev.text)
                extras.update(reasoning=parsed.reasoning, answer=parsed.answer)
                if parsed.note:
                    extras["note"] = parsed.note
            if events_seen:
                extras["events"] = events_seen
            if getattr(ev, "pending_calls", None):
                extras["pending_tool_calls"] = list(ev.pending_calls)  # requires_confirmation: not run
            finish = "tool_calls" if calls else ("length" if ev.finish_reason == "length" else "stop")
            yield Part("done", done=ev, data=extras, finish_reason=finish, tool_calls=calls)
            return
        elif isinstance(ev, ToolCallEvent) and not job.execute_tools:
            calls.append(ev.call)
        else:
            data = _event_data(ev)
            if isinstance(ev, Citations):
                extras.update({k: v for k, v in data.items() if k != "type"})
            if isinstance(ev, ToolCallEvent | ToolResult):  # executed calls and results, listed in the reply
                events_seen.append(data)
            yield Part("event", data=data)
