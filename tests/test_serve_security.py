"""The server against web pages, DNS rebinding, oversized requests and freezing tools; errors mapped honestly.

A scripted engine stands in for the model (characters are tokens), so every check runs in milliseconds through
the real middleware, routes, worker queue and agent loop.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx
import pytest

from phikit.engines.local import LocalEngine
from phikit.errors import EngineError, EngineUnavailableError
from phikit.llm import LLM
from phikit.serve import create_app
from phikit.serve.background import background
from phikit.serve.limits import ServerLimits

HUGE_ROUND = 'functools[{"name": "calculate", "arguments": {"expression": "round(1, 10**9)"}}]'
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


class ScriptedEngine(LocalEngine):
    """Replies ``reply`` (or a fixed answer once a tool result is in the prompt); ``fail`` raises instead."""

    name = model_name = "scripted"
    context_length = 8192
    eos_ids = {0}

    def __init__(self, reply: str = "Paris.", fail: BaseException | None = None):
        self.reply, self.fail = reply, fail

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids if i > 0)

    def token_steps(self, prompt_ids, params):
        if self.fail is not None:
            raise self.fail
        prompt = self.decode(prompt_ids)
        reply = "The tool failed." if "CalculationError" in prompt else self.reply
        yield from (ord(c) for c in reply)
        yield 0


@pytest.fixture(scope="module")
def url():
    with background(create_app(LLM(ScriptedEngine()), max_queue=4)) as u:
        yield u


def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body  # OpenAI's shape
    return body["error"]


# --- tools cannot freeze the server -----------------------------------------------------------------------------

def test_execute_tools_with_a_huge_round_keeps_health_fast():
    with background(create_app(LLM(ScriptedEngine(HUGE_ROUND)))) as u:
        latencies, stop = [], threading.Event()

        def poll():
            with httpx.Client() as c:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    assert c.get(u + "/health").status_code == 200
                    latencies.append(time.perf_counter() - t0)
                    time.sleep(0.02)

        t = threading.Thread(target=poll)
        t.start()
        try:
            t0 = time.perf_counter()
            r = httpx.post(u + "/v1/chat/completions", timeout=60, json={
                "messages": [{"role": "user", "content": "round it"}], "max_tokens": 200,
                "tools": [{"type": "function", "function": {"name": "calculate"}}], "phikit": {"execute_tools": True}})
            elapsed = time.perf_counter() - t0
        finally:
            stop.set()
            t.join()
        assert r.status_code == 200, r.text
        body = r.json()
        results = [e for e in body["phikit"]["events"] if e["type"] == "ToolResult"]
        assert results[0]["status"] == "error" and "round's number of digits" in results[0]["content"]
        assert body["choices"][0]["message"]["content"] == "The tool failed."
        # A frozen event loop shows as one multi-second gap (round(1, 10**7) held the GIL 8.7 s); the 200 ms
        # target is for a quiet machine (bench/tools_isolation.py), so shared-CPU noise is allowed a little.
        latencies.sort()
        p90 = latencies[int(0.9 * (len(latencies) - 1))]
        assert elapsed < 5 and len(latencies) >= 3 and p90 < 0.2 and latencies[-1] < 1.0, (elapsed, latencies[-5:])


# --- Origin and Host ----------------------------------------------------------------------------------------------

def test_cross_origin_post_is_403_before_any_work(url):
    started = httpx.get(url + "/health").json()["generations"]["started"]
    for headers in ({"Origin": "http://evil.example"},
                    {"Origin": "http://evil.example", "Content-Type": "text/plain"},
                    {"Origin": "null"},
                    {"Origin": "http://localhost:3000"}):  # another local app on another port
        r = httpx.post(url + "/v1/chat/completions", headers=headers, content=b'{"messages": []}')
        assert r.status_code == 403 and "Origin" in error_of(r)["message"], headers
    r = httpx.post(url + "/api/chat", headers={"Origin": "http://evil.example"}, json={"messages": []})
    assert r.status_code == 403 and "Origin" in r.json()["error"]  # Ollama's shape on /api
    assert httpx.get(url + "/health").json()["generations"]["started"] == started


def test_foreign_host_is_403(url):
    for host in ("evil.example", "evil.example:80", "127.0.0.1.nip.io", "attacker.com"):
        r = httpx.get(url + "/v1/models", headers={"Host": host})
        assert r.status_code == 403 and error_of(r)["code"] == "host_not_allowed", host
    r = httpx.post(url + "/v1/chat/completions", headers={"Host": "evil.example", "Content-Type": "text/plain"},
                   content=b'{"messages": [{"role": "user", "content": "hi"}]}')
    assert r.status_code == 403


def test_the_page_same_origin_and_loopback_names_work(url):
    port = url.rsplit(":", 1)[1]
    assert httpx.get(url + "/").status_code == 200
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert httpx.get(url + "/health", headers={"Host": host}).status_code == 200
    for origin in (url, f"http://localhost:{port}"):  # the page, as the browser sends it
        r = httpx.post(url + "/v1/chat/completions", headers={"Origin": origin}, json=CHAT)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Paris."
    # curl -d sends application/x-www-form-urlencoded and no Origin: accepted, parsed as JSON (as Ollama does)
    r = httpx.post(url + "/api/generate", headers={"Content-Type": "application/x-www-form-urlencoded"},
                   content=b'{"prompt": "hi", "stream": false}')
    assert r.status_code == 200 and r.json()["response"] == "Paris."


def test_allow_origin_and_allowed_hosts_extend_the_lists():
    app = create_app(LLM(ScriptedEngine()), allow_origins=["http://localhost:3000"], allowed_hosts=["phikit.lan"])
    with background(app) as u:
        r = httpx.post(u + "/v1/chat/completions", headers={"Origin": "http://localhost:3000"}, json=CHAT)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        pre = httpx.options(u + "/v1/chat/completions", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 200
        assert httpx.get(u + "/health", headers={"Host": "phikit.lan:8000"}).status_code == 200
        assert httpx.post(u + "/v1/chat/completions", headers={"Origin": "http://evil.example"}, json=CHAT).status_code == 403


def test_official_clients_work_with_the_checks_on(url):
    openai = pytest.importorskip("openai")
    ollama = pytest.importorskip("ollama")
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    out = client.chat.completions.create(model="scripted", messages=CHAT["messages"], max_tokens=8)
    assert out.choices[0].message.content == "Paris."
    assert ollama.Client(host=url).chat(model="scripted", messages=CHAT["messages"])["message"]["content"] == "Paris."


# --- limits: each answers 413/400 in OpenAI's shape -------------------------------------------------------------

def _tool(i: int, schema: dict | None = None) -> dict:
    return {"type": "function", "function": {"name": f"t{i}", "parameters": schema or {"type": "object"}}}


L = ServerLimits()
LIMIT_CASES = {
    "messages": ({**CHAT, "messages": [{"role": "user", "content": "x"}] * (L.max_messages + 1)}, 400, "messages"),
    "stop count": ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    "stop length": ({**CHAT, "stop": ["s" * (L.max_stop_chars + 1)]}, 400, "stop"),
    "tools": ({**CHAT, "tools": [_tool(i) for i in range(L.max_tools + 1)]}, 400, "tools"),
    "schema size": ({**CHAT, "tools": [_tool(0, {"type": "object", "description": "d" * L.max_schema_bytes})]}, 400,
                    "tools[0].function.parameters"),
    "schema bound": ({**CHAT, "tools": [_tool(0, {"type": "object", "properties": {
        "s": {"type": "string", "maxLength": 10**6}}})]}, 400, "tools[0].function.parameters"),
    "response_format": ({**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "array", "maxItems": 10**7}}}}, 400, "response_format"),
}


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_chat_limits(url, case):
    body, status, param = LIMIT_CASES[case]
    r = httpx.post(url + "/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert err["param"] == param and err["code"] == "limit_exceeded" and "limit" in err["message"]


def test_ollama_limits(url):
    r = httpx.post(url + "/api/chat", json={**CHAT, "options": {"stop": ["a"] * 5}})
    assert r.status_code == 400 and "stop" in r.json()["error"]
    r = httpx.post(url + "/api/generate", json={"prompt": "hi", "format": {"type": "string", "maxLength": 10**6}})
    assert r.status_code == 400 and "maxLength" in r.json()["error"]


def test_body_size_limit_is_413_with_or_without_content_length():
    with background(create_app(LLM(ScriptedEngine()), limits=ServerLimits(max_body_bytes=1000))) as u:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
        r = httpx.post(u + "/v1/chat/completions", json=big)
        assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"

        def chunks():
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"x" * 100
            yield b'"}]}'

        r = httpx.post(u + "/v1/chat/completions", content=chunks())  # chunked: no Content-Length
        assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"
        assert httpx.post(u + "/v1/chat/completions", json=CHAT).status_code == 200


def test_embedding_limits_before_any_model_loads(url):
    r = httpx.post(url + "/v1/embeddings", json={"input": ["a"] * (L.max_embedding_inputs + 1)})
    assert r.status_code == 400 and error_of(r)["param"] == "input"
    r = httpx.post(url + "/v1/embeddings", json={"input": "x" * (L.max_embedding_chars + 1)})
    assert r.status_code == 400 and error_of(r)["code"] == "limit_exceeded"
    r = httpx.post(url + "/api/embed", json={"input": ["a"] * (L.max_embedding_inputs + 1)})
    assert r.status_code == 400 and "limit" in r.json()["error"]


def test_embeddings_share_the_request_queue():
    app = create_app(LLM(ScriptedEngine()), max_queue=0)
    with background(app) as u:
        app.state.phikit.worker.admitted = 1  # one request holds the only place
        for path in ("/v1/embeddings", "/api/embed"):
            r = httpx.post(u + path, json={"input": "hello"})
            assert r.status_code == 429 and "retry-after" in r.headers, path
        app.state.phikit.worker.admitted = 0


def test_grammar_cache_is_bounded(llama_llm, monkeypatch):
    from phikit.tools import constrain

    monkeypatch.setattr(constrain, "MAX_GRAMMARS", 3)
    for i in range(6):
        constrain.compile_schema(llama_llm.engine, {"type": "object", "properties": {f"k{i}": {"type": "integer"}}})
    assert len(constrain._compiler(llama_llm.engine)["grammars"]) == 3


# --- API key, metrics labels, honest errors ----------------------------------------------------------------------

def test_api_key_guards_everything_but_health_and_the_page_shell():
    with background(create_app(LLM(ScriptedEngine()), api_key="k")) as u:
        for path in ("/metrics", "/docs", "/openapi.json", "/v1/models", "/api/tags", "/nope"):
            assert httpx.get(u + path).status_code == 401, path
        assert httpx.get(u + "/health").status_code == 200 and httpx.get(u + "/").status_code == 200
        auth = {"Authorization": "Bearer k"}
        assert httpx.get(u + "/metrics", headers=auth).status_code == 200
        assert httpx.get(u + "/openapi.json", headers=auth).status_code == 200
        for i in range(40):  # unauthorized junk paths must not grow the metrics' label set
            httpx.get(f"{u}/junk-{i}")
        metrics = httpx.get(u + "/metrics", headers=auth).text
        assert "junk" not in metrics and 'route="refused:invalid_api_key"' in metrics


@pytest.mark.parametrize("exc, status, kind", [
    (EngineUnavailableError("cannot reach http://gpu:8000"), 503, "engine_unavailable"),
    (EngineError("http://gpu:8000 answered 500"), 502, "engine_error"),
])
def test_a_failing_remote_engine_is_502_or_503(exc, status, kind):
    with background(create_app(LLM(ScriptedEngine(fail=exc)))) as u:
        r = httpx.post(u + "/v1/chat/completions", json=CHAT)
        assert r.status_code == status and error_of(r)["type"] == kind


def test_an_internal_bug_is_500_with_a_request_id_in_the_log(caplog):
    app = create_app(LLM(ScriptedEngine(fail=ZeroDivisionError("oops"))))
    with background(app) as u, caplog.at_level(logging.ERROR, logger="phikit.serve"):
        r = httpx.post(u + "/v1/chat/completions", json=CHAT)
        bad = httpx.post(u + "/v1/chat/completions", json={"messages": "no"})
    err = error_of(r)
    assert r.status_code == 500 and err["type"] == "server_error"
    rid = err["message"].split("request id ")[1].split()[0]
    assert any(rid in rec.getMessage() and rec.exc_info for rec in caplog.records)
    assert bad.status_code == 400  # a client's mistake stays a 4xx
