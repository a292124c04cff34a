"""Ollama's API (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags``, ``/api/show``,
``/api/ps``, ``/api/version``), enough for the official ``ollama`` Python client to work unchanged.

Shapes follow ollama/ollama's docs/api.md: NDJSON lines while streaming (``stream`` defaults to true), a
final line with ``done: true``, ``done_reason`` and durations in nanoseconds; errors as ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from .. import __version__
from ..prompt import normalize_messages
from .generation import ChatJob, Part, check_params, check_pipeline, collect, sampling
from .limits import check as check_limits
from .openai_api import check_embedding_model, queued_embed, record, run_parts, started, until_disconnect
from .schemas import (
    ERROR_RESPONSES,
    OllamaChatRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaOptions,
)
from .state import APIError, ServerState, to_api_error

router = APIRouter(tags=["ollama"], responses=ERROR_RESPONSES)


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def ollama_params(options: OllamaOptions | None, fmt: Any) -> tuple[dict[str, Any], dict | None]:
    """Ollama options -> (SamplingParams fields, OpenAI-style response_format)."""
    o = options or OllamaOptions()
    max_tokens = o.num_predict if (o.num_predict or 0) > 0 else None
    params = sampling(max_tokens=max_tokens, temperature=o.temperature, top_p=o.top_p, top_k=o.top_k, seed=o.seed,
                      stop=o.stop, repetition_penalty=o.repeat_penalty)
    check_params(params)
    response_format = None
    if fmt == "json":
        response_format = {"type": "json_object"}
    elif isinstance(fmt, dict):
        response_format = {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    return params, response_format


def ollama_tool_calls(calls: list[dict]) -> list[dict]:
    """OpenAI tool calls -> Ollama's (arguments as an object, not a JSON string)."""
    out = []
    for c in calls:
        args = c["function"]["arguments"]
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except json.JSONDecodeError:
            args = {"_raw": args}
        out.append({"function": {"name": c["function"]["name"], "arguments": args}})
    return out


def final_fields(done, t0: float, reason: str) -> dict[str, Any]:
    total = int((time.perf_counter() - t0) * 1e9)
    ttft = int(done.ttft_ms * 1e6)
    return {"done": True, "done_reason": reason, "total_duration": total, "load_duration": 0,
            "prompt_eval_count": done.usage.prompt_tokens, "prompt_eval_duration": ttft,
            "eval_count": done.usage.completion_tokens, "eval_duration": max(0, total - ttft)}


async def ndjson(state: ServerState, stream: AsyncIterator[Part], line, t0: float, route: str) -> AsyncIterator[str]:
    first_at = None
    try:
        async for p in stream:
            out = line(p)
            if p.kind == "text":
                first_at = first_at or time.perf_counter()
            if p.kind == "done":
                record(state, route, p.done, t0, first_at, len(p.tool_calls))
            if out is not None:
                yield json.dumps(out, ensure_ascii=False) + "\n"
    except Exception as exc:  # noqa: BLE001 - the status line is already sent
        yield json.dumps({"error": to_api_error(exc).message}) + "\n"


@router.post("/api/chat")
async def chat(req: OllamaChatRequest, request: Request):
    """Ollama chat: NDJSON stream by default, one JSON object with ``"stream": false``."""
    state: ServerState = request.app.state.phikit
    state.check_model(req.model)
    if not req.messages:  # Ollama answers an empty chat with a load-only reply
        return {"model": req.model or state.model, "created_at": now(), "message": {"role": "assistant", "content": ""},
                "done": True, "done_reason": "load"}
    check_limits(state.limits, messages=req.messages, stop=(req.options.stop if req.options else None),
                 tools=[t.model_dump() for t in req.tools or []], schema=req.format if isinstance(req.format, dict) else None,
                 prefix="options.")
    params, fmt = ollama_params(req.options, req.format)
    messages = normalize_messages([ollama_message(m.model_dump(exclude_none=True)) for m in req.messages])
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    job = ChatJob(messages=messages, params=params, tools=tools, response_format=fmt, kb=state.pick_kb(req.phikit.kb),
                  cot=req.phikit.cot, execute_tools=req.phikit.execute_tools,
                  adapter=state.pick_adapter(req.model, req.phikit.adapter))
    check_pipeline(job)
    model, t0 = req.model or state.model, time.perf_counter()
    gen = run_parts(state, job)

    def line(p: Part) -> dict | None:
        if p.kind == "text":
            return {"model": model, "created_at": now(), "message": {"role": "assistant", "content": p.text}, "done": False}
        if p.kind == "reasoning":  # Ollama's field for a thinking model's steps
            return {"model": model, "created_at": now(), "done": False,
                    "message": {"role": "assistant", "content": "", "thinking": p.text}}
        if p.kind == "tool_calls":
            return {"model": model, "created_at": now(), "done": False,
                    "message": {"role": "assistant", "content": "", "tool_calls": ollama_tool_calls(p.tool_calls)}}
        if p.kind == "done":
            return {"model": model, "created_at": now(), "message": {"role": "assistant", "content": ""},
                    **final_fields(p.done, t0, p.done.finish_reason if p.done.finish_reason == "length" else "stop")}
        return None

    if req.stream:
        stream = await until_disconnect(request, started(gen))
        return StreamingResponse(ndjson(state, stream, line, t0, "/api/chat"), media_type="application/x-ndjson")

    async def collect_chat():
        got = await collect(gen)
        calls = got.last.tool_calls
        record(state, "/api/chat", got.last.done, t0, got.first_at, len(calls))
        out = line(got.last)
        out["message"]["content"] = got.text
        if job.cot:
            out["message"]["thinking"] = got.reasoning
        if calls:
            out["message"]["tool_calls"] = ollama_tool_calls(calls)
        return out

    return await until_disconnect(request, collect_chat())


