"""HTTP hardening of the api and ingest apps (issue 6, item 6): authentication before the
body, a body limit on every route, security headers on every answer, short 422 excerpts,
and the server limits of `serve()` (header-read timeout, header size) on a real uvicorn."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from services.common.http_errors import MAX_ECHO_CHARS, validation_error
from services.common.http_security import CONTENT_SECURITY_POLICY, route_table
from tests.service.http_apps import (
    build_api,
    build_ingest,
    call,
    live_server,
    make_tokens,
)

BIG = 200 * 1024 * 1024  # the declared size of the body an attacker announces
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.fixture
async def api(tmp_path: Path) -> Iterator[FastAPI]:
    app = build_api(tmp_path, max_body_bytes=1024 * 1024)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def ingest(tmp_path: Path) -> Iterator[FastAPI]:
    app = build_ingest(tmp_path, max_body_bytes=1024 * 1024)
    async with app.router.lifespan_context(app):
        yield app


def concrete(path: str) -> str:
    """A request path for a route template: every parameter `x`, a mount's own file."""
    return re.sub(r"\{[^}]+\}", "x", path)


def endless(chunk: int = 64 * 1024) -> Iterator[bytes]:
    while True:
        yield b"x" * chunk


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- authentication before the body --------------------------------------------------------


def authenticated_routes(app: FastAPI) -> list[tuple[str, str, str]]:
    return [
        (method, entry.path, entry.role)
        for entry in route_table(app.routes)
        if entry.role is not None
        for method in sorted(entry.methods or ())
    ]


async def test_every_authenticated_route_refuses_before_reading_the_body(api, ingest):
    checked = []
    for app in (api, ingest):
        forged = auth("cdrw_forged")
        for method, path, _ in authenticated_routes(app):
            for headers, status in (({}, 401), (forged, 401)):
                answer = await call(
                    app,
                    method,
                    concrete(path),
                    headers={"Content-Length": str(BIG), **headers},
                    chunks=endless(),
                )
                assert answer.status == status, (method, path, answer.body)
                assert answer.receive_calls == 0, (method, path)
                assert answer.headers.get("connection") == "close"
                checked.append((method, path))
    assert ("PUT", "/v1/campaigns/{campaign_id}") in checked
    assert ("POST", "/v1/alerts/{alert_id}/ack") in checked
    assert ("POST", "/v1/cdrs") in checked


async def test_a_role_too_low_is_refused_before_the_body(api):
    viewer = await api.state.tokens.create("viewer")
    for method, path in (("PUT", "/v1/campaigns/x"), ("POST", "/v1/alerts/x/ack")):
        answer = await call(
            api,
            method,
            path,
            headers={**auth(viewer), "Content-Length": str(BIG)},
            chunks=endless(),
        )
        assert (answer.status, answer.receive_calls) == (403, 0)


async def test_a_chunked_unauthenticated_body_is_never_read(api):
    answer = await call(
        api, "PUT", "/v1/campaigns/x", headers={"Transfer-Encoding": "chunked"}, chunks=endless()
    )
    assert (answer.status, answer.receive_calls) == (401, 0)


# --- body limits ---------------------------------------------------------------------------


async def test_a_declared_body_over_64_kib_is_413_before_reading_it(api):
    admin = await api.state.tokens.create("admin")
    answer = await call(
        api,
        "PUT",
        "/v1/campaigns/x",
        headers={**auth(admin), "Content-Length": str(64 * 1024 + 1)},
        chunks=endless(),
    )
    assert (answer.status, answer.receive_calls) == (413, 0)
    assert b"65536" in answer.body


async def test_a_streamed_body_is_cut_off_at_the_limit(api):
    compliance = await api.state.tokens.create("compliance")
    answer = await call(
        api,
        "POST",
        "/v1/alerts/x/ack",
        headers={**auth(compliance), "Content-Type": "application/json"},
        chunks=endless(16 * 1024),
    )
    assert answer.status == 413
    assert answer.body_bytes_read <= 64 * 1024 + 16 * 1024  # one chunk past the limit at most


async def test_post_cdrs_takes_the_configured_limit_not_the_default(api, ingest):
    for app in (api, ingest):
        token = await app.state.tokens.create("ingest")
        headers = {**auth(token), "Content-Type": "application/json"}
        record = (
            b'{"call_id": "c-%d", "campaign_id": "big", "callee_number": "+393471234567", '
            b'"originated_at": "2026-03-02T10:00:00Z", "ended_at": "2026-03-02T10:01:00Z"}'
        )
        body = b"[" + b",".join(record % i for i in range(1000)) + b"]"
        assert 64 * 1024 < len(body) < 1024 * 1024
        answer = await call(app, "POST", "/v1/cdrs", headers=headers, chunks=iter([body]))
        assert answer.status == 202, answer.body
        over = await call(
            app,
            "POST",
            "/v1/cdrs",
            headers={**headers, "Content-Length": str(1024 * 1024 + 1)},
            chunks=endless(),
        )
        assert (over.status, over.receive_calls) == (413, 0)


