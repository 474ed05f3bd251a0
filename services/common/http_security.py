"""The HTTP guard: a pure ASGI middleware both apps (api, ingest) put around every route.

In order, for each HTTP request:

1. **Authentication before the body.** FastAPI reads a route's body before it runs the
   route's dependencies, so a `require_role` dependency alone would let an unauthenticated
   client make the server read (and parse) a body. The guard finds the route the request
   matches in the app's own route table, reads the role its `require_role` dependency
   demands, and answers 401 (no or unknown token) or 403 (role too low) before anything of
   the body is received. The principal it verified is handed to the dependency
   (`PRINCIPAL_STATE_KEY` in the request state), which then only checks it again.
2. **A body limit on every route**: `default_max_body_bytes` (64 KiB), or the route's own
   (`body_limits`, e.g. the configured maximum of `POST /v1/cdrs`). A declared
   Content-Length above it is a 413 before the body is read; a body without one is counted
   as it streams and cut off with a 413 at the limit.
3. **Security headers on every answer** (`security_headers`): a Content-Security-Policy
   without 'unsafe-inline' (the dashboard and /docs load their scripts and styles as files
   of this origin), no framing, no MIME sniffing, no referrer, and `Cache-Control:
   no-store` unless the route chose its own caching.

Early answers (401/403/413) close the connection when a body was announced, so its bytes
are never read at all.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.auth import Principal, Role

DEFAULT_MAX_BODY_BYTES = 64 * 1024
PRINCIPAL_STATE_KEY = "cdrwatch_principal"
ROLE_ATTRIBUTE = "cdrwatch_required_role"
# Set on a role dependency that also takes HTTP Basic credentials whose password is the
# token (FreeSWITCH's mod_json_cdr / mod_xml_cdr can send nothing else).
BASIC_AUTH_ATTRIBUTE = "cdrwatch_basic_auth"
BASIC_CHALLENGE = 'Basic realm="cdrwatch", Bearer'

# 'self' only: every script and style is a file of this origin. Swagger UI draws its
# logos as data: images.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_CACHE_CONTROL = b"cache-control"


class RequestBodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the route's limit. An
    HTTPException, so FastAPI's body parsing and the app's exception handlers let it
    through as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=too_large_message(limit))


def too_large_message(limit: int) -> str:
    return f"request body larger than {limit} bytes"


def accepts_basic(route: BaseRoute) -> bool:
    """True when the route's role dependency also takes HTTP Basic credentials."""
    dependant = getattr(route, "dependant", None)
    pending = [dependant] if dependant is not None else []
    while pending:
        current = pending.pop()
        if getattr(current.call, BASIC_AUTH_ATTRIBUTE, False):
            return True
        pending.extend(current.dependencies)
    return False


