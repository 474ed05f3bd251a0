"""The api's relational store: alerts with their history, campaigns, minute buckets and
live window figures (SQLAlchemy Core; SQLite and PostgreSQL).

Tenancy is a key: campaigns, minute buckets, live windows and alerts belong to a
(tenant_id, campaign_id); the same campaign id in two tenants is two campaigns. A message
without a tenant (older detectors) belongs to the default tenant.

Everything the consumer writes is idempotent, so a batch redelivered after a crash
changes nothing: alerts are upserted by id and a history row is added only when
(state, severity) changes; minute buckets and live windows are last-write-wins (the
detector publishes a campaign's figures in order on one partition, absolute values, so
after a rebuild of its state the figures converge to the rebuilt ones). Rejection counts
(table `rejections`) are the exception: increments, applied once because the consumer
stores its positions in the batch's transaction and seeks there. An alert marked
replayed (re-derived from archived records after the broker restarted) that is already
held updates its figures but adds no history and keeps opened_at, acks and notes; any
alert already held keeps its first opened_at. One
`apply_batch` is one transaction.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.alert_v1 import AlertV1
from schemas.call_v1 import CallV1
from schemas.instants import format_instant, parse_instant
from schemas.stats_v1 import COUNT_FIELDS, StatsV1, stats_from_counts
from services.api.clock import Clock, utc_now
from services.api.models import (
    AlertChange,
    AlertDetail,
    AlertNote,
    AlertPage,
    AlertTransition,
    CallPage,
    Campaign,
    CampaignConfig,
    CampaignPage,
    CampaignRejection,
    CampaignStatus,
    FeedState,
    TracedCall,
)
from services.common.db import (
    DEFAULT_TENANT,
    alert_aliases,
    alert_history,
    alerts,
    calls,
    campaign_feeds,
    campaigns,
    consumer_positions,
    minute_heads,
    minute_stats,
    rejections,
    window_stats,
)
from services.detector.core.engine import rolling_rule_ids
from services.detector.core.profiles import ProfileError, load_profile

# Call ids kept per rejection row, the first ones seen (a sender looks them up in its logs).
REJECTION_EXAMPLES = 5
_ACK_FIELDS = frozenset({"acknowledged_by", "acknowledged_at"})
_CHUNK = 500  # ids per IN (...) and rows per statement: well under every driver's limits


class InvalidCursor(ValueError):
    """A paging cursor this store did not issue."""


@dataclass(frozen=True, slots=True)
class MinuteBucket:
    """Absolute counts of one event-time minute [minute_start, minute_start + 1 min)."""

    campaign_id: str
    minute_start: datetime
    counts: Mapping[str, int]
    tenant_id: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class MinuteHead:
    """The calls of a minute bucket before the 30-day period boundary inside it:
    [minute_start, boundary_at) (schemas.stats_v1, window `minute-head`)."""

    campaign_id: str
    minute_start: datetime
    boundary_at: datetime
    counts: Mapping[str, int]
    tenant_id: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class LiveWindow:
    """The figures of one live window (`cumulative`, `15m`, ...) of a campaign."""

    campaign_id: str
    window: str
    profile: str | None
    start: datetime
    end: datetime
    counts: Mapping[str, int]
    tenant_id: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class Sighting:
    """A campaign seen on a topic, with the scope the detector reported for it."""

    campaign_id: str
    tenant_id: str | None = None
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class RejectionSeen:
    """One dead letter of cdrwatch.cdrs.dlq.v1 attributed to a tenant (`campaign_id` ""
    when its campaign is unknown), with the call id when the record holds one."""

    tenant_id: str
    campaign_id: str
    stage: str
    reason: str
    call_id: str | None = None


@dataclass(slots=True)
class StoreBatch:
    """What one consumer batch writes, in arrival order."""

    alerts: list[AlertV1] = field(default_factory=list)
    # Ids of alerts in `alerts` whose message was marked replayed, by position in `alerts`.
    replayed: set[int] = field(default_factory=set)
    minutes: list[MinuteBucket] = field(default_factory=list)
    heads: list[MinuteHead] = field(default_factory=list)
    windows: list[LiveWindow] = field(default_factory=list)
    sightings: list[Sighting] = field(default_factory=list)
    # Traced calls (tenant, campaign, facts), merged per (tenant, campaign, call id).
    calls: list[tuple[str, str, CallV1]] = field(default_factory=list)
    # (group_id, topic, partition) -> next offset to read, stored with the batch's effects.
    positions: dict[tuple[str, str, int], int] = field(default_factory=dict)
    # (tenant, campaign) with figures derived from CDRs as they arrived (not replayed).
    live_feeds: set[tuple[str, str]] = field(default_factory=set)
    # Dead letters, counted once each (the batch's positions make it applied once).
    rejections: list[RejectionSeen] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.alerts
            or self.rejections
            or self.minutes
            or self.heads
            or self.windows
            or self.sightings
            or self.calls
            or self.positions
        )

    def add_alert(self, alert: AlertV1, *, replayed: bool = False) -> None:
        if replayed:
            self.replayed.add(len(self.alerts))
        self.alerts.append(alert)


@dataclass(frozen=True, slots=True)
class WindowSample:
    campaign_id: str
    window: str
    profile: str
    counts: Mapping[str, int]
    tenant_id: str = DEFAULT_TENANT
    # The window's [start, end): for `cumulative`, end is the end of the minute holding the
    # campaign's newest call (event time).
    start: datetime | None = None
    end: datetime | None = None
    # The campaign's rule settings as the compliance view reads them: the configured
    # profile (else the one the detector reported; None: the default profile applies), its
    # overrides and the campaign's AMD false-positive ratio.
    rules_profile: str | None = None
    overrides: Mapping[str, Any] | None = None
    amd_false_positive_ratio: float = 0.0


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """What /metrics exposes from the store. `windows` are ordered by the campaign's
    first sighting, so the campaigns that keep their own label under the cap are stable."""

    windows: list[WindowSample]
    firing: dict[tuple[str, str, str], int]  # (tenant, rule, severity) -> alerts firing


def encode_cursor(values: Sequence[str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[str]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidCursor("cursor is not one this api issued") from None
    if not (
        isinstance(values, list) and len(values) == size and all(isinstance(v, str) for v in values)
    ):
        raise InvalidCursor("cursor is not one this api issued")
    return values


def _held(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "campaign_id": row.campaign_id,
        "rule": row.rule,
        "severity": row.severity,
        "state": row.state,
        "opened_at": row.opened_at,
        "resolved_at": row.resolved_at,
        "body": dict(row.body),
    }


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class AlertStore:
    """Reads and writes of the api; the consumer and the routes share one instance."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Clock = utc_now,
        default_tenant: str = DEFAULT_TENANT,
        stale_feed_after: timedelta = timedelta(minutes=5),
    ) -> None:
        self._engine = engine
        self._clock = clock
        self.default_tenant = default_tenant
        self.stale_feed_after = stale_feed_after

    def _tenant(self, tenant_id: str | None) -> str:
        return tenant_id or self.default_tenant

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # --- dialect -----------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        name = self._engine.dialect.name
        if name == "postgresql":
            return postgresql.insert(table)
        if name == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"no upsert for database dialect {name!r}")

    # --- writes from the consumer ------------------------------------------------------

    async def apply_batch(self, batch: StoreBatch) -> None:
        """Write one consumer batch in one transaction."""
        if not batch:
            return
        now = self._clock()
        async with self._engine.begin() as conn:
            sightings = list(batch.sightings)
            sightings += [Sighting(a.campaign_id, a.tenant_id, a.profile) for a in batch.alerts]
            await self._record_sightings(conn, sightings, now)
            marked = [(a, i in batch.replayed) for i, a in enumerate(batch.alerts)]
            await self._upsert_alerts(conn, marked, now)
            await self._upsert_minutes(conn, batch.minutes)
            await self._upsert_heads(conn, batch.heads)
            await self._upsert_windows(conn, batch.windows, now)
            await self._upsert_calls(conn, batch.calls, now)
            await self._record_feeds(conn, batch.live_feeds, now)
            await self._count_rejections(conn, batch.rejections, now)
            await self._store_positions(conn, batch.positions)

    async def upsert_alerts(self, items: Sequence[AlertV1], *, replayed: bool = False) -> None:
        batch = StoreBatch(alerts=list(items))
        if replayed:
            batch.replayed = set(range(len(items)))
        await self.apply_batch(batch)

    async def upsert_minute_buckets(self, buckets: Sequence[MinuteBucket]) -> None:
        await self.apply_batch(StoreBatch(minutes=list(buckets)))

    async def upsert_window_stats(self, windows: Sequence[LiveWindow]) -> None:
        await self.apply_batch(StoreBatch(windows=list(windows)))

    async def upsert_calls(self, items: Sequence[tuple[str, str, CallV1]]) -> None:
        await self.apply_batch(StoreBatch(calls=list(items)))

    async def consumer_positions(self, group_id: str) -> dict[tuple[str, int], int]:
        """The next offset to read per (topic, partition) the group stored with its data."""
        query = sa.select(
            consumer_positions.c.topic,
            consumer_positions.c.partition,
            consumer_positions.c.next_offset,
        ).where(consumer_positions.c.group_id == group_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {(row.topic, row.partition): int(row.next_offset) for row in rows}

    async def _store_positions(
        self, conn: AsyncConnection, positions: Mapping[tuple[str, str, int], int]
    ) -> None:
        if not positions:
            return
        stmt = self._insert(consumer_positions)
        stmt = stmt.on_conflict_do_update(
            index_elements=[
                consumer_positions.c.group_id,
                consumer_positions.c.topic,
                consumer_positions.c.partition,
            ],
            set_={"next_offset": stmt.excluded.next_offset},
        )
        rows: list[dict[str, Any]] = [
            {"group_id": group, "topic": topic, "partition": partition, "next_offset": offset}
            for (group, topic, partition), offset in positions.items()
        ]
        await conn.execute(stmt, rows)

    async def _record_feeds(
        self, conn: AsyncConnection, feeds: set[tuple[str, str]], now: datetime
    ) -> None:
        if not feeds:
            return
        stmt = self._insert(campaign_feeds)
        stmt = stmt.on_conflict_do_update(
            index_elements=[campaign_feeds.c.tenant_id, campaign_feeds.c.campaign_id],
            set_={"last_cdr_received_at": stmt.excluded.last_cdr_received_at},
        )
        rows = [
            {"tenant_id": tenant, "campaign_id": campaign_id, "last_cdr_received_at": now}
            for tenant, campaign_id in sorted(feeds)
        ]
        for chunk in _chunks(rows):
            await conn.execute(stmt, list(chunk))

    async def _count_rejections(
        self, conn: AsyncConnection, seen: Sequence[RejectionSeen], now: datetime
    ) -> None:
        """Add the batch's dead letters to their rows: count, last seen `now` (the api's
        clock when it read them), the first `REJECTION_EXAMPLES` distinct call ids."""
        if not seen:
            return
        tally: dict[tuple[str, str, str, str], tuple[int, list[str]]] = {}
        for item in seen:
            key = (item.tenant_id, item.campaign_id, item.stage, item.reason)
            count, examples = tally.get(key, (0, []))
            if item.call_id is not None and item.call_id not in examples:
                examples = [*examples, item.call_id]
            tally[key] = (count + 1, examples)
        c = rejections.c
        held: dict[tuple[str, str, str, str], list[str]] = {}
        for key in tally:
            row = (
                await conn.execute(
                    sa.select(c.example_call_ids).where(
                        c.tenant_id == key[0],
                        c.campaign_id == key[1],
                        c.stage == key[2],
                        c.reason == key[3],
                    )
                )
            ).first()
            if row is not None:
                held[key] = list(row.example_call_ids or [])
        stmt = self._insert(rejections)
        stmt = stmt.on_conflict_do_update(
            index_elements=[c.tenant_id, c.campaign_id, c.stage, c.reason],
            set_={
                "count": c.count + stmt.excluded.count,
                "last_seen_at": stmt.excluded.last_seen_at,
                "example_call_ids": stmt.excluded.example_call_ids,
            },
        )
        rows = []
        for key, (count, new) in sorted(tally.items()):
            examples = held.get(key, [])
            examples += [call_id for call_id in new if call_id not in examples]
            rows.append(
                {
                    "tenant_id": key[0],
                    "campaign_id": key[1],
                    "stage": key[2],
                    "reason": key[3],
                    "count": count,
                    "first_seen_at": now,
                    "last_seen_at": now,
                    "example_call_ids": examples[:REJECTION_EXAMPLES],
                }
            )
        for chunk in _chunks(rows):
            await conn.execute(stmt, list(chunk))

    async def list_rejections(
        self, *, tenant_id: str | None, campaign_id: str | None
    ) -> list[CampaignRejection]:
        """The rejection rows of the tenant (`tenant_id` None: the default tenant), of one
        campaign (`campaign_id` "": those of no known campaign), by stage and reason."""
        c = rejections.c
        query = (
            sa.select(rejections)
            .where(c.tenant_id == self._tenant(tenant_id), c.campaign_id == campaign_id)
            .order_by(c.stage, c.reason)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_rejection(row) for row in rows]

    async def unattributed_rejections(
        self, *, tenant_id: str | None
    ) -> list[tuple[str, CampaignRejection]]:
        """(tenant, row) of the rejections whose record named a tenant but no campaign, of
        `tenant_id` (None: every tenant's), by tenant, stage and reason."""
        c = rejections.c
        query = sa.select(rejections).where(c.campaign_id == "")
        if tenant_id is not None:
            query = query.where(c.tenant_id == tenant_id)
        query = query.order_by(c.tenant_id, c.stage, c.reason)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.tenant_id, _rejection(row)) for row in rows]

    async def _record_sightings(
        self, conn: AsyncConnection, sightings: Sequence[Sighting], now: datetime
    ) -> None:
        # One row per (tenant, campaign); the last profile reported is the observed one.
        merged: dict[tuple[str, str], str | None] = {}
        for s in sightings:
            key = (self._tenant(s.tenant_id), s.campaign_id)
            merged[key] = s.profile or merged.get(key)
        if not merged:
            return
        stmt = self._insert(campaigns)
        profile = sa.func.coalesce(stmt.excluded.observed_profile, campaigns.c.observed_profile)
        stmt = stmt.on_conflict_do_update(
            index_elements=[campaigns.c.tenant_id, campaigns.c.campaign_id],
            set_={"observed_profile": profile},
            where=campaigns.c.observed_profile.is_distinct_from(profile),
        )
        rows: list[dict[str, Any]] = [
            {
                "tenant_id": tenant,
                "campaign_id": campaign_id,
                "observed_profile": observed,
                "overrides": {},
                "amd_false_positive_ratio": 0.0,
                "first_seen_at": now,
                "updated_at": now,
            }
            for (tenant, campaign_id), observed in merged.items()
        ]
        for chunk in _chunks(rows):
            await conn.execute(stmt, list(chunk))

    async def _upsert_alerts(
        self, conn: AsyncConnection, items: Sequence[tuple[AlertV1, bool]], now: datetime
    ) -> None:
        """Upsert alerts by id in arrival order; `items` are (alert, marked replayed).

        A history row is added when state, severity, value, numerator or denominator
        changes (`_change_kind`); the same message again adds none. A replayed alert already
        held only refreshes its figures (value, numerator, denominator, evidence, window
        end): no history, and state, severity, opened_at, acks and notes stay."""
        if not items:
            return
        items = await self._resolve_aliases(conn, items)
        held: dict[str, dict[str, Any]] = {}
        ids = sorted({a.id for a, _ in items})
        for chunk in _chunks(ids):
            result = await conn.execute(sa.select(alerts).where(alerts.c.id.in_(chunk)))
            for row in result:
                held[row.id] = _held(row)
        items = await self._alias_rebuilt_episodes(conn, items, held)
        final: dict[str, dict[str, Any]] = {}
        history: list[dict[str, Any]] = []
        for alert, replayed in items:
            current = final.get(alert.id) or held.get(alert.id)
            if replayed and current is not None:
                body = dict(current["body"])
                window = dict(body.get("window") or {})
                window["end"] = alert.model_dump(mode="json")["window"]["end"]
                window.setdefault("start", window["end"])
                body.update(
                    value=alert.value,
                    numerator=alert.numerator,
                    denominator=alert.denominator,
                    evidence=alert.evidence.model_dump(mode="json"),
                    window=window,
                )
                final[alert.id] = {**current, "body": body, "updated_at": now}
                continue
            tenant = self._tenant(alert.tenant_id)
            kind = _change_kind(current, alert)
            if kind is not None:
                history.append(
                    {
                        "alert_id": alert.id,
                        "tenant_id": tenant,
                        "campaign_id": alert.campaign_id,
                        "rule": alert.rule,
                        "kind": kind,
                        "state": alert.state,
                        "severity": alert.severity,
                        "value": alert.value,
                        "numerator": alert.numerator,
                        "denominator": alert.denominator,
                        "recorded_at": now,
                    }
                )
            body = alert.model_dump(mode="json", exclude=set(_ACK_FIELDS))
            body["tenant_id"] = tenant
            opened_at = alert.opened_at
            if current is not None:
                # An alert id opens once (the detector re-opens it in place); a detector
                # that rebuilt its state from the archive stamps a later opened_at.
                opened_at = current["opened_at"]
                body["opened_at"] = current["body"].get("opened_at", body["opened_at"])
            final[alert.id] = {
                "id": alert.id,
                "tenant_id": tenant,
                "campaign_id": alert.campaign_id,
                "rule": alert.rule,
                "severity": alert.severity,
                "state": alert.state,
                "opened_at": opened_at,
                "resolved_at": alert.resolved_at,
                "body": body,
                "updated_at": now,
            }
        await self._close_orphaned_episodes(conn, items, final, history, now)
        stmt = self._insert(alerts)
        replaced = (
            "tenant_id",
            "campaign_id",
            "rule",
            "severity",
            "state",
            "opened_at",
            "resolved_at",
            "body",
            "updated_at",
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[alerts.c.id],
            set_={name: stmt.excluded[name] for name in replaced},
        )
        rows = list(final.values())
        for chunk in _chunks(rows):
            await conn.execute(stmt, list(chunk))
        for chunk in _chunks(history):
            await conn.execute(alert_history.insert(), list(chunk))

    async def _close_orphaned_episodes(
        self,
        conn: AsyncConnection,
        items: Sequence[tuple[AlertV1, bool]],
        final: dict[str, dict[str, Any]],
        history: list[dict[str, Any]],
        now: datetime,
    ) -> None:
        """Resolve the firing episodes a live episode of a rolling rule leaves behind.

        The detector keeps at most one open episode per campaign and rolling rule, and an
        episode opens only after the one before it resolved (core.engine, rolling windows).
        A firing episode the api holds under an earlier window than a live message of the
        same campaign and rule therefore lost its resolution: a detector killed after its
        state kept the resolution and before the alert message left. It is resolved here
        (history kind "resolved", webhooks notified), at the newer episode's opening; it
        would otherwise stay firing beside the newer one for good."""
        newest: dict[tuple[str, str, str], AlertV1] = {}
        for alert, replayed in items:
            if replayed or alert.rule not in _rolling_rules(alert.profile):
                continue
            key = (self._tenant(alert.tenant_id), alert.campaign_id, alert.rule)
            known = newest.get(key)
            if known is None or alert.window.start > known.window.start:
                newest[key] = alert
        for (tenant, campaign_id, rule), alert in newest.items():
            query = sa.select(alerts).where(
                alerts.c.tenant_id == tenant,
                alerts.c.campaign_id == campaign_id,
                alerts.c.rule == rule,
                alerts.c.state == "firing",
                alerts.c.id != alert.id,
            )
            for row in await conn.execute(query):
                held = final.get(row.id) or _held(row)
                start = (held["body"].get("window") or {}).get("start")
                if held["state"] != "firing" or start is None:
                    continue
                if parse_instant(start) >= alert.window.start:
                    continue
                resolved_at = min(alert.opened_at, now)
                body = {
                    **held["body"],
                    "state": "resolved",
                    "resolved_at": format_instant(resolved_at),
                }
                final[row.id] = {
                    **held,
                    "state": "resolved",
                    "resolved_at": resolved_at,
                    "body": body,
                    "updated_at": now,
                }
                history.append(
                    {
                        "alert_id": row.id,
                        "tenant_id": tenant,
                        "campaign_id": campaign_id,
                        "rule": rule,
                        "kind": "resolved",
                        "state": "resolved",
                        "severity": held["severity"],
                        "value": body.get("value"),
                        "numerator": body.get("numerator"),
                        "denominator": body.get("denominator"),
                        "recorded_at": now,
                    }
                )

    async def _resolve_aliases(
        self, conn: AsyncConnection, items: Sequence[tuple[AlertV1, bool]]
    ) -> list[tuple[AlertV1, bool]]:
        """Alerts under the id the api holds for them (see db.alert_aliases)."""
        ids = sorted({a.id for a, _ in items})
        aliases: dict[str, str] = {}
        for chunk in _chunks(ids):
            query = sa.select(alert_aliases).where(alert_aliases.c.alias_id.in_(chunk))
            aliases.update({row.alias_id: row.alert_id for row in await conn.execute(query)})
        return [
            (a.model_copy(update={"id": aliases[a.id]}) if a.id in aliases else a, replayed)
            for a, replayed in items
        ]

    async def _alias_rebuilt_episodes(
        self,
        conn: AsyncConnection,
        items: Sequence[tuple[AlertV1, bool]],
        held: dict[str, dict[str, Any]],
    ) -> list[tuple[AlertV1, bool]]:
        """A replayed alert the api does not hold, of the tenant, campaign and rule of a
        firing alert it does hold whose window does not end before the replayed one
        starts, is that alert under the id a rebuilt detector gave the episode (the replay
        reaches an episode in other batches than the live run did, so its first breaching
        window differs): map it, and every later message with that id, onto the held one
        (an overlapping window first, else the earliest), which keeps its id, opened_at,
        history, ack and note. Per-day and cumulative alerts have deterministic ids and are
        held already; only a day the api never received could be mapped wrongly."""
        fresh = [a for a, replayed in items if replayed and a.id not in held]
        if not fresh:
            return list(items)
        mapped: dict[str, str] = {}
        for alert in fresh:
            if alert.id in mapped:
                continue
            tenant = self._tenant(alert.tenant_id)
            query = sa.select(alerts).where(
                alerts.c.tenant_id == tenant,
                alerts.c.campaign_id == alert.campaign_id,
                alerts.c.rule == alert.rule,
                alerts.c.state == "firing",
            )
            candidates = []
            for row in await conn.execute(query):
                window = (row.body or {}).get("window") or {}
                if row.id in mapped.values() or not window.get("start") or not window.get("end"):
                    continue
                start, end = parse_instant(window["start"]), parse_instant(window["end"])
                # The replay reaches the episode in stages (its batches): an earlier stage
                # has an earlier window, which ends after the held one starts or before.
                if alert.window.start < end:
                    overlaps = start < alert.window.end
                    candidates.append((not overlaps, start, row))
            if candidates:
                row = min(candidates, key=lambda c: (c[0], c[1]))[2]
                mapped[alert.id] = row.id
                held[row.id] = _held(row)
        if not mapped:
            return list(items)
        await conn.execute(
            alert_aliases.insert(),
            [{"alias_id": alias, "alert_id": target} for alias, target in mapped.items()],
        )
        return [
            (a.model_copy(update={"id": mapped[a.id]}) if a.id in mapped else a, replayed)
            for a, replayed in items
        ]

    async def _upsert_minutes(self, conn: AsyncConnection, buckets: Sequence[MinuteBucket]) -> None:
        # Last write wins: the newest message for a bucket replaces it (CONTRACT decision 5).
        rows = {
            (self._tenant(b.tenant_id), b.campaign_id, b.minute_start): {
                name: int(b.counts.get(name, 0)) for name in COUNT_FIELDS
            }
            for b in buckets
        }
        await self._upsert_by_minute(conn, minute_stats, rows)

    async def _upsert_heads(self, conn: AsyncConnection, heads: Sequence[MinuteHead]) -> None:
        # Last write wins, like the minute buckets they split.
        rows = {
            (self._tenant(h.tenant_id), h.campaign_id, h.minute_start): {
                "boundary_at": h.boundary_at,
                **{name: int(h.counts.get(name, 0)) for name in COUNT_FIELDS},
            }
            for h in heads
        }
        await self._upsert_by_minute(conn, minute_heads, rows)

    async def _upsert_by_minute(
        self,
        conn: AsyncConnection,
        table: sa.Table,
        rows: Mapping[tuple[str, str, datetime], Mapping[str, Any]],
    ) -> None:
        """Insert or replace rows of a table keyed (tenant_id, campaign_id, minute_start)."""
        if not rows:
            return
        stmt = self._insert(table)
        columns = next(iter(rows.values())).keys()
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.tenant_id, table.c.campaign_id, table.c.minute_start],
            set_={name: stmt.excluded[name] for name in columns},
        )
        values = [
            {"tenant_id": tenant, "campaign_id": campaign_id, "minute_start": start, **row}
            for (tenant, campaign_id, start), row in rows.items()
        ]
        for chunk in _chunks(values):
            await conn.execute(stmt, list(chunk))

    async def _upsert_windows(
        self, conn: AsyncConnection, windows: Sequence[LiveWindow], now: datetime
    ) -> None:
        # Last write wins, like minute buckets: after a rebuild the detector's live windows
        # may start over, and the newest message is the truth.
        latest: dict[tuple[str, str, str], LiveWindow] = {}
        for w in windows:
            latest[(self._tenant(w.tenant_id), w.campaign_id, w.window)] = w
        if not latest:
            return
        stmt = self._insert(window_stats)
        replaced = ("profile", "window_from", "window_to", *COUNT_FIELDS, "updated_at")
        stmt = stmt.on_conflict_do_update(
            index_elements=[
                window_stats.c.tenant_id,
                window_stats.c.campaign_id,
                window_stats.c.window,
            ],
            set_={name: stmt.excluded[name] for name in replaced},
        )
        rows = [
            {
                "tenant_id": tenant,
                "campaign_id": campaign_id,
                "window": window,
                "profile": w.profile,
                "window_from": w.start,
                "window_to": w.end,
                **{name: int(w.counts.get(name, 0)) for name in COUNT_FIELDS},
                "updated_at": now,
            }
            for (tenant, campaign_id, window), w in latest.items()
        ]
        for chunk in _chunks(rows):
            await conn.execute(stmt, list(chunk))

    # --- stats -------------------------------------------------------------------------

    async def sum_stats(
        self, campaign_id: str, start: datetime, end: datetime, *, tenant_id: str | None = None
    ) -> dict[str, int] | None:
        """Exact sums of the campaign's minute buckets with start <= minute_start < end;
        None when the tenant's campaign is unknown (`tenant_id` None: the default tenant)."""
        tenant = self._tenant(tenant_id)
        known = sa.select(campaigns.c.campaign_id).where(
            campaigns.c.tenant_id == tenant, campaigns.c.campaign_id == campaign_id
        )
        query = sa.select(
            *(sa.func.coalesce(sa.func.sum(minute_stats.c[name]), 0) for name in COUNT_FIELDS)
        ).where(
            minute_stats.c.tenant_id == tenant,
            minute_stats.c.campaign_id == campaign_id,
            minute_stats.c.minute_start >= start,
            minute_stats.c.minute_start < end,
        )
        async with self._engine.connect() as conn:
            if (await conn.execute(known)).first() is None:
                return None
            row = (await conn.execute(query)).one()
        return {name: int(value) for name, value in zip(COUNT_FIELDS, row, strict=True)}

    async def minute_heads(
        self, campaign_id: str, *, tenant_id: str | None = None
    ) -> dict[datetime, tuple[datetime, dict[str, int]]]:
        """The heads of the tenant's campaign's minutes holding a 30-day period boundary
        (`MinuteHead`): minute start -> (boundary, counts before it), in time order."""
        query = (
            sa.select(
                minute_heads.c.minute_start,
                minute_heads.c.boundary_at,
                *(minute_heads.c[n] for n in COUNT_FIELDS),
            )
            .where(
                minute_heads.c.tenant_id == self._tenant(tenant_id),
                minute_heads.c.campaign_id == campaign_id,
            )
            .order_by(minute_heads.c.minute_start)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {
            row[0]: (
                row[1],
                {name: int(value) for name, value in zip(COUNT_FIELDS, row[2:], strict=True)},
            )
            for row in rows
        }

    async def minute_buckets(
        self,
        campaign_id: str,
        *,
        tenant_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[datetime, dict[str, int]]:
        """The stored minute buckets of the tenant's campaign (with `start`/`end`, those
        with start <= minute_start < end): minute start (UTC) -> its counts, in time
        order."""
        conditions = [
            minute_stats.c.tenant_id == self._tenant(tenant_id),
            minute_stats.c.campaign_id == campaign_id,
        ]
        if start is not None:
            conditions.append(minute_stats.c.minute_start >= start)
        if end is not None:
            conditions.append(minute_stats.c.minute_start < end)
        query = (
            sa.select(minute_stats.c.minute_start, *(minute_stats.c[n] for n in COUNT_FIELDS))
            .where(*conditions)
            .order_by(minute_stats.c.minute_start)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {
            row[0]: {name: int(value) for name, value in zip(COUNT_FIELDS, row[1:], strict=True)}
            for row in rows
        }

    # --- campaigns ---------------------------------------------------------------------

    def _one_campaign(self, campaign_id: str, tenant_id: str | None) -> sa.Select[Any]:
        return sa.select(campaigns).where(
            campaigns.c.tenant_id == self._tenant(tenant_id),
            campaigns.c.campaign_id == campaign_id,
        )

    async def get_campaign(
        self, campaign_id: str, *, tenant_id: str | None = None
    ) -> Campaign | None:
        """The tenant's campaign (`tenant_id` None: the default tenant), or None."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(self._one_campaign(campaign_id, tenant_id))).all()
            found = await self._campaigns_from_rows(conn, rows)
        return found[0] if found else None

    async def list_campaigns(
        self, *, tenant_id: str | None, cursor: str | None = None, limit: int = 100
    ) -> CampaignPage:
        """Campaigns by id, then tenant; `tenant_id` None lists every tenant's."""
        query = (
            sa.select(campaigns)
            .order_by(campaigns.c.campaign_id, campaigns.c.tenant_id)
            .limit(limit + 1)
        )
        if tenant_id is not None:
            query = query.where(campaigns.c.tenant_id == tenant_id)
        if cursor is not None:
            after, after_tenant = decode_cursor(cursor, 2)
            query = query.where(
                sa.or_(
                    campaigns.c.campaign_id > after,
                    sa.and_(campaigns.c.campaign_id == after, campaigns.c.tenant_id > after_tenant),
                )
            )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            items = await self._campaigns_from_rows(conn, rows[:limit])
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor([items[-1].campaign_id, items[-1].tenant_id or ""])
        return CampaignPage(items=items, next_cursor=next_cursor)

    async def put_campaign(
        self,
        campaign_id: str,
        decide: Callable[[CampaignConfig | None], CampaignConfig],
        publish: Callable[[CampaignConfig], Awaitable[None]],
        *,
        tenant_id: str | None = None,
    ) -> Campaign:
        """Store the configuration of the tenant's campaign (`tenant_id` None: the default
        tenant), all or nothing.

        In one transaction: read the stored configuration (locked on PostgreSQL, so
        concurrent PUTs of a campaign publish and store in the same order), `decide` the
        new one (it raises to refuse), `publish` it (it raises when the broker is
        unavailable), write it. Any exception rolls back: nothing is stored.
        """
        now = self._clock()
        tenant = self._tenant(tenant_id)
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(self._one_campaign(campaign_id, tenant).with_for_update())
            ).first()
            current = None
            if row is not None and row.configured_at is not None:
                current = CampaignConfig(
                    campaign_id=campaign_id,
                    profile=row.profile,
                    overrides=row.overrides or {},
                    amd_false_positive_ratio=row.amd_false_positive_ratio,
                    tenant_id=tenant,
                    updated_at=row.configured_at,
                )
            elif row is not None:  # observed only
                current = CampaignConfig(
                    campaign_id=campaign_id, tenant_id=tenant, updated_at=row.updated_at
                )
            config = decide(current)
            if config.tenant_id != tenant:
                raise ValueError("a campaign's configuration cannot change its tenant")
            await publish(config)
            values = {
                "profile": config.profile,
                "overrides": config.overrides,
                "amd_false_positive_ratio": config.amd_false_positive_ratio,
                "configured_at": config.updated_at,
                "updated_at": now,
            }
            stmt = self._insert(campaigns).values(
                tenant_id=tenant, campaign_id=campaign_id, first_seen_at=now, **values
            )
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[campaigns.c.tenant_id, campaigns.c.campaign_id], set_=values
                )
            )
            rows = (await conn.execute(self._one_campaign(campaign_id, tenant))).all()
            return (await self._campaigns_from_rows(conn, rows))[0]

    async def _campaigns_from_rows(
        self, conn: AsyncConnection, rows: Sequence[sa.Row[Any]]
    ) -> list[Campaign]:
        if not rows:
            return []
        keys = [(row.tenant_id, row.campaign_id) for row in rows]
        ids = sorted({campaign_id for _, campaign_id in keys})
        tenants = sorted({tenant for tenant, _ in keys})
        firing: dict[tuple[str, str], dict[str, int]] = {}
        result = await conn.execute(
            sa.select(alerts.c.tenant_id, alerts.c.campaign_id, alerts.c.severity, sa.func.count())
            .where(
                alerts.c.state == "firing",
                alerts.c.campaign_id.in_(ids),
                alerts.c.tenant_id.in_(tenants),
            )
            .group_by(alerts.c.tenant_id, alerts.c.campaign_id, alerts.c.severity)
        )
        for tenant, campaign_id, severity, count in result:
            firing.setdefault((tenant, campaign_id), {})[severity] = int(count)
        windows: dict[tuple[str, str], dict[str, StatsV1]] = {}
        received: dict[tuple[str, str], datetime] = {}
        result = await conn.execute(
            sa.select(campaign_feeds).where(
                campaign_feeds.c.campaign_id.in_(ids), campaign_feeds.c.tenant_id.in_(tenants)
            )
        )
        for feed in result:
            received[(feed.tenant_id, feed.campaign_id)] = feed.last_cdr_received_at
        rejected: dict[tuple[str, str], dict[str, int]] = {}
        result = await conn.execute(
            sa.select(
                rejections.c.tenant_id,
                rejections.c.campaign_id,
                rejections.c.reason,
                sa.func.sum(rejections.c.count),
            )
            .where(rejections.c.campaign_id.in_(ids), rejections.c.tenant_id.in_(tenants))
            .group_by(rejections.c.tenant_id, rejections.c.campaign_id, rejections.c.reason)
        )
        for tenant, campaign_id, reason, count in result:
            rejected.setdefault((tenant, campaign_id), {})[reason] = int(count)
        result = await conn.execute(
            sa.select(window_stats)
            .where(window_stats.c.campaign_id.in_(ids), window_stats.c.tenant_id.in_(tenants))
            .order_by(window_stats.c.campaign_id, window_stats.c.window)
        )
        for w in result:
            counts = {name: getattr(w, name) for name in COUNT_FIELDS}
            windows.setdefault((w.tenant_id, w.campaign_id), {})[w.window] = stats_from_counts(
                w.campaign_id, w.window_from, w.window_to, counts, tenant_id=w.tenant_id
            )
        items = []
        now = self._clock()
        for row in rows:
            key = (row.tenant_id, row.campaign_id)
            severities = firing.get(key, {})
            last = received.get(key)
            status: CampaignStatus = "ok"
            if severities:
                status = "violation" if "violation" in severities else "warning"
            items.append(
                Campaign(
                    campaign_id=row.campaign_id,
                    tenant_id=row.tenant_id,
                    profile=row.profile or row.observed_profile,
                    overrides=row.overrides or {},
                    amd_false_positive_ratio=row.amd_false_positive_ratio,
                    configured_at=row.configured_at,
                    first_seen_at=row.first_seen_at,
                    status=status,
                    firing_alerts=sum(severities.values()),
                    windows=windows.get(key, {}),
                    last_cdr_received_at=last,
                    feed=feed_state(last, now, self.stale_feed_after),
                    rejected_after_acceptance=rejected.get(key, {}),
                )
            )
        return items

    # --- alerts ------------------------------------------------------------------------

    async def list_alerts(
        self,
        *,
        tenant_id: str | None,
        campaign_id: str | None = None,
        state: str | None = None,
        rule: str | None = None,
        severity: str | None = None,
        since: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> AlertPage:
        """Alerts newest first (opened_at, then id, descending); `since` keeps those opened
        at or after it; `tenant_id` None lists every tenant's."""
        query = sa.select(alerts).order_by(alerts.c.opened_at.desc(), alerts.c.id.desc())
        conditions = [
            column == value
            for column, value in (
                (alerts.c.tenant_id, tenant_id),
                (alerts.c.campaign_id, campaign_id),
                (alerts.c.state, state),
                (alerts.c.rule, rule),
                (alerts.c.severity, severity),
            )
            if value is not None
        ]
        if since is not None:
            conditions.append(alerts.c.opened_at >= since)
        if cursor is not None:
            opened, last_id = decode_cursor(cursor, 2)
            try:
                opened_at = parse_instant(opened)
            except (ValueError, ArithmeticError):
                raise InvalidCursor("cursor is not one this api issued") from None
            conditions.append(
                sa.or_(
                    alerts.c.opened_at < opened_at,
                    sa.and_(alerts.c.opened_at == opened_at, alerts.c.id < last_id),
                )
            )
        query = query.where(*conditions).limit(limit + 1)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        items = [self._alert(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor([last.opened_at.isoformat(), last.id])
        return AlertPage(items=items, next_cursor=next_cursor)

    async def get_alert(self, alert_id: str, *, tenant_id: str | None) -> AlertDetail | None:
        """The alert with its history, or None when absent or, with `tenant_id`, of
        another tenant."""
        async with self._engine.connect() as conn:
            return await self._alert_detail(conn, alert_id, tenant_id)

    async def ack(
        self, alert_id: str, *, by: str, note: str, tenant_id: str | None
    ) -> AlertDetail | None:
        """Acknowledge an alert once, by `by` (the token's name), with an optional note;
        both go to the history. Acknowledging it again keeps the first ack; a note given
        then is added as a note (`add_note`), so a first ack without one locks nothing out."""
        now = self._clock()
        async with self._engine.begin() as conn:
            row = await self._scoped_alert(conn, alert_id, tenant_id)
            if row is None:
                return None
            if row.acknowledged_at is None:
                await conn.execute(
                    alerts.update()
                    .where(alerts.c.id == alert_id, alerts.c.acknowledged_at.is_(None))
                    .values(acknowledged_by=by, acknowledged_at=now, ack_note=note or None)
                )
                await self._record_event(conn, row, "acknowledged", by, note or None, now)
            elif note:
                await self._record_event(conn, row, "note", by, note, now)
            return await self._alert_detail(conn, alert_id, tenant_id)

    async def add_note(
        self, alert_id: str, *, by: str, note: str, tenant_id: str | None
    ) -> AlertDetail | None:
        """Add a note to an alert (acknowledged or not), kept with its author and time."""
        now = self._clock()
        async with self._engine.begin() as conn:
            row = await self._scoped_alert(conn, alert_id, tenant_id)
            if row is None:
                return None
            await self._record_event(conn, row, "note", by, note, now)
            return await self._alert_detail(conn, alert_id, tenant_id)

    @staticmethod
    async def _scoped_alert(
        conn: AsyncConnection, alert_id: str, tenant_id: str | None
    ) -> sa.Row[Any] | None:
        query = sa.select(alerts).where(alerts.c.id == alert_id)
        if tenant_id is not None:
            query = query.where(alerts.c.tenant_id == tenant_id)
        return (await conn.execute(query)).first()

    @staticmethod
    async def _record_event(
        conn: AsyncConnection,
        row: sa.Row[Any],
        kind: str,
        author: str,
        note: str | None,
        now: datetime,
    ) -> None:
        """A history row for an ack or note, with the alert's figures at that moment."""
        body = row.body or {}
        await conn.execute(
            alert_history.insert().values(
                alert_id=row.id,
                tenant_id=row.tenant_id,
                campaign_id=row.campaign_id,
                rule=row.rule,
                kind=kind,
                state=row.state,
                severity=row.severity,
                value=body.get("value"),
                numerator=body.get("numerator", 0),
                denominator=body.get("denominator", 0),
                recorded_at=now,
                author=author,
                note=note,
            )
        )

    async def _alert_detail(
        self, conn: AsyncConnection, alert_id: str, tenant_id: str | None
    ) -> AlertDetail | None:
        query = sa.select(alerts).where(alerts.c.id == alert_id)
        if tenant_id is not None:
            query = query.where(alerts.c.tenant_id == tenant_id)
        row = (await conn.execute(query)).first()
        if row is None:
            return None
        history = [
            AlertTransition.model_validate(h, from_attributes=True)
            for h in await conn.execute(
                sa.select(alert_history)
                .where(alert_history.c.alert_id == alert_id)
                .order_by(alert_history.c.seq)
            )
        ]
        return AlertDetail.model_validate(
            {
                **self._alert(row).model_dump(),
                "ack_note": row.ack_note,
                "history": history,
                "notes": [
                    AlertNote(author=h.author or "", note=h.note, recorded_at=h.recorded_at)
                    for h in history
                    if h.note
                ],
            }
        )

    async def latest_alert_seq(self) -> int:
        """The newest `alert_history` seq (0 when there is none): where a stream that
        names no Last-Event-ID starts."""
        async with self._engine.connect() as conn:
            value = (await conn.execute(sa.select(sa.func.max(alert_history.c.seq)))).scalar()
        return int(value or 0)

    async def alert_changes(
        self, *, after: int, tenant_id: str | None, limit: int = 500
    ) -> list[AlertChange]:
        """The alert_history rows with seq > `after`, in seq order (at most `limit`), each
        with its alert as it is now (`tenant_id` None: every tenant's) and the change that
        row recorded (its kind, and the author and note of an ack or a note)."""
        h = alert_history
        query: sa.Select[Any] = (
            sa.select(
                h.c.seq,
                h.c.state.label("change_state"),
                h.c.severity.label("change_severity"),
                h.c.value.label("change_value"),
                h.c.numerator.label("change_numerator"),
                h.c.denominator.label("change_denominator"),
                h.c.recorded_at.label("change_recorded_at"),
                h.c.kind.label("change_kind"),
                h.c.author.label("change_author"),
                h.c.note.label("change_note"),
                alerts.c.tenant_id,
                alerts.c.body,
                alerts.c.acknowledged_by,
                alerts.c.acknowledged_at,
                alerts.c.ack_note,
            )
            .join(alerts, alerts.c.id == h.c.alert_id)
            .where(h.c.seq > after)
            .order_by(h.c.seq)
            .limit(limit)
        )
        if tenant_id is not None:
            query = query.where(alerts.c.tenant_id == tenant_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AlertChange(
                seq=int(row.seq),
                alert=self._alert(row),
                ack_note=row.ack_note,
                change=AlertTransition(
                    seq=int(row.seq),
                    kind=row.change_kind,
                    author=row.change_author,
                    note=row.change_note,
                    state=row.change_state,
                    severity=row.change_severity,
                    value=row.change_value,
                    numerator=row.change_numerator,
                    denominator=row.change_denominator,
                    recorded_at=row.change_recorded_at,
                ),
            )
            for row in rows
        ]

    @staticmethod
    def _alert(row: sa.Row[Any]) -> AlertV1:
        return AlertV1.model_validate(
            {
                **row.body,
                "tenant_id": row.tenant_id,
                "acknowledged_by": row.acknowledged_by,
                "acknowledged_at": row.acknowledged_at,
            }
        )

    # --- traced calls ------------------------------------------------------------------

    async def _upsert_calls(
        self, conn: AsyncConnection, items: Sequence[tuple[str, str, CallV1]], now: datetime
    ) -> None:
        """Merge traced calls into their rows (schemas.call_v1): a field keeps the value
        first known, rule hits are the union. Any order and repetition of the same facts
        gives the same row; a row is written only when it changes."""
        if not items:
            return
        merged: dict[tuple[str, str, str], dict[str, Any]] = {}
        for tenant_id, campaign_id, call in items:
            key = (self._tenant(tenant_id), campaign_id, call.call_id)
            merged[key] = _merge_call(merged.get(key), _call_row(key, call))
        held: dict[tuple[str, str, str], dict[str, Any]] = {}
        by_campaign: dict[tuple[str, str], list[str]] = {}
        for tenant, campaign_id, call_id in merged:
            by_campaign.setdefault((tenant, campaign_id), []).append(call_id)
        for (tenant, campaign_id), call_ids in by_campaign.items():
            for chunk in _chunks(sorted(call_ids)):
                result = await conn.execute(
                    sa.select(calls).where(
                        calls.c.tenant_id == tenant,
                        calls.c.campaign_id == campaign_id,
                        calls.c.call_id.in_(chunk),
                    )
                )
                for stored in result:
                    found = {name: getattr(stored, name) for name in _CALL_KEY_AND_COLUMNS}
                    found["rule_hits"] = sorted(found["rule_hits"] or [])
                    held[(stored.tenant_id, stored.campaign_id, stored.call_id)] = found
        rows = []
        for key, new in merged.items():
            current = held.get(key)
            final = _merge_call(current, new)
            if final != current:
                rows.append({**final, "updated_at": now})
        if not rows:
            return
        stmt = self._insert(calls)
        stmt = stmt.on_conflict_do_update(
            index_elements=[calls.c.tenant_id, calls.c.campaign_id, calls.c.call_id],
            set_={name: stmt.excluded[name] for name in (*_CALL_FACTS, "updated_at")},
        )
        for chunk in _chunks(rows):
            await conn.execute(stmt, list(chunk))

    async def list_calls(
        self,
        *,
        tenant_id: str | None,
        campaign_id: str | None = None,
        outcome: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> CallPage:
        """Traced calls newest first (originated_at, then tenant, campaign, call id, all
        descending) with originated_at in [start, end); `tenant_id` None lists every
        tenant's."""
        order = (calls.c.originated_at, calls.c.tenant_id, calls.c.campaign_id, calls.c.call_id)
        conditions = [
            column == value
            for column, value in (
                (calls.c.tenant_id, tenant_id),
                (calls.c.campaign_id, campaign_id),
                (calls.c.outcome, outcome),
            )
            if value is not None
        ]
        if start is not None:
            conditions.append(calls.c.originated_at >= start)
        if end is not None:
            conditions.append(calls.c.originated_at < end)
        if cursor is not None:
            originated, *rest = decode_cursor(cursor, 4)
            try:
                originated_at = parse_instant(originated)
            except (ValueError, ArithmeticError):
                raise InvalidCursor("cursor is not one this api issued") from None
            conditions.append(_before(order, (originated_at, *rest)))
        query = (
            sa.select(calls)
            .where(*conditions)
            .order_by(*(column.desc() for column in order))
            .limit(limit + 1)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        items = [
            TracedCall.model_validate({name: getattr(row, name) for name in _CALL_KEY_AND_COLUMNS})
            for row in rows[:limit]
        ]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(
                [last.originated_at.isoformat(), last.tenant_id, last.campaign_id, last.call_id]
            )
        return CallPage(items=items, next_cursor=next_cursor)

    async def get_call(
        self, call_id: str, *, tenant_id: str, campaign_id: str
    ) -> TracedCall | None:
        """One traced call of the tenant's campaign, or None (never traced, or purged)."""
        query = sa.select(calls).where(
            calls.c.tenant_id == tenant_id,
            calls.c.campaign_id == campaign_id,
            calls.c.call_id == call_id,
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return TracedCall.model_validate(
            {name: getattr(row, name) for name in _CALL_KEY_AND_COLUMNS}
        )

    async def purge_calls_older_than(self, retention: timedelta) -> int:
        """Delete traced calls more than `retention` older than their campaign's newest
        traced call (event time, like minute buckets). Returns how many."""
        deleted = 0
        async with self._engine.begin() as conn:
            newest = await conn.execute(
                sa.select(
                    calls.c.tenant_id, calls.c.campaign_id, sa.func.max(calls.c.originated_at)
                ).group_by(calls.c.tenant_id, calls.c.campaign_id)
            )
            for tenant, campaign_id, newest_at in newest.all():
                result = await conn.execute(
                    calls.delete().where(
                        calls.c.tenant_id == tenant,
                        calls.c.campaign_id == campaign_id,
                        calls.c.originated_at < newest_at - retention,
                    )
                )
                deleted += result.rowcount or 0
        return deleted

    # --- metrics and retention ---------------------------------------------------------

    async def metrics_snapshot(self) -> MetricsSnapshot:
        windows_query = (
            sa.select(
                window_stats,
                sa.func.coalesce(
                    window_stats.c.profile, campaigns.c.profile, campaigns.c.observed_profile, ""
                ).label("profile_label"),
                sa.func.coalesce(campaigns.c.profile, campaigns.c.observed_profile).label(
                    "rules_profile"
                ),
                campaigns.c.overrides,
                campaigns.c.amd_false_positive_ratio,
            )
            .join(
                campaigns,
                sa.and_(
                    campaigns.c.tenant_id == window_stats.c.tenant_id,
                    campaigns.c.campaign_id == window_stats.c.campaign_id,
                ),
            )
            .order_by(
                campaigns.c.first_seen_at,
                campaigns.c.campaign_id,
                campaigns.c.tenant_id,
                window_stats.c.window,
            )
        )
        firing_query = (
            sa.select(alerts.c.tenant_id, alerts.c.rule, alerts.c.severity, sa.func.count())
            .where(alerts.c.state == "firing")
            .group_by(alerts.c.tenant_id, alerts.c.rule, alerts.c.severity)
        )
        async with self._engine.connect() as conn:
            windows = [
                WindowSample(
                    campaign_id=row.campaign_id,
                    window=row.window,
                    profile=row.profile_label,
                    counts={name: int(getattr(row, name)) for name in COUNT_FIELDS},
                    tenant_id=row.tenant_id,
                    start=row.window_from,
                    end=row.window_to,
                    rules_profile=row.rules_profile,
                    overrides=row.overrides or None,
                    amd_false_positive_ratio=float(row.amd_false_positive_ratio or 0.0),
                )
                for row in await conn.execute(windows_query)
            ]
            firing = {
                (tenant, rule, severity): int(count)
                for tenant, rule, severity, count in await conn.execute(firing_query)
            }
        return MetricsSnapshot(windows=windows, firing=firing)

    async def purge_older_than(self, retention: timedelta) -> tuple[int, int]:
        """Delete resolved alerts (and their history) resolved more than `retention` ago,
        and minute buckets more than `retention` older than their campaign's newest bucket
        (event time, never the wall clock). Returns (alerts, buckets) deleted."""
        cutoff = self._clock() - retention
        old_alerts = sa.select(alerts.c.id).where(
            alerts.c.state == "resolved",
            sa.func.coalesce(alerts.c.resolved_at, alerts.c.updated_at) < cutoff,
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                alert_history.delete().where(alert_history.c.alert_id.in_(old_alerts))
            )
            deleted_alerts = (
                await conn.execute(alerts.delete().where(alerts.c.id.in_(old_alerts)))
            ).rowcount
            newest = await conn.execute(
                sa.select(
                    minute_stats.c.tenant_id,
                    minute_stats.c.campaign_id,
                    sa.func.max(minute_stats.c.minute_start),
                ).group_by(minute_stats.c.tenant_id, minute_stats.c.campaign_id)
            )
            deleted_buckets = 0
            for tenant, campaign_id, newest_start in newest.all():
                result = await conn.execute(
                    minute_stats.delete().where(
                        minute_stats.c.tenant_id == tenant,
                        minute_stats.c.campaign_id == campaign_id,
                        minute_stats.c.minute_start < newest_start - retention,
                    )
                )
                deleted_buckets += result.rowcount or 0
                await conn.execute(
                    minute_heads.delete().where(
                        minute_heads.c.tenant_id == tenant,
                        minute_heads.c.campaign_id == campaign_id,
                        minute_heads.c.minute_start < newest_start - retention,
                    )
                )
        return int(deleted_alerts or 0), deleted_buckets


@functools.lru_cache(maxsize=64)
def _rolling_rules(profile: str) -> frozenset[str]:
    """Rule ids judged over rolling windows in a profile (none for an unknown profile)."""
    try:
        return rolling_rule_ids(load_profile(profile))
    except ProfileError:
        return frozenset()


def _change_kind(current: Mapping[str, Any] | None, alert: AlertV1) -> str | None:
    """The history kind of `alert` arriving over the `current` held row: "opened" for a
    new alert or a resolved one firing again, "resolved", "updated" for any other change
    of severity or figures, None when nothing the history keeps changed."""
    if current is None:
        return "opened"
    if current["state"] != alert.state:
        return "opened" if alert.state == "firing" else "resolved"
    body = current["body"]
    held = (current["severity"], body.get("value"), body.get("numerator"), body.get("denominator"))
    if held != (alert.severity, alert.value, alert.numerator, alert.denominator):
        return "updated"
    return None


def feed_state(last_received: datetime | None, now: datetime, stale_after: timedelta) -> FeedState:
    """`none` before any CDR, `stale` when the last one reached the api longer than
    `stale_after` before `now`, else `live`."""
    if last_received is None:
        return "none"
    return "stale" if now - last_received > stale_after else "live"


_CALL_FACTS = (
    "originated_at",
    "answered_at",
    "agent_connected_at",
    "ended_at",
    "outcome",
    "dial_mode",
    "callee_key",
    "rule_hits",
)
_CALL_COLUMNS = ("call_id", *_CALL_FACTS)
_CALL_KEY_AND_COLUMNS = ("tenant_id", "campaign_id", *_CALL_COLUMNS)


def _rejection(row: sa.Row[Any]) -> CampaignRejection:
    return CampaignRejection(
        stage=row.stage,
        reason=row.reason,
        count=int(row._mapping["count"]),
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
        example_call_ids=list(row.example_call_ids or []),
    )


def _call_row(key: tuple[str, str, str], call: CallV1) -> dict[str, Any]:
    tenant, campaign_id, call_id = key
    row: dict[str, Any] = {"tenant_id": tenant, "campaign_id": campaign_id, "call_id": call_id}
    row.update({name: getattr(call, name) for name in _CALL_FACTS})
    row["rule_hits"] = sorted(set(call.rule_hits))
    return row


def _merge_call(held: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """`held` with the fields it lacks taken from `new` and the union of the rule hits."""
    if held is None:
        return new
    merged = {name: new[name] if held[name] is None else held[name] for name in held}
    merged["rule_hits"] = sorted(set(held["rule_hits"]) | set(new["rule_hits"]))
    return merged


def _before(columns: Sequence[Any], values: Sequence[Any]) -> Any:
    """SQL for (columns) < (values) in lexicographic order (a row-value comparison written
    out, so every backend evaluates it alike)."""
    condition = None
    for column, value in zip(reversed(columns), reversed(values), strict=True):
        less = column < value
        condition = less if condition is None else sa.or_(less, sa.and_(column == value, condition))
    return condition
