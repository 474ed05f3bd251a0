"""Webhooks against real receivers: an aiohttp server on a free 127.0.0.1 port that
checks every signature. The api runs in process (temp SQLite, no broker) with its
dispatcher on, fed alerts directly; its clock is the wall clock (back-off is real time,
kept short by the settings; nothing asserts a duration)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from schemas.alert_v1 import AlertV1
from services.api.app import create_app
from services.api.consumer import alert_message, apply_messages
from services.api.webhooks import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    after_try,
    retry_delay,
    signature,
    verify_signature,
)
from services.common.broker import free_port
from tests.helpers import wait_until_async
from tests.service.test_api_routes import FakeProfiles, FakePublisher, settings_for

ALERT_ID = "it.silent_rate.cumulative:c1"


def alert(campaign: str = "c1", tenant: str = "acme", **fields: Any) -> AlertV1:
    body = {
        "id": f"it.silent_rate.cumulative:{campaign}",
        "rule": "it.silent_rate.cumulative",
        "profile": "it",
        "campaign_id": campaign,
        "tenant_id": tenant,
        "severity": "warning",
        "state": "firing",
        "value": 0.025,
        "threshold": 0.03,
        "numerator": 25,
        "denominator": 1000,
        "window": {"start": "2026-03-02T10:00:00Z", "end": "2026-03-02T11:00:00Z"},
        "opened_at": "2026-03-02T10:30:00Z",
    }
    return AlertV1.model_validate(body | fields)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """Answers each path with the statuses in `script` (the last one repeats; 200 when
    none); `hang` paths never answer. Every request is kept with whether its signature
    verified against `secrets[path]`."""

    port: int
    secrets: dict[str, str] = field(default_factory=dict)
    script: dict[str, list[int]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    requests: list[Received] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        secret = self.secrets.get(request.path, "")
        signed = verify_signature(
            secret, request.headers.get(SIGNATURE_HEADER, ""), body, time.time()
        )
        self.requests.append(Received(request.path, dict(request.headers), body, signed))
        if request.path in self.hang:
            await asyncio.sleep(3600)
        statuses = self.script.get(request.path) or [200]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return web.Response(status=status, text="ok" if status < 300 else "no")


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver(port=free_port())
    app = web.Application()
    app.router.add_post("/{tail:.*}", recv.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", recv.port).start()
    try:
        yield recv
    finally:
        await runner.cleanup()


@asynccontextmanager
async def api_app(tmp_path: Path, **settings: Any) -> AsyncIterator[Any]:
    defaults: dict[str, Any] = {
        "webhook_poll_seconds": 0.05,
        "webhook_backoff_seconds": 0.05,
        "webhook_backoff_max_seconds": 0.2,
        "webhook_max_attempts": 3,
        "webhook_timeout_seconds": 30,
    }
    app = create_app(
        settings_for(tmp_path, **(defaults | settings)),
        consumer_enabled=False,
        campaign_publisher=FakePublisher(),
        profiles=FakeProfiles(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            app.state.test_client = client
            yield app


async def bearer(app: Any, role: str, tenant: str | None = None, name: str | None = None) -> dict:
    return {"Authorization": f"Bearer {await app.state.tokens.create(role, tenant, name)}"}


async def feed(app: Any, *alerts: AlertV1) -> None:
    await apply_messages(app.state.store, [alert_message(a) for a in alerts])


async def register(app: Any, headers: dict, url: str, **body: Any) -> dict:
    answer = await app.state.test_client.post(
        "/v1/webhooks", json={"url": url, **body}, headers=headers
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


async def deliveries(app: Any, headers: dict, webhook_id: str) -> list[dict]:
    answer = await app.state.test_client.get(
        f"/v1/webhooks/{webhook_id}/deliveries", headers=headers
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


# --- pure parts ------------------------------------------------------------------------


def test_the_signature_is_an_hmac_of_timestamp_dot_body_and_expires():
    body = b'{"event":"opened"}'
    header = signature("s3cret-s3cret-s3cret", 1772445600, body)
    assert header.startswith("t=1772445600,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature("s3cret-s3cret-s3cret", header, body, 1772445600 + 299)
    assert not verify_signature("s3cret-s3cret-s3cret", header, body + b" ", 1772445600)
    assert not verify_signature("another-secret-value", header, body, 1772445600)
    assert not verify_signature("s3cret-s3cret-s3cret", header, body, 1772445600 + 301)
    assert not verify_signature("s3cret-s3cret-s3cret", "v1=abc", body, 1772445600)


@pytest.mark.parametrize(
    ("tries", "seconds"), [(1, 2), (2, 4), (3, 8), (10, 60), (200, 60)], ids=str
)
def test_retries_back_off_exponentially_up_to_the_cap(tries, seconds):
    assert retry_delay(tries, 2.0, 60.0) == timedelta(seconds=seconds)


def test_the_last_failed_try_is_dead_letter():
    assert after_try(1, False, 3) == "pending"
    assert after_try(3, False, 3) == "dead"
    assert after_try(3, True, 3) == "delivered"


# --- through the api -------------------------------------------------------------------


async def test_every_alert_change_reaches_a_real_receiver_signed(tmp_path):
    async with receiver() as recv, api_app(tmp_path) as app:
        admin = await bearer(app, "admin", "acme")
        hook = await register(app, admin, recv.url("/all"), description="ops pager")
        assert hook["secret"].startswith("whsec_") and hook["tenant_id"] == "acme"
        recv.secrets["/all"] = hook["secret"]
        acks_secret = "a-secret-we-chose-ourselves"
        only_acks = await register(
            app, admin, recv.url("/acks"), secret=acks_secret, events=["acknowledged", "note"]
        )
        assert only_acks["secret"] == acks_secret
        recv.secrets["/acks"] = acks_secret

        await feed(app, alert(), alert(numerator=28, value=0.028))
        await feed(app, alert(severity="violation", numerator=40, value=0.04))
        await feed(app, alert(campaign="g1", tenant="globex"))  # another tenant's
        giulia = await bearer(app, "compliance", "acme", "Giulia Rossi")
        client = app.state.test_client
        assert (await client.post(f"/v1/alerts/{ALERT_ID}/ack", headers=giulia)).status_code == 200
        noted = await client.post(
            f"/v1/alerts/{ALERT_ID}/notes", json={"note": "BPO called"}, headers=giulia
        )
        assert noted.status_code == 200
        await feed(app, alert(severity="violation", state="resolved", numerator=20, value=0.02))

        await wait_until_async(
            lambda: len(recv.at("/all")) >= 6 and len(recv.at("/acks")) >= 2,
            timeout=30,
            message="6 + 2",
        )
        got = recv.at("/all")
        assert all(r.signed for r in recv.requests)
        by_seq = sorted(got, key=lambda r: r.json["seq"])
        assert [r.json["event"] for r in by_seq] == [
            "opened",
            "updated",
            "updated",
            "acknowledged",
            "note",
            "resolved",
        ]
        assert [r.json["alert"]["numerator"] for r in by_seq] == [25, 28, 40, 40, 40, 20]
        assert {r.json["alert"]["tenant_id"] for r in got} == {"acme"}  # never globex's
        ack = by_seq[3].json
        assert ack["change"]["author"] == "Giulia Rossi"
        assert ack["alert"]["acknowledged_by"] == "Giulia Rossi"
        assert by_seq[4].json["change"]["note"] == "BPO called"
        for r in got:
            assert r.headers[IDEMPOTENCY_HEADER] == f"{ALERT_ID}:{r.json['seq']}"
            assert r.json["idempotency_key"] == r.headers[IDEMPOTENCY_HEADER]
            assert r.headers["X-Cdrwatch-Event"] == r.json["event"]
            assert r.headers["Content-Type"] == "application/json"
        assert sorted(r.json["event"] for r in recv.at("/acks")) == ["acknowledged", "note"]
        # the same change carries the same key to every webhook
        assert {r.headers[IDEMPOTENCY_HEADER] for r in recv.at("/acks")} <= {
            r.headers[IDEMPOTENCY_HEADER] for r in got
        }

        async def all_delivered() -> bool:
            items = await deliveries(app, admin, hook["id"])
            return len(items) == 6 and all(d["state"] == "delivered" for d in items)

        await wait_until_async(
            all_delivered, timeout=30, message="every delivery recorded as delivered"
        )
        items = await deliveries(app, admin, hook["id"])
        assert all(len(d["attempts"]) == 1 for d in items)
        assert all(d["attempts"][0]["status_code"] == 200 for d in items)
        detail = (await client.get(f"/v1/webhooks/{hook['id']}", headers=admin)).json()
        assert detail["deliveries"] == {"pending": 0, "delivered": 6, "dead": 0}
        assert "secret" not in detail
        listed = (await client.get("/v1/webhooks", headers=admin)).json()["items"]
        assert {w["id"] for w in listed} == {hook["id"], only_acks["id"]}
        assert all("secret" not in w for w in listed)


async def test_a_failing_receiver_gets_retries_then_dead_letter(tmp_path):
    async with receiver() as recv, api_app(tmp_path, webhook_max_attempts=3) as app:
        admin = await bearer(app, "admin")
        down = await register(app, admin, recv.url("/down"), tenant_id="acme")
        flaky = await register(app, admin, recv.url("/flaky"), tenant_id="acme")
        recv.secrets.update({"/down": down["secret"], "/flaky": flaky["secret"]})
        recv.script.update({"/down": [500], "/flaky": [503, 502, 200]})
        await feed(app, alert())

        async def settled() -> bool:
            dead = await deliveries(app, admin, down["id"])
            done = await deliveries(app, admin, flaky["id"])
            return [d["state"] for d in dead + done] == ["dead", "delivered"]

        await wait_until_async(settled, timeout=30, message="a dead and a delivered delivery")
        [dead] = await deliveries(app, admin, down["id"])
        assert [(a["attempt"], a["status_code"], a["error"]) for a in dead["attempts"]] == [
            (1, 500, "HTTP 500"),
            (2, 500, "HTTP 500"),
            (3, 500, "HTTP 500"),
        ]
        assert dead["next_attempt_at"] is None
        [done] = await deliveries(app, admin, flaky["id"])
        assert [a["status_code"] for a in done["attempts"]] == [503, 502, 200]
        # every try of one change carries its one idempotency key, each signed afresh
        assert len(recv.at("/down")) == 3
        assert {r.headers[IDEMPOTENCY_HEADER] for r in recv.at("/down")} == {f"{ALERT_ID}:1"}
        assert all(r.signed for r in recv.requests)
        dead_only = await app.state.test_client.get(
            f"/v1/webhooks/{down['id']}/deliveries?state=dead", headers=admin
        )
        assert [d["id"] for d in dead_only.json()["items"]] == [dead["id"]]
        await asyncio.sleep(0.3)  # longer than the back-off cap: a dead letter stays dead
        assert len(recv.at("/down")) == 3


async def test_a_receiver_that_never_answers_delays_neither_the_store_nor_others(tmp_path):
    async with receiver() as recv, api_app(tmp_path) as app:
        admin = await bearer(app, "admin")
        hung = await register(app, admin, recv.url("/hung"))
        fine = await register(app, admin, recv.url("/fine"))
        recv.secrets.update({"/hung": hung["secret"], "/fine": fine["secret"]})
        recv.hang.add("/hung")
        await feed(app, alert())
        await wait_until_async(
            lambda: recv.at("/hung") and recv.at("/fine"),
            timeout=30,
            message="both receivers called",
        )
        # the hung receiver holds its request open; alerts keep being stored and delivered
        await feed(app, alert(severity="violation", numerator=40, value=0.04))
        detail = await app.state.store.get_alert(ALERT_ID, tenant_id=None)
        assert detail.severity == "violation"
        await wait_until_async(
            lambda: len(recv.at("/fine")) == 2,
            timeout=30,
            message="the second change at the fine receiver",
        )
        # its second delivery goes out beside the hung first one
        await wait_until_async(
            lambda: len(recv.at("/hung")) == 2,
            timeout=30,
            message="the second change at the hung receiver",
        )


async def test_a_restart_neither_loses_nor_resends_deliveries(tmp_path):
    async with receiver() as recv:
        async with api_app(tmp_path, webhook_max_attempts=100) as app:
            admin = await bearer(app, "admin")
            hook = await register(app, admin, recv.url("/hook"))
            recv.secrets["/hook"] = hook["secret"]
            await feed(app, alert(), alert(severity="violation", numerator=40, value=0.04))

            async def recorded() -> bool:
                items = await deliveries(app, admin, hook["id"])
                return [d["state"] for d in items] == ["delivered", "delivered"]

            await wait_until_async(
                recorded, timeout=30, message="two deliveries recorded before the restart"
            )
            # one more change whose tries fail: still pending when the api stops
            recv.script["/hook"] = [500]
            await feed(app, alert(severity="violation", numerator=41, value=0.041))
            await wait_until_async(
                lambda: len(recv.at("/hook")) >= 3, timeout=30, message="a failing try"
            )
        recv.script["/hook"] = [200]

        async with api_app(tmp_path, webhook_max_attempts=100) as app:
            await feed(app, alert(severity="violation", state="resolved", numerator=20, value=0.02))

            async def all_delivered() -> bool:
                items = await deliveries(app, admin, hook["id"])
                return len(items) == 4 and all(d["state"] == "delivered" for d in items)

            await wait_until_async(
                all_delivered, timeout=30, message="every delivery delivered after the restart"
            )
            received = [r.json["seq"] for r in recv.at("/hook")]
            # 1, 2 and 4 exactly once; 3 until a try succeeded (after the restart)
            assert sorted(s for s in received if s != 3) == [1, 2, 4], received
            assert received.count(3) >= 2
            items = {d["seq"]: d for d in await deliveries(app, admin, hook["id"])}
            third = items[3]["attempts"]
            assert [a["status_code"] for a in third][-1] == 200
            assert all(a["status_code"] == 500 for a in third[:-1])
            # every recorded try reached the receiver; one more may have been cut off by
            # the stop before its answer was recorded (at least once: the idempotency key)
            assert len(third) <= received.count(3) <= len(third) + 1
            assert all(len(items[seq]["attempts"]) == 1 for seq in (1, 2, 4))
            assert all(r.signed for r in recv.requests)


async def test_webhook_management_validates_and_scopes_by_tenant(tmp_path):
    async with api_app(tmp_path) as app:
        client = app.state.test_client
        acme_admin = await bearer(app, "admin", "acme")
        root = await bearer(app, "admin")
        hook = await register(app, acme_admin, "http://127.0.0.1:9/hook")
        for body in (
            {"url": "ftp://127.0.0.1/x"},
            {"url": "not a url"},
            {"url": "http://127.0.0.1:9/x", "secret": "short"},
            {"url": "http://127.0.0.1:9/x", "events": ["exploded"]},
            {"url": "http://127.0.0.1:9/x", "events": ["note", "note"]},
            {"url": "http://127.0.0.1:9/x", "events": []},
            {"url": "http://127.0.0.1:9/x", "surprise": 1},
        ):
            answer = await client.post("/v1/webhooks", json=body, headers=root)
            assert answer.status_code == 422, (body, answer.text)
        other = await client.post(
            "/v1/webhooks",
            json={"url": "http://127.0.0.1:9/x", "tenant_id": "globex"},
            headers=acme_admin,
        )
        assert other.status_code == 403
        globex_admin = await bearer(app, "admin", "globex")
        assert (
            await client.get(f"/v1/webhooks/{hook['id']}", headers=globex_admin)
        ).status_code == 404
        assert (
            await client.delete(f"/v1/webhooks/{hook['id']}", headers=globex_admin)
        ).status_code == 404
        assert (await client.get("/v1/webhooks", headers=globex_admin)).json()["items"] == []
        viewer = await bearer(app, "compliance", "acme")
        assert (await client.get("/v1/webhooks", headers=viewer)).status_code == 403
        assert (
            await client.get("/v1/webhooks/wh_nope/deliveries", headers=root)
        ).status_code == 404
        bad_cursor = await client.get(
            f"/v1/webhooks/{hook['id']}/deliveries?cursor=zz", headers=root
        )
        assert bad_cursor.status_code == 422
        assert (
            await client.delete(f"/v1/webhooks/{hook['id']}", headers=acme_admin)
        ).status_code == 204
        assert (await client.get(f"/v1/webhooks/{hook['id']}", headers=root)).status_code == 404


async def test_webhooks_survive_a_restart_with_their_secret_and_cursor(tmp_path):
    async with receiver() as recv:
        async with api_app(tmp_path) as app:
            admin = await bearer(app, "admin")
            hook = await register(app, admin, recv.url("/kept"))
            await feed(app, alert())
            await wait_until_async(
                lambda: recv.at("/kept"), timeout=30, message="a delivery before the restart"
            )
        recv.secrets["/kept"] = hook["secret"]
        async with api_app(tmp_path) as app:
            listed = (await app.state.test_client.get("/v1/webhooks", headers=admin)).json()
            assert [w["id"] for w in listed["items"]] == [hook["id"]]
            await feed(app, alert(severity="violation", numerator=40, value=0.04))
            await wait_until_async(
                lambda: len(recv.at("/kept")) == 2,
                timeout=30,
                message="a delivery after the restart",
            )
            assert recv.at("/kept")[-1].signed  # signed with the secret kept in the store
