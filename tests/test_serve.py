"""The server against the official ``openai`` and ``ollama`` clients, unchanged, on a live loopback server.

One uvicorn server per module (embedded SmolLM2-135M on llama.cpp); generations are kept short and greedy.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pytest

from conftest import in_thread

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG = [{"role": "user", "content": "List 300 animal names, one per line, numbered."}]


@pytest.fixture(scope="module")
def llm():
    import phikit

    return phikit.load("smollm2-135m", backend="llamacpp")


@pytest.fixture(scope="module")
def server(llm):
    from phikit.serve import create_app
    from phikit.serve.background import background

    app = create_app(llm, max_queue=4, timeout_s=120, parallel=4)  # continuous batching on (4 slots)
    with background(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=120)


def health(url: str) -> dict:
    return httpx.get(url + "/health").json()


def test_models_lists_the_served_model(client, llm):
    models = client.models.list()
    assert [m.id for m in models.data] == [llm.model]
    assert client.models.retrieve(llm.model).id == llm.model


def test_chat_matches_the_engine_called_directly(client, llm):
    """Greedy: the server adds nothing and loses nothing between the engine and the client."""
    resp = client.chat.completions.create(model=llm.model, messages=QUESTION, max_tokens=16, temperature=0)
    direct = in_thread(llm.chat, QUESTION, max_new_tokens=16, temperature=0)
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == direct.text and direct.text.strip()
    assert choice.finish_reason == direct.finish_reason
    assert resp.usage.prompt_tokens == direct.usage.prompt_tokens
    assert resp.usage.completion_tokens == direct.usage.completion_tokens
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.id.startswith("chatcmpl-") and resp.object == "chat.completion"
    assert resp.model_extra["phikit"]["backend"] == "llamacpp"


def test_streamed_chat_joins_to_the_same_text_and_reports_usage(client, llm):
    kwargs = dict(model=llm.model, messages=QUESTION, max_tokens=16, temperature=0)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # really streamed


def test_sse_ends_with_done(server):
    body = {"messages": QUESTION, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", server[0] + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    assert all(ln.startswith("data: ") for ln in lines)


def test_stop_and_seed(client, llm):
    a = client.chat.completions.create(model=llm.model, messages=QUESTION, max_tokens=12, temperature=1.0, seed=7)
    b = client.chat.completions.create(model=llm.model, messages=QUESTION, max_tokens=12, temperature=1.0, seed=7)
    assert a.choices[0].message.content == b.choices[0].message.content
    full = client.chat.completions.create(model=llm.model, messages=QUESTION, max_tokens=16, temperature=0)
    text = full.choices[0].message.content
    word = text.split()[2]
    cut = client.chat.completions.create(model=llm.model, messages=QUESTION, max_tokens=16, temperature=0, stop=[word])
    assert cut.choices[0].message.content == text[: text.index(word)]
    assert cut.choices[0].finish_reason == "stop"


def test_completions_continue_raw_text(client, llm):
    resp = client.completions.create(model=llm.model, prompt="The first three letters of the alphabet are",
                                     max_tokens=8, temperature=0)
    assert resp.choices[0].text.strip()
    assert resp.usage.completion_tokens == 8 or resp.choices[0].finish_reason == "stop"


def test_embeddings(client):
    resp = client.embeddings.create(model="all-MiniLM-L6-v2",
                                    input=["a cat sits on the mat", "a kitten rests on a rug", "stock market crash"])
    vecs = np.array([d.embedding for d in resp.data])
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-3)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert resp.usage.prompt_tokens > 0


# --- errors: OpenAI's shape, 4xx for client mistakes -------------------------------------------------------


def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ("{not json", 400, "not valid JSON"),
        ({"messages": []}, 400, "messages is empty"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
        ({"messages": QUESTION, "temperature": -1}, 400, "temperature"),
        ({"messages": QUESTION, "top_p": 0}, 400, "top_p"),
        ({"messages": QUESTION, "max_tokens": 0}, 400, "max_tokens"),
        ({"messages": QUESTION, "n": 2}, 400, "n must be 1"),
        ({"messages": "hello"}, 400, "messages"),
        ({"messages": QUESTION, "tool_choice": "required"}, 400, "tool"),
        ({"messages": QUESTION, "response_format": {"type": "xml"}}, 400, "response_format"),
        ({"messages": QUESTION, "phikit": {"kb": True}}, 400, "knowledge base"),
        ({"model": "gpt-5", "messages": QUESTION}, 404, "does not exist"),
    ],
)
def test_bad_requests_get_4xx_in_openai_shape(server, body, status, needle):
    url = server[0] + "/v1/chat/completions"
    resp = httpx.post(url, content=body, headers={"content-type": "application/json"}) if isinstance(body, str) \
        else httpx.post(url, json=body)
    assert resp.status_code == status
    assert needle in error_of(resp)["message"]


def test_prompt_over_the_context_window_says_the_token_counts(client, llm):
    words = "word " * (llm.engine.context_length + 100)
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=llm.model, messages=[{"role": "user", "content": words}], max_tokens=4)
    err = exc.value.body
    assert err["code"] == "context_length_exceeded"
    assert str(llm.engine.context_length) in err["message"] and "tokens" in err["message"]


def test_unknown_model_is_openai_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=QUESTION, max_tokens=4)


def test_unknown_route_is_404_in_openai_shape(server):
    resp = httpx.get(server[0] + "/v1/nothing-here")
    assert resp.status_code == 404 and error_of(resp)["type"] == "not_found_error"


def test_api_key_is_required_when_set(llm):
    from phikit.serve import create_app
    from phikit.serve.background import background

    with background(create_app(llm, api_key="s3cret")) as url:
        assert httpx.get(url + "/health").status_code == 200  # liveness stays open
        denied = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            denied.models.list()
        assert error_of(httpx.get(url + "/v1/models"))["code"] == "invalid_api_key"
        allowed = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert allowed.models.list().data
        with pytest.raises(ollama.ResponseError) as exc:
            ollama.Client(host=url).list()
        assert exc.value.status_code == 401
        assert ollama.Client(host=url, headers={"Authorization": "Bearer s3cret"}).list().models


# --- load: queue bound, cancellation, timeout --------------------------------------------------------------


def test_disconnect_cancels_generation(server, client, llm):
    """The client reads three chunks and hangs up; the server's own counters show the generation stopped."""
    url = server[0]
    before = health(url)["generations"]["cancelled"]
    stream = client.chat.completions.create(model=llm.model, messages=LONG, max_tokens=2000, temperature=0, stream=True)
    received = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
            if received == 3:
                break
    stream.close()
    deadline = time.monotonic() + 60
    while health(url)["generations"]["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    gens = health(url)["generations"]
    assert gens["cancelled"] == before + 1
    # Stopped right after the hang-up, not at max_tokens (a few tokens may be in flight in socket buffers).
    assert 3 <= gens["last_cancelled_tokens"] < 40
    assert health(url)["queue"]["running"] == 0
    assert 'phikit_cancelled_generations' in httpx.get(url + "/metrics").text


def test_full_queue_gets_429_with_retry_after(llm):
    from phikit.serve import create_app
    from phikit.serve.background import background

    app = create_app(llm, max_queue=0, parallel=2)  # two slots decoding, none waiting
    with background(app) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        streams = [c.chat.completions.create(model=llm.model, messages=LONG, max_tokens=2000, stream=True)
                   for _ in range(2)]
        for stream in streams:
            next(iter(stream))  # both slots are now busy
        assert health(url)["slots"]["active"] >= 2
        resp = httpx.post(url + "/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 2})
        assert resp.status_code == 429
        assert int(resp.headers["retry-after"]) >= 1
        assert error_of(resp)["code"] == "queue_full"
        for stream in streams:
            stream.close()
        deadline = time.monotonic() + 60
        while health(url)["queue"]["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.chat.completions.create(model=llm.model, messages=QUESTION, max_tokens=2).choices


def test_concurrent_requests_are_queued_and_all_answered(client, llm):
    results: list[str] = []

    def one():
        r = client.chat.completions.create(model=llm.model, messages=QUESTION, max_tokens=6, temperature=0)
        results.append(r.choices[0].message.content)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 3 and len(set(results)) == 1  # one shared model, greedy, no cross-talk


def test_timeout_is_504_and_stops_generation(llm):
    from phikit.serve import create_app
    from phikit.serve.background import background

    app = create_app(llm, timeout_s=0.3)
    with background(app) as url:
        resp = httpx.post(url + "/v1/chat/completions", json={"messages": LONG, "max_tokens": 2000}, timeout=60)
        assert resp.status_code == 504 and error_of(resp)["type"] == "timeout"
        deadline = time.monotonic() + 30
        while health(url)["queue"]["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health(url)["generations"]["timed_out"] == 1


def test_metrics_count_requests_tokens_and_ttft(server, client, llm):
    client.chat.completions.create(model=llm.model, messages=QUESTION, max_tokens=4)
    text = httpx.get(server[0] + "/metrics").text
    assert 'phikit_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'phikit_ttft_seconds_count{route="/v1/chat/completions"}' in text
    tokens = next(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("phikit_completion_tokens_total"))
    assert tokens >= 4
    assert 'phikit_errors_total{type="invalid_request_error"}' in text or "phikit_errors" in text


# --- Ollama's API, with the official client -----------------------------------------------------------------


@pytest.fixture(scope="module")
def oclient(server):
    return ollama.Client(host=server[0])


def test_ollama_chat_matches_openai(oclient, client, llm):
    opts = {"temperature": 0, "num_predict": 16}
    resp = oclient.chat(model=llm.model, messages=QUESTION, options=opts)
    oa = client.chat.completions.create(model=llm.model, messages=QUESTION, max_tokens=16, temperature=0)
    assert resp.message.content == oa.choices[0].message.content
    assert resp.done and resp.done_reason in ("stop", "length")
    assert resp.eval_count == oa.usage.completion_tokens and resp.prompt_eval_count == oa.usage.prompt_tokens
    parts = list(oclient.chat(model=llm.model, messages=QUESTION, options=opts, stream=True))
    assert "".join(p.message.content for p in parts) == resp.message.content
    assert parts[-1].done and not any(p.done for p in parts[:-1])


def test_ollama_generate_list_version_embed(oclient, llm):
    gen = oclient.generate(model=llm.model, prompt="Name a color.", options={"num_predict": 8, "temperature": 0})
    assert gen.response.strip() and gen.done
    streamed = "".join(p.response for p in oclient.generate(model=llm.model, prompt="Name a color.",
                                                            options={"num_predict": 8, "temperature": 0}, stream=True))
    assert streamed == gen.response
    assert [m.model for m in oclient.list().models] == [llm.model]
    assert httpx.get(str(oclient._client.base_url) + "/api/version").json()["version"]
    emb = oclient.embed(model="all-MiniLM-L6-v2", input=["hello", "world"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 384


def test_ollama_errors(oclient):
    with pytest.raises(ollama.ResponseError) as exc:
        oclient.chat(model="llama3", messages=QUESTION)
    assert exc.value.status_code == 404 and "does not exist" in exc.value.error
    with pytest.raises(ollama.ResponseError) as exc:
        oclient.chat(model="smollm2-135m", messages=QUESTION, options={"temperature": -1})
    assert exc.value.status_code == 400


# --- tools and structured output ----------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_tool_calls_come_back_unexecuted_in_openai_shape(client, llm):
    resp = client.chat.completions.create(model=llm.model, messages=ASK_WEATHER, tools=[WEATHER],
                                          tool_choice="required", max_tokens=60, temperature=0)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str)  # valid against the schema: decoding was constrained
    assert not choice.message.content


def test_streamed_tool_calls(client, llm):
    named = {"type": "function", "function": {"name": "get_weather"}}
    chunks = list(client.chat.completions.create(model=llm.model, messages=ASK_WEATHER, tools=[WEATHER],
                                                 tool_choice=named, max_tokens=60, temperature=0, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather" and deltas[0].index == 0
    json.loads("".join(d.function.arguments or "" for d in deltas if d.index == 0))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_json_schema_response_format(client, llm):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    resp = client.chat.completions.create(
        model=llm.model, messages=[{"role": "user", "content": "Invent a person. Reply in JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        max_tokens=60, temperature=0)
    jsonschema.validate(json.loads(resp.choices[0].message.content), schema)


def test_execute_tools_runs_built_ins_and_reports_calls_and_results(server, llm):
    from phikit.tools.builtins import calculate_value

    body = {"messages": [{"role": "user", "content": "What is 17 * 23? Use the calculator."}], "max_tokens": 60,
            "temperature": 0, "tools": [{"type": "function", "function": {"name": "calculate"}}],
            "tool_choice": "required", "phikit": {"execute_tools": True}}
    resp = httpx.post(server[0] + "/v1/chat/completions", json=body, timeout=120).json()
    events = resp["phikit"]["events"]
    call = next(e for e in events if e["type"] == "ToolCallEvent")["call"]
    result = next(e for e in events if e["type"] == "ToolResult")
    assert call["function"]["name"] == "calculate" and result["name"] == "calculate"
    if result["status"] == "ok":  # the tool really ran on the model's own arguments
        expr = json.loads(call["function"]["arguments"])["expression"]
        assert json.loads(result["content"]) == calculate_value(expr)
    assert resp["choices"][0]["finish_reason"] in ("stop", "length")
    bad = httpx.post(server[0] + "/v1/chat/completions",
                     json={**body, "tools": [{"type": "function", "function": {"name": "rm_rf"}}]})
    assert bad.status_code == 400 and "built-in" in error_of(bad)["message"]


def test_ollama_format_schema(oclient, llm):
    schema = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
    resp = oclient.chat(model=llm.model, messages=[{"role": "user", "content": "Name a color in JSON."}],
                        format=schema, options={"num_predict": 40, "temperature": 0})
    assert isinstance(json.loads(resp.message.content)["color"], str)
