"""Ollama routes honour the same ``"phikit"`` extras as the OpenAI route, and accept tool-call history in
Ollama's own shape (arguments as an object)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import in_thread

RETURNS = Path(__file__).resolve().parents[1] / "examples/support-bot/corpus/policies/returns-and-refunds.md"
ITALY = [{"role": "user", "content": "What is the capital of Italy?"}]
GREEDY = {"temperature": 0, "num_predict": 16}


@pytest.fixture(scope="module")
def llm():
    import phikit

    return phikit.load("smollm2-135m", backend="llamacpp")


@pytest.fixture(scope="module")
def kb_server(llm, tmp_path_factory):
    from phikit.rag.store import KnowledgeBase
    from phikit.serve import create_app
    from phikit.serve.background import background

    root = tmp_path_factory.mktemp("okb")
    (root / "docs").mkdir()
    (root / "docs" / "returns.md").write_text(RETURNS.read_text())
    KnowledgeBase.create(root / "kb").add([root / "docs"], progress=False)
    with background(create_app(llm, kbs={"support": str(root / "kb")})) as url:
        yield url


def _chat(url: str, body: dict) -> dict:
    resp = httpx.post(url + "/api/chat", json={"stream": False, "options": GREEDY, **body}, timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_ollama_chat_opts_out_of_the_kb(kb_server, llm):
    """On a ``--kb`` server an Ollama request with ``"phikit": {"kb": false}`` is plain chat: the same greedy
    text as the engine gives directly, not the knowledge base's abstention."""
    plain = _chat(kb_server, {"messages": ITALY, "phikit": {"kb": False}})["message"]["content"]
    direct = in_thread(llm.chat, ITALY, max_new_tokens=16, temperature=0).text
    assert plain == direct
    grounded = _chat(kb_server, {"messages": ITALY})["message"]["content"]
    assert grounded != plain  # the default still goes through the KB


def test_ollama_generate_opts_out_of_the_kb(kb_server, llm):
    resp = httpx.post(kb_server + "/api/generate", timeout=120, json={
        "prompt": ITALY[0]["content"], "stream": False, "options": GREEDY, "phikit": {"kb": False}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["response"] == in_thread(llm.chat, ITALY, max_new_tokens=16, temperature=0).text


def test_ollama_tool_history_with_object_arguments(kb_server):
    """Ollama clients send earlier calls with ``arguments`` as an object; that is history, not a 500."""
    messages = [
        {"role": "user", "content": "What is 6 * 7?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "calculate", "arguments": {"expression": "6 * 7"}}}]},
        {"role": "tool", "content": "42"},
    ]
    tools = [{"type": "function", "function": {
        "name": "calculate", "description": "Evaluate arithmetic.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}]
    out = _chat(kb_server, {"messages": messages, "tools": tools, "phikit": {"kb": False}})
    assert out["done"] is True and out["message"]["role"] == "assistant"
