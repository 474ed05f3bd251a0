"""Webhooks: every alert change of a tenant POSTed to the receivers its admin registered.

What a receiver gets, per change of the `alert_history` feed (opened, updated, resolved,
acknowledged, note) that its event filter keeps:

- `POST <url>` with a JSON body `{"event", "seq", "idempotency_key", "webhook_id", "alert",
  "change"}`: `alert` is the alert as `GET /v1/alerts/{id}` shows it (without history and
  notes) with the state, severity and figures of this change; `change` is the history row.
- `X-Cdrwatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, a
  fresh `t` on every try; `Idempotency-Key: <alert id>:<seq>` (one per alert change, the
  same on every try and for every webhook); `X-Cdrwatch-Event`, `X-Cdrwatch-Delivery`.
- Any 2xx is delivered. Anything else (another status, a redirect, no answer within the
  timeout) is retried after backoff, 2 × backoff, 4 × ... (capped) until the last try,
  then the delivery is `dead`. Every try is kept (`GET /v1/webhooks/{id}/deliveries`).

Durability: each webhook has a cursor (the last history seq turned into deliveries),
advanced in the transaction that inserts its deliveries; a delivery's state is written
after each try. A restart therefore loses no change and re-sends nothing already
answered; a try cut off by the stop is made again (at least once; the idempotency key
lets a receiver drop the repeat). One api process delivers: run the dispatcher in one
api only when several share a database (`CDRWATCH_WEBHOOKS_ENABLED=false` elsewhere).

The pipeline never waits for a receiver: the dispatcher is its own task; the consumer only
writes history rows, and each try runs in its own task with a timeout.

Any http(s) URL is accepted, loopback included (tests and the embedded stack run their
receivers on 127.0.0.1); only admins register webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import httpx
import orjson
import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.alert_v1 import AlertV1
from schemas.cdr_v1 import Instant
from services.api.clock import Clock
from services.api.models import HistoryKind, TenantId
from services.api.store import InvalidCursor
from services.common.db import (
    alert_history,
    alerts,
    webhook_attempts,
    webhook_deliveries,
    webhooks,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Cdrwatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Cdrwatch-Event"
DELIVERY_HEADER = "X-Cdrwatch-Delivery"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a public prefix, not a secret
DeliveryState = Literal["pending", "delivered", "dead"]
_ENQUEUE_BATCH = 500


# --- signing and back-off (pure) ---------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Cdrwatch-Signature` value: `t=<timestamp>,v1=<hex HMAC-SHA256 of
    "<timestamp>.<body>" keyed with the secret>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, now: float, tolerance_seconds: float = 300
) -> bool:
    """What a receiver checks: the header's v1 is the HMAC of its t and the body, and t is
    within `tolerance_seconds` of `now` (unix seconds), so a captured request cannot be
    replayed later."""
    fields = dict(part.partition("=")[::2] for part in header.split(","))
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp, body)
    return abs(now - timestamp) <= tolerance_seconds and hmac.compare_digest(expected, header)


def retry_delay(tries: int, backoff_seconds: float, max_seconds: float) -> timedelta:
    """Wait after the `tries`-th failed try (1-based): backoff × 2^(tries-1), capped."""
    return timedelta(seconds=min(max_seconds, backoff_seconds * 2 ** min(tries - 1, 60)))


def after_try(
    tries: int, succeeded: bool, max_attempts: int
) -> Literal["delivered", "pending", "dead"]:
    """A delivery's state after its `tries`-th try."""
    if succeeded:
        return "delivered"
    return "dead" if tries >= max_attempts else "pending"


def idempotency_key(alert_id: str, seq: int) -> str:
    return f"{alert_id}:{seq}"


# --- API bodies --------------------------------------------------------------------------


def _secret(value: str) -> str:
    if not value.isprintable() or value.strip() != value:
        raise ValueError("must be printable, without surrounding blanks")
    return value


def _unique(values: list[HistoryKind] | None) -> list[HistoryKind] | None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError("events must not repeat")
    return values


