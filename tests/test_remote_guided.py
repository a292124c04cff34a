"""The ``openai`` backend forwards ``tool_choice`` and ``response_format``: the server constrains decoding.

Against two real servers on loopback: a second phikit server (the embedded model) and llama-cpp-python's
own OpenAI-compatible server (``python -m llama_cpp.server``), which answers 500 to
``tool_choice: "required"`` itself, so phikit names the one tool or falls back to a JSON-schema reply.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import jsonschema
import pytest

import phikit
from phikit.models import resolve

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
FACTORIAL = {
    "type": "function",
    "function": {
        "name": "math.factorial",
        "description": "The factorial of a non-negative integer.",
        "parameters": {"type": "object", "properties": {"n": {"type": "integer", "description": "the number"}},
                       "required": ["n"]},
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def phikit_url():
    from phikit.serve import create_app
    from phikit.serve.background import background

    with background(create_app(phikit.load("smollm2-135m", backend="llamacpp"))) as url:
        yield url


@pytest.fixture(scope="module")
def llamacpp_url():
    """llama-cpp-python's own server (the ``[server]`` extra) on the embedded GGUF."""
    pytest.importorskip("sse_starlette", reason="needs llama-cpp-python[server]")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", resolve("smollm2-135m").source, "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                pytest.fail("llama_cpp.server exited at start")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _calls(result) -> list[dict]:
    return [c["function"] for c in result.extra.get("tool_calls", [])]


@pytest.mark.parametrize("server", ["phikit_url", "llamacpp_url"])
def test_required_tool_choice_through_a_remote_server(server, request):
    """Two tools and ``required``: phikit's server constrains itself; llama.cpp's refuses, so phikit resends the
    request constrained to the call list's JSON schema. Either way a schema-valid call comes back."""
    remote = phikit.load(backend="openai", base_url=request.getfixturevalue(server))
    res = remote.chat("What is 12 * 7?", tools=["calculate", "get_weather"], tool_choice="required",
                      max_new_tokens=64, temperature=0)
    calls = _calls(res)
    assert len(calls) == 1 and calls[0]["name"] in ("calculate", "get_weather"), res.text
    assert res.finish_reason == "tool_calls"


@pytest.mark.parametrize("server", ["phikit_url", "llamacpp_url"])
def test_response_format_through_a_remote_server(server, request):
    remote = phikit.load(backend="openai", base_url=request.getfixturevalue(server))
    res = remote.chat("Invent a person: name and age.", response_format=RESPONSE_FORMAT, max_new_tokens=48, temperature=0)
    jsonschema.validate(json.loads(res.text), PERSON)


def test_cli_required_call_through_llamacpp_server(llamacpp_url):
    """The issue's command: llama.cpp's server cannot force ``required``; with one tool phikit names it."""
    out = subprocess.run(
        [sys.executable, "-m", "phikit", "ask", "What is 12 * 7?", "--backend", "openai", "--base-url", llamacpp_url,
         "--tools", "calculate", "--tool-choice", "required", "--json", "--max-tokens", "64", "--temperature", "0"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PHIKIT_RAISE_ERRORS": ""},
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    names = [c["function"]["name"] for c in res.get("tool_calls", [])] + [r.get("name") for r in res.get("tool_results", [])]
    assert "calculate" in names, res


def test_base_url_needs_the_openai_backend():
    out = subprocess.run([sys.executable, "-m", "phikit", "ask", "hi", "--base-url", "http://127.0.0.1:9/v1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--backend openai" in out.stderr


def test_dotted_tool_names_through_the_openai_client(phikit_url):
    """BFCL-style names with dots round-trip through the Phi format, the grammar and the API unchanged."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=phikit_url + "/v1", api_key="none")
    model = client.models.list().data[0].id
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is 5 factorial?"}], tools=[FACTORIAL],
        tool_choice="required", max_tokens=48, temperature=0,
    )
    calls = resp.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "math.factorial"
    assert isinstance(json.loads(calls[0].function.arguments)["n"], int)
