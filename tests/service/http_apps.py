"""The api and ingest apps for the HTTP hardening and auth-matrix tests: in process (ASGI,
with a recording `receive`) and behind the real uvicorn server `serve()` runs (a thread on
127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from services.api.app import create_app as create_api
from services.api.campaigns import CampaignConfigError
from services.api.models import CampaignConfig
from services.common.auth import TokenStore
from services.common.broker import free_port
from services.common.db import create_engine, migrate
from services.common.http_server import server_config
from services.common.settings import ApiSettings, IngestSettings
from services.ingest.app import create_app as create_ingest
from tests.service.conftest import FakePublisher


class FakeCdrPublisher(FakePublisher):
    """The ingest fake publisher with the lifecycle the api's lifespan calls."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


PSEUDONYM_KEY = "hardening-test-pseudonym-key"


class FakeCampaignPublisher:
    def __init__(self) -> None:
        self.configs: list[CampaignConfig] = []

    async def publish(self, config: CampaignConfig) -> None:
        self.configs.append(config)


class AnyProfile:
    def validate(self, profile: str, overrides: Mapping[str, Any]) -> None:
        if profile not in ("it", "uk", "us", "fr", "it-assocontact") or overrides:
            raise CampaignConfigError("profile", f"unknown profile {profile!r}")


def api_settings(tmp_path: Path, **overrides: Any) -> ApiSettings:
    return ApiSettings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        pseudonym_key=PSEUDONYM_KEY,
        **overrides,
    )


def ingest_settings(tmp_path: Path, **overrides: Any) -> IngestSettings:
    return IngestSettings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        pseudonym_key=PSEUDONYM_KEY,
        consume_raw=False,
        **overrides,
    )


def build_api(tmp_path: Path, **overrides: Any) -> FastAPI:
    """The api with the ingest routes mounted (their Kafka publisher swapped for a fake),
    no consumer, a fake campaign publisher."""
    app = create_api(
        api_settings(tmp_path, **overrides),
        consumer_enabled=False,
        campaign_publisher=FakeCampaignPublisher(),
        profiles=AnyProfile(),
    )
    app.state.ingest.publisher = FakeCdrPublisher()
    return app


def build_ingest(tmp_path: Path, **overrides: Any) -> FastAPI:
    """The ingest app on the same database as `build_api(tmp_path)` (so the same tokens)."""
    return create_ingest(ingest_settings(tmp_path, **overrides), FakeCdrPublisher())


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    receive_calls: int
    body_bytes_read: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


async def call(
    app: FastAPI,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    chunks: Iterator[bytes] | None = None,
    query: str = "",
    until: Callable[[bytes], bool] | None = None,
) -> Answer:
    """One request straight through the ASGI interface; `receive` counts how often the app
    asked for the body and how many body bytes it got. With `until`, a streamed answer is
    read until `until(body so far)` holds, then the client disconnects."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"test"), *raw_headers],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    answer = Answer(status=0, headers={}, body=b"", receive_calls=0)
    body_iter = iter(chunks if chunks is not None else [b""])
    pending: list[bytes] = []
    body_done = False
    response_done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal body_done
        if body_done:  # as a server does: nothing more until the client goes away
            await response_done.wait()
            return {"type": "http.disconnect"}
        answer.receive_calls += 1
        if not pending:
            pending.append(next(body_iter, b""))
        data = pending.pop()
        answer.body_bytes_read += len(data)
        following = next(body_iter, None)
        if following is not None:
            pending.append(following)
        else:
            body_done = True
        return {"type": "http.request", "body": data, "more_body": following is not None}

    async def send(message: dict[str, Any]) -> None:
        answer.events.append(message)
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")
            if not message.get("more_body", False) or (until is not None and until(answer.body)):
                response_done.set()

    await app(scope, receive, send)
    return answer


@contextlib.contextmanager
def live_server(app: FastAPI, **limits: Any) -> Iterator[tuple[str, int]]:
    """`app` served by uvicorn with `server_config` (the limits `serve()` uses, or those
    given) on 127.0.0.1 in a thread; yields (host, port)."""
    port = free_port()
    config = server_config(app, host="127.0.0.1", port=port, log_level="warning", **limits)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the test server did not start")
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(15)


def make_tokens(tmp_path: Path, *roles: str) -> dict[str, str]:
    """Tokens (bound to no tenant) in the database of `api_settings(tmp_path)`, made on a
    private loop before a live server opens it."""

    async def make() -> dict[str, str]:
        engine = create_engine(api_settings(tmp_path).resolved_database_url())
        try:
            await migrate(engine)
            store = TokenStore(engine)
            return {role: await store.create(role) for role in roles}  # type: ignore[arg-type]
        finally:
            await engine.dispose()

    return asyncio.run(make())
