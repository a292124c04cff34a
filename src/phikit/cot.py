"""Chain-of-thought: a system prompt asking for labelled steps and a final ``Answer:`` line, and its parser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

COT_SYSTEM_PROMPT = (
    "Think step by step. Write your reasoning as short labelled steps (Step 1:, Step 2:, ...). "
    "Then write one final line that starts with 'Answer:' followed by the final answer only."
)
NO_ANSWER_NOTE = "the model did not write an 'Answer:' line, so there is no final answer"

# "Answer:", "Final answer:", "**Answer:**", "### Answer:" at the start of a line.
_ANSWER_LINE = re.compile(r"^[ \t>#*_]*(?:final[ \t]+)?answer[ \t*_]*:[ \t*_]*(.*)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class CotResult:
    """``reasoning`` is the text before the last ``Answer:`` line; ``answer`` is None when there is none."""

    reasoning: str
    answer: str | None
    note: str | None = None


def parse_cot(text: str) -> CotResult:
    """Split a chain-of-thought reply into reasoning and answer.

    The last line that starts with ``Answer:`` (any case, optionally ``Final answer:`` or markdown emphasis)
    holds the answer; anything after it on later lines belongs to the answer too. Without such a line the
    answer is None and ``note`` says why: an answer is never invented.
    """
    matches = list(_ANSWER_LINE.finditer(text))
    if not matches:
        return CotResult(reasoning=text.strip(), answer=None, note=NO_ANSWER_NOTE)
    last = matches[-1]
    answer = (last.group(1) + text[last.end() :]).strip().strip("*_").strip()
    if not answer:
        return CotResult(reasoning=text[: last.start()].strip(), answer=None, note="the 'Answer:' line is empty")
    return CotResult(reasoning=text[: last.start()].strip(), answer=answer)


def with_cot_prompt(messages: list[dict]) -> list[dict]:
    """Add the CoT instructions to the system turn (appended to the user's own system prompt if any)."""
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content'].rstrip()}\n\n{COT_SYSTEM_PROMPT}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": COT_SYSTEM_PROMPT}, *messages]


@dataclass(frozen=True)
class ReasoningDelta:
    """Stream event: a piece of the reasoning steps (OpenAI-compatible servers send it as
    ``delta.reasoning_content``, the field vLLM's reasoning parsers and DeepSeek's API use)."""

    text: str

    def __str__(self) -> str:
        return self.text


def split_reasoning(events: Iterator[Any]) -> Iterator[Any]:
    """Split a CoT stream: text before the ``Answer:`` line becomes :class:`ReasoningDelta` s, the answer
    after it stays ``TextDelta`` s (the ``Answer:`` label itself is dropped). Other events pass through;
    ``Done.text`` keeps the whole reply, which :func:`parse_cot` splits the same way.

    The undecided last line is held back until it can no longer become an ``Answer:`` line, so nothing is
    sent as reasoning that turns out to be the answer.
    """
    from .engines import Done, TextDelta

    pending, answering = "", False
    for ev in events:
        if not isinstance(ev, TextDelta | Done) or (answering and isinstance(ev, TextDelta)):
            yield ev
            continue
        if isinstance(ev, Done):
            if pending.strip():
                yield ReasoningDelta(pending)
            yield ev
            return
        pending += ev.text
        m = _ANSWER_LINE.search(pending)
        if m and (m.group(1) or pending.endswith(("\n",)) or len(pending) > m.end()):
            if pending[: m.start()].strip():
                yield ReasoningDelta(pending[: m.start()])
            rest = pending[m.start(1):].lstrip()
            if rest:
                yield TextDelta(rest)
            pending, answering = "", True
            continue
        cut = pending.rfind("\n") + 1  # complete lines cannot become the Answer: line any more
        if cut and not m:
            yield ReasoningDelta(pending[:cut])
            pending = pending[cut:]
