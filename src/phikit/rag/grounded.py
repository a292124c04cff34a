"""Grounded answering: numbered passages as quoted data, answer only from them, cite [n]; every sentence is
checked against its passage before it is shown (:mod:`.verify`); when none holds up, quote the passages;
abstain when they do not hold the answer; log provenance.

One generator (:func:`grounded_stream`) serves both streaming and ``LLM.chat(..., kb=...)``: it yields
:class:`Checking` (once the passages are found), :class:`~phikit.engines.TextDelta` events carrying only
verified text (nothing streamed is ever withdrawn), one :class:`Citations` event and the final
:class:`~phikit.engines.Done` (whose ``text`` is everything streamed, and whose ``finish_reason`` is the
model's: ``length`` when the token budget ran out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cot import ReasoningDelta, split_reasoning, with_cot_prompt
from ..engines import Done, TextDelta, Usage
from ..errors import BadRequestError
from . import DEFAULT_ABSTAIN_TEXT
from .cite import STOP, SentenceStream, build_messages, citation, says_not_found, unknown_names
from .guard import make_injection_guard
from .retrieve import Hit, search
from .store import KnowledgeBase, now_iso, open_kb
from .verify import (
    extractive_answer,
)

# Calibrated on examples/support-bot/qa.jsonl (bench/rag_calibrate.py): the best hit's cosine below this
# means "nothing relevant"; see docs/bench-rag.md.
DEFAULT_MIN_SCORE = 0.48

@dataclass
class RagOptions:
    """Grounded-answer settings (pass any of them to ``LLM.chat(..., kb=...)``).

    ``k``, ``min_score`` and ``abstain_text`` default to ``$PHIKIT_KB_TOP_K``, ``$PHIKIT_KB_MIN_SCORE`` and
    ``$PHIKIT_ABSTAIN_TEXT`` when set (so ``phikit ask --kb`` can be tuned without new flags).

    Attributes:
        k: passages given to the model.
        mode: retrieval mode, ``hybrid`` | ``dense`` | ``bm25``.
        min_score: abstain without asking the model when the best passage's cosine is below this.
        min_support: a sentence of the answer is withdrawn when fewer than this share of its content words
            occur in its passage (besides the number, name and topic checks of :mod:`.verify`).
        check_names: abstain before generating when the question names something (a capitalized word)
            that no retrieved passage mentions.
        abstain_text: the reply when the KB does not hold the answer (default ``$PHIKIT_ABSTAIN_TEXT`` or
            "I can't find that in the knowledge base.").
        provenance: JSONL log path; None logs to ``<kb>/provenance.jsonl``; False disables logging.
    """

    k: int = field(default_factory=lambda: int(os.environ.get("PHIKIT_KB_TOP_K", 4)))
    mode: str = "hybrid"
    min_score: float = field(default_factory=lambda: float(os.environ.get("PHIKIT_KB_MIN_SCORE", DEFAULT_MIN_SCORE)))
    min_support: float = 0.5
    check_names: bool = True
    abstain_text: str = field(default_factory=lambda: os.environ.get("PHIKIT_ABSTAIN_TEXT", DEFAULT_ABSTAIN_TEXT))
    provenance: str | Path | bool | None = None

    @classmethod
    def pop_from(cls, params: dict) -> RagOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: params.pop(k) for k in list(params) if k in names and params[k] is not None})


@dataclass
class Citations:
    """The sources of a grounded answer (a stream event; the CLI prints ``str()`` on stderr).

    Attributes:
        citations: one dict per cited passage: ``n``, ``id``, ``source``, ``heading``, ``page``, ``span``,
            ``snippet``, ``inferred`` (True when the model cited nothing and the passage was attributed by
            word overlap).
        retrieved: every passage shown to the model, with scores.
        abstained: the reply is the abstention text.
        reason: why it abstained: ``retrieval`` (nothing relevant), ``unknown_name`` (the question names
            something no passage mentions), ``model`` (the model said so) or ``unsupported`` (no sentence
            of the answer was supported) — in the last two cases no passage sentence matched the question
            either, so there was no extractive answer.
        invalid: citation numbers the model wrote that match no passage (removed from the answer).
        withdrawn: ``{sentence, reason}`` for each sentence of the model's reply that failed its check
            (never shown).
        extractive: the answer quotes the passages because no sentence of the model's reply held up.
        blocked_tool_calls: ``{call, reason}`` for calls the injection guard stopped.
        model_text: the model's own reply, kept when we abstained instead of showing it.
    """

    citations: list[dict] = field(default_factory=list)
    retrieved: list[dict] = field(default_factory=list)
    abstained: bool = False
    reason: str | None = None
    invalid: list[int] = field(default_factory=list)
    kb_version: str = ""
    model_text: str | None = None
    blocked_tool_calls: list[dict] = field(default_factory=list)
    withdrawn: list[dict] = field(default_factory=list)
    extractive: bool = False

    @property
    def extra(self) -> dict[str, Any]:
        """Fields merged into ``ChatResult.extra`` and ``--json`` output."""
        out = {"citations": self.citations, "retrieved": self.retrieved, "abstained": self.abstained,
               "kb_version": self.kb_version}
        if self.reason:
            out["abstain_reason"] = self.reason
        if self.invalid:
            out["invalid_citations"] = self.invalid
        if self.blocked_tool_calls:
            out["blocked_tool_calls"] = self.blocked_tool_calls
        if self.withdrawn:
            out["withdrawn"] = self.withdrawn
        if self.extractive:
            out["extractive"] = True
        if self.abstained and self.model_text is not None:
            out["model_text"] = self.model_text  # what the model wrote before we abstained
        return out

    def __str__(self) -> str:
        if self.abstained:
            return f"(abstained: {self.reason}; {len(self.retrieved)} passages searched in {self.kb_version})"
        lines = ["Sources:"]
        for c in self.citations:
            where = " › ".join(x for x in (c["source"], c["heading"]) if x)
            page = f", p. {c['page']}" if c["page"] else ""
            mark = " (attributed)" if c["inferred"] else ""
            lines.append(f"[{c['n']}] {where} (chars {c['span'][0]}-{c['span'][1]}{page}){mark}: \"{c['snippet']}\"")
        if self.invalid:
            lines.append(f"(removed citations to nonexistent passages: {', '.join(f'[{n}]' for n in self.invalid)})")
        if self.extractive:
            lines.append("(quoted from the passages: the model's answer did not match them)")
        elif self.withdrawn:
            lines.append(f"({len(self.withdrawn)} unsupported sentence(s) of the model's answer withheld)")
        return "\n".join(lines)


@dataclass(frozen=True)
class BlockedToolCall:
    """A tool call the injection guard stopped (its arguments came from passages, not the question)."""

    call: dict
    reason: str

    def __str__(self) -> str:
        return f"✗ {self.reason}"


def last_user_text(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m["role"] == "user" and isinstance(m.get("content"), str) and m["content"].strip():
            return m["content"]
    raise BadRequestError("a grounded answer needs a user question: the messages have no user turn")


def grounded_stream(llm, messages: Any, kb: Any, *, cot: bool = False, tools: list | None = None,
                    tool_choice: Any = "auto", opts: RagOptions | None = None, **params: Any) -> Iterator:
    """Retrieve, generate and check; yields :class:`Checking`, verified ``TextDelta``\\ s, one
    :class:`Citations`, then ``Done`` (an abstention: its ``TextDelta``, ``Citations``, ``Done``).

    Args:
        llm: a :class:`phikit.LLM`.
        messages: the conversation (string or OpenAI-shaped list); the last user turn is the question.
        kb: KB directory or :class:`~phikit.rag.store.KnowledgeBase`.
        cot: reason in steps; the citations are checked on the final answer.
        tools, tool_choice: passed through to the model; a proposed call whose arguments come from the
            passages and not from the question becomes a :class:`BlockedToolCall` (see :mod:`.guard`).
        opts: retrieval/abstention settings.
        **params: sampling parameters.

    Raises:
        BadRequestError: no user question, bad parameters, or a missing KB.
    """
    from ..prompt import normalize_messages
    from ..result import sampling_params

    opts = opts or RagOptions()
    msgs = normalize_messages(messages)
    question = last_user_text(msgs)
    sampling_params(**params)  # fail on bad parameters here, before retrieval and before any event
    base = open_kb(kb)
    return _events(llm, msgs, question, base, cot, tools, tool_choice, opts, params)


@dataclass(frozen=True)
class Checking:
    """Stream event: the answer is being written and checked against its sources; only verified sentences
    follow (the CLI shows ``str()`` on stderr, the page a "checking sources" note)."""

    passages: int

    def __str__(self) -> str:
        return "checking sources…"


class _EitherCancel:
    """Set when either the caller's cancel event or ours is set (we stop a reply that has drifted)."""

    def __init__(self, outer):
        self.outer, self.ours = outer, False

    def is_set(self) -> bool:
        return self.ours or bool(self.outer is not None and self.outer.is_set())