async def test_routes_without_auth_have_a_body_limit_too(api, ingest):
    for app in (api, ingest):
        answer = await call(
            app, "GET", "/healthz", headers={"Content-Length": str(BIG)}, chunks=endless()
        )
        assert (answer.status, answer.receive_calls) == (413, 0)


# --- security headers ----------------------------------------------------------------------


async def test_every_route_answers_with_the_security_headers(api, ingest):
    viewer = await api.state.tokens.create("admin")
    seen = 0
    for app in (api, ingest):
        for entry in route_table(app.routes):
            path = concrete(entry.path)
            if entry.methods is None:  # a static mount
                path = path.rstrip("/") + (
                    "/swagger-ui.css"
                    if path.endswith("swagger")
                    else "/swagger-init.js"
                    if path.endswith("docs")
                    else "/dashboard.js"
                )
            for method in sorted(entry.methods or {"GET"}):
                for headers in ({}, auth(viewer)):
                    # Read up to the first part of the body: the headers are what counts,
                    # and /v1/alerts/stream never ends by itself.
                    answer = await call(app, method, path, headers=headers, until=bool)
                    for name, value in SECURITY_HEADERS.items():
                        assert answer.headers.get(name) == value, (method, path, answer.status)
                    assert "cache-control" in answer.headers, (method, path)
                    seen += 1
    assert seen > 20


def test_the_content_security_policy_allows_no_inline_code_and_no_framing():
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY


async def test_api_answers_are_not_cached_and_static_files_are_revalidated(api):
    viewer = await api.state.tokens.create("viewer")
    listing = await call(api, "GET", "/v1/campaigns", headers=auth(viewer))
    assert listing.headers["cache-control"] == "no-store"
    refused = await call(api, "GET", "/v1/campaigns")
    assert refused.headers["cache-control"] == "no-store"
    script = await call(api, "GET", "/static/dashboard/dashboard.js")
    assert (script.status, script.headers["cache-control"]) == (200, "no-cache")


async def test_docs_are_served_from_this_origin_with_no_inline_script(api, ingest):
    for app in (api, ingest):
        page = await call(app, "GET", "/docs")
        html = page.body.decode()
        assert page.status == 200
        assert "<script>" not in html and "<style>" not in html
        assert "http://" not in html and "https://" not in html
        for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
            got = await call(app, "GET", asset)
            assert got.status == 200, asset
        assert (await call(app, "GET", "/redoc")).status == 404


async def test_openapi_documents_the_cdr_v1_body(api, ingest):
    import orjson

    for app in (api, ingest):
        spec = orjson.loads((await call(app, "GET", "/openapi.json")).body)
        body = spec["paths"]["/v1/cdrs"]["post"]["requestBody"]["content"]["application/json"]
        single, batch = body["schema"]["oneOf"]
        assert single == batch["items"] == {"$ref": "#/components/schemas/CdrV1"}
        cdr = spec["components"]["schemas"]["CdrV1"]
        assert {"call_id", "campaign_id", "callee_number", "originated_at", "ended_at"} <= set(
            cdr["required"]
        )


# --- 422 excerpts --------------------------------------------------------------------------


async def test_a_422_echoes_a_short_excerpt_of_a_huge_query_value(api):
    viewer = await api.state.tokens.create("viewer")
    long = "2026-" + "9" * 60_000
    answer = await call(
        api, "GET", "/v1/alerts", headers=auth(viewer), query=f"since={long}&limit={'1' * 5000}"
    )
    assert answer.status == 422
    assert len(answer.body) < 2_000, len(answer.body)


def test_both_apps_use_the_shared_422_handler(api, ingest):
    for app in (api, ingest):
        assert app.exception_handlers[RequestValidationError] is validation_error


async def test_the_422_handler_cuts_every_echo():
    import orjson

    exc = RequestValidationError(
        [
            {"type": "string_type", "loc": ("body", "x"), "msg": "m" * 5000, "input": "é" * 10**5},
            {"type": "int", "loc": ("query", "n"), "msg": "big", "input": 10**100},
            {"type": "float", "loc": ("body", "f"), "msg": "nan", "input": float("nan")},
            {"type": "dict", "loc": ("body",), "msg": "d", "input": {"k": "v" * 10**5}},
        ]
    )
    response = await validation_error(None, exc)  # type: ignore[arg-type]
    detail = orjson.loads(response.body)["detail"]
    assert len(detail[0]["input"]) == MAX_ECHO_CHARS + 3
    assert len(detail[0]["msg"]) <= 303
    assert detail[1]["input"] == "an integer of 333 bits"
    assert detail[2]["input"] == "nan"
    assert len(detail[3]["input"]) == MAX_ECHO_CHARS + 3


