"""The ``openai`` backend: any OpenAI-compatible server (vLLM, Ollama, llama.cpp's server, another phikit)
does the forward pass; phikit's agent loop, tools, RAG and CoT run here on top of it.

It speaks the streaming Chat Completions API over httpx and turns SSE chunks into phikit's events, so
everything that consumes an engine stream (``LLM.chat``, the agent loop, the server, benchmarks) works
unchanged. Tool calls the server returns in OpenAI's structured form are written back as Phi-4-mini's
``functools[...]`` text, the form phikit's tool parser reads, so the same agent code handles a local and
a remote model. Closing the stream (or setting ``params.cancel``) closes the HTTP response, which stops
generation on servers that watch for disconnects (vLLM and phikit do).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from ..errors import BadRequestError, EngineError, EngineUnavailableError, PhikitError
from .base import Done, Event, SamplingParams, TextDelta, Usage

DEFAULT_CONTEXT = 4096


def _server_error(resp) -> str:
    """The ``error.message`` of an OpenAI- or Ollama-shaped error body, else the raw text."""
    try:
        body = json.loads(resp.read() if not resp.is_closed else resp.content)
    except Exception:  # noqa: BLE001 - any unreadable body: report the status alone
        return f"HTTP {resp.status_code}"
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        err = err.get("message", err)
    return str(err)[:300]


def openai_tools(tools: list[dict] | None) -> list[dict] | None:
    """Tools in OpenAI's ``{"type": "function", "function": {...}}`` shape (phikit passes plain dicts too)."""
    if not tools:
        return None
    out = []
    for t in tools:
        fn = t.get("function", t) if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not fn.get("name"):
            raise BadRequestError(f"cannot send tool {t!r} to a remote server: it has no name")
        out.append({"type": "function", "function": {k: v for k, v in fn.items() if k in ("name", "description", "parameters")}})
    return out


def as_call_text(calls: dict[int, dict]) -> str:
    """Structured tool calls -> ``functools[{"name": ..., "arguments": {...}}]`` (Phi-4-mini's form)."""
    items = []
    for _, c in sorted(calls.items()):
        try:
            args = json.loads(c["arguments"] or "{}")
        except json.JSONDecodeError:
            args = c["arguments"]
        items.append({"name": c["name"], "arguments": args})
    return "functools" + json.dumps(items, ensure_ascii=False)