def required_role(route: BaseRoute) -> Role | None:
    """The role a route's `require_role` dependency demands (searched through its
    sub-dependencies), or None for a route without authentication."""
    dependant = getattr(route, "dependant", None)
    pending = [dependant] if dependant is not None else []
    while pending:
        current = pending.pop()
        role: Role | None = getattr(current.call, ROLE_ATTRIBUTE, None)
        if role is not None:
            return role
        pending.extend(current.dependencies)
    return None


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One route of an app's table, flattened: its full path template, its methods (None
    for a mount, which matches every path below it) and the role it requires."""

    path: str
    methods: frozenset[str] | None
    role: Role | None
    pattern: re.Pattern[str]
    basic: bool = False  # also takes HTTP Basic credentials (password = token)

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.pattern.match(path) is not None


def route_table(routes: Sequence[BaseRoute]) -> list[RouteEntry]:
    """`routes` (an app's `app.routes`, included routers expanded) in matching order."""
    table: list[RouteEntry] = []
    for context in iter_route_contexts(routes):
        path = context.path
        if path is None:
            continue
        methods = context.methods
        if methods is None:  # a mount: the path and everything below it
            pattern, _, _ = compile_path(path.rstrip("/") + "/{rest:path}")
        else:
            pattern, _, _ = compile_path(path)
        table.append(
            RouteEntry(
                path=path,
                methods=frozenset(methods) if methods is not None else None,
                role=required_role(context.original_route),
                pattern=pattern,
                basic=accepts_basic(context.original_route),
            )
        )
    return table


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The credentials of an `Authorization: Bearer ...` header, else None (as
    fastapi.security.HTTPBearer reads it)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            credentials = credentials.strip()
            if scheme.lower() == "bearer" and credentials:
                return credentials
            return None
    return None


def basic_or_bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """A Bearer token, or the password (else the user name) of HTTP Basic credentials."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            credentials = credentials.strip()
            if not credentials:
                return None
            if scheme.lower() == "bearer":
                return credentials
            if scheme.lower() != "basic":
                return None
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, _, password = decoded.partition(":")
            return password or user or None
    return None


class HttpGuard:
    """See the module docstring. `body_limits` maps (METHOD, path template) — e.g.
    `("POST", "/v1/cdrs")` — to that route's byte limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_limits: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.app = app
        self.default_max_body_bytes = default_max_body_bytes
        self.body_limits = dict(body_limits or {})
        self._tables: dict[int, tuple[int, list[RouteEntry]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if _CACHE_CONTROL not in present:
                    headers.append((_CACHE_CONTROL, b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        route = self._route(scope)
        announces_body = _announces_body(scope)
        rejection = await self._authenticate(scope, route)
        if rejection is not None:
            status, detail, extra = rejection
            await _answer(send_with_headers, status, detail, extra, close=announces_body)
            return

        limit = self._limit(scope, route)
        declared = _content_length(scope)
        if declared == -1:
            await _answer(send_with_headers, 400, "Content-Length is not a number", close=True)
            return
        if declared is not None and declared > limit:
            await _answer(send_with_headers, 413, too_large_message(limit), close=True)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestBodyTooLarge(limit)
            return message

        try:
            await self.app(scope, counting_receive, send_with_headers)
        except RequestBodyTooLarge as exc:
            if started:
                raise
            await _answer(send_with_headers, 413, str(exc.detail), close=True)

    def _route(self, scope: Scope) -> RouteEntry | None:
        app = scope.get("app")
        routes = getattr(app, "routes", None)
        if routes is None:
            return None
        table = self._tables.get(id(app))
        if table is None or table[0] != len(routes):
            table = (len(routes), route_table(routes))
            self._tables[id(app)] = table
        path = _route_path(scope)
        for entry in table[1]:
            if entry.matches(scope["method"], path):
                return entry
        return None

    def _limit(self, scope: Scope, route: RouteEntry | None) -> int:
        if route is not None:
            limit = self.body_limits.get((scope["method"], route.path))
            if limit is not None:
                return limit
        return self.default_max_body_bytes

    async def _authenticate(
        self, scope: Scope, route: RouteEntry | None
    ) -> tuple[int, str, dict[str, str]] | None:
        role = route.role if route is not None else None
        if role is None:
            return None
        basic = route is not None and route.basic
        token = (basic_or_bearer_token if basic else bearer_token)(scope["headers"])
        challenge = {"www-authenticate": BASIC_CHALLENGE if basic else "Bearer"}
        if token is None:
            return 401, "missing bearer token", challenge
        tokens = scope["app"].state.tokens
        principal: Principal | None = await tokens.verify(token)
        if principal is None:
            return 401, "invalid or revoked token", challenge
        if not principal.can(role):
            return 403, f"role {role} required", {}
        scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
        return None


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length; None when absent, -1 when not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else -1
    return None


def _announces_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() not in (b"", b"0"):
            return True
    return False


async def _answer(
    send: Send,
    status: int,
    detail: str,
    extra_headers: Mapping[str, str] | None = None,
    *,
    close: bool = False,
) -> None:
    body = orjson.dumps({"detail": detail})
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers.extend((k.encode(), v.encode()) for k, v in (extra_headers or {}).items())
    if close:
        # The body announced is never read: the connection cannot serve another request.
        headers.append((b"connection", b"close"))
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