# --- the server: header size and header-read timeout (uvicorn, real sockets) ---------------


def exchange(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data`, then read until the server closes the connection."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `sock` (None if it stayed open `seconds`)."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def test_a_100_kb_header_is_431(tmp_path):
    with live_server(build_api(tmp_path)) as address:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        answer = exchange(address, request)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        fine = exchange(
            address,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Fine: "
            + b"a" * 15_000
            + b"\r\n\r\n",
        )
        assert fine.startswith(b"HTTP/1.1 200 ")
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Dribbled: ")
            answer = b""
            with contextlib.suppress(OSError):  # closed by the server while still sending
                for _ in range(20):
                    sock.sendall(b"a" * 1024)
                    time.sleep(0.01)
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


def test_a_header_not_complete_within_the_timeout_closes_the_connection(tmp_path):
    with live_server(build_api(tmp_path), header_timeout_seconds=1.0) as address:
        silent = socket.create_connection(address)
        dribbling = socket.create_connection(address)
        dribbling.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        try:
            for sock in (silent, dribbling):
                elapsed = closed_within(sock, 5.0)
                assert elapsed is not None and elapsed < 4.0
        finally:
            silent.close()
            dribbling.close()


def test_the_header_timeout_applies_to_the_next_request_of_a_kept_alive_connection(tmp_path):
    with (
        live_server(
            build_api(tmp_path), header_timeout_seconds=1.0, keep_alive_seconds=30
        ) as address,
        socket.create_connection(address, timeout=5) as sock,
    ):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request's header, cut short
        elapsed = closed_within(sock, 5.0)
        assert elapsed is not None and elapsed < 4.0


def test_an_unauthenticated_200_mb_put_gets_401_over_the_wire(tmp_path):
    make_tokens(tmp_path, "admin")
    with live_server(build_api(tmp_path)) as address:
        for target in (b"PUT /v1/campaigns/x", b"POST /v1/alerts/x/ack"):
            head = (
                target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(BIG).encode() + b"\r\n\r\n"
            )
            answer = exchange(address, head + b"x" * 65536)  # the rest is never sent
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
            assert b"content-security-policy" in answer.lower()


def test_the_server_reads_on_after_answering_before_the_body_so_no_reset_loses_the_answer(
    tmp_path,
):
    # Closing a socket with unread bytes resets the connection, and a reset can destroy the
    # answer before the client reads it (a CI run lost a 401 and a 431 that way). The
    # server shuts its sending side and goes on reading: the client sees the answer and an
    # end of stream, and what it sends after that is still taken, not refused with a reset.
    make_tokens(tmp_path, "admin")
    with live_server(build_api(tmp_path)) as address:
        head = (
            b"PUT /v1/campaigns/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(BIG).encode() + b"\r\n\r\n"
        )
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(head + b"x" * 65536)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
            for _ in range(3):
                time.sleep(0.1)
                sock.sendall(b"x" * 65536)  # a reset would fail the second one


def test_keep_alive_idle_connections_are_closed(tmp_path):
    server = live_server(build_api(tmp_path), keep_alive_seconds=1)
    with server as address, socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        elapsed = closed_within(sock, 5.0)
        assert elapsed is not None and elapsed < 4.0


def test_both_entry_points_serve_with_the_limits(tmp_path, monkeypatch):
    from services.api import app as api_module
    from services.common import http_app
    from services.ingest import app as ingest_module
    from tests.service.http_apps import api_settings, ingest_settings

    served = []
    monkeypatch.setattr(http_app, "serve", lambda app, **limits: served.append(limits))
    overrides = {"http_header_timeout_seconds": 7.5, "http_max_header_bytes": 8192}
    api_module.main(api_settings(tmp_path, port=18080, **overrides))
    ingest_module.main(ingest_settings(tmp_path, port=18081, **overrides))
    assert served == [
        {
            "host": "127.0.0.1",
            "port": port,
            "header_timeout_seconds": 7.5,
            "keep_alive_seconds": 5,
            "max_header_bytes": 8192,
        }
        for port in (18080, 18081)
    ]


def test_the_server_config_uses_the_guarded_protocol():
    from services.common.http_server import GuardedH11Protocol, server_config

    config = server_config(FastAPI(), host="127.0.0.1", port=1)
    config.load()
    assert issubclass(config.http_protocol_class, GuardedH11Protocol)
    assert config.http_protocol_class.header_timeout_seconds == 10.0
    assert (config.timeout_keep_alive, config.h11_max_incomplete_event_size) == (5, 16 * 1024)
