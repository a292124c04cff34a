"""Constrained decoding with the embedded model: every call is parseable and schema-valid, on both backends.

The 135M model is weak: these tests assert what the grammar guarantees (a declared name, arguments valid
against the schema), never what the model should have said. The full sweep of 22 schemas is ``slow``; a
representative subset runs by default.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from phikit.tools.chat import chat

S = lambda props, req=None, **kw: {"type": "object", "properties": props, "required": list(props) if req is None else req, **kw}  # noqa: E731

SCHEMAS = {
    "string": S({"city": {"type": "string"}}),
    "integer": S({"count": {"type": "integer"}}),
    "number": S({"amount": {"type": "number"}}),
    "boolean": S({"urgent": {"type": "boolean"}}),
    "enum": S({"unit": {"type": "string", "enum": ["celsius", "fahrenheit", "kelvin"]}}),
    "int_range": S({"stars": {"type": "integer", "minimum": 1, "maximum": 5}}),
    "optional": S({"query": {"type": "string"}, "limit": {"type": "integer"}}, req=["query"]),
    "no_params": S({}),
    "array_str": S({"tags": {"type": "array", "items": {"type": "string"}, "minItems": 1}}),
    "array_obj": S({"items": {"type": "array", "items": S({"sku": {"type": "string"}, "qty": {"type": "integer"}})}}),
    "nested": S({"address": S({"street": {"type": "string"}, "zip": {"type": "string"}})}),
    "deep": S({"a": S({"b": S({"c": {"type": "number"}})})}),
    "const": S({"version": {"const": "v2"}, "id": {"type": "string"}}),
    "any_of": S({"value": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}),
    "nullable": S({"note": {"type": ["string", "null"]}}),
    "pattern": S({"order_id": {"type": "string", "pattern": "^A[0-9]{4}$"}}),
    "closed": S({"x": {"type": "integer"}, "y": {"type": "integer"}}, additionalProperties=False),
    "refs": {"type": "object", "properties": {"p": {"$ref": "#/$defs/point"}}, "required": ["p"],
             "$defs": {"point": S({"lat": {"type": "number"}, "lon": {"type": "number"}})}},
    "tuple": S({"rgb": {"type": "array", "prefixItems": [{"type": "integer"}] * 3, "items": False, "minItems": 3}}),
    "mixed": S({"name": {"type": "string"}, "age": {"type": "integer"}, "member": {"type": "boolean"},
                "score": {"type": "number"}, "level": {"type": "string", "enum": ["low", "high"]}}),
    "loose_card": {"city": {"type": "str", "description": "The city."}, "days": {"type": "int"}},  # normalized
    "str_bounds": S({"code": {"type": "string", "minLength": 2, "maxLength": 4}}),
}
QUESTION = "Please use the tool for this request: Paris, 3 items, 42.5 euros, urgent, order A1234."
FAST = ["string", "enum", "array_obj", "nested", "refs", "pattern"]


def constrained_call(llm, name, schema, tool_choice="required"):
    tool = {"name": f"tool_{name}", "description": f"A test tool taking {name} arguments.", "parameters": schema}
    r = chat(llm, QUESTION, tools=[tool], tool_choice=tool_choice, temperature=0, max_new_tokens=64)
    return tool, r


def assert_valid(tool, r):
    from phikit.tools import as_tool

    assert r.finish_reason == "tool_calls", r.text
    assert not r.extra.get("invalid_tool_calls"), r.extra
    calls = r.extra["tool_calls"]
    assert calls, r.text
    normalized = as_tool(tool).parameters
    for c in calls:
        assert c["function"]["name"] == tool["name"]
        jsonschema.validate(json.loads(c["function"]["arguments"]), normalized)


@pytest.mark.parametrize("name", FAST)
def test_constrained_call_is_schema_valid_llamacpp(llama_llm, name):
    tool, r = constrained_call(llama_llm, name, SCHEMAS[name])
    assert_valid(tool, r)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(SCHEMAS) - set(FAST)))
def test_constrained_call_is_schema_valid_llamacpp_full(llama_llm, name):
    tool, r = constrained_call(llama_llm, name, SCHEMAS[name])
    assert_valid(tool, r)


@pytest.mark.parametrize("name", ["mixed", "array_str"])
def test_constrained_call_is_schema_valid_transformers(hf_llm, name):
    tool, r = constrained_call(hf_llm, name, SCHEMAS[name], tool_choice={"type": "function", "function": {"name": f"tool_{name}"}})
    assert_valid(tool, r)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_constrained_call_is_schema_valid_transformers_full(hf_llm, name):
    tool, r = constrained_call(hf_llm, name, SCHEMAS[name])
    assert_valid(tool, r)


def test_named_choice_picks_that_tool_among_several(llama_llm):
    tools = ["calculate", "get_weather", "get_order_status"]
    r = chat(llama_llm, "What is 12 * 12?", tools=tools, tool_choice={"type": "function", "function": {"name": "get_order_status"}},
             temperature=0, max_new_tokens=48)
    assert [c["function"]["name"] for c in r.extra["tool_calls"]] == ["get_order_status"]


def test_response_format_json_schema_constrains_a_plain_answer(any_llm):
    schema = S({"answer": {"type": "string"}, "confidence": {"type": "number"}})
    r = any_llm.chat("What is the capital of France? Reply in JSON.", temperature=0, max_new_tokens=64,
                     response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    jsonschema.validate(json.loads(r.text), schema)


def test_auto_leaves_text_unconstrained_and_calls_are_returned_unexecuted(llama_llm):
    r = llama_llm.chat("Say hello.", tools=["calculate"], tool_choice="auto", temperature=0, max_new_tokens=24)
    assert r.extra["tool_calls"] == [] and r.text
    r = llama_llm.chat("What is 1234 * 5678?", tools=["calculate"], tool_choice="required", temperature=0, max_new_tokens=48)
    assert r.finish_reason == "tool_calls"
    assert r.extra["tool_calls"][0]["function"]["name"] == "calculate"  # returned, not run: no result here
    assert "tool_results" not in r.extra


def test_bad_tool_choice_is_one_clear_error(llama_llm):
    from phikit.errors import BadRequestError

    with pytest.raises(BadRequestError, match="not among the tools"):
        llama_llm.chat("hi", tools=["calculate"], tool_choice="get_weather")
    with pytest.raises(BadRequestError, match="needs tools"):
        llama_llm.chat("hi", tools=[], tool_choice="required", response_format={"type": "text"})
