"""Any accepted tool form -> :class:`~.schema.Tool`: typed functions, built-in names, OpenAI or plain dicts.

Above :mod:`.schema` and :mod:`.builtins` (which builds its tools with :mod:`.schema`), so neither imports
the other's dependents.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequestError
from .builtins import BUILTINS
from .schema import NAME_RE, Tool, normalize_schema, tool


def as_tool(t: Any) -> Tool:
    """Normalize any accepted tool form into a :class:`Tool`.

    Accepts a :class:`Tool`, a typed function (wrapped with :func:`tool`), a built-in tool name
    (``"calculate"``), an OpenAI dict ``{"type": "function", "function": {...}}`` or a plain
    ``{"name", "description", "parameters"}`` dict.

    Raises:
        BadRequestError: an unknown built-in name or a malformed dict.
    """
    if isinstance(t, Tool):
        return t
    if isinstance(t, str):
        if t not in BUILTINS:
            raise BadRequestError(f"unknown built-in tool {t!r}; built-ins are {', '.join(sorted(BUILTINS))}")
        return BUILTINS[t]
    if callable(t):
        return tool(t)
    if not isinstance(t, dict):
        raise BadRequestError(f"a tool must be a function, a name or a dict, got {type(t).__name__}")
    spec = t
    if t.get("type") == "function" or isinstance(t.get("function"), dict):
        spec = t.get("function")
        if not isinstance(spec, dict):
            raise BadRequestError("an OpenAI tool needs a 'function' object with a name")
    name = spec.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequestError(f"tool name {name!r} must be a string matching [A-Za-z0-9_.-]{{1,64}}")
    params = spec.get("parameters", spec.get("input_schema"))
    return Tool(
        name=name,
        description=str(spec.get("description") or ""),
        parameters=normalize_schema(params, where=f"tool {name!r} parameters"),
        requires_confirmation=bool(spec.get("requires_confirmation", False)),
    )


def as_tools(tools: Any) -> list[Tool]:
    """Normalize a list of tools (see :func:`as_tool`); names must be unique.

    Raises:
        BadRequestError: a malformed tool or a duplicate name.
    """
    if tools is None:
        return []
    if isinstance(tools, (str, dict, Tool)) or callable(tools):
        tools = [tools]
    out = [as_tool(t) for t in tools]
    seen: set[str] = set()
    for t in out:
        if t.name in seen:
            raise BadRequestError(f"two tools are named {t.name!r}; tool names must be unique")
        seen.add(t.name)
    return out


def to_openai_tool(t: Any) -> dict:
    """Any accepted tool form -> the OpenAI dict ``{"type": "function", "function": {...}}``."""
    return as_tool(t).to_openai()