class WebhookCreate(BaseModel):
    """Body of `POST /v1/webhooks`. `secret` None: one is generated (answered once);
    `events` None: every kind; `tenant_id`: the tenant whose alerts it receives (a
    tenant-bound token: its own; a token bound to no tenant may leave it out for every
    tenant's)."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[HttpUrl, Field(max_length=2000)]
    secret: Annotated[str, Field(min_length=16, max_length=200), AfterValidator(_secret)] | None = (
        None
    )
    events: Annotated[list[HistoryKind] | None, Field(min_length=1), AfterValidator(_unique)] = None
    description: Annotated[str, Field(max_length=200)] | None = None
    tenant_id: TenantId | None = None


class Webhook(BaseModel):
    """A webhook (never its secret). `last_seq` is the last alert_history seq queued for
    it; `deliveries` counts its deliveries by state."""

    id: str
    tenant_id: str | None
    url: str
    events: list[HistoryKind] | None
    description: str | None
    created_at: Instant
    last_seq: int
    deliveries: dict[DeliveryState, int]


class WebhookCreated(Webhook):
    """The answer to a create: the only time the secret is shown."""

    secret: str


class WebhookPage(BaseModel):
    items: list[Webhook]
    next_cursor: str | None


class DeliveryAttempt(BaseModel):
    """One try: the receiver's HTTP status (null: no answer) or what went wrong."""

    attempt: int
    attempted_at: Instant
    status_code: int | None
    error: str | None
    duration_ms: float


class Delivery(BaseModel):
    """One alert change to one webhook, with every try so far."""

    id: int
    seq: int
    alert_id: str
    event: HistoryKind
    idempotency_key: str
    state: DeliveryState
    next_attempt_at: Instant | None
    created_at: Instant
    updated_at: Instant
    body: dict[str, Any]
    attempts: list[DeliveryAttempt]


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: int
    webhook_id: str
    url: str
    secret: str
    kind: str
    idempotency_key: str
    body: bytes
    tries: int


# --- store -------------------------------------------------------------------------------


