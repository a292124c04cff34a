"""Property-based API testing with schemathesis: requests generated from the server's own OpenAPI spec
(valid and invalid) must never get a 5xx, and every error must come in the documented shape.

A scripted engine stands in for the model so thousands of requests take seconds; it runs the real stream
loop (stop strings, max tokens, cancellation) and the real chat template and context checks.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from phikit.engines.local import LocalEngine  # noqa: E402

REPLY = "Paris is the capital of France. "


class ScriptedEngine(LocalEngine):
    """Characters are tokens; the reply is ``REPLY`` repeated; id 0 ends the turn after two rounds."""

    name = "scripted"
    model_name = "scripted"
    context_length = 2048
    eos_ids = {0}

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids if i > 0)

    def token_steps(self, prompt_ids, params):
        yield from (ord(c) for c in REPLY * 2)
        yield 0


def make_app():
    from phikit.llm import LLM
    from phikit.serve import create_app

    # "testserver" is the Host that in-process ASGI clients send; the default limits stay on
    return create_app(LLM(ScriptedEngine()), max_queue=4, timeout_s=300, allowed_hosts=["testserver"])


APP = make_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors_and_errors_in_the_documented_shape(case):
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        if case.path.startswith("/api/"):
            assert isinstance(body.get("error"), str) and body["error"]  # Ollama's shape
        else:
            assert set(body["error"]) == {"message", "type", "param", "code"}  # OpenAI's shape
    case.validate_response(response, checks=[schemathesis.checks.not_a_server_error,
                                             schemathesis.checks.status_code_conformance])


def test_scripted_engine_streams_through_the_real_server():
    """The stand-in really goes through the stream loop: max_tokens and stop strings apply."""
    from fastapi.testclient import TestClient

    client = TestClient(APP)
    body = {"messages": [{"role": "user", "content": "capital?"}], "max_tokens": 5, "temperature": 0}
    resp = client.post("/v1/chat/completions", json=body).json()
    assert resp["choices"][0]["message"]["content"] == REPLY[:5]
    assert resp["choices"][0]["finish_reason"] == "length"
    resp = client.post("/v1/chat/completions", json={**body, "max_tokens": 100, "stop": ["capital"]}).json()
    assert resp["choices"][0]["message"]["content"] == "Paris is the "
