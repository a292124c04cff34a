"""Who may talk to the server, checked before any work: Host, Origin, API key, body size; then metrics.

A server on the user's machine is reachable by every web page the user opens. Two checks keep pages out, as
Ollama's server does since its DNS-rebinding fix (CVE-2024-28224):

- **Host**: a page that rebinds its own domain to 127.0.0.1 still sends its domain in ``Host``. Only loopback
  names (``localhost``, ``*.localhost``, ``127.0.0.1``, ``[::1]``), the bound address, and ``--allowed-hosts``
  pass; IP literals also pass when the server is bound to all interfaces (an IP cannot be rebound).
- **Origin**: browsers send ``Origin`` on every cross-origin request (and on ``text/plain`` POSTs that need no
  CORS preflight). Requests without one (curl, the openai and ollama clients) pass; a browser request passes
  only from the server's own origin or an ``--allow-origin`` entry.

Both answer 403 before the body is read. Non-JSON content types are still parsed as JSON once these checks
pass (``curl -d`` sends form encoding; Ollama accepts it): a page cannot get past the Origin check with them.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARDS = {"0.0.0.0", "::", ""}
OPEN_PATHS = ("/health",)  # never need the API key
PUBLIC_PAGE = ("/", "/favicon.ico")  # the page's own files hold no data; it asks for the key itself


@dataclass(frozen=True)
class AccessPolicy:
    """Host and Origin allowlists.

    Attributes:
        bind_host: the address the server listens on (``--host``).
        allowed_hosts: extra ``Host`` names (``--allowed-hosts``); ``*`` turns the Host check off.
        allow_origins: extra origins (``--allow-origin``, e.g. ``http://localhost:3000``); ``*`` allows all.
    """

    bind_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    _hosts: frozenset = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        names = {*LOOPBACK_NAMES, *(h.strip().lower().strip("[]") for h in self.allowed_hosts if h.strip())}
        if self.bind_host not in WILDCARDS:
            names.add(self.bind_host.lower().strip("[]"))
        object.__setattr__(self, "_hosts", frozenset(names))

    def host_ok(self, hostname: str) -> bool:
        """Whether a ``Host`` header's name (port removed) may reach this server."""
        name = hostname.lower().strip("[]").rstrip(".")
        if "*" in self._hosts or name in self._hosts or name.endswith(".localhost"):
            return True
        if self.bind_host in WILDCARDS:
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        return False

    def origin_ok(self, origin: str, host_header: str) -> bool:
        """Whether a browser ``Origin`` may use the API: the server's own origin or an allowed one."""
        try:
            return self._origin_ok(origin, host_header)
        except ValueError:  # a malformed port
            return False

    def _origin_ok(self, origin: str, host_header: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if "*" in self.allow_origins or origin in {o.strip().rstrip("/").lower() for o in self.allow_origins}:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False  # "null" (sandboxed frames, file://) and other schemes
        own = urlsplit(f"http://{host_header}")
        same_port = (parts.port or (443 if parts.scheme == "https" else 80)) == (own.port or 80)
        return same_port and self.host_ok(parts.hostname) and self.host_ok(own.hostname or "")


def split_host(host_header: str) -> str:
    """``Host`` header -> hostname (``[::1]:8000`` -> ``::1``; ``localhost:8000`` -> ``localhost``)."""
    try:
        return urlsplit(f"http://{host_header}").hostname or ""
    except ValueError:
        return ""


class BodyTooLarge(StarletteHTTPException):
    """The request body passed ``max_body_bytes`` while being read (an HTTPException, so FastAPI's body
    parsing passes it through as a 413 instead of wrapping it in a 400)."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


def force_json(scope: dict) -> dict:
    """Treat API request bodies as JSON whatever their Content-Type: Ollama's docs use ``curl -d '{...}'``,
    which sends ``application/x-www-form-urlencoded``, and Ollama accepts it."""
    headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


class AccessAndMetrics:
    """ASGI middleware: Host, Origin, API key and body-size checks, then per-route counts and latency."""

    def __init__(self, app):
        self.app = app

    async def refuse(self, scope, receive, send, status: int, message: str, code: str, kind: str) -> None:
        state = scope["app"].state.phikit
        path = scope["path"]
        body = ({"error": message} if path.startswith("/api/")
                else {"error": {"message": message, "type": kind, "param": None, "code": code}})  # OpenAI's shape
        state.metrics.errors.labels(kind).inc()
        state.metrics.requests.labels(f"refused:{code}", str(status)).inc()  # a fixed label, never the raw path
        await JSONResponse(body, status_code=status)(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope["app"].state.phikit
        policy: AccessPolicy = state.access
        path = scope["path"]
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not policy.host_ok(split_host(host)):
            return await self.refuse(scope, receive, send, 403, f"Host {host!r} is not allowed here; start the "
                                     "server with --allowed-hosts NAME to allow it", "host_not_allowed", "permission_error")
        origin = headers.get(b"origin")
        if origin is not None and not policy.origin_ok(origin.decode("latin-1"), host):
            return await self.refuse(scope, receive, send, 403, f"Origin {origin.decode('latin-1')!r} may not use "
                                     "this server; start it with --allow-origin ORIGIN to allow it",
                                     "origin_not_allowed", "permission_error")
        preflight = scope["method"] == "OPTIONS" and origin is not None  # CORS preflights carry no credentials
        if state.api_key and not (preflight or path in OPEN_PATHS or path in PUBLIC_PAGE or path.startswith("/static/")):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), state.api_key.encode()):
                return await self.refuse(scope, receive, send, 401, "missing or wrong API key: send the header "
                                         "'Authorization: Bearer <key>'", "invalid_api_key", "authentication_error")
        limit = state.limits.max_body_bytes
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await self.refuse(scope, receive, send, 413, f"the request body is {int(length)} bytes; the "
                                     f"limit is {limit}", "request_too_large", "invalid_request_error")
        if scope["method"] == "POST" and path.startswith(("/v1/", "/api/")):
            scope = force_json(scope)
        seen = {"bytes": 0}

        async def bounded_receive():
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > limit:
                    raise BodyTooLarge(limit)
            return message

        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, bounded_receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or ("static" if path.startswith("/static") else "unmatched")
            state.metrics.requests.labels(name, str(status["code"])).inc()
            state.metrics.latency.labels(name).observe(time.perf_counter() - t0)
