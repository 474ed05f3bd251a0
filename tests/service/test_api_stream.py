"""GET /v1/alerts/stream (server-sent events), GET /v1/campaigns/{id}/minutes and the
campaign feed state, in process; the stream also through the real uvicorn server with the
HTTP guard's limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from schemas.alert_v1 import AlertV1
from schemas.stats_v1 import COUNT_FIELDS, stats_from_counts
from services.api.app import create_app
from services.api.consumer import alert_message, apply_messages, stats_message
from tests.service.http_apps import Answer, call, live_server
from tests.service.test_api_routes import FakeClock, FakeProfiles, FakePublisher, settings_for

NOW = datetime(2026, 3, 2, 12, 0, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
FAST = {"sse_poll_seconds": 0.02, "sse_stats_seconds": 0.1, "sse_heartbeat_seconds": 0.05}


def alert(tenant: str, name: str, state: str = "firing", severity: str = "violation") -> AlertV1:
    return AlertV1.model_validate(
        {
            "id": f"{tenant}-{name}",
            "rule": "it-silent-rate-cumulative",
            "profile": "it",
            "campaign_id": name,
            "tenant_id": tenant,
            "severity": severity,
            "state": state,
            "value": 0.08,
            "threshold": 0.03,
            "numerator": 8,
            "denominator": 100,
            "window": {"start": "2026-03-02T10:00:00Z", "end": "2026-03-02T11:00:00Z"},
            "opened_at": "2026-03-02T10:30:00Z",
        }
    )


def window(
    tenant: str, campaign: str, name: str = "cumulative", attempts: int = 5, replayed: bool = False
) -> Any:
    counts = dict.fromkeys(COUNT_FIELDS, 0) | {"attempts": attempts, "answered_by_person": 4}
    start = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
    stats = stats_from_counts(campaign, start, start + MINUTE, counts)
    return stats_message(stats, name, tenant_id=tenant, profile="it", replayed=replayed)


def events(body: bytes) -> list[dict[str, Any]]:
    """The events of a text/event-stream body, data decoded (comments dropped)."""
    found = []
    for block in body.decode().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "event" in fields:
            fields["data"] = orjson.loads(fields["data"])
            found.append(fields)
    return found


def alert_ids(body: bytes) -> list[tuple[str, str]]:
    return [(e["id"], e["data"]["id"]) for e in events(body) if e["event"] == "alert"]


def stats_seen(body: bytes) -> bool:
    return b"event: stats" in body


class Api:
    def __init__(self, app: Any, clock: FakeClock) -> None:
        self.app = app
        self.clock = clock

    async def feed(self, *messages: Any) -> None:
        await apply_messages(
            self.app.state.store,
            [alert_message(m) if isinstance(m, AlertV1) else m for m in messages],
        )

    async def token(self, role: str = "viewer", tenant: str | None = None) -> str:
        return str(await self.app.state.tokens.create(role, tenant))

    async def stream(
        self,
        token: str | None,
        *,
        last_event_id: str | None = None,
        query: str = "",
        until: Any = stats_seen,
    ) -> Answer:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        return await asyncio.wait_for(
            call(self.app, "GET", "/v1/alerts/stream", headers=headers, query=query, until=until),
            timeout=30,
        )


@pytest.fixture
async def api(tmp_path: Path) -> Any:
    clock = FakeClock(NOW)
    app = create_app(
        settings_for(tmp_path, **FAST),
        consumer_enabled=False,
        clock=clock,
        campaign_publisher=FakePublisher(),
        profiles=FakeProfiles(),
    )
    async with app.router.lifespan_context(app):
        yield Api(app, clock)


# --- the stream ------------------------------------------------------------------------


async def test_a_tenant_bound_token_streams_only_its_tenants_alerts_and_campaigns(api):
    await api.feed(
        window("a", "camp-a"),
        window("b", "camp-b"),
        alert("a", "camp-a"),
        alert("b", "camp-b"),
    )
    answer = await api.stream(await api.token(tenant="a"), last_event_id="0")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert [data_id for _, data_id in alert_ids(answer.body)] == ["a-camp-a"]
    stats = next(e["data"] for e in events(answer.body) if e["event"] == "stats")
    assert [(c["tenant_id"], c["campaign_id"]) for c in stats["items"]] == [("a", "camp-a")]

    unbound = await api.token()
    everything = await api.stream(unbound, last_event_id="0")
    assert sorted(i for _, i in alert_ids(everything.body)) == ["a-camp-a", "b-camp-b"]
    only_b = await api.stream(unbound, last_event_id="0", query="tenant=b")
    assert [i for _, i in alert_ids(only_b.body)] == ["b-camp-b"]


async def test_last_event_id_resumes_after_that_change_in_order(api):
    await api.feed(alert("a", "one"))  # seq 1
    await api.feed(alert("a", "two"))  # seq 2
    await api.feed(alert("a", "two", state="resolved"))  # seq 3
    token = await api.token()
    answer = await api.stream(token, last_event_id="1")
    assert alert_ids(answer.body) == [("2", "a-two"), ("3", "a-two")]
    changes = [e["data"] for e in events(answer.body) if e["event"] == "alert"]
    assert [c["seq"] for c in changes] == [2, 3]
    assert [c["change"]["state"] for c in changes] == ["firing", "resolved"]
    assert all(c["state"] == "resolved" for c in changes)  # the alert as it is now
    assert changes[0]["tenant_id"] == "a" and changes[0]["ack_note"] is None

    assert alert_ids((await api.stream(token, last_event_id="3")).body) == []


async def test_without_last_event_id_the_stream_starts_now_and_delivers_new_changes(api):
    await api.feed(alert("a", "old"))
    token = await api.token()
    opened = asyncio.Event()

    def until(body: bytes) -> bool:
        if stats_seen(body):
            opened.set()
        return b"a-new" in body

    async def change_later() -> None:
        await opened.wait()
        await api.feed(alert("a", "new"))

    answer, _ = await asyncio.gather(api.stream(token, until=until), change_later())
    assert alert_ids(answer.body) == [("2", "a-new")]  # the old change is not repeated


async def test_heartbeat_comments_and_repeated_stats_events(api, tmp_path):
    token = await api.token()
    answer = await api.stream(token, until=lambda body: body.count(b"event: stats") >= 3)
    assert answer.body.startswith(b"retry: 3000\n")
    assert answer.body.count(b"event: stats") >= 3


async def test_stream_auth_is_checked_before_anything_is_streamed(api):
    assert (await api.stream(None)).status == 401
    assert (await api.stream("cdrw_forged")).status == 401
    ingest = await api.stream(await api.token("ingest"))
    assert ingest.status == 403 and b"event:" not in ingest.body
    other = await api.stream(await api.token(tenant="a"), query="tenant=b")
    assert other.status == 404 and b"event:" not in other.body
    bad = await api.stream(await api.token(), last_event_id="yesterday")
    assert bad.status == 422


async def test_a_revoked_token_ends_its_stream(api):
    token = await api.token()

    def until(body: bytes) -> bool:
        if stats_seen(body) and not revoking.done():
            revoking.set_result(None)
        return False  # read until the server ends the stream

    revoking: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def revoke() -> None:
        await revoking
        await api.app.state.tokens.revoke(token[:12])

    answer, _ = await asyncio.gather(api.stream(token, until=until), revoke())
    assert answer.status == 200
    assert answer.events[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_the_stream_outlives_the_header_timeout_behind_the_real_server(tmp_path):
    """uvicorn with the guarded h11 protocol and the guard: the stream is sent as it is
    written (not buffered) and is not closed by the header-read or keep-alive timers."""
    settings = settings_for(
        tmp_path, sse_poll_seconds=0.02, sse_stats_seconds=0.3, sse_heartbeat_seconds=0.05
    )
    app = create_app(
        settings,
        consumer_enabled=False,
        campaign_publisher=FakePublisher(),
        profiles=FakeProfiles(),
    )

    async def make_token() -> str:
        async with app.router.lifespan_context(app):
            return str(await app.state.tokens.create("viewer"))

    token = asyncio.run(make_token())
    with live_server(app, header_timeout_seconds=0.5, keep_alive_seconds=1) as (host, port):
        url = f"http://{host}:{port}/v1/alerts/stream"
        headers = {"Authorization": f"Bearer {token}"}
        received = b""
        with (
            httpx.Client(timeout=10) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-store"
            assert "default-src 'self'" in response.headers["content-security-policy"]
            for chunk in response.iter_bytes():
                received += chunk
                if received.count(b"event: stats") >= 8:  # > 2 s of stream at 0.3 s each
                    break
    assert received.count(b": heartbeat") >= 2


# --- minutes and feed state ------------------------------------------------------------


def minute(campaign: str, start: datetime, **values: int) -> Any:
    counts = {name: values.get(name, 0) for name in COUNT_FIELDS}
    stats = stats_from_counts(campaign, start, start + MINUTE, counts)
    return stats_message(stats, "minute", tenant_id="default", profile="it")


async def test_minutes_are_columns_with_the_trailing_early_warning_rate(api):
    t0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    await api.feed(
        minute("c", t0 - 20 * MINUTE, attempts=9, answered_by_person=9, silent=9),  # outside
        minute("c", t0 - 5 * MINUTE, attempts=10, answered_by_person=10, silent=1),
        minute("c", t0 + MINUTE, attempts=20, answered_by_person=10, silent=3),
    )
    headers = {"Authorization": f"Bearer {await api.token()}"}
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get(
            "/v1/campaigns/c/minutes",
            params={"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T10:03:00Z"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["from"] == "2026-03-02T10:00:00Z" and body["profile"] == "it"
        assert body["attempts"] == [0, 20, 0]
        assert body["silent"] == [0, 3, 0]
        assert body["rule"]["metric"] == "silent" and body["rule"]["window"] == "15m"
        assert body["rule"]["cap"] == pytest.approx(0.03)
        # trailing 15 minutes: 1/10 (the 09:55 minute), then 4/20, 4/20
        assert body["value"] == pytest.approx([0.1, 0.2, 0.2])

        refused = await client.get(
            "/v1/campaigns/c/minutes",
            params={"from": "2026-03-01T00:00:00Z", "to": "2026-03-09T00:00:00Z"},
            headers=headers,
        )
        assert refused.status_code == 422
        unknown = await client.get("/v1/campaigns/nope/minutes", headers=headers)
        assert unknown.status_code == 404


async def test_a_campaign_whose_cdrs_stopped_arriving_is_stale(api):
    await api.feed(window("default", "quiet"))
    headers = {"Authorization": f"Bearer {await api.token()}"}
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        first = (await client.get("/v1/campaigns", headers=headers)).json()["items"][0]
        assert first["feed"] == "live"
        assert first["last_cdr_received_at"] == "2026-03-02T12:00:30Z"
        api.clock.now = NOW + timedelta(minutes=5)  # exactly the threshold: still live
        assert (await client.get("/v1/campaigns", headers=headers)).json()["items"][0][
            "feed"
        ] == "live"
        api.clock.now = NOW + timedelta(minutes=5, seconds=1)
        later = (await client.get("/v1/campaigns", headers=headers)).json()["items"][0]
        assert later["feed"] == "stale"


async def test_figures_replayed_after_a_restart_do_not_make_a_stopped_feed_live(api):
    await api.feed(window("default", "stopped"))
    api.clock.now = NOW + timedelta(minutes=20)
    await api.feed(window("default", "stopped", replayed=True))  # the archive's replay
    page = await api.app.state.store.list_campaigns(tenant_id=None)
    assert page.items[0].last_cdr_received_at == NOW
    assert page.items[0].feed == "stale"
    await api.feed(window("default", "stopped", attempts=6))  # the dialer sends again
    page = await api.app.state.store.list_campaigns(tenant_id=None)
    assert (page.items[0].last_cdr_received_at, page.items[0].feed) == (api.clock.now, "live")
