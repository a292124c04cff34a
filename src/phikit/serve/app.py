"""The app factory: one model, the OpenAI and Ollama routes, errors in OpenAI's shape, metrics, the web page.

``create_app(llm)`` is what ``phikit serve`` runs under uvicorn and what the tests start on a free port.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import BadRequestError, PhikitError
from .generation import NotSupportedError, builtin_tool_names
from .metrics import Metrics
from .worker import GenerationTimeout, ModelWorker, QueueFullError

log = logging.getLogger("phikit.serve")
STATIC = Path(__file__).parent / "static"
PROTECTED = ("/v1/", "/api/")  # paths that need the key when --api-key is set (the page and /health do not)


class APIError(Exception):
    """An error response: HTTP status plus OpenAI's ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}


@dataclass
class ServerState:
    """Everything a route needs: the shared model, its worker, metrics, access and knowledge bases.

    Attributes:
        kbs: knowledge bases the server was started with, by name (folder name) -> what ``LLM.chat(kb=)``
            takes. Requests may only choose among these, never pass a path of their own.
        default_kb: used by every chat request unless the request says ``"phikit": {"kb": false}``.
    """

    llm: Any
    worker: ModelWorker
    metrics: Metrics
    api_key: str | None = None
    kbs: dict[str, Any] = field(default_factory=dict)
    default_kb: str | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def model(self) -> str:
        return self.llm.model

    def check_model(self, name: str | None) -> None:
        """Accept an empty name, the served model's name, or it with an Ollama ``:tag``.

        Raises:
            APIError: 404 for any other model.
        """
        if name is not None and not isinstance(name, str):
            raise APIError(400, "model must be a string", param="model")
        if not name or name.split(":")[0] in (self.model, "default") or name == self.model:
            return
        raise APIError(404, f"the model {name!r} does not exist on this server; it serves {self.model!r} "
                            "(GET /v1/models lists it)", param="model", code="model_not_found")

    def pick_kb(self, choice: bool | str | None) -> Any:
        """The knowledge base a request uses (None for none).

        Raises:
            APIError: 400 for a knowledge base the server was not started with.
        """
        if choice is None:
            choice = bool(self.default_kb)
        if choice is False:
            return None
        if not self.kbs:
            raise APIError(400, "this server has no knowledge base; start it with `phikit serve --kb DIR`",
                           param="phikit.kb")
        if choice is True:
            return self.kbs[self.default_kb or next(iter(self.kbs))]
        for name, kb in self.kbs.items():
            if choice in (name, str(kb)):
                return kb
        raise APIError(400, f"unknown knowledge base {choice!r}; this server has {', '.join(self.kbs)}",
                       param="phikit.kb")


def error_body(status: int, message: str, type: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(request: Request, exc: APIError) -> JSONResponse:
    """OpenAI's error shape, or Ollama's ``{"error": "..."}`` on ``/api/*`` (what the ollama client reads)."""
    metrics: Metrics = request.app.state.phikit.metrics
    metrics.errors.labels(exc.type).inc()
    if request.url.path.startswith("/api/"):
        body: dict = {"error": exc.message}
    else:
        body = error_body(exc.status, exc.message, exc.type, exc.param, exc.code)
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def to_api_error(exc: BaseException) -> APIError:
    """Map any exception from a request to the response it deserves; unknown ones are the server's fault."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFullError):
        return APIError(429, str(exc), "rate_limit_exceeded", code="queue_full",
                        headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, GenerationTimeout):
        return APIError(504, str(exc), "timeout", code="timeout")
    if isinstance(exc, NotSupportedError):
        return APIError(501, str(exc), "not_implemented", code="not_implemented")
    if isinstance(exc, (BadRequestError, ValueError)):
        msg = str(exc)
        code = "context_length_exceeded" if "context window" in msg else None
        return APIError(400, msg, code=code)
    if isinstance(exc, PhikitError):
        return APIError(400, str(exc))
    log.exception("internal error", exc_info=exc)
    return APIError(500, f"internal server error ({type(exc).__name__}); see the server log", "server_error")


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


def force_json(scope: dict) -> dict:
    """Treat API request bodies as JSON whatever their Content-Type: Ollama's docs use ``curl -d '{...}'``,
    which sends ``application/x-www-form-urlencoded``, and Ollama accepts it."""
    headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


class AccessAndMetrics:
    """ASGI middleware: Bearer-key check on the API paths, and per-route counts and latency to the last byte."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state: ServerState = scope["app"].state.phikit
        path = scope["path"]
        if state.api_key and path.startswith(PROTECTED):
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"").decode("latin-1")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), state.api_key.encode()):
                msg = "missing or wrong API key: send the header 'Authorization: Bearer <key>'"
                body = {"error": msg} if path.startswith("/api/") else error_body(
                    401, msg, "invalid_request_error", code="invalid_api_key")
                state.metrics.errors.labels("authentication_error").inc()
                state.metrics.requests.labels(path, "401").inc()
                return await JSONResponse(body, status_code=401)(scope, receive, send)
        if scope["method"] == "POST" and path.startswith(PROTECTED):
            scope = force_json(scope)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or ("static" if path.startswith("/static") else "unmatched")
            state.metrics.requests.labels(name, str(status["code"])).inc()
            state.metrics.latency.labels(name).observe(time.perf_counter() - t0)


def create_app(
    llm,
    *,
    api_key: str | None = None,
    kbs: dict[str, Any] | None = None,
    max_queue: int = 16,
    timeout_s: float = 600.0,
) -> FastAPI:
    """Build the server around one loaded model.

    Args:
        llm: a :class:`phikit.LLM` (any backend, the remote ``openai`` one included).
        api_key: when set, ``/v1/*`` and ``/api/*`` need ``Authorization: Bearer <api_key>``.
        kbs: knowledge bases by name; the first is the default for every chat request.
        max_queue: requests that may wait while one generates; past that, 429 with ``Retry-After``.
        timeout_s: per-request wall-clock limit in seconds, queueing included (504 past it).

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
    worker = ModelWorker(max_queue=max_queue, timeout_s=timeout_s,
                         concurrency=getattr(llm.engine, "max_concurrency", 1))
    kbs = dict(kbs or {})
    app.state.phikit = ServerState(llm=llm, worker=worker, metrics=Metrics(worker), api_key=api_key, kbs=kbs,
                                   default_kb=next(iter(kbs), None))

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
        return error_response(request, APIError(exc.status_code, message, kind, headers=dict(exc.headers or {})))

    async def _mapped(request: Request, exc: Exception):
        return error_response(request, to_api_error(exc))

    for kind in (PhikitError, ValueError, QueueFullError, GenerationTimeout, NotSupportedError, Exception):
        app.add_exception_handler(kind, _mapped)

    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)

    @app.get("/health", tags=["server"])
    async def health() -> dict:
        """Liveness plus what is loaded and how busy it is. Requests are queued, not batched."""
        s = app.state.phikit
        return {
            "status": "ok",
            "model": s.model,
            "backend": s.llm.backend,
            "batching": worker.concurrency > 1,  # only through a remote engine whose server batches
            "concurrency": worker.concurrency,
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
    app.add_middleware(AccessAndMetrics)
    return app
