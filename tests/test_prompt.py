"""Phi-4-mini's chat format, pinned to the exact strings of its model card."""

from __future__ import annotations

import pytest

from phikit.errors import BadRequestError
from phikit.prompt import normalize_messages, render

CARD_TOOL = {
    "name": "get_weather_updates",
    "description": "Fetches weather updates for a given city using the RapidAPI Weather API.",
    "parameters": {
        "city": {"description": "The name of the city for which to retrieve weather information.", "type": "str", "default": "London"}
    },
}


def test_chat_format_matches_model_card():
    msgs = [
        {"role": "system", "content": "Insert System Message"},
        {"role": "user", "content": "Insert User Message"},
    ]
    assert render(msgs) == "<|system|>Insert System Message<|end|><|user|>Insert User Message<|end|><|assistant|>"


def test_tool_format_matches_model_card():
    msgs = [
        {"role": "system", "content": "You are a helpful assistant with some tools."},
        {"role": "user", "content": "What is the weather like in Paris today?"},
    ]
    expected = (
        '<|system|>You are a helpful assistant with some tools.<|tool|>[{"name": "get_weather_updates", '
        '"description": "Fetches weather updates for a given city using the RapidAPI Weather API.", '
        '"parameters": {"city": {"description": "The name of the city for which to retrieve weather '
        'information.", "type": "str", "default": "London"}}}]<|/tool|><|end|><|user|>What is the weather '
        "like in Paris today?<|end|><|assistant|>"
    )
    assert render(msgs, tools=[CARD_TOOL]) == expected


def test_tools_without_system_message_get_a_system_turn():
    out = render([{"role": "user", "content": "hi"}], tools=[{"name": "f", "parameters": {}}])
    assert out.startswith("<|system|>You are a helpful assistant with some tools.<|tool|>[")
    assert out.endswith("<|/tool|><|end|><|user|>hi<|end|><|assistant|>")


def test_tool_call_and_result_turns():
    msgs = [
        {"role": "user", "content": "What is 2+3?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calculate", "arguments": '{"expression": "2+3"}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
    ]
    assert render(msgs) == (
        '<|user|>What is 2+3?<|end|><|assistant|>functools[{"name": "calculate", "arguments": '
        '{"expression": "2+3"}}]<|end|><|tool|>5<|end|><|assistant|>'
    )


def test_multi_turn_and_no_generation_prompt():
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    out = render(msgs, add_generation_prompt=False, eos_token="<|endoftext|>")
    assert out == "<|user|>a<|end|><|assistant|>b<|end|><|endoftext|>"


# microsoft/Phi-4-mini-instruct tokenizer_config.json's chat_template, verbatim.
STOCK_PHI4_MINI = (
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and message['tools'] "
    "is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + "
    "'<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)


@pytest.mark.parametrize("gen", [True, False])
@pytest.mark.parametrize(
    "msgs",
    [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}],
        [{"role": "system", "content": "S", "tools": '[{"name": "f"}]'}, {"role": "user", "content": "u"}],
    ],
)
def test_our_template_renders_exactly_like_phi4_minis_own(msgs, gen):
    from phikit.prompt import PHI4_MINI_TEMPLATE, _compile, effective_template

    stock = _compile(STOCK_PHI4_MINI).render(messages=msgs, add_generation_prompt=gen, eos_token="<|endoftext|>")
    ours = render(msgs, PHI4_MINI_TEMPLATE, add_generation_prompt=gen, eos_token="<|endoftext|>")
    assert ours == stock
    assert effective_template(STOCK_PHI4_MINI) == PHI4_MINI_TEMPLATE  # a checkpoint's stock template -> ours


def test_non_ascii_kept_verbatim():
    assert "café ☕" in render([{"role": "user", "content": "café ☕"}])
    assert "\\u" not in render([{"role": "user", "content": "x"}], tools=[{"name": "météo"}])


def test_the_gguf_template_of_the_embedded_model_renders_chatml(llama_llm):
    out = llama_llm.engine.render([{"role": "user", "content": "Hello"}])
    assert "<|im_start|>user\nHello<|im_end|>" in out
    assert out.rstrip().endswith("<|im_start|>assistant")


@pytest.mark.parametrize(
    "messages, needle",
    [
        ([], "messages is empty"),
        ("   ", "prompt is empty"),
        ([{"role": "wizard", "content": "x"}], "role 'wizard'"),
        ([{"role": "user", "content": 3}], "content must be a string"),
        (["hello"], "expected a dict"),
    ],
)
def test_bad_messages(messages, needle):
    with pytest.raises(BadRequestError, match=needle):
        normalize_messages(messages)
