"""Read tool calls out of model text, in the forms small models really emit.

Forms, tried in this order (as mlx-lm's ``tool_parsers`` and vLLM's Phi-4-mini parser do, one pass each):

1. ``<|tool_call|>{...}<|/tool_call|>`` blocks (Phi-4-mini's special tokens; Hermes/Qwen ``<tool_call>`` too);
2. ``functools[{"name": ..., "arguments": {...}}, ...]`` (Phi-4-mini's own form);
3. fenced ```` ```json ```` blocks;
4. a bare JSON object or list anywhere in the text, prose around it allowed.

JSON is read with :meth:`json.JSONDecoder.raw_decode`, so nested objects and escaped quotes inside strings
are handled by the JSON grammar, never by regular expressions; truncated JSON yields no call. A JSON value is
a call when it is an object with a ``name`` (or an OpenAI ``function`` object) and ``arguments`` or
``parameters``, or a list of those.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

_DECODER = json.JSONDecoder()
TAG_RE = re.compile(r"<\|?tool_call\|?>(.*?)(?:<\|?/tool_call\|?>|$)", re.S)
FUNCTOOLS_RE = re.compile(r"functools\s*(?=\[)")
FENCE_RE = re.compile(r"```(?:json|tool_call|tool_code)?\s*\n?(.*?)(?:```|$)", re.S)
CALL_MARKERS = ("functools", "<|tool_call|>", "<tool_call>", "```json", "{", "[")


def new_call_id() -> str:
    """An OpenAI-style call id, ``call_`` + 24 hex digits."""
    return "call_" + uuid.uuid4().hex[:24]


def _as_call(item: Any, names: set[str] | None) -> dict | None:
    """One JSON value -> an OpenAI-shaped call, or None when it does not look like a call."""
    if not isinstance(item, dict):
        return None
    fn = item.get("function")
    if isinstance(fn, dict):  # OpenAI shape echoed back
        name, args = fn.get("name"), fn.get("arguments", fn.get("parameters"))
    else:
        name = item.get("name", fn if isinstance(fn, str) else item.get("tool") or item.get("tool_name"))
        args = item.get("arguments", item.get("parameters", item.get("args", item.get("input"))))
        if args is None and names and name in names:
            args = {}
        elif args is None:
            return None
    if not isinstance(name, str) or not name:
        return None
    if isinstance(args, str):
        try:
            json.loads(args)
            arguments = args  # already a JSON string
        except json.JSONDecodeError:
            arguments = json.dumps(args)  # a non-JSON string: kept, validation will reject it
    else:
        arguments = json.dumps({} if args is None else args, ensure_ascii=False)
    return {"id": new_call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}


def _calls_from_value(value: Any, names: set[str] | None) -> list[dict]:
    items = value if isinstance(value, list) else [value]
    calls = [_as_call(it, names) for it in items]
    return [c for c in calls if c is not None]


def _json_values(text: str, starts: str = "{[") -> list[tuple[int, int, Any]]:
    """Every complete JSON object/list in ``text`` (outermost only): ``(start, end, value)``."""
    out = []
    i = 0
    while i < len(text):
        if text[i] in starts:
            try:
                value, end = _DECODER.raw_decode(text, i)
            except json.JSONDecodeError:
                i += 1
                continue
            out.append((i, end, value))
            i = end
        else:
            i += 1
    return out


def extract_tool_calls(text: str, tools: Any = None) -> tuple[str, list[dict]]:
    """Split model output into its prose and its calls.

    Args:
        text: what the model wrote.
        tools: the declared tools (any form :func:`phikit.tools.as_tools` takes) or names; used only to
            accept ``{"name": "x"}`` without arguments for a declared ``x``. Validation is separate.

    Returns:
        ``(content, calls)``: the text with the call markup removed (stripped), and OpenAI-shaped calls
        ``{"id", "type": "function", "function": {"name", "arguments": JSON string}}`` in order.
    """
    names = _names(tools)
    # 1. tagged blocks
    blocks = list(TAG_RE.finditer(text))
    if blocks:
        calls = []
        for m in blocks:
            for _, _, value in _json_values(m.group(1)):
                calls += _calls_from_value(value, names)
        content = TAG_RE.sub("", text)
        return content.strip(), calls
    # 2. functools[...]
    m = FUNCTOOLS_RE.search(text)
    if m:
        try:
            value, end = _DECODER.raw_decode(text, m.end())
        except json.JSONDecodeError:
            return text[: m.start()].strip(), []  # truncated or malformed call
        return (text[: m.start()] + text[end:]).strip(), _calls_from_value(value, names)
    # 3. fenced blocks, 4. bare JSON
    for fence in FENCE_RE.finditer(text):
        values = _json_values(fence.group(1))
        calls = [c for _, _, v in values for c in _calls_from_value(v, names)]
        if calls:
            return (text[: fence.start()] + text[fence.end() :]).strip(), calls
    calls, content, last = [], [], 0
    for start, end, value in _json_values(text):
        found = _calls_from_value(value, names)
        if found:
            calls += found
            content.append(text[last:start])
            last = end
    content.append(text[last:])
    return "".join(content).strip(), calls


def parse_tool_calls(text: str, tools: Any = None) -> list[dict]:
    """The tool calls in ``text`` as OpenAI-shaped dicts (see :func:`extract_tool_calls`); [] when none."""
    return extract_tool_calls(text, tools)[1]


def looks_like_call(text: str) -> bool:
    """Whether ``text`` starts like a call attempt (used to hold back streamed text and to ask for repair)."""
    s = text.lstrip()
    return s.startswith(CALL_MARKERS) or "functools" in s or "<|tool_call|>" in s


def _names(tools: Any) -> set[str] | None:
    if not tools:
        return None
    names = set()
    for t in tools:
        if isinstance(t, str):
            names.add(t)
        elif isinstance(t, dict):
            names.add((t.get("function") or t).get("name"))
        else:
            names.add(getattr(t, "name", None) or getattr(t, "__name__", None))
    return names
