"""Resource limits on what one request may ask for, checked before any work (a 413 or a 400 naming the field).

Each bound exists because the cost it caps grows with a client-chosen number: the body with its size; the
prompt with ``messages``; the stop-string check with count x length per token; the tool block and grammar
compile with ``tools`` and schema size (xgrammar unrolls ``maxLength``/``maxItems`` into states); embedding
time with inputs. OpenAI's own limits where it has them (4 stop sequences, 128 tools, 2,048 embedding inputs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_SIZE_KEYS = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties")


@dataclass(frozen=True)
class ServerLimits:
    """What one request may hold. Every field is checked by :func:`check` and answered in OpenAI's error shape.

    Attributes:
        max_body_bytes: request body size (413 past it, before it is read).
        max_messages: chat messages per request.
        max_stop: stop strings per request; max_stop_chars: characters per stop string.
        max_tools: tool definitions per request.
        max_schema_bytes: JSON size of one tool's parameters or a response_format schema.
        max_schema_bound: largest ``maxLength``/``maxItems``/... inside a schema (grammar compile cost).
        max_embedding_inputs: texts per embedding request; max_embedding_chars: characters per text.
    """

    max_body_bytes: int = 4 << 20
    max_messages: int = 512
    max_stop: int = 4
    max_stop_chars: int = 256
    max_tools: int = 128
    max_schema_bytes: int = 32 << 10
    max_schema_bound: int = 4_096
    max_embedding_inputs: int = 2_048
    max_embedding_chars: int = 32_000


class LimitError(Exception):
    """A request over one of :class:`ServerLimits` (the app answers ``status`` in OpenAI's shape)."""

    def __init__(self, message: str, param: str | None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


def _schema_bound(node: Any, depth: int = 0) -> int:
    """The largest size keyword anywhere in a schema (nesting over 64 levels counts as unbounded)."""
    if depth > 64:
        return 1 << 62
    if isinstance(node, dict):
        own = max((v for k, v in node.items() if k in _SIZE_KEYS and isinstance(v, int)), default=0)
        return max([own, *(_schema_bound(v, depth + 1) for v in node.values())])
    if isinstance(node, list):
        return max((_schema_bound(v, depth + 1) for v in node), default=0)
    return 0


def check_schema(limits: ServerLimits, schema: Any, param: str) -> None:
    """Raise :class:`LimitError` for a schema over the byte size or with too large a size keyword."""
    if schema is None:
        return
    size = len(json.dumps(schema, default=str))
    if size > limits.max_schema_bytes:
        raise LimitError(f"{param} is {size} bytes of JSON; the limit is {limits.max_schema_bytes}", param)
    bound = _schema_bound(schema)
    if bound > limits.max_schema_bound:
        raise LimitError(f"{param} has a size keyword (maxLength, maxItems, ...) of {bound}; the limit is "
                         f"{limits.max_schema_bound}", param)


def check(
    limits: ServerLimits,
    *,
    messages: list | None = None,
    stop: str | Iterable[str] | None = None,
    tools: list | None = None,
    schema: Any = None,
    inputs: list[str] | None = None,
    prefix: str = "",
) -> None:
    """Check one request's counts and sizes; ``prefix`` names where Ollama nests a field (``options.``).

    Raises:
        LimitError: the first limit exceeded, naming the parameter and the limit.
    """
    if messages is not None and len(messages) > limits.max_messages:
        raise LimitError(f"messages has {len(messages)} items; the limit is {limits.max_messages}", "messages")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else list(stop)
        if len(stops) > limits.max_stop:
            raise LimitError(f"stop has {len(stops)} strings; the limit is {limits.max_stop}", f"{prefix}stop")
        longest = max((len(s) for s in stops if isinstance(s, str)), default=0)
        if longest > limits.max_stop_chars:
            raise LimitError(f"a stop string is {longest} characters; the limit is {limits.max_stop_chars}",
                             f"{prefix}stop")
    if tools:
        if len(tools) > limits.max_tools:
            raise LimitError(f"tools has {len(tools)} items; the limit is {limits.max_tools}", "tools")
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            check_schema(limits, (fn or {}).get("parameters"), f"tools[{i}].function.parameters")
    check_schema(limits, schema, "response_format")
    if inputs is not None:
        if len(inputs) > limits.max_embedding_inputs:
            raise LimitError(f"input has {len(inputs)} items; the limit is {limits.max_embedding_inputs}", "input")
        longest = max((len(t) for t in inputs if isinstance(t, str)), default=0)
        if longest > limits.max_embedding_chars:
            raise LimitError(f"an input is {longest} characters; the limit is {limits.max_embedding_chars}", "input")
