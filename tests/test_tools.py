"""Tool schemas, the call parser, validation and the built-ins (no model needed)."""

from __future__ import annotations

import json
import sqlite3
from typing import Literal

import pytest

import phikit
from phikit.errors import BadRequestError
from phikit.tools import (
    ToolCallError,
    ToolDefinitionError,
    as_tool,
    extract_tool_calls,
    normalize_schema,
    parse_tool_calls,
    to_openai_tool,
    validate_call,
)
from phikit.tools.builtins import CalculationError, calculate, create_demo_db, get_weather, order_status

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"],
    },
}


def names_args(calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


# --- schema ---------------------------------------------------------------------------------------------------


def test_tool_decorator_builds_openai_schema_from_hints_and_docstring():
    @phikit.tool
    def book(city: str, nights: int, unit: Literal["eur", "usd"] = "eur") -> str:
        """Book a hotel.

        Args:
            city: where to stay.
            nights: how many nights.
            unit: currency for the price.
        """
        return f"{city}:{nights}:{unit}"

    spec = book.to_openai()
    assert spec["type"] == "function" and spec["function"]["name"] == "book"
    assert spec["function"]["description"] == "Book a hotel."
    params = spec["function"]["parameters"]
    assert params["required"] == ["city", "nights"]
    assert params["properties"]["nights"] == {"type": "integer", "description": "how many nights."}
    assert params["properties"]["unit"]["enum"] == ["eur", "usd"]
    assert book("Oslo", 2) == "Oslo:2:eur"  # still callable
    assert book.run({"city": "Oslo", "nights": 3, "unit": "usd"}) == "Oslo:3:usd"


def test_tool_decorator_fails_at_decoration_naming_the_argument():
    with pytest.raises(ToolDefinitionError, match="'n' has no type hint"):

        @phikit.tool
        def f(n) -> int:
            """Do.

            Args:
                n: a number.
            """

    with pytest.raises(ToolDefinitionError, match="'n' has no description"):

        @phikit.tool
        def g(n: int) -> int:
            """Do."""

    with pytest.raises(ToolDefinitionError, match="add a docstring"):

        @phikit.tool
        def h(n: int) -> int:
            return n


def test_seed_plain_dict_and_openai_dict_normalize_to_the_same_tool():
    plain = to_openai_tool(WEATHER)
    wrapped = to_openai_tool({"type": "function", "function": WEATHER})
    assert plain == wrapped
    assert plain["function"]["parameters"]["required"] == ["location"]
    assert to_openai_tool("calculate")["function"]["name"] == "calculate"
    with pytest.raises(BadRequestError, match="unknown built-in tool"):
        to_openai_tool("rm_rf")


def test_loose_schemas_are_normalized():
    # Phi-4-mini's model card: a bare property map with Python type names.
    card = {"city": {"description": "The city.", "type": "str", "default": "London"}, "days": {"type": "int"}}
    s = normalize_schema(card)
    assert s == {
        "type": "object",
        "properties": {"city": {"description": "The city.", "type": "string", "default": "London"}, "days": {"type": "integer"}},
        "required": ["days"],
    }
    s = normalize_schema({"properties": {"x": {"type": "float"}, "m": {"type": "dict"}, "t": {"type": "tuple"},
                                         "a": {"type": "any"}, "l": {"type": "List[str]"}}, "required": ["x"]})
    assert s["type"] == "object"
    assert [s["properties"][k].get("type") for k in "xmtal"] == ["number", "object", "array", None, "array"]
    assert normalize_schema(None) == {"type": "object", "properties": {}}
    with pytest.raises(BadRequestError, match="unknown type 'widget'"):
        normalize_schema({"type": "object", "properties": {"w": {"type": "widget"}}})


def test_validate_call_rejects_undeclared_and_invalid():
    tools = [as_tool(WEATHER)]
    call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}
    assert validate_call(call, tools)[1] == {"location": "Paris"}
    bad = [
        ("get_wether", '{"location": "Paris"}', "not an available tool"),
        ("get_weather", '{"unit": "celsius"}', "'location' is a required property"),
        ("get_weather", '{"location": "Paris", "unit": "kelvin"}', "unit: 'kelvin' is not one of"),
        ("get_weather", '{"location": 3}', "location: 3 is not of type 'string'"),
        ("get_weather", '["Paris"]', "must be a JSON object"),
        ("get_weather", '{"location": "Par', "not valid JSON"),
    ]
    for name, args, message in bad:
        with pytest.raises(ToolCallError, match=message.replace("(", r"\(")):
            validate_call({"id": "c", "type": "function", "function": {"name": name, "arguments": args}}, tools)


