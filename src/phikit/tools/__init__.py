"""Tool calling: typed tools, Phi-4-mini's call format, validation, constrained decoding, built-ins, audit.

The pieces, each a small module: :mod:`.schema` (``@tool``, normalization, validation), :mod:`.parse`
(model text -> OpenAI-shaped calls), :mod:`.constrain` (xgrammar logits processors), :mod:`.chat` (one
model turn with tools), :mod:`.builtins` and :mod:`.audit`. The agent loop is :mod:`phikit.agent`.
"""

from .parse import extract_tool_calls, parse_tool_calls
from .resolve import as_tool, as_tools, to_openai_tool
from .schema import (
    Tool,
    ToolCallError,
    ToolDefinitionError,
    normalize_schema,
    tool,
    validate_call,
)

__all__ = [
    "Tool",
    "ToolCallError",
    "ToolDefinitionError",
    "as_tool",
    "as_tools",
    "extract_tool_calls",
    "normalize_schema",
    "parse_tool_calls",
    "to_openai_tool",
    "tool",
    "validate_call",
]
