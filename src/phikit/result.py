"""What every surface renders: :class:`ChatResult`, built in one place (:func:`finish`) from an event
stream, and :func:`sampling_params`, the one validator of sampling options. Below the pipeline and every
capability, so rag, tools and the agent use them without importing the Python API (no cycles)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import cot as cot_mod
from .engines import Done, Event, SamplingParams, Usage
from .errors import BadRequestError

PARAM_NAMES = tuple(f.name for f in dataclasses.fields(SamplingParams))


@dataclass
class ChatResult:
    """A finished reply.

    Attributes:
        text: everything the model wrote.
        answer: with ``cot=True``, the text after the final ``Answer:`` line (None if the model wrote none);
            otherwise the text itself.
        reasoning: with ``cot=True``, the steps before the answer; otherwise None.
        note: why ``answer`` is None, when it is.
        finish_reason: ``stop`` | ``length`` | ``cancelled``.
        usage: prompt and completion tokens.
        ttft_ms: time to first token, milliseconds.
        tokens_per_s: decode speed after the first token.
    """

    text: str
    model: str
    backend: str
    finish_reason: str
    usage: Usage
    ttft_ms: float
    tokens_per_s: float
    answer: str | None = None
    reasoning: str | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape printed by ``phikit ask --json``."""
        out = {
            "text": self.text,
            "answer": self.answer,
            "reasoning": self.reasoning,
            "model": self.model,
            "backend": self.backend,
            "usage": {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens},
            "ttft_ms": round(self.ttft_ms, 1),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "finish_reason": self.finish_reason,
        }
        if self.note:
            out["note"] = self.note
        out.update(self.extra)
        return out


def sampling_params(**params: Any) -> SamplingParams:
    """Build :class:`SamplingParams`, rejecting unknown names with one clear line.

    Raises:
        BadRequestError: an unknown parameter or an invalid value.
    """
    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        raise BadRequestError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(PARAM_NAMES)}")
    return SamplingParams(**{k: v for k, v in params.items() if v is not None})


def finish(events: Iterator[Event], *, model: str, backend: str, cot: bool = False) -> ChatResult:
    """Drain an event stream into a :class:`ChatResult`: the one place a result is built, for every path.

    What the final ``Done`` carries decides the extras: a tool turn's ``TurnDone`` (``content`` is the
    answer, ``tool_calls``, ``invalid_tool_calls``), an agent's ``AgentDone`` (``tool_calls``,
    ``tool_results``, ``steps``, ``pending_tool_calls``); events with an ``extra`` dict (the KB's
    ``Citations``) are merged in. With ``cot`` the reply is split into ``reasoning`` and ``answer`` (not
    when the turn ended in tool calls: there is no answer yet).

    Raises:
        RuntimeError: the stream ended without ``Done`` (an engine bug).
    """
    done, extra = None, {}
    for ev in events:
        if isinstance(ev, Done):
            done = ev
        elif isinstance(getattr(ev, "extra", None), dict):  # e.g. RAG citations: merged into --json
            extra.update(ev.extra)
    if done is None:
        raise RuntimeError("the event stream ended without Done")
    calls = getattr(done, "tool_calls", None)
    if calls is not None:
        extra["tool_calls"] = list(calls)
    if getattr(done, "invalid_tool_calls", None):
        extra["invalid_tool_calls"] = list(done.invalid_tool_calls)
    if getattr(done, "tool_results", None) is not None:  # an AgentDone: the calls made and their results
        extra.update(tool_results=list(done.tool_results), steps=done.steps)
        if done.pending_calls:
            extra["pending_tool_calls"] = list(done.pending_calls)
    result = ChatResult(
        text=done.text, model=model, backend=backend, finish_reason=done.finish_reason, usage=done.usage,
        ttft_ms=done.ttft_ms, tokens_per_s=done.tokens_per_s, answer=getattr(done, "content", done.text), extra=extra,
    )
    if cot and done.finish_reason != "tool_calls":
        parsed = cot_mod.parse_cot(done.text)
        result.answer, result.reasoning, result.note = parsed.answer, parsed.reasoning, parsed.note
    return result
