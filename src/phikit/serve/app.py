"""The app factory: one model, the OpenAI and Ollama routes, errors in OpenAI's shape, metrics, the web page.

``create_app(llm)`` is what ``phikit serve`` runs under uvicorn and what the tests start on a free port.
"""

from __future__ import annotations

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
from ..errors import BadRequestError, EngineError, EngineUnavailableError, ModelNotFoundError, PhikitError
from .access import AccessAndMetrics, AccessPolicy
from .generation import NotSupportedError, builtin_tool_names, new_id
from .limits import LimitError, ServerLimits
from .metrics import Metrics
from .worker import GenerationTimeout, ModelWorker, QueueFullError

log = logging.getLogger("phikit.serve")
STATIC = Path(__file__).parent / "static"


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
    access: AccessPolicy = field(default_factory=AccessPolicy)
    limits: ServerLimits = field(default_factory=ServerLimits)

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
    """Map any exception from a request to the response it deserves, honestly: the client's mistakes are 4xx,
    overload 429, a failing remote engine 502/503, and anything else is the server's bug: 500 with a request id
    that is also in the log line with the traceback."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFullError):
        return APIError(429, str(exc), "rate_limit_exceeded", code="queue_full",
                        headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, GenerationTimeout):
        return APIError(504, str(exc), "timeout", code="timeout")
    if isinstance(exc, NotSupportedError):
        return APIError(501, str(exc), "not_implemented", code="not_implemented")
    if isinstance(exc, LimitError):
        return APIError(exc.status, str(exc), param=exc.param, code="limit_exceeded")
    if isinstance(exc, EngineUnavailableError):
        return APIError(503, str(exc), "engine_unavailable", code="engine_unavailable")
    if isinstance(exc, EngineError):
        return APIError(502, str(exc), "engine_error", code="bad_gateway")
    if isinstance(exc, ModelNotFoundError):
        return APIError(404, str(exc), "not_found_error", code="model_not_found")
    if type(exc).__name__ == "ToolCallError":  # the model could not write a valid call, even after a repair turn
        return APIError(422, str(exc), code="invalid_tool_call")
    if isinstance(exc, BadRequestError):
        msg = str(exc)
        code = "context_length_exceeded" if "context window" in msg else None
        return APIError(400, msg, code=code)
    if isinstance(exc, PhikitError):  # a deliberate message for the user (e.g. a knowledge base that cannot load)
        return APIError(400, str(exc))
    rid = new_id("req")
    log.error("internal error, request id %s", rid, exc_info=exc)
    return APIError(500, f"internal server error ({type(exc).__name__}); request id {rid} is in the server log",
                    "server_error", code="internal_error")


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
                         concurrency=getattr(llm.engine, "max_concurrency", 1), owner=llm.engine)
    kbs = dict(kbs or {})
    access = AccessPolicy(host, tuple(allowed_hosts), tuple(allow_origins))
    app.state.phikit = ServerState(llm=llm, worker=worker, metrics=Metrics(worker), api_key=api_key, kbs=kbs,
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

    for kind in (PhikitError, LimitError, QueueFullError, GenerationTimeout, NotSupportedError, Exception):
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
    if access.allow_origins:  # pages at an allowed origin may also read the answers
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(access.allow_origins), allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(AccessAndMetrics)
    return app
