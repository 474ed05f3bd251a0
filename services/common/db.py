"""The relational store's engine and schema (SQLite by default, PostgreSQL in production).

The schema is SQLAlchemy Core tables created by `migrate()`; each schema change bumps
`SCHEMA_VERSION` and adds a step to `_MIGRATIONS`, so an old database is brought forward
in place at start-up (the app creates and migrates its own schema, no external tool).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from schemas.stats_v1 import COUNT_FIELDS

metadata = sa.MetaData()


class UtcDateTime(sa.TypeDecorator[datetime]):
    """An instant stored in UTC and always read back timezone-aware.

    SQLite has no time zone type: it stores the UTC wall time as text, which sorts and
    compares correctly because every value is in UTC. PostgreSQL stores `timestamptz`.
    Naive datetimes are refused rather than guessed.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; give it a UTC offset")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        instant: datetime = value
        if instant.tzinfo is None:
            return instant.replace(tzinfo=UTC)
        return instant.astimezone(UTC)


schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("token_prefix", sa.String(16), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("tenant_id", sa.String(200), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    # Who holds the token ("Giulia Rossi"); an ack records it. Migration 3; None before.
    sa.Column("name", sa.String(200), nullable=True),
)

# --- api store (services/api/store.py) ---------------------------------------------------

# Tenancy is a key (issue 6, decision 3): the same campaign id in two tenants is two
# campaigns, so campaigns, minute stats and live windows are keyed by (tenant, campaign).
DEFAULT_TENANT = "default"  # CommonSettings.default_tenant's default; used by migration 2

# Every campaign the api has seen: from stats and alerts (observed) or from PUT (configured).
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("campaign_id", sa.String(200), primary_key=True),
    # `profile` is the configured one (PUT; None: the detector's default profile applies);
    # `observed_profile` the one the detector last reported in stats or alerts.
    sa.Column("profile", sa.String(60), nullable=True),
    sa.Column("observed_profile", sa.String(60), nullable=True),
    sa.Column("overrides", sa.JSON, nullable=False, default=dict),
    sa.Column("amd_false_positive_ratio", sa.Float, nullable=False, default=0.0),
    sa.Column("first_seen_at", UtcDateTime, nullable=False),
    sa.Column("configured_at", UtcDateTime, nullable=True),  # last PUT; None: observed only
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# One row per alert id (upserted from cdrwatch.alerts.v1). `body` is the AlertV1 JSON as the
# detector sent it, without the acknowledgement, which the api owns (columns below).
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False, server_default=DEFAULT_TENANT),
    sa.Column("campaign_id", sa.String(200), nullable=False, index=True),
    sa.Column("rule", sa.String(120), nullable=False, index=True),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("opened_at", UtcDateTime, nullable=False),
    sa.Column("resolved_at", UtcDateTime, nullable=True),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("acknowledged_by", sa.String(200), nullable=True),
    sa.Column("acknowledged_at", UtcDateTime, nullable=True),
    sa.Column("ack_note", sa.Text, nullable=True),
    sa.Index("ix_alerts_opened_at_id", "opened_at", "id"),
    sa.Index("ix_alerts_state_severity", "state", "severity"),
    sa.Index("ix_alerts_tenant_campaign", "tenant_id", "campaign_id"),
)