def ollama_message(m: dict) -> dict:
    """Ollama's assistant tool calls carry arguments as objects; phikit keeps OpenAI's shape (a JSON string)."""
    if m.get("tool_calls"):
        calls = []
        for c in m["tool_calls"]:
            fn = c.get("function") or {}
            args = fn.get("arguments", {})
            calls.append({"type": "function", "function": {
                "name": fn.get("name", ""),
                "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)}})
        m["tool_calls"] = calls
    m.pop("images", None)
    m.pop("thinking", None)
    return m


@router.post("/api/generate")
async def generate(req: OllamaGenerateRequest, request: Request):
    """Ollama generate: ``prompt`` (+ ``system``) as one chat turn, or continued as is with ``raw``."""
    state: ServerState = request.app.state.phikit
    state.check_model(req.model)
    model, t0 = req.model or state.model, time.perf_counter()
    if not req.prompt:  # Ollama: an empty prompt just loads the model
        return {"model": model, "created_at": now(), "response": "", "done": True, "done_reason": "load"}
    check_limits(state.limits, stop=(req.options.stop if req.options else None),
                 schema=req.format if isinstance(req.format, dict) else None, prefix="options.")
    params, fmt = ollama_params(req.options, req.format)
    adapter = state.pick_adapter(req.model, req.phikit.adapter)
    if req.raw:
        job = ChatJob(messages=[], params=params, raw_prompt=req.prompt, adapter=adapter)
    else:
        msgs = ([{"role": "system", "content": req.system}] if req.system else []) + [{"role": "user", "content": req.prompt}]
        job = ChatJob(messages=normalize_messages(msgs), params=params, response_format=fmt, kb=state.pick_kb(req.phikit.kb),
                      adapter=adapter)
    gen = run_parts(state, job)

    def line(p: Part) -> dict | None:
        if p.kind == "text":
            return {"model": model, "created_at": now(), "response": p.text, "done": False}
        if p.kind == "done":
            return {"model": model, "created_at": now(), "response": "",
                    **final_fields(p.done, t0, "length" if p.done.finish_reason == "length" else "stop")}
        return None

    if req.stream:
        stream = await until_disconnect(request, started(gen))
        return StreamingResponse(ndjson(state, stream, line, t0, "/api/generate"), media_type="application/x-ndjson")

    async def collect_generate():
        got = await collect(gen)
        record(state, "/api/generate", got.last.done, t0, got.first_at, 0)
        return {**line(got.last), "response": got.text}

    return await until_disconnect(request, collect_generate())


@router.post("/api/embed")
async def embed(req: OllamaEmbedRequest, request: Request) -> dict:
    """Ollama embeddings with all-MiniLM-L6-v2."""
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if not texts or not all(texts):
        raise APIError(400, "input must be a non-empty string or list of non-empty strings", param="input")
    check_embedding_model(req.model)
    name, vecs, n = await queued_embed(request.app.state.phikit, texts)
    return {"model": name, "embeddings": vecs.tolist(), "prompt_eval_count": n}


def model_entry(state: ServerState) -> dict:
    engine = state.llm.engine
    return {
        "name": state.model, "model": state.model,
        "modified_at": datetime.fromtimestamp(state.started_at, UTC).isoformat().replace("+00:00", "Z"),
        "size": 0, "digest": "",
        "details": {"format": "gguf" if state.llm.backend == "llamacpp" else state.llm.backend, "family": "",
                    "families": None, "parameter_size": "", "quantization_level": ""},
        "context_length": engine.context_length,
    }


@router.get("/api/tags")
async def tags(request: Request) -> dict:
    """The served model, then each LoRA adapter it can apply as ``base:adapter``."""
    state: ServerState = request.app.state.phikit
    base = model_entry(state)
    return {"models": [base, *({**base, "name": f"{state.model}:{n}", "model": f"{state.model}:{n}"}
                               for n in sorted(state.adapters()))]}


@router.get("/api/ps")
async def ps(request: Request) -> dict:
    return {"models": [{**model_entry(request.app.state.phikit), "expires_at": None, "size_vram": 0}]}


@router.post("/api/show")
async def show(request: Request, body: dict[str, Any]) -> dict:
    state: ServerState = request.app.state.phikit
    state.check_model(body.get("model") or body.get("name"))
    entry = model_entry(state)
    return {"modelfile": "", "parameters": "", "template": "", "details": entry["details"],
            "model_info": {"general.context_length": entry["context_length"]}, "capabilities": ["completion", "tools"]}


@router.get("/api/version")
async def version() -> dict:
    return {"version": __version__}