# --- parser ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        # Phi-4-mini's own form
        ('functools[{"name": "get_weather", "arguments": {"location": "Paris"}}]', [("get_weather", {"location": "Paris"})]),
        # several calls, prose before
        ('Sure.\nfunctools[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]',
         [("a", {}), ("b", {"x": 1})]),
        # special-token tags, two blocks
        ('<|tool_call|>{"name": "a", "arguments": {"q": "x"}}<|/tool_call|> and <|tool_call|>[{"name": "b", "arguments": {}}]<|/tool_call|>',
         [("a", {"q": "x"}), ("b", {})]),
        # Hermes / SmolLM2 form
        ('<tool_call>[{"name": "a", "arguments": {"n": 2}}]</tool_call>', [("a", {"n": 2})]),
        # fenced JSON with prose around
        ('I will call it:\n```json\n{"name": "calculate", "arguments": {"expression": "2+2"}}\n```\nDone.',
         [("calculate", {"expression": "2+2"})]),
        # bare JSON, nested objects and escaped quotes and braces inside strings
        ('{"name": "search", "arguments": {"q": "say \\"hi\\" {not json}", "filters": {"tags": ["a", "b"], "n": {"max": 3}}}}',
         [("search", {"q": 'say "hi" {not json}', "filters": {"tags": ["a", "b"], "n": {"max": 3}}})]),
        # parameters instead of arguments, arguments as a JSON string (OpenAI echo)
        ('[{"name": "a", "parameters": {"k": "v"}}]', [("a", {"k": "v"})]),
        ('{"type": "function", "function": {"name": "a", "arguments": "{\\"k\\": 1}"}}', [("a", {"k": 1})]),
        # unicode
        ('functools[{"name": "translate", "arguments": {"text": "héllo 世界"}}]', [("translate", {"text": "héllo 世界"})]),
    ],
)
def test_parser_reads_realistic_outputs(text, expected):
    calls = parse_tool_calls(text)
    assert names_args(calls) == expected
    for c in calls:
        assert c["type"] == "function" and c["id"].startswith("call_")
        assert isinstance(c["function"]["arguments"], str)


@pytest.mark.parametrize(
    "text",
    [
        "The weather in Paris is sunny.",  # prose only
        'functools[{"name": "get_weather", "arguments": {"location": "Par',  # truncated
        'functools[{"name": "get_weather", "arguments": {location: Paris}}]',  # malformed
        '{"city": "Paris", "temp": 14}',  # JSON, but not a call
        "<|tool_call|>{'name': 'a'}<|/tool_call|>",  # Python dict, not JSON
        "",
    ],
)
def test_parser_finds_no_call_in_prose_malformed_or_truncated(text):
    assert parse_tool_calls(text) == []


def test_extract_keeps_the_prose():
    content, calls = extract_tool_calls('Let me check. functools[{"name": "a", "arguments": {}}]')
    assert content == "Let me check." and len(calls) == 1
    # a declared tool may be called with no arguments key
    assert names_args(parse_tool_calls('{"name": "now"}', tools=["now"])) == [("now", {})]
    assert parse_tool_calls('{"name": "now"}') == []


# --- built-ins ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, value",
    [("1234 * 5678", 7006652), ("0.1 + 0.2", 0.3), ("2 ** 100", 2**100), ("7 // 2", 3), ("7 % 4", 3),
     ("-(3 - 5) * 2", 4), ("sqrt(16)", 4.0), ("1/4", 0.25), ("2^10", 1024), ("3 × 4 ÷ 6", 2), ("1,234 + 1", 1235),
     ("factorial(5)", 120), ("round(2.5)", 2), ("6*7?", 42)],
)
def test_calculate_is_exact(expr, value):
    assert calculate(expr) == value


@pytest.mark.parametrize(
    "expr, message",
    [
        ("__import__('os').system('id')", "not allowed"),
        ("open('/etc/passwd').read()", "not allowed"),
        ("(1).__class__", "Attribute is not allowed"),
        ("x + 1", "unknown name 'x'"),
        ("[1, 2]", "List is not allowed"),
        ("'a' * 3", "only numbers"),
        ("lambda: 1", "not an arithmetic expression|Lambda is not allowed"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 100000", "too large"),
        ("factorial(10000)", "factorial needs"),
        ("1 / 0", "division by zero"),
        ("1" * 600, "limit is 500"),
        ("", "empty"),
    ],
)
def test_calculate_refuses_with_a_clear_error(expr, message):
    with pytest.raises(CalculationError, match=message):
        calculate(expr)


def test_order_status_reads_sqlite_with_parameters(tmp_path, monkeypatch):
    db = create_demo_db(tmp_path / "orders.db")
    monkeypatch.setenv("PHIKIT_ORDERS_DB", str(db))
    assert phikit.tools.as_tool("get_order_status").run({"order_id": "a1003"})["status"] == "delivered"
    # an injection attempt is just an unknown id: the value is bound, never spliced into SQL
    assert order_status("A1001' OR '1'='1", db)["found"] is False
    assert sqlite3.connect(db).execute("SELECT count(*) FROM orders").fetchone()[0] == 8
    with pytest.raises(phikit.PhikitError, match="phikit demo-db"):
        order_status("A1001", tmp_path / "missing.db")


def test_weather_is_offline_demo_data_and_says_so():
    out = get_weather("paris", "fahrenheit")
    assert out["city"] == "Paris" and out["unit"] == "fahrenheit" and "demo" in out["source"]
    assert get_weather("Atlantis")["found"] is False