class WebhookStore:
    """Webhooks, their deliveries and tries (SQLAlchemy Core; SQLite and PostgreSQL).

    `tenant_id` arguments scope a read or change: None (a token bound to no tenant) sees
    every webhook; a tenant only that tenant's."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def create(self, body: WebhookCreate, tenant_id: str | None) -> WebhookCreated:
        """Register a webhook; it receives the changes recorded from now on."""
        secret = body.secret or SECRET_PREFIX + secrets.token_urlsafe(32)
        webhook_id = "wh_" + secrets.token_hex(8)
        now = self._clock()
        async with self._engine.begin() as conn:
            newest = (await conn.execute(sa.select(sa.func.max(alert_history.c.seq)))).scalar()
            await conn.execute(
                webhooks.insert().values(
                    id=webhook_id,
                    tenant_id=tenant_id,
                    url=str(body.url),
                    secret=secret,
                    events=body.events,
                    description=body.description,
                    cursor_seq=int(newest or 0),
                    created_at=now,
                )
            )
            created = await self._get(conn, webhook_id, None)
        assert created is not None  # noqa: S101 - inserted just above
        return WebhookCreated(**created.model_dump(), secret=secret)

    async def list_webhooks(self, tenant_id: str | None) -> WebhookPage:
        query = sa.select(webhooks).order_by(webhooks.c.created_at, webhooks.c.id)
        if tenant_id is not None:
            query = query.where(webhooks.c.tenant_id == tenant_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            counts = await self._counts(conn, [row.id for row in rows])
        return WebhookPage(items=[_webhook(row, counts) for row in rows], next_cursor=None)

    async def get(self, webhook_id: str, tenant_id: str | None) -> Webhook | None:
        async with self._engine.connect() as conn:
            return await self._get(conn, webhook_id, tenant_id)

    async def delete(self, webhook_id: str, tenant_id: str | None) -> bool:
        """Delete the webhook with its deliveries and tries; False when it is not there."""
        async with self._engine.begin() as conn:
            if await self._get(conn, webhook_id, tenant_id) is None:
                return False
            ids = sa.select(webhook_deliveries.c.id).where(
                webhook_deliveries.c.webhook_id == webhook_id
            )
            await conn.execute(
                webhook_attempts.delete().where(webhook_attempts.c.delivery_id.in_(ids))
            )
            await conn.execute(
                webhook_deliveries.delete().where(webhook_deliveries.c.webhook_id == webhook_id)
            )
            await conn.execute(webhooks.delete().where(webhooks.c.id == webhook_id))
        return True

    async def deliveries(
        self,
        webhook_id: str,
        tenant_id: str | None,
        *,
        state: DeliveryState | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> DeliveryPage | None:
        """The webhook's deliveries newest first (by id), each with its tries; None when
        the webhook is not there."""
        conditions = [webhook_deliveries.c.webhook_id == webhook_id]
        if state is not None:
            conditions.append(webhook_deliveries.c.state == state)
        if cursor is not None:
            if not cursor.isdigit() or len(cursor) > 18:
                raise InvalidCursor("cursor is not one this api issued")
            conditions.append(webhook_deliveries.c.id < int(cursor))
        query = (
            sa.select(webhook_deliveries)
            .where(*conditions)
            .order_by(webhook_deliveries.c.id.desc())
            .limit(limit + 1)
        )
        async with self._engine.connect() as conn:
            if await self._get(conn, webhook_id, tenant_id) is None:
                return None
            rows = (await conn.execute(query)).all()
            tries: dict[int, list[DeliveryAttempt]] = {}
            ids = [row.id for row in rows[:limit]]
            if ids:
                found = await conn.execute(
                    sa.select(webhook_attempts)
                    .where(webhook_attempts.c.delivery_id.in_(ids))
                    .order_by(webhook_attempts.c.delivery_id, webhook_attempts.c.attempt)
                )
                for a in found:
                    tries.setdefault(a.delivery_id, []).append(
                        DeliveryAttempt.model_validate(a, from_attributes=True)
                    )
        items = [
            Delivery(
                id=row.id,
                seq=row.seq,
                alert_id=row.alert_id,
                event=row.kind,
                idempotency_key=row.idempotency_key,
                state=row.state,
                next_attempt_at=row.next_attempt_at,
                created_at=row.created_at,
                updated_at=row.updated_at,
                body=orjson.loads(row.body),
                attempts=tries.get(row.id, []),
            )
            for row in rows[:limit]
        ]
        next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
        return DeliveryPage(items=items, next_cursor=next_cursor)

    async def _get(
        self, conn: AsyncConnection, webhook_id: str, tenant_id: str | None
    ) -> Webhook | None:
        query = sa.select(webhooks).where(webhooks.c.id == webhook_id)
        if tenant_id is not None:
            query = query.where(webhooks.c.tenant_id == tenant_id)
        row = (await conn.execute(query)).first()
        if row is None:
            return None
        return _webhook(row, await self._counts(conn, [webhook_id]))

    @staticmethod
    async def _counts(
        conn: AsyncConnection, ids: Sequence[str]
    ) -> dict[str, dict[DeliveryState, int]]:
        counts: dict[str, dict[DeliveryState, int]] = {
            i: {"pending": 0, "delivered": 0, "dead": 0} for i in ids
        }
        if not ids:
            return counts
        query = (
            sa.select(webhook_deliveries.c.webhook_id, webhook_deliveries.c.state, sa.func.count())
            .where(webhook_deliveries.c.webhook_id.in_(list(ids)))
            .group_by(webhook_deliveries.c.webhook_id, webhook_deliveries.c.state)
        )
        for webhook_id, state, count in await conn.execute(query):
            counts[webhook_id][state] = int(count)
        return counts

    # --- the dispatcher's side -----------------------------------------------------------

    async def enqueue(self) -> int:
        """Turn the history rows past each webhook's cursor into pending deliveries, and
        advance the cursor in the same transaction. Returns how many were queued."""
        now = self._clock()
        queued = 0
        async with self._engine.connect() as conn:
            hooks = (await conn.execute(sa.select(webhooks))).all()
        for hook in hooks:
            async with self._engine.begin() as conn:
                queued += await self._enqueue_one(conn, hook, now)
        return queued

    async def _enqueue_one(self, conn: AsyncConnection, hook: sa.Row[Any], now: datetime) -> int:
        conditions = [alert_history.c.seq > hook.cursor_seq]
        if hook.tenant_id is not None:
            conditions.append(alerts.c.tenant_id == hook.tenant_id)
        query = (
            sa.select(
                alert_history,
                alerts.c.body.label("alert_body"),
                alerts.c.tenant_id.label("alert_tenant_id"),
                alerts.c.acknowledged_by,
                alerts.c.acknowledged_at,
            )
            .join(alerts, alerts.c.id == alert_history.c.alert_id)
            .where(*conditions)
            .order_by(alert_history.c.seq)
            .limit(_ENQUEUE_BATCH)
        )
        history = (await conn.execute(query)).all()
        if not history:
            return 0
        events = set(hook.events) if hook.events is not None else None
        rows = []
        for h in history:
            if events is not None and h.kind not in events:
                continue
            key = idempotency_key(h.alert_id, h.seq)
            rows.append(
                {
                    "webhook_id": hook.id,
                    "seq": h.seq,
                    "alert_id": h.alert_id,
                    "kind": h.kind,
                    "idempotency_key": key,
                    "body": orjson.dumps(_payload(hook.id, key, h)).decode(),
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        # Only this dispatcher advances the cursor; the guard on its old value keeps a
        # second one (a misconfigured second api) from queueing the same rows twice.
        moved = await conn.execute(
            webhooks.update()
            .where(webhooks.c.id == hook.id, webhooks.c.cursor_seq == hook.cursor_seq)
            .values(cursor_seq=history[-1].seq)
        )
        if not moved.rowcount:
            return 0
        if rows:
            await conn.execute(webhook_deliveries.insert(), rows)
        return len(rows)

    async def due(self, *, exclude: set[int], limit: int) -> list[DueDelivery]:
        """Pending deliveries whose next try is due, oldest first, not in `exclude`."""
        query = (
            sa.select(webhook_deliveries, webhooks.c.url, webhooks.c.secret)
            .join(webhooks, webhooks.c.id == webhook_deliveries.c.webhook_id)
            .where(
                webhook_deliveries.c.state == "pending",
                webhook_deliveries.c.next_attempt_at <= self._clock(),
            )
            .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id)
            .limit(limit + len(exclude))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            DueDelivery(
                id=row.id,
                webhook_id=row.webhook_id,
                url=row.url,
                secret=row.secret,
                kind=row.kind,
                idempotency_key=row.idempotency_key,
                body=row.body.encode(),
                tries=row.attempts,
            )
            for row in rows
            if row.id not in exclude
        ][:limit]

    async def record_try(
        self,
        delivery: DueDelivery,
        *,
        attempted_at: datetime,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        state: DeliveryState,
        next_attempt_at: datetime | None,
    ) -> None:
        """Keep one try and the delivery's state after it (nothing if it was deleted)."""
        tries = delivery.tries + 1
        async with self._engine.begin() as conn:
            updated = await conn.execute(
                webhook_deliveries.update()
                .where(webhook_deliveries.c.id == delivery.id)
                .values(
                    state=state,
                    attempts=tries,
                    next_attempt_at=next_attempt_at,
                    updated_at=self._clock(),
                )
            )
            if not updated.rowcount:
                return
            await conn.execute(
                webhook_attempts.insert().values(
                    delivery_id=delivery.id,
                    attempt=tries,
                    attempted_at=attempted_at,
                    status_code=status_code,
                    error=error[:500] if error else None,
                    duration_ms=duration_ms,
                )
            )


