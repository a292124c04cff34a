"""The ``openai`` backend against a second phikit server on loopback: phikit's chat, CoT, RAG, cancellation
and agent loop running on a remote model."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import phikit
from conftest import in_thread
from phikit.engines import Done, TextDelta
from phikit.errors import BadRequestError, PhikitError

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG = [{"role": "user", "content": "List 300 animal names, one per line, numbered."}]
CORPUS = Path(__file__).resolve().parents[1] / "examples" / "support-bot" / "corpus"


@pytest.fixture(scope="module")
def local():
    return phikit.load("smollm2-135m", backend="llamacpp")


@pytest.fixture(scope="module")
def server(local):
    from phikit.serve import create_app
    from phikit.serve.background import background

    with background(create_app(local)) as url:
        yield url


@pytest.fixture(scope="module")
def remote(server):
    return phikit.load(backend="openai", base_url=server + "/v1")


def test_remote_engine_describes_the_served_model(remote, local):
    assert remote.backend == "openai"
    assert remote.model == local.model
    assert remote.engine.context_length == local.engine.context_length  # from /v1/models max_model_len


def test_remote_chat_equals_local_chat(remote, local):
    """Greedy decoding through HTTP gives exactly what the engine gives in process."""
    a = remote.chat(QUESTION, max_new_tokens=16, temperature=0)
    b = in_thread(local.chat, QUESTION, max_new_tokens=16, temperature=0)
    assert a.text == b.text and a.text.strip()
    assert a.finish_reason == b.finish_reason
    assert (a.usage.prompt_tokens, a.usage.completion_tokens) == (b.usage.prompt_tokens, b.usage.completion_tokens)


def test_remote_stream_and_stop(remote, local):
    events = list(remote.chat(QUESTION, stream=True, max_new_tokens=16, temperature=0))
    assert isinstance(events[-1], Done) and all(isinstance(e, TextDelta) for e in events[:-1])
    assert len(events) > 2
    text = "".join(e.text for e in events[:-1])
    assert text == events[-1].text
    word = text.split()[2]
    cut = remote.chat(QUESTION, max_new_tokens=16, temperature=0, stop=[word])
    assert cut.text == text[: text.index(word)]


def test_remote_cot(remote):
    res = remote.chat([{"role": "user", "content": "What is 2 + 3?"}], cot=True, max_new_tokens=60, temperature=0)
    assert res.reasoning is not None
    assert res.answer is not None or res.note  # parsed here, on the client, from the remote text


def test_remote_rag_equals_local_rag(remote, local, tmp_path):
    """Retrieval, citation checks and abstention run here; only generation crosses the wire, so the grounded
    answer and its citations are the same as with the model in process."""
    from phikit.rag.store import KnowledgeBase

    kb = tmp_path / "kb"
    KnowledgeBase.create(kb).add([CORPUS / "faq", CORPUS / "policies" / "returns-and-refunds.md"])
    q = "How many days do I have to return a Brightloom device?"
    a = remote.chat(q, kb=str(kb), max_new_tokens=64, temperature=0)
    b = in_thread(local.chat, q, kb=str(kb), max_new_tokens=64, temperature=0)
    assert a.extra["retrieved"] and a.extra["retrieved"] == b.extra["retrieved"]
    assert a.text == b.text
    assert a.extra["citations"] == b.extra["citations"] and a.extra["abstained"] == b.extra["abstained"]
    assert a.extra["citations"] or a.extra["abstained"]


def test_cancel_propagates_to_the_remote_server(remote, server):
    """Setting params.cancel closes the HTTP stream; the remote server's counter shows its generation stopped."""
    before = httpx.get(server + "/health").json()["generations"]["cancelled"]
    cancel = threading.Event()
    n = 0
    done = None
    for ev in remote.chat(LONG, stream=True, max_new_tokens=2000, temperature=0, cancel=cancel):
        if isinstance(ev, TextDelta):
            n += 1
            if n == 3:
                cancel.set()
        else:
            done = ev
    assert done.finish_reason == "cancelled"
    deadline = time.monotonic() + 60
    while httpx.get(server + "/health").json()["generations"]["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    gens = httpx.get(server + "/health").json()["generations"]
    assert gens["cancelled"] == before + 1 and gens["last_cancelled_tokens"] < 40


def test_remote_errors_are_clear(remote, server, local):
    with pytest.raises(BadRequestError, match="context window"):
        remote.chat("word " * (local.engine.context_length + 50), max_new_tokens=4)
    with pytest.raises(PhikitError, match="does not serve"):
        phikit.load("gpt-5", backend="openai", base_url=server)
    from phikit.serve.background import free_port

    with pytest.raises(PhikitError, match="cannot reach"):
        phikit.load(backend="openai", base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(BadRequestError, match="base-url"):
        phikit.load(backend="openai", base_url="")


def test_remote_with_api_key(local):
    from phikit.serve import create_app
    from phikit.serve.background import background

    with background(create_app(local, api_key="k1")) as url:
        with pytest.raises(PhikitError, match="refused the API key"):
            phikit.load(backend="openai", base_url=url, api_key="nope")
        ok = phikit.load(backend="openai", base_url=url, api_key="k1")
        assert ok.chat(QUESTION, max_new_tokens=4, temperature=0).usage.completion_tokens > 0


def test_a_phikit_server_can_front_a_remote_one(remote):
    """phikit serve --backend openai: a second server in front of the first, the openai client unchanged."""
    import openai

    from phikit.serve import create_app
    from phikit.serve.background import background

    with background(create_app(remote)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        resp = client.chat.completions.create(model=remote.model, messages=QUESTION, max_tokens=16, temperature=0)
        assert resp.choices[0].message.content == remote.chat(QUESTION, max_new_tokens=16, temperature=0).text
        assert resp.model_extra["phikit"]["backend"] == "openai"
        info = httpx.get(url + "/health").json()
        assert info["concurrency"] == 16 and info["batching"]  # not serialized here: the remote server batches


def test_cli_ask_on_a_remote_server(server):
    env = {**os.environ, "PHIKIT_BASE_URL": server + "/v1"}
    out = subprocess.run([sys.executable, "-m", "phikit", "ask", "What is the capital of France?", "--backend", "openai",
                          "--max-tokens", "12", "--temperature", "0", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    res = json.loads(out.stdout)
    assert res["backend"] == "openai" and res["text"].strip()


class AgentScriptedEngine:
    """A stand-in model for the remote server: asks for ``calculate`` until a tool result is in the prompt,
    then answers with it. Characters are tokens; it runs the real stream loop and chat template."""

    CALL = 'functools[{"name": "calculate", "arguments": {"expression": "17 * 23"}}]'

    @staticmethod
    def make():
        from phikit.engines.local import LocalEngine

        class Engine(LocalEngine):
            name, model_name, context_length, eos_ids = "scripted", "scripted-agent", 4096, {0}

            def encode(self, text):
                return [ord(c) for c in text]

            def decode(self, ids):
                return "".join(chr(i) for i in ids if i > 0)

            def token_steps(self, prompt_ids, params):
                prompt = self.decode(prompt_ids)
                reply = "17 * 23 = 391." if "391" in prompt else AgentScriptedEngine.CALL
                yield from (ord(c) for c in reply)
                yield 0

        return Engine()


def test_agent_loop_on_a_remote_model():
    """phikit's agent loop on the client; the model on a remote phikit server. The call goes out as OpenAI
    tool_calls, runs here, and its result goes back to the server as a tool message."""
    from phikit.agent import AgentDone, ToolResult, run_agent
    from phikit.llm import LLM
    from phikit.serve import create_app
    from phikit.serve.background import background

    with background(create_app(LLM(AgentScriptedEngine.make()))) as url:
        remote = phikit.load(backend="openai", base_url=url)
        events = list(run_agent(remote, "What is 17 * 23?", ["calculate"], max_new_tokens=100, temperature=0))
        results = [e for e in events if isinstance(e, ToolResult)]
        done = events[-1]
        assert isinstance(done, AgentDone)
        assert [r.name for r in results] == ["calculate"] and results[0].status == "ok"
        assert results[0].content == "391"  # the tool really ran, here, on the remote model's arguments
        assert done.text == "17 * 23 = 391." and done.steps == 2
        metrics = httpx.get(url + "/metrics").text
        assert "phikit_tool_calls_total 1.0" in metrics  # the server returned the call, unexecuted