class OpenAIEngine:
    """A model behind an OpenAI-compatible ``/v1`` endpoint.

    Args:
        model: the server's model id; None takes the first one ``GET /models`` lists.
        base_url: the API root, e.g. ``http://gpu-box:8000/v1`` (a missing ``/v1`` is added); defaults to
            ``$PHIKIT_BASE_URL`` or ``$OPENAI_BASE_URL``, so ``phikit ask --backend openai`` works too.
        api_key: sent as ``Authorization: Bearer``; defaults to ``$OPENAI_API_KEY``.
        timeout: seconds to wait for the server's next byte.
        context_length: the window in tokens; by default what ``/models`` reports (vLLM's
            ``max_model_len``) or 4096.

    Raises:
        BadRequestError: no ``base_url``.
        PhikitError: the server cannot be reached, refuses the key, or does not serve ``model``.
    """

    name = "openai"
    chat_template = None  # the server applies its own template
    max_concurrency = 16  # requests phikit serve sends at once; the remote server batches them (httpx is thread-safe)
    eos_ids: frozenset[int] = frozenset()
    guides_remotely = True  # tool_choice / response_format are forwarded, the server constrains decoding

    def __init__(self, model: Any = None, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 600.0, context_length: int | None = None):
        import httpx

        base_url = base_url or os.environ.get("PHIKIT_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise BadRequestError("the openai backend needs a server: pass --base-url (or set $PHIKIT_BASE_URL), "
                                  "e.g. http://127.0.0.1:8000/v1")
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers,
                                   timeout=httpx.Timeout(timeout, connect=10.0))
        cards = self._models()
        want = getattr(model, "name", model)  # a ModelRef when called through load_engine
        card = next((c for c in cards if c.get("id") == want), None) if want else (cards[0] if cards else None)
        if card is None:
            names = ", ".join(c.get("id", "?") for c in cards) or "none"
            raise PhikitError(f"{self.base_url} does not serve {want!r}; it serves: {names}")
        self.model_name = card["id"]
        self.context_length = int(context_length or card.get("max_model_len") or card.get("context_length")
                                  or DEFAULT_CONTEXT)

    def _models(self) -> list[dict]:
        import httpx

        try:
            resp = self.client.get("/models")
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(f"cannot reach {self.base_url} ({type(exc).__name__}: {exc}); is the server running?") from None
        if resp.status_code in (401, 403):
            raise PhikitError(f"{self.base_url} refused the API key ({_server_error(resp)}); pass --api-key")
        if resp.status_code != 200:
            raise PhikitError(f"{self.base_url}/models answered {resp.status_code}: {_server_error(resp)}")
        return list(resp.json().get("data") or [])

    def count_tokens(self, text: str) -> int:
        """An estimate (4 characters per token, OpenAI's rule of thumb): the tokenizer lives on the server."""
        return max(1, len(text) // 4)

    def request_body(self, messages: list[dict], params: SamplingParams, tools: list[dict] | None,
                     guided: dict | None = None) -> dict:
        """The Chat Completions body for ``messages`` and ``params``; ``guided`` adds ``tool_choice`` and
        ``response_format`` (the server constrains decoding on its side, as vLLM and llama.cpp's server do).

        Raises:
            BadRequestError: in-process logits processors, which cannot travel to a server.
        """
        if params.logits_processors:
            raise BadRequestError("in-process logits processors cannot run on the openai backend; pass "
                                  "tool_choice or response_format instead, which the server applies")
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [{k: v for k, v in m.items() if k != "tools"} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if params.top_k:  # vLLM's and phikit's extra sampling fields
            body["top_k"] = params.top_k
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
        if tools := openai_tools(tools):
            body["tools"] = tools
        guided = guided or {}
        if tools and guided.get("tool_choice"):
            body["tool_choice"] = guided["tool_choice"]
        if guided.get("response_format"):
            body["response_format"] = guided["response_format"]
        return body

    @staticmethod
    def schema_fallback(body: dict, call_schema: dict) -> dict:
        """The same request for a server that cannot force a tool call (llama.cpp's server answers 500 to
        ``tool_choice: "required"``): no tools field, the reply constrained to the call list's JSON schema."""
        out = {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "tool_calls", "schema": call_schema}}
        return out

    def generate(self, messages: Any, params: SamplingParams, *, tools: list[dict] | None = None,
                 guided: dict | None = None) -> Iterator[Event]:
        """Stream the server's reply: :class:`TextDelta` events, then one :class:`Done`.

        Args:
            guided: ``tool_choice`` / ``response_format`` / ``call_schema`` from
                :func:`phikit.tools.chat.remote_guidance`. When the server refuses a forced ``tool_choice``,
                or answers without a call, the request is sent once more constrained by ``call_schema``
                through ``response_format``, and the JSON reply is read as the calls.

        Raises:
            BadRequestError: the server rejected the request (4xx), with its message.
            PhikitError: the server failed or could not be reached.
        """
        from ..prompt import normalize_messages

        body = self.request_body(normalize_messages(messages), params, tools, guided)
        if guided and guided.get("call_schema") and "tool_choice" in body:
            return self._forced(body, self.schema_fallback(body, guided["call_schema"]), params)
        return self._stream_format(body, params)

    def _forced(self, body: dict, fallback: dict, params: SamplingParams) -> Iterator[Event]:
        """A forced tool call: if the server refuses ``tool_choice`` or answers without a call (llama.cpp's
        server does both, by version), ask again constrained to the call list's JSON schema."""
        try:
            events = list(self._stream(body, params))
            if events and events[-1].text.lstrip().startswith("functools"):
                yield from events
                return
        except PhikitError:
            pass
        yield from self._stream_format(fallback, params, as_calls=True)

    def _stream_format(self, body: dict, params: SamplingParams, as_calls: bool = False) -> Iterator[Event]:
        """:meth:`_stream`, resent once in llama-cpp-python's ``{"type": "json_object", "schema": ...}`` form
        when the server refuses OpenAI's ``json_schema`` response format before answering."""
        rf = body.get("response_format") or {}
        if rf.get("type") != "json_schema":
            yield from self._stream(body, params, as_calls)
            return
        events = self._stream(body, params, as_calls)
        try:
            first = next(events)
        except StopIteration:
            return
        except PhikitError:
            alt = {**body, "response_format": {"type": "json_object", "schema": (rf.get("json_schema") or {}).get("schema")}}
            yield from self._stream(alt, params, as_calls)
            return
        yield first
        yield from events

    def _stream(self, body: dict, params: SamplingParams, as_calls: bool = False) -> Iterator[Event]:
        """Stream one request; with ``as_calls`` the reply is a JSON call list, returned as ``functools[...]``."""
        import httpx

        started = time.perf_counter()
        texts: list[str] = []
        calls: dict[int, dict] = {}
        usage, finish, first_at, last_at, n_chunks = None, "length", None, None, 0
        try:
            with self.client.stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    msg = f"{self.base_url} answered {resp.status_code}: {_server_error(resp)}"
                    kind = BadRequestError if 400 <= resp.status_code < 500 else EngineError
                    raise (EngineUnavailableError if resp.status_code in (502, 503, 504) else kind)(msg)
                for line in resp.iter_lines():
                    if params.cancel is not None and params.cancel.is_set():
                        finish = "cancelled"
                        break
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise EngineError(f"{self.base_url} failed mid-stream: {_message(chunk['error'])}")
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            last_at = time.perf_counter()
                            first_at = first_at or last_at
                            n_chunks += 1
                            if as_calls:  # held back: the JSON call list becomes functools[...] below
                                calls.setdefault(-1, {"name": "", "arguments": ""})["arguments"] += delta["content"]
                                continue
                            texts.append(delta["content"])
                            yield TextDelta(delta["content"])
                        for tc in delta.get("tool_calls") or []:
                            first_at = first_at or time.perf_counter()
                            slot = calls.setdefault(tc.get("index", len(calls)), {"name": "", "arguments": ""})
                            fn = tc.get("function") or {}
                            if name := fn.get("name"):  # OpenAI sends it once; llama.cpp's server in every chunk
                                slot["name"] = name if name.startswith(slot["name"]) else slot["name"] + name
                            slot["arguments"] += fn.get("arguments") or ""
                        if choice.get("finish_reason"):
                            finish = "length" if choice["finish_reason"] == "length" else "stop"
        except httpx.HTTPError as exc:
            kind = EngineUnavailableError if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) else EngineError
            raise kind(f"lost the connection to {self.base_url} ({type(exc).__name__}: {exc})") from None
        except json.JSONDecodeError as exc:
            raise EngineError(f"{self.base_url} sent a stream line that is not JSON ({exc.msg})") from None
        if as_calls and -1 in calls:
            call_text = "functools" + calls.pop(-1)["arguments"].strip()
            texts.append(call_text)
            yield TextDelta(call_text)
        if calls:
            call_text = as_call_text(calls)
            texts.append(call_text)
            yield TextDelta(call_text)
        text = "".join(texts)
        u = usage or {}
        completion = int(u.get("completion_tokens") or n_chunks)
        decode_s = (last_at - first_at) if first_at and last_at else 0.0
        yield Done(
            finish_reason=finish,
            usage=Usage(int(u.get("prompt_tokens") or 0), completion),
            ttft_ms=((first_at or time.perf_counter()) - started) * 1000,
            tokens_per_s=(completion - 1) / decode_s if completion > 1 and decode_s > 0 else 0.0,
            text=text,
        )


def _message(err: Any) -> str:
    return str(err.get("message", err) if isinstance(err, dict) else err)[:300]