def _webhook(row: sa.Row[Any], counts: Mapping[str, dict[DeliveryState, int]]) -> Webhook:
    return Webhook(
        id=row.id,
        tenant_id=row.tenant_id,
        url=row.url,
        events=row.events,
        description=row.description,
        created_at=row.created_at,
        last_seq=row.cursor_seq,
        deliveries=counts.get(row.id, {"pending": 0, "delivered": 0, "dead": 0}),
    )


_CHANGE_FIELDS = ("state", "severity", "value", "numerator", "denominator")


def _payload(webhook_id: str, key: str, row: sa.Row[Any]) -> dict[str, Any]:
    """The JSON body of one change: the alert with this change's state and figures."""
    alert = AlertV1.model_validate(
        {
            **row.alert_body,
            "tenant_id": row.alert_tenant_id,
            "acknowledged_by": row.acknowledged_by,
            "acknowledged_at": row.acknowledged_at,
        }
    ).model_dump(mode="json")
    change = {name: getattr(row, name) for name in _CHANGE_FIELDS}
    alert.update(change)
    return {
        "event": row.kind,
        "seq": row.seq,
        "idempotency_key": key,
        "webhook_id": webhook_id,
        "alert": alert,
        "change": {
            "kind": row.kind,
            **change,
            "recorded_at": row.recorded_at.isoformat().replace("+00:00", "Z"),
            "author": row.author,
            "note": row.note,
        },
    }


