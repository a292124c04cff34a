"""Tools as values: typed Python functions, OpenAI tool dicts and the seeds' plain dicts -> one :class:`Tool`.

``@tool`` follows smolagents' ``@tool``: the JSON Schema comes from the type hints (through pydantic) and the
argument descriptions from the Google-style ``Args:`` section; a missing hint or description fails at
decoration time, naming the function and the argument. Loose schemas seen in the wild (``"type": "str"``,
``dict``, ``tuple``, ``any``, a bare property map as in Phi-4-mini's model card) are normalized into valid
JSON Schema, so the grammar compiler and jsonschema both accept them.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequestError, PhikitError

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # OpenAI's rule plus dots, as vLLM, Ollama and llama.cpp accept (BFCL's math.factorial)

# Python / loose type names -> JSON Schema types ("any" means: no constraint).
TYPE_ALIASES = {
    "str": "string", "string": "string", "text": "string",
    "int": "integer", "integer": "integer",
    "float": "number", "number": "number", "double": "number", "decimal": "number",
    "bool": "boolean", "boolean": "boolean",
    "dict": "object", "object": "object", "map": "object", "mapping": "object",
    "list": "array", "array": "array", "tuple": "array", "set": "array", "sequence": "array",
    "none": "null", "null": "null", "nonetype": "null",
    "any": None, "object_or_any": None,
}


class ToolDefinitionError(PhikitError):
    """A tool cannot be built: missing type hint, docstring or argument description, bad name or schema."""


@dataclass
class Tool:
    """One callable tool.

    Attributes:
        name: the function name the model calls (``[A-Za-z0-9_.-]{1,64}``).
        description: what the tool does, shown to the model.
        parameters: a JSON Schema object for the arguments.
        fn: the Python function, or None for a declaration only (the API returns such calls unexecuted).
        requires_confirmation: the agent asks before running it (the CLI asks y/N; an API caller gets the
            call back unexecuted).
        timeout_s: wall-clock limit for one execution, seconds.
        model: the pydantic model that validates and coerces arguments (``@tool`` functions only).
    """

    name: str
    description: str
    parameters: dict
    fn: Callable[..., Any] | None = None
    requires_confirmation: bool = False
    timeout_s: float = 10.0
    model: Any = field(default=None, repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            raise PhikitError(f"tool {self.name!r} is a declaration without a Python function; it cannot run")
        return self.fn(*args, **kwargs)

    def to_openai(self) -> dict:
        """``{"type": "function", "function": {"name", "description", "parameters"}}``."""
        return {"type": "function", "function": self.plain()}

    def plain(self) -> dict:
        """The seeds' / Phi-4-mini's plain form ``{"name", "description", "parameters"}`` (phikit's own
        ``x-phikit-*`` schema marks left out: they are for phikit, not the model)."""
        from .provenance import strip_marks

        return {"name": self.name, "description": self.description, "parameters": strip_marks(self.parameters)}

    @property
    def identifiers(self) -> list[str]:
        """Arguments that name a record (order id, e-mail, account number): they must come from the user
        (:mod:`phikit.tools.provenance`)."""
        from .provenance import identifier_args

        return identifier_args(self.parameters)

    def run(self, arguments: dict) -> Any:
        """Call the function with validated ``arguments`` (coerced through the pydantic model if any)."""
        if self.model is not None:
            values = self.model.model_validate(arguments)
            arguments = {k: getattr(values, k) for k in type(values).model_fields}
        return self(**arguments)


def _docstring_args(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description, {arg: description})."""
    lines = inspect.cleandoc(doc).splitlines()
    desc: list[str] = []
    args: dict[str, str] = {}
    section, current = None, None
    for line in lines:
        stripped = line.strip()
        if re.match(r"^(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?):\s*$", stripped):
            section = stripped.rstrip(":").lower()
            current = None
            continue
        if section is None:
            desc.append(stripped)
        elif section in ("args", "arguments", "parameters"):
            m = re.match(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", stripped)
            if m and line.startswith((" ", "\t")) and (len(line) - len(line.lstrip())) <= 8:
                current = m.group(1).lstrip("*")
                args[current] = m.group(3).strip()
            elif current and stripped:
                args[current] = (args[current] + " " + stripped).strip()
    description = " ".join(" ".join(desc).split("\n")).strip()
    return re.sub(r"\s+", " ", description), args


def _strip_titles(schema: Any) -> Any:
    """pydantic adds ``title`` everywhere; models only need names, types and descriptions."""
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


def tool(
    fn: Callable | None = None,
    *,
    name: str | None = None,
    requires_confirmation: bool = False,
    timeout_s: float = 10.0,
    identifiers: Sequence[str] | None = None,
) -> Any:
    """Turn a typed, documented function into a :class:`Tool` (usable bare or with options).

    Example::

        @phikit.tool
        def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict:
            '''Current weather for a city.

            Args:
                city: the city name, e.g. "Paris".
                unit: temperature unit.
            '''

    Args:
        fn: the function; every parameter needs a type hint and an ``Args:`` description.
        name: the tool name (default: the function's name).
        requires_confirmation: ask before running it.
        timeout_s: execution time limit, seconds.
        identifiers: the arguments that name a record and must come from the user's messages; None
            recognizes them by name (``order_id``, ``email``, ...; :mod:`phikit.tools.provenance`), ``[]``
            marks none.

    Returns:
        A :class:`Tool` (still callable like the function).

    Raises:
        ToolDefinitionError: no docstring, a parameter without a type hint or description, ``*args``, or a
            name outside ``[A-Za-z0-9_.-]{1,64}``.
    """
    if fn is None:
        return lambda f: tool(f, name=name, requires_confirmation=requires_confirmation, timeout_s=timeout_s,
                              identifiers=identifiers)
    from typing import get_type_hints

    from pydantic import Field, create_model

    tool_name = name or fn.__name__
    if not NAME_RE.match(tool_name):
        raise ToolDefinitionError(f"tool name {tool_name!r} must match [A-Za-z0-9_.-]{{1,64}}")
    if not (fn.__doc__ or "").strip():
        raise ToolDefinitionError(f"tool {tool_name!r}: add a docstring saying what the function does")
    description, arg_docs = _docstring_args(fn.__doc__)
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    for pname, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {tool_name!r}: *{pname} is not supported; name every argument")
        if pname not in hints:
            raise ToolDefinitionError(f"tool {tool_name!r}: argument {pname!r} has no type hint; add one")
        if not arg_docs.get(pname):
            raise ToolDefinitionError(
                f"tool {tool_name!r}: argument {pname!r} has no description; add it under 'Args:' in the docstring"
            )
        default = ... if p.default is p.empty else p.default
        fields[pname] = (hints[pname], Field(default, description=arg_docs[pname]))
    model = create_model(f"{tool_name}_arguments", **fields)
    parameters = _strip_titles(model.model_json_schema())
    parameters.setdefault("properties", {})
    if identifiers is not None:
        from .provenance import IDENTIFIER_KEY

        unknown = sorted(set(identifiers) - set(parameters["properties"]))
        if unknown:
            raise ToolDefinitionError(f"tool {tool_name!r}: identifiers names unknown argument(s) {', '.join(unknown)}")
        for pname, prop in parameters["properties"].items():
            prop[IDENTIFIER_KEY] = pname in identifiers
    return Tool(tool_name, description, parameters, fn, requires_confirmation, timeout_s, model)


def normalize_schema(schema: Any, *, where: str = "parameters") -> dict:
    """Make a loose parameter schema valid JSON Schema (Draft 2020-12).

    Handles: None (no arguments), a bare property map (Phi-4-mini's card: ``{"city": {"type": "str"}}``),
    a missing ``"type": "object"``, Python type names (``str``, ``int``, ``float``, ``bool``, ``dict``,
    ``list``, ``tuple``, ``any``, ``List[str]``), and ``required`` left out (then the properties without a
    ``default`` are required, as Python signatures read).

    Raises:
        BadRequestError: a type that is not a JSON Schema or Python type name, or a non-dict schema.
    """
    if schema is None:
        return {"type": "object", "properties": {}}
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError:
            raise BadRequestError(f"{where} is a string that is not JSON; give a JSON Schema object") from None
    if not isinstance(schema, dict):
        raise BadRequestError(f"{where} must be a JSON Schema object, got {type(schema).__name__}")
    is_schema = "type" in schema or "properties" in schema or any(k.startswith("$") or k in ("anyOf", "oneOf", "allOf") for k in schema)
    if not is_schema and all(isinstance(v, dict) for v in schema.values()):
        props = schema
        schema = {"type": "object", "properties": props, "required": [k for k, v in props.items() if "default" not in v]}
    out = _normalize_node(schema, where)
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if out.get("type") != "object":
        raise BadRequestError(f"{where} must describe an object (the arguments), got type {out.get('type')!r}")
    out.setdefault("properties", {})
    return out


def _json_type(t: Any, where: str) -> Any:
    if isinstance(t, list):
        mapped = [_json_type(x, where) for x in t]
        return None if None in mapped else mapped
    if not isinstance(t, str):
        raise BadRequestError(f"{where}: type must be a string, got {t!r}")
    key = t.strip().lower().replace("typing.", "")
    generic = re.match(r"^(\w+)\s*\[.*\]$", key)  # List[str], dict[str, int], Optional[int] ...
    if generic:
        key = generic.group(1)
        if key in ("optional", "union"):
            return None
    if key not in TYPE_ALIASES:
        raise BadRequestError(f"{where}: unknown type {t!r}; use a JSON Schema type (string, number, integer, boolean, object, array, null)")
    return TYPE_ALIASES[key]


def _normalize_node(node: Any, where: str) -> Any:
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "type" in out:
        t = _json_type(out["type"], where)
        if t is None:
            out.pop("type")
        else:
            out["type"] = t
            if t == "object" and "properties" not in out and "additionalProperties" not in out:
                pass
    if "properties" in out and isinstance(out["properties"], dict):
        out["properties"] = {k: _normalize_node(v, f"{where}.{k}") for k, v in out["properties"].items()}
        out.setdefault("type", "object")
        if "required" not in out:
            out["required"] = [k for k, v in out["properties"].items() if isinstance(v, dict) and "default" not in v]
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _normalize_node(out[key], f"{where}.{key}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(out.get(key), list):
            out[key] = [_normalize_node(v, f"{where}.{key}") for v in out[key]]
    for key in ("$defs", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {k: _normalize_node(v, f"{where}.{key}.{k}") for k, v in out[key].items()}
    return out


def validate_call(call: dict, tools: list[Tool]) -> tuple[Tool, dict]:
    """Check an OpenAI-shaped call against the declared tools.

    Args:
        call: ``{"id", "type": "function", "function": {"name", "arguments": JSON string}}``.
        tools: the declared tools.

    Returns:
        ``(tool, arguments)`` with arguments as a dict.

    Raises:
        ToolCallError: the name is not declared, the arguments are not a JSON object, or they break the
            schema (the message names the argument and the rule, for the model's repair turn).
    """
    import jsonschema

    fn = call.get("function") or {}
    name = fn.get("name")
    by_name = {t.name: t for t in tools}
    if name not in by_name:
        raise ToolCallError(f"{name!r} is not an available tool; available: {', '.join(by_name) or 'none'}")
    t = by_name[name]
    raw = fn.get("arguments", "{}")
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise ToolCallError(f"arguments of {name} are not valid JSON ({exc.msg})") from None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ToolCallError(f"arguments of {name} must be a JSON object, got {type(args).__name__}")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(t.parameters).iter_errors(args))
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path) or "arguments"
        raise ToolCallError(f"invalid arguments for {name}: {path}: {error.message}")
    return t, args


class ToolCallError(PhikitError):
    """A call the model made cannot run: undeclared name, malformed or schema-invalid arguments."""