def _events(llm, msgs, question, base, cot, tools, tool_choice, opts, params):
    hits = search(base, question, k=opts.k, mode=opts.mode)
    info = Citations(retrieved=[h.to_dict() for h in hits], kb_version=base.version)
    if not hits or hits[0].dense < opts.min_score:
        yield from _abstain(llm, base, question, hits, info, "retrieval", opts)
        return
    if opts.check_names and unknown_names(question, hits):
        yield from _abstain(llm, base, question, hits, info, "unknown_name", opts)
        return
    yield Checking(len(hits))
    extra = {"tools": tools, "tool_choice": tool_choice} if tools else {}
    # small models run on into a made-up next "Question:"; stop there
    stop = params.get("stop") or ()
    cancel = _EitherCancel(params.get("cancel"))
    params = {**params, "stop": ((stop,) if isinstance(stop, str) else tuple(stop)) + STOP, "cancel": cancel}
    prompt = build_messages(msgs, hits)
    # the CoT prompt here, the split below: only the answer is checked and cited
    events = llm.chat(with_cot_prompt(prompt) if cot else prompt, stream=True, **extra, **params)
    if cot:  # the steps go out as reasoning, unchecked and labelled; only the answer is checked and cited
        events = split_reasoning(events)
    steps: list[str] = []
    guard = make_injection_guard(question, [h.chunk.text for h in hits])
    checker = SentenceStream(question, hits, opts.min_support)
    done = None
    try:
        for ev in events:
            if isinstance(ev, TextDelta):
                if cancel.ours:
                    continue
                for text in checker.feed(ev.text):
                    yield TextDelta(text)
                # the rest is not trusted: stop generating (CoT steps run on to their Answer: line)
                cancel.ours = checker.drifted() and not cot
            elif isinstance(ev, ReasoningDelta):
                steps.append(ev.text)
                yield ev
            elif isinstance(ev, Done):
                done = ev
            elif isinstance(getattr(ev, "call", None), dict) and (why := guard(ev.call, msgs)):
                info.blocked_tool_calls.append({"call": ev.call, "reason": why})
                yield BlockedToolCall(ev.call, why)
            else:
                yield ev
    finally:
        if hasattr(events, "close"):  # stop generation when we stop early
            events.close()
    for text in checker.flush():
        yield TextDelta(text)
    info.model_text = done.text if done else ""
    info.withdrawn, info.invalid = checker.withdrawn, checker.invalid
    finish = done.finish_reason if done else "stop"
    if finish == "cancelled" and cancel.ours and not (cancel.outer is not None and cancel.outer.is_set()):
        finish = "stop"  # we ended a reply that had drifted off its sources
    usage = done.usage if done else Usage()
    answer = checker.text
    if checker.kept:
        info.citations = checker.citations()
    else:
        fallback = extractive_answer(question, checker.passages)
        if fallback is None:
            reason = "model" if says_not_found(info.model_text) or not info.model_text.strip() else "unsupported"
            yield from _abstain(llm, base, question, hits, info, reason, opts, usage=usage, done=done, finish=finish)
            return
        answer, n = fallback
        info.extractive = True
        info.citations = [citation(n, hits[n - 1], answer)]
        yield TextDelta(answer)
    yield info
    _log(llm, base, question, hits, info, answer, opts)
    text = f"{''.join(steps).rstrip()}\nAnswer: {answer}".lstrip() if cot else answer  # parse_cot splits it again
    yield Done(finish_reason=finish, usage=usage, ttft_ms=done.ttft_ms if done else 0.0,
               tokens_per_s=done.tokens_per_s if done else 0.0, text=text)