# --- dispatcher --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float
    timeout_seconds: float
    poll_seconds: float
    concurrency: int


class WebhookDispatcher:
    """The api's background task: queue new history rows, then try every due delivery in
    its own task (at most `concurrency` at once), so one slow receiver holds up neither
    the others nor the consumer."""

    def __init__(
        self,
        store: WebhookStore,
        policy: DeliveryPolicy,
        clock: Clock,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self._store = store
        self._policy = policy
        self._clock = clock
        self._client_factory = client_factory or (
            lambda: httpx.AsyncClient(timeout=policy.timeout_seconds, follow_redirects=False)
        )

    async def run(self) -> None:
        in_flight: dict[int, asyncio.Task[None]] = {}
        async with self._client_factory() as client:
            try:
                while True:
                    try:
                        await self._store.enqueue()
                        free = self._policy.concurrency - len(in_flight)
                        due = await self._store.due(exclude=set(in_flight), limit=free)
                        for delivery in due:
                            task = asyncio.create_task(self._try(client, delivery))
                            in_flight[delivery.id] = task
                            task.add_done_callback(_forget(in_flight, delivery.id))
                    except Exception as exc:  # the database may be busy: next round
                        log.warning("webhook_dispatch_failed error=%r", exc)
                    await asyncio.sleep(self._policy.poll_seconds)
            finally:
                for task in list(in_flight.values()):
                    task.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.gather(*in_flight.values(), return_exceptions=True)

    async def _try(self, client: httpx.AsyncClient, delivery: DueDelivery) -> None:
        """One try of `delivery`, recorded with the state it leaves the delivery in."""
        attempted_at = self._clock()
        timestamp = int(attempted_at.timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "cdrwatch-webhooks/1",
            SIGNATURE_HEADER: signature(delivery.secret, timestamp, delivery.body),
            IDEMPOTENCY_HEADER: delivery.idempotency_key,
            EVENT_HEADER: delivery.kind,
            DELIVERY_HEADER: str(delivery.id),
        }
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            response = await client.post(delivery.url, content=delivery.body, headers=headers)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration_ms = (time.perf_counter() - started) * 1000
        tries = delivery.tries + 1
        state = after_try(tries, error is None, self._policy.max_attempts)
        next_at = None
        if state == "pending":
            next_at = self._clock() + retry_delay(
                tries, self._policy.backoff_seconds, self._policy.backoff_max_seconds
            )
        try:
            await self._store.record_try(
                delivery,
                attempted_at=attempted_at,
                status_code=status_code,
                error=error,
                duration_ms=duration_ms,
                state=state,
                next_attempt_at=next_at,
            )
        except Exception as exc:  # not recorded: the delivery stays due and is tried again
            log.warning("webhook_record_failed delivery=%s error=%r", delivery.id, exc)
        if state == "dead":
            log.warning(
                "webhook_dead_letter webhook=%s delivery=%s error=%s",
                delivery.webhook_id,
                delivery.id,
                error,
            )


def _forget(
    in_flight: dict[int, asyncio.Task[None]], key: int
) -> Callable[[asyncio.Task[None]], None]:
    def done(_: asyncio.Task[None]) -> None:
        in_flight.pop(key, None)

    return done
