"""The app factory: one model, the OpenAI and Ollama routes, errors in OpenAI's shape, metrics, the web page.

``create_app(llm)`` is what ``phikit serve`` runs under uvicorn and what the tests start on a free port.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import PhikitError
from .access import AccessAndMetrics, AccessPolicy
from .generation import builtin_tool_names
from .limits import LimitError, ServerLimits
from .metrics import Metrics, slot_stats
from .state import APIError, ServerState, error_response, to_api_error  # noqa: F401 - the routes' names, re-exported
from .worker import GenerationTimeout, ModelWorker, QueueFullError

log = logging.getLogger("phikit.serve")
STATIC = Path(__file__).parent / "static"


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request body", None
    e = errs[0]
    loc = [str(p) for p in e.get("loc", ()) if p != "body"]
    if e.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({e.get('ctx', {}).get('error', 'parse error')})", None
    param = ".".join(loc) or None
    where = f"{param}: " if param else ""
    return f"{where}{e.get('msg', 'invalid value')}" + (f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""), param


def create_app(
    llm,
    *,
    api_key: str | None = None,
    kbs: dict[str, Any] | None = None,
    max_queue: int = 16,
    timeout_s: float = 600.0,
    host: str = "127.0.0.1",
    allowed_hosts: tuple[str, ...] | list[str] = (),
    allow_origins: tuple[str, ...] | list[str] = (),
    limits: ServerLimits | None = None,
    parallel: int | None = None,
) -> FastAPI:
    """Build the server around one loaded model.

    Args:
        llm: a :class:`phikit.LLM` (any backend, the remote ``openai`` one included).
        api_key: when set, every route but ``/health`` and the page's own files needs
            ``Authorization: Bearer <api_key>`` (``/metrics``, ``/docs`` and ``/openapi.json`` included).
        kbs: knowledge bases by name; the first is the default for every chat request.
        max_queue: requests that may wait while one generates; past that, 429 with ``Retry-After``.
        timeout_s: per-request wall-clock limit in seconds, queueing included (504 past it).
        host: the address the server is bound to (a ``Host`` header naming it is accepted).
        allowed_hosts: more ``Host`` names to accept (``*``: any); others get 403 (DNS rebinding).
        allow_origins: browser origins besides the server's own that may call it (``*``: any); others get 403.
        limits: request size and count limits (:class:`~phikit.serve.limits.ServerLimits`).
        parallel: requests generated at once. On llama.cpp and the fast GPU backend, more than 1 turns on
            continuous batching (slots decoded together, prefix reuse: :mod:`phikit.engines.batching`); None
            takes the machine's default there (llama.cpp: :func:`~phikit.engines.llamacpp_slots.default_slots`;
            fast: as many as fit in free GPU memory), 1 runs one generation at a time. Other in-process
            backends run one at a time; a remote engine its own concurrency.

    Returns:
        A FastAPI app; run it with ``uvicorn.run(app, host=..., port=...)``.
    """
    from . import ollama_api, openai_api

    app = FastAPI(
        title="phikit",
        version=__version__,
        summary="OpenAI- and Ollama-compatible server for Phi-4-mini and other small chat models.",
        docs_url="/docs",
    )
    worker = _worker(llm.engine, parallel, max_queue=max_queue, timeout_s=timeout_s)
    kbs = dict(kbs or {})
    access = AccessPolicy(host, tuple(allowed_hosts), tuple(allow_origins))
    app.state.phikit = ServerState(llm=llm, worker=worker, metrics=Metrics(worker, llm.engine), api_key=api_key, kbs=kbs,
                                   default_kb=next(iter(kbs), None), access=access, limits=limits or ServerLimits())

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(request, APIError(400, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        code = "request_too_large" if exc.status_code == 413 else None
        return error_response(request, APIError(exc.status_code, message, kind, code=code,
                                                headers=dict(exc.headers or {})))

    async def _mapped(request: Request, exc: Exception):
        return error_response(request, to_api_error(exc))

    for kind in (PhikitError, LimitError, QueueFullError, GenerationTimeout, Exception):
        app.add_exception_handler(kind, _mapped)

    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)

    @app.get("/health", tags=["server"])
    async def health() -> dict:
        """Liveness plus what is loaded and how busy it is: queue, slots, batch size, prefix-cache hits."""
        s = app.state.phikit
        return {
            "status": "ok",
            "model": s.model,
            "backend": s.llm.backend,
            "batching": worker.concurrency > 1,  # slots decoded together (llama.cpp) or a remote engine's server
            "concurrency": worker.concurrency,
            "slots": slot_stats(s.llm.engine),
            "queue": {"running": worker.running, "waiting": worker.waiting, "max_waiting": worker.max_queue},
            "generations": {"started": worker.stats.started, "finished": worker.stats.finished,
                            "cancelled": worker.stats.cancelled, "last_cancelled_tokens": worker.stats.last_cancelled_tokens,
                            "timed_out": worker.stats.timed_out, "rejected": worker.stats.rejected},
            "knowledge_bases": list(s.kbs),
            "tools": builtin_tool_names(),
            "uptime_s": round(time.time() - s.started_at, 1),
        }

    @app.get("/metrics", tags=["server"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(app.state.phikit.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if access.allow_origins:  # pages at an allowed origin may also read the answers
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(access.allow_origins), allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(AccessAndMetrics)
    return app


def _worker(engine, parallel: int | None, **opts) -> ModelWorker:
    """The worker for ``engine``: batched slots where the engine has them (llama.cpp), else one at a time
    per model (or a remote engine's own concurrency).

    Raises:
        BadRequestError: ``parallel`` < 1.
    """
    from ..errors import BadRequestError

    if parallel is not None and (not isinstance(parallel, int) or parallel < 1):
        raise BadRequestError(f"--parallel must be at least 1, got {parallel!r}")
    if parallel != 1 and hasattr(engine, "enable_batching"):
        slots = engine.enable_batching(parallel)
        # the batcher is thread-safe and queues past its slots: this server's own limit, not the model's
        return ModelWorker(concurrency=min(parallel or slots, slots), owner=None, **opts)
    return ModelWorker(concurrency=getattr(engine, "max_concurrency", 1), owner=engine, **opts)