# The ordered feed of alert changes (`seq`): a row for every change of state, severity or
# figures (value, numerator, denominator) and for every acknowledgement and note, each
# with the alert's figures at that moment. SSE and webhooks deliver from it.
# `kind`: opened | updated | resolved | acknowledged | note; `author` and `note` are the
# acknowledging/noting token's name and text. Columns after `recorded_at`: migration 3.
HISTORY_KINDS = ("opened", "updated", "resolved", "acknowledged", "note")
alert_history = sa.Table(
    "alert_history",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.String(80), nullable=False, index=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("numerator", sa.Float, nullable=False),
    sa.Column("denominator", sa.Float, nullable=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Column("tenant_id", sa.String(200), nullable=True),
    sa.Column("campaign_id", sa.String(200), nullable=True),
    sa.Column("rule", sa.String(120), nullable=True),
    sa.Column("kind", sa.String(20), nullable=False, server_default="updated"),
    sa.Column("author", sa.String(200), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
)


def _count_columns() -> list[sa.Column[int]]:
    """The eight counts of Stats v1, one BIGINT column each."""
    return [sa.Column(name, sa.BigInteger, nullable=False, default=0) for name in COUNT_FIELDS]


# Absolute counts of one event-time minute [minute_start, minute_start + 1 min) of a
# campaign; summed on read for any minute-aligned range.
minute_stats = sa.Table(
    "minute_stats",
    metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("campaign_id", sa.String(200), primary_key=True),
    sa.Column("minute_start", UtcDateTime, primary_key=True),
    *_count_columns(),
)

# The head of a minute holding a US 30-day period boundary: the counts of its calls in
# [minute_start, boundary_at) (schemas.stats_v1, window `minute-head`). The row of a
# campaign's first minute has the exact first call as boundary_at: the periods' anchor.
# Created by create_all in an existing database too (a new table, no migration step).
minute_heads = sa.Table(
    "minute_heads",
    metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("campaign_id", sa.String(200), primary_key=True),
    sa.Column("minute_start", UtcDateTime, primary_key=True),
    sa.Column("boundary_at", UtcDateTime, nullable=False),
    *_count_columns(),
)

# The latest figures of each live window (cumulative, 15m, 1h, 24h, ...) per campaign.
window_stats = sa.Table(
    "window_stats",
    metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("campaign_id", sa.String(200), primary_key=True),
    sa.Column("window", sa.String(40), primary_key=True),
    sa.Column("profile", sa.String(60), nullable=True),
    sa.Column("window_from", UtcDateTime, nullable=False),
    sa.Column("window_to", UtcDateTime, nullable=False),
    *_count_columns(),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# Traced calls (cdrwatch.calls.v1, schemas.call_v1): silent, abandoned, or breaking a
# per-call rule; one row per (tenant, campaign, call id), facts merged across messages.
# Created by create_all in an existing database too (a new table, no migration step).
calls = sa.Table(
    "calls",
    metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("campaign_id", sa.String(200), primary_key=True),
    sa.Column("call_id", sa.String(200), primary_key=True),
    sa.Column("originated_at", UtcDateTime, nullable=False),
    sa.Column("answered_at", UtcDateTime, nullable=True),
    sa.Column("agent_connected_at", UtcDateTime, nullable=True),
    sa.Column("ended_at", UtcDateTime, nullable=True),
    sa.Column("outcome", sa.String(20), nullable=True),
    sa.Column("dial_mode", sa.String(20), nullable=True),
    sa.Column("callee_key", sa.String(128), nullable=True),
    sa.Column("rule_hits", sa.JSON, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_calls_scope_time", "tenant_id", "campaign_id", "originated_at", "call_id"),
    sa.Index("ix_calls_time", "originated_at", "tenant_id", "campaign_id", "call_id"),
)

# Next offset to read per consumer group and partition, written in the same transaction as
# the records' effects: on (re)assignment the consumer seeks here, so a batch stored just
# before a crash is not applied twice even if its Kafka commit was lost.
consumer_positions = sa.Table(
    "consumer_positions",
    metadata,
    sa.Column("group_id", sa.String(200), primary_key=True),
    sa.Column("topic", sa.String(250), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
)

# A rolling-window alert's id comes from its episode's first breaching window, which
# depends on how the detector's batches fell: a detector that rebuilt its state from the
# durable archive may name an episode the api already holds differently. The api keeps
# the id it holds and maps the rebuilt one onto it (services/api/store.py).
alert_aliases = sa.Table(
    "alert_aliases",
    metadata,
    sa.Column("alias_id", sa.String(80), primary_key=True),
    sa.Column("alert_id", sa.String(80), nullable=False),
)

# When the api last stored figures the detector derived from a campaign's CDRs as they
# arrived (stats not marked replayed): the campaign's "last CDR received" and feed state.
# Not a derived table: a restart's replay leaves it as it was.
campaign_feeds = sa.Table(
    "campaign_feeds",
    metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("campaign_id", sa.String(200), primary_key=True),
    sa.Column("last_cdr_received_at", UtcDateTime, nullable=False),
)


# --- webhooks (services/api/webhooks.py) -------------------------------------------------

# A receiver of a tenant's alert changes (tenant None: every tenant's, for an unbound
# admin). `cursor_seq` is the last alert_history seq turned into deliveries: advanced in
# the transaction that inserts them, so a restart neither loses nor repeats a change.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("secret", sa.String(200), nullable=False),  # signs bodies: kept in clear
    sa.Column("events", sa.JSON, nullable=True),  # history kinds delivered; None: all
    sa.Column("description", sa.String(200), nullable=True),
    sa.Column("cursor_seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

# One alert change to one webhook: `pending` (next try at next_attempt_at), `delivered`
# (a 2xx) or `dead` (the last retry failed). `body` is the exact JSON sent on every try.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("webhook_id", sa.String(40), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("alert_id", sa.String(80), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("webhook_id", "seq", name="uq_webhook_deliveries_webhook_seq"),
    sa.Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
)

# Every try of a delivery: the HTTP status (None: no answer) or the error.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.Integer, nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("attempted_at", UtcDateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.String(500), nullable=True),
    sa.Column("duration_ms", sa.Float, nullable=False),
)

# Records the detector or the raw validator dead-lettered (cdrwatch.cdrs.dlq.v1), counted
# per (tenant, campaign, stage, reason) by the api's consumer (services/api/consumer.py).
# `campaign_id` is "" for a record whose campaign is unknown (undecodable) but whose tenant
# is. The rows of stages the archive replay derives again (every stage but the raw
# validator's, whose input is not archived) are emptied with the derived tables when the
# broker restarts (`cdrwatch up`), so a replay does not count them twice.
rejections = sa.Table(
    "rejections",
    metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("campaign_id", sa.String(200), primary_key=True),
    sa.Column("stage", sa.String(40), primary_key=True),
    sa.Column("reason", sa.String(60), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("first_seen_at", UtcDateTime, nullable=False),
    sa.Column("last_seen_at", UtcDateTime, nullable=False),
    sa.Column("example_call_ids", sa.JSON, nullable=False),
)
# Stages whose rejections survive a broker restart (see `rejections`).
REJECTION_STAGES_NOT_REPLAYED = ("raw-validator",)


SCHEMA_VERSION = 3
Migration = Callable[[AsyncConnection], Awaitable[None]]


async def _tenant_keys(conn: AsyncConnection) -> None:
    """Version 2: (tenant, campaign) keys. Campaigns without a tenant go to the default
    tenant; stats rows take their campaign's tenant; alerts get a tenant column.

    The three re-keyed tables are built under a temporary name, filled from the old ones,
    and renamed once the old ones are dropped (so no index or constraint name clashes)."""
    rekeyed = (campaigns, minute_stats, window_stats)
    old = {
        t.name: sa.Table(t.name, sa.MetaData(), *(sa.Column(c.name) for c in t.columns))
        for t in rekeyed
    }
    old_campaigns = old["campaigns"]

    def owner_of(campaign_id: Any) -> Any:
        return (
            sa.select(sa.func.coalesce(sa.func.max(old_campaigns.c.tenant_id), DEFAULT_TENANT))
            .where(old_campaigns.c.campaign_id == campaign_id)
            .scalar_subquery()
        )

    for table in rekeyed:
        new = table.to_metadata(sa.MetaData(), name=f"{table.name}_v2")
        await conn.run_sync(lambda sync, t=new: t.create(sync))
        rows = old[table.name]
        columns = [c.name for c in table.columns if c.name != "tenant_id"]
        owner = (
            sa.func.coalesce(rows.c.tenant_id, DEFAULT_TENANT)
            if table is campaigns
            else owner_of(rows.c.campaign_id)
        )
        await conn.execute(
            new.insert().from_select(
                ["tenant_id", *columns], sa.select(owner, *(rows.c[n] for n in columns))
            )
        )
    await conn.exec_driver_sql(
        f"ALTER TABLE alerts ADD COLUMN tenant_id VARCHAR(200) NOT NULL DEFAULT '{DEFAULT_TENANT}'"
    )
    await conn.execute(alerts.update().values(tenant_id=owner_of(alerts.c.campaign_id)))
    await conn.exec_driver_sql(
        "CREATE INDEX ix_alerts_tenant_campaign ON alerts (tenant_id, campaign_id)"
    )
    for table in rekeyed:
        await conn.exec_driver_sql(f"DROP TABLE {table.name}")
        await conn.exec_driver_sql(f"ALTER TABLE {table.name}_v2 RENAME TO {table.name}")


async def _names_and_full_history(conn: AsyncConnection) -> None:
    """Version 3: tokens carry a name; history rows carry their alert's tenant, campaign
    and rule, a kind, and the author and text of an ack or note. Existing rows: a token
    has no name; an alert's first history row is "opened", a later one "resolved" or
    "updated" by its state."""
    await conn.exec_driver_sql("ALTER TABLE api_tokens ADD COLUMN name VARCHAR(200)")
    for ddl in (
        "tenant_id VARCHAR(200)",
        "campaign_id VARCHAR(200)",
        "rule VARCHAR(120)",
        "kind VARCHAR(20) NOT NULL DEFAULT 'updated'",
        "author VARCHAR(200)",
        "note TEXT",
    ):
        await conn.exec_driver_sql(f"ALTER TABLE alert_history ADD COLUMN {ddl}")

    def of_alert(column: sa.Column[Any]) -> Any:
        return sa.select(column).where(alerts.c.id == alert_history.c.alert_id).scalar_subquery()

    first = sa.select(sa.func.min(alert_history.c.seq)).group_by(alert_history.c.alert_id)
    await conn.execute(
        alert_history.update().values(
            tenant_id=of_alert(alerts.c.tenant_id),
            campaign_id=of_alert(alerts.c.campaign_id),
            rule=of_alert(alerts.c.rule),
            kind=sa.case(
                (alert_history.c.seq.in_(first), "opened"),
                (alert_history.c.state == "resolved", "resolved"),
                else_="updated",
            ),
        )
    )


# version reached -> step that brings a database from version-1 to it (create_all covers
# the newest version of a new database).
_MIGRATIONS: dict[int, Migration] = {2: _tenant_keys, 3: _names_and_full_history}


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets a busy timeout so several processes can share a file."""
    if url.startswith("sqlite"):
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(url, pool_pre_ping=True)


async def migrate(engine: AsyncEngine) -> int:
    """Create missing tables and run pending migrations; returns the schema version."""
    async with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        await conn.run_sync(metadata.create_all)
        row = (await conn.execute(sa.select(schema_version.c.version))).first()
        current = row[0] if row else 0
        if current == 0:
            await conn.execute(schema_version.insert().values(id=1, version=SCHEMA_VERSION))
            return SCHEMA_VERSION
        for version in range(current + 1, SCHEMA_VERSION + 1):
            await _MIGRATIONS[version](conn)
        if current != SCHEMA_VERSION:
            await conn.execute(schema_version.update().values(version=SCHEMA_VERSION))
        return SCHEMA_VERSION
