"""What the routes share and the app holds: the server's state, and errors in OpenAI's shape mapped honestly.

The routes (``openai_api``, ``ollama_api``) depend on this module, not on the app factory (as vLLM's
serving layer keeps protocol and state apart from its FastAPI app).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ..errors import BadRequestError, EngineError, EngineUnavailableError, ModelNotFoundError, PhikitError
from .access import AccessPolicy
from .generation import new_id
from .limits import LimitError, ServerLimits
from .metrics import Metrics
from .worker import GenerationTimeout, ModelWorker, QueueFullError

log = logging.getLogger("phikit.serve")


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

    def adapters(self) -> dict[str, str]:
        """LoRA adapters this server can apply: registered ones made for its base model (name -> directory).
        Re-read on every call, so ``phikit tune`` / ``adapters remove`` show without a restart."""
        engine = self.llm.engine
        return engine.registered_adapters() if getattr(engine, "supports_adapters", False) else {}

    def pick_adapter(self, model: str | None, requested: str | None) -> str | None:
        """The adapter a request asks for: ``phikit.adapter``, or the tag of ``model`` (``base:adapter``, as
        vLLM names LoRA modules). None means the server's default (``--adapter``, else the registry's
        enabled one); ``"none"`` the base model. Clients choose registered names only, never a path.

        Raises:
            APIError: 404 for an adapter this server does not have; 400 for two different choices.
        """
        tag = model.split(":", 1)[1] if isinstance(model, str) and ":" in model else None
        if tag in (None, "", "latest"):
            tag = None
        choices = {c for c in (requested, tag) if c}
        if len(choices) > 1:
            raise APIError(400, f"model names adapter {tag!r} but phikit.adapter is {requested!r}; give one",
                           param="phikit.adapter")
        if not choices:
            return None
        name = choices.pop()
        if name == "none":
            return name
        known = self.adapters()
        if name not in known:
            have = ", ".join(f"{self.model}:{n}" for n in sorted(known)) or "none"
            raise APIError(404, f"adapter {name!r} not found on this server (adapters: {have}); register one with "
                                "`phikit tune` (GET /v1/models lists them)",
                           param="phikit.adapter" if requested else "model", code="adapter_not_found")
        return name

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
