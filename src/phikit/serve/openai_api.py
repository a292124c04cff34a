"""OpenAI's API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``.

Shapes follow OpenAI's API reference (and vLLM's server where OpenAI is silent): SSE chunks
``chat.completion.chunk`` ending ``data: [DONE]``, a usage-only chunk with ``stream_options.include_usage``,
tool calls unexecuted with ``finish_reason: "tool_calls"``. phikit's extras ride under ``"phikit"``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..prompt import normalize_messages
from .generation import (
    ChatJob,
    Part,
    check_params,
    check_pipeline,
    collect,
    merge_deltas,
    new_id,
    parts,
    sampling,
    start_job,
)
from .limits import check as check_limits
from .schemas import (
    ERROR_RESPONSES,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    SamplingFields,
)
from .state import APIError, ServerState, error_body, to_api_error

router = APIRouter(tags=["openai"], responses=ERROR_RESPONSES)


def state_of(request: Request) -> ServerState:
    return request.app.state.phikit


def check_unsupported(req: SamplingFields) -> None:
    """400 for OpenAI options this server cannot honour, instead of silently ignoring them."""
    if req.n != 1:
        raise APIError(400, "n must be 1: this server returns one choice per request", param="n")
    if req.logprobs:
        raise APIError(400, "logprobs are not supported by this server", param="logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            raise APIError(400, f"{name} is not supported; use \"phikit\": {{\"repetition_penalty\": 1.1}}",
                           param=name)


def request_params(req: SamplingFields) -> dict[str, Any]:
    params = sampling(
        max_tokens=req.max_completion_tokens or req.max_tokens, temperature=req.temperature, top_p=req.top_p,
        top_k=req.phikit.top_k, seed=req.seed, stop=req.stop, repetition_penalty=req.phikit.repetition_penalty,
    )
    check_params(params)
    return params


def chat_job(state: ServerState, req: ChatCompletionRequest) -> ChatJob:
    """Validate a chat request and turn it into a job.

    Raises:
        APIError: 400/404 naming the field at fault.
    """
    state.check_model(req.model)
    check_unsupported(req)
    spec = (req.response_format or {}).get("json_schema")
    check_limits(state.limits, messages=req.messages, stop=req.stop, tools=[t.model_dump() for t in req.tools or []],
                 schema=spec.get("schema") if isinstance(spec, dict) else None)
    raw = [m.model_dump(exclude_none=True) for m in req.messages]
    for m in raw:
        if m.get("role") == "developer":  # OpenAI's newer name for the system turn
            m["role"] = "system"
    messages = normalize_messages(raw)
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    if isinstance(req.tool_choice, dict):
        name = (req.tool_choice.get("function") or {}).get("name")
        if not name or not any(t["function"]["name"] == name for t in tools or []):
            raise APIError(400, f"tool_choice names the function {name!r}, which is not in tools", param="tool_choice")
    elif req.tool_choice in ("auto", "required") and not tools and not req.phikit.execute_tools:
        raise APIError(400, f"tool_choice is {req.tool_choice!r} but no tools were given", param="tool_choice")
    fmt = req.response_format
    if fmt is not None:
        kind = fmt.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise APIError(400, "response_format.type must be text, json_object or json_schema", param="response_format")
        if kind == "json_schema" and not isinstance((fmt.get("json_schema") or {}).get("schema"), dict):
            raise APIError(400, "response_format.json_schema.schema must be a JSON Schema object",
                           param="response_format")
        if kind == "text":
            fmt = None
    job = ChatJob(messages=messages, params=request_params(req), tools=tools, tool_choice=req.tool_choice,
                  response_format=fmt, cot=req.phikit.cot, kb=state.pick_kb(req.phikit.kb),
                  execute_tools=req.phikit.execute_tools, adapter=state.pick_adapter(req.model, req.phikit.adapter))
    check_pipeline(job)
    return job


async def run_parts(state: ServerState, job: ChatJob) -> AsyncIterator[Part]:
    """Admit the job (429 past the queue) and stream its parts."""
    state.worker.admit()
    async for part in parts(state.worker.stream(start_job(state.llm, job), merge=merge_deltas), job):
        yield part


async def until_disconnect(request: Request, work: asyncio.Future) -> Any:
    """Await ``work``, cancelling it (and so the generation) if the client goes away first."""

    async def watch():
        while not await request.is_disconnected():
            await asyncio.sleep(0.1)

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise APIError(499, "the client closed the connection", "cancelled")
    return task.result()


def record(state: ServerState, route: str, done, t0: float, first_at: float | None, tool_calls: int) -> None:
    m = state.metrics
    m.prompt_tokens.inc(done.usage.prompt_tokens)
    m.completion_tokens.inc(done.usage.completion_tokens)
    m.finish.labels(done.finish_reason).inc()
    m.tool_calls.inc(tool_calls)
    if first_at is not None:
        m.ttft.labels(route).observe(first_at - t0)


def usage_dict(done) -> dict[str, int]:
    u = done.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def phikit_extras(state: ServerState, done, data: dict) -> dict[str, Any]:
    return {"backend": state.llm.backend, "ttft_ms": round(done.ttft_ms, 1),
            "tokens_per_s": round(done.tokens_per_s, 1), **data}


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


async def stream_with_first(first: Part, rest: AsyncIterator[Part]) -> AsyncIterator[Part]:
    yield first
    async for p in rest:
        yield p


async def started(gen: AsyncIterator[Part]) -> AsyncIterator[Part]:
    """Wait for the first part before answering, so request errors are a 4xx rather than a broken stream."""
    first = await gen.__anext__()
    return stream_with_first(first, gen)


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    """The model this server holds (``max_model_len`` is its context window, as vLLM reports), then each LoRA
    adapter it can apply as ``base:adapter`` with ``parent`` = the base (as vLLM lists LoRA modules)."""
    state = state_of(request)
    return {"object": "list", "data": [model_card(state), *(model_card(state, name, path)
                                                            for name, path in sorted(state.adapters().items()))]}


def model_card(state: ServerState, adapter: str | None = None, path: str | None = None) -> dict:
    card = {"id": state.model, "object": "model", "created": int(state.started_at), "owned_by": "phikit",
            "root": state.model, "parent": None, "max_model_len": state.llm.engine.context_length,
            "backend": state.llm.backend}
    if adapter:
        from ..adapters import read_registry

        card.update(id=f"{state.model}:{adapter}", root=path, parent=state.model,
                    phikit={"adapter": adapter, "enabled": read_registry()["enabled"] == adapter})
    return card


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict:
    state = state_of(request)
    state.check_model(model_id)
    name = state.pick_adapter(model_id, None)
    return model_card(state, name, state.adapters()[name]) if name and name != "none" else model_card(state)


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatCompletionRequest, request: Request):
    """Chat, streamed as SSE or as one JSON body. Tool calls come back unexecuted, OpenAI-shaped."""
    state = state_of(request)
    job = chat_job(state, req)
    t0 = time.perf_counter()
    rid, created, model = new_id("chatcmpl"), int(time.time()), req.model or state.model  # echoed, as vLLM does
    gen = run_parts(state, job)
    if not req.stream:
        return await until_disconnect(request, collect_chat(state, gen, rid, created, model, job, t0))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    stream = await until_disconnect(request, started(gen))
    return StreamingResponse(chat_sse(state, stream, rid, created, model, include_usage, t0),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def collect_chat(state, gen, rid, created, model, job: ChatJob, t0) -> dict:
    got = await collect(gen)
    done, data, finish, calls = got.last.done, got.last.data, got.last.finish_reason, got.last.tool_calls
    first_at = got.first_at or (t0 + done.ttft_ms / 1000)
    record(state, "/v1/chat/completions", done, t0, first_at, len(calls))
    content = got.text
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else ""), "refusal": None}
    if job.cot:  # the steps apart from the answer, as vLLM's reasoning parsers and DeepSeek's API send them
        message["reasoning_content"] = got.reasoning
    if calls:
        message["tool_calls"] = calls
    return {
        "id": rid, "object": "chat.completion", "created": created, "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage_dict(done),
        "phikit": phikit_extras(state, done, data),
    }


async def chat_sse(state, stream, rid, created, model, include_usage: bool, t0) -> AsyncIterator[str]:
    def chunk(delta: dict | None, finish: str | None = None, **extra) -> dict:
        c = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
             "system_fingerprint": None,
             "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            c["usage"] = None
        c.update(extra)
        return c

    first_at = None
    try:
        yield sse(chunk({"role": "assistant", "content": ""}))
        async for p in stream:
            if p.kind == "text":
                first_at = first_at or time.perf_counter()
                yield sse(chunk({"content": p.text}))
            elif p.kind == "reasoning":
                first_at = first_at or time.perf_counter()
                yield sse(chunk({"reasoning_content": p.text}))
            elif p.kind == "tool_calls":
                for i, call in enumerate(p.tool_calls):
                    yield sse(chunk({"tool_calls": [{"index": i, **call}]}))
            elif p.kind == "event":
                yield sse(chunk(None, phikit={"event": p.data}))
            elif p.kind == "done":
                done = p.done
                record(state, "/v1/chat/completions", done, t0, first_at or t0 + done.ttft_ms / 1000, len(p.tool_calls))
                yield sse(chunk({}, p.finish_reason, phikit=phikit_extras(state, done, p.data)))
                if include_usage:
                    yield sse({**chunk(None), "usage": usage_dict(done)})
    except Exception as exc:  # noqa: BLE001 - after the 200 went out, errors travel in the stream (as OpenAI does)
        err = to_api_error(exc)
        state.metrics.errors.labels(err.type).inc()
        yield sse(error_body(err.status, err.message, err.type, err.param, err.code))
    yield sse("[DONE]")


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request):
    """Legacy text completion: the prompt is continued as is, without a chat template."""
    state = state_of(request)
    state.check_model(req.model)
    check_unsupported(req)
    check_limits(state.limits, stop=req.stop)
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if len(prompts) != 1:
        raise APIError(400, "prompt must be one string (batches of prompts are not supported)", param="prompt")
    if req.suffix:
        raise APIError(400, "suffix (fill-in-the-middle) is not supported", param="suffix")
    prompt = prompts[0]
    if not prompt.strip():
        raise APIError(400, "prompt is empty: give some text to continue", param="prompt")
    job = ChatJob(messages=[], params=request_params(req), raw_prompt=prompt,
                  adapter=state.pick_adapter(req.model, req.phikit.adapter))
    rid, created, model, t0 = new_id("cmpl"), int(time.time()), req.model or state.model, time.perf_counter()
    gen = run_parts(state, job)

    def body(text: str, finish: str | None) -> dict:
        return {"id": rid, "object": "text_completion", "created": created, "model": model, "system_fingerprint": None,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

    if not req.stream:
        async def collect_completion():
            got = await collect(gen)
            record(state, "/v1/completions", got.last.done, t0, got.first_at, 0)
            res = body((prompt if req.echo else "") + got.text, got.last.finish_reason)
            return {**res, "usage": usage_dict(got.last.done)}

        return await until_disconnect(request, collect_completion())

    stream = await until_disconnect(request, started(gen))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    async def events():
        first_at = None
        try:
            if req.echo:
                yield sse(body(prompt, None))
            async for p in stream:
                if p.kind == "text":
                    first_at = first_at or time.perf_counter()
                    yield sse(body(p.text, None))
                elif p.kind == "done":
                    record(state, "/v1/completions", p.done, t0, first_at, 0)
                    yield sse(body("", p.finish_reason))
                    if include_usage:
                        yield sse({**body("", None), "choices": [], "usage": usage_dict(p.done)})
        except Exception as exc:  # noqa: BLE001 - the status line is already sent
            err = to_api_error(exc)
            yield sse(error_body(err.status, err.message, err.type, err.param, err.code))
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def embed_texts(texts: list[str]):
    """Embed with phikit's embedder (all-MiniLM-L6-v2), off the event loop's thread."""
    from ..rag.embed import load_embedder

    emb = load_embedder()
    return emb.name, emb.embed(texts), sum(len(emb.tokenizer().offsets(t)) for t in texts)


async def queued_embed(state: ServerState, texts: list[str]):
    """Embed through the model worker's queue, like a generation: 429 past ``max_queue``, timed out, one at a
    time with generations (both share the CPU)."""
    check_limits(state.limits, inputs=texts)
    state.worker.admit()
    job = state.worker.stream(lambda cancel: iter([embed_texts(texts)]))
    try:
        return await job.__anext__()
    finally:
        await job.aclose()


def check_embedding_model(model: str | None) -> None:
    """Raises APIError 404 unless ``model`` is empty or names the server's embedding model."""
    from ..rag.embed import DEFAULT_EMBEDDING_MODEL

    name = DEFAULT_EMBEDDING_MODEL
    if model and model.split("/")[-1] != name:
        raise APIError(404, f"the embedding model {model!r} does not exist on this server; it serves {name!r}",
                       param="model", code="model_not_found")


@router.post("/v1/embeddings")
async def embeddings(req: EmbeddingRequest, request: Request) -> dict:
    """Sentence embeddings from all-MiniLM-L6-v2 (384 dimensions, unit length)."""
    import base64

    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if not texts or any(not isinstance(t, str) or not t for t in texts):
        raise APIError(400, "input must be a non-empty string or a list of non-empty strings", param="input")
    check_embedding_model(req.model)
    name, vecs, n_tokens = await queued_embed(state_of(request), texts)
    if req.dimensions is not None and req.dimensions != vecs.shape[1]:
        raise APIError(400, f"dimensions must be {vecs.shape[1]} for {name} (it cannot be shortened)",
                       param="dimensions")
    data = []
    for i, v in enumerate(vecs):
        emb = base64.b64encode(v.astype("<f4").tobytes()).decode() if req.encoding_format == "base64" else v.tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": name,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
