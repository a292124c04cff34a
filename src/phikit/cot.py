"""Chain-of-thought: a system prompt asking for labelled steps and a final ``Answer:`` line, and its parser."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