def _abstain(llm, kb: KnowledgeBase, question: str, hits: list[Hit], info: Citations, reason: str,
             opts: RagOptions, *, usage: Usage | None = None, done: Done | None = None, finish: str = "stop"):
    info.abstained, info.reason, info.citations = True, reason, []
    yield TextDelta(opts.abstain_text)  # nothing was shown before: only verified text is ever released
    yield info
    _log(llm, kb, question, hits, info, opts.abstain_text, opts)
    yield Done(finish_reason=finish, usage=usage or Usage(), ttft_ms=done.ttft_ms if done else 0.0,
               tokens_per_s=done.tokens_per_s if done else 0.0, text=opts.abstain_text)


def _log(llm, kb: KnowledgeBase, question: str, hits: list[Hit], info: Citations, answer: str, opts: RagOptions):
    if opts.provenance is False:
        return
    path = Path(opts.provenance) if opts.provenance else kb.root / "provenance.jsonl"
    record = {
        "time": now_iso(),
        "question": question,
        "model": getattr(llm, "model", None),
        "backend": getattr(llm, "backend", None),
        "adapter": getattr(llm, "adapter", None) or getattr(getattr(llm, "engine", None), "adapter", None),
        "kb": str(kb.root),
        "index_version": kb.version,
        "retrieved": [{"id": h.chunk.id, "score": round(h.score, 5), "dense": round(h.dense, 4)} for h in hits],
        "cited": [c["id"] for c in info.citations],
        "abstained": info.abstained,
        "abstain_reason": info.reason,
        "answer_sha256": hashlib.sha256(answer.encode()).hexdigest(),
    }
    append_jsonl(path, record)


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and fsync it (the log is append-only: opened with O_APPEND, never rewritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def grounded_chat(llm, messages: Any, kb: Any, *, stream: bool = False, cot: bool = False, tools: list | None = None,
                  tool_choice: Any = "auto", **params: Any):
    """``LLM.chat(messages, kb=...)``: a grounded answer with checked citations, or the abstention text.

    Args:
        llm: the model.
        messages: the conversation; its last user turn is the question.
        kb: KB directory or loaded :class:`~phikit.rag.store.KnowledgeBase`.
        stream: return the event iterator (``TextDelta``..., :class:`Citations`, ``Done``).
        cot, tools, tool_choice: as ``LLM.chat``.
        **params: sampling parameters plus :class:`RagOptions` fields (``k``, ``min_score``, ``mode``,
            ``min_support``, ``abstain_text``, ``provenance``).

    Returns:
        :class:`phikit.llm.ChatResult` with ``extra = {"citations", "retrieved", "abstained", "kb_version",
        ...}``, or the event iterator.

    Raises:
        BadRequestError: no question, bad parameters; PhikitError: the KB is missing.
    """
    from ..result import finish

    opts = RagOptions.pop_from(params)
    events = grounded_stream(llm, messages, kb, cot=cot, tools=tools, tool_choice=tool_choice, opts=opts, **params)
    if stream:
        return events
    return finish(events, model=llm.model, backend=llm.backend, cot=cot)  # merges Citations.extra
