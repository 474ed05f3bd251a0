"""The api store's tests (tests/service/test_api_store.py, test_api_store_calls.py) against
a real PostgreSQL.

`postgres_url` (tests/conftest.py) creates a database cdrwatch_test_<random> for the
session, drops it at the end, and fails, never skips, when PostgreSQL is not running.
Every test here starts from empty tables.
"""

from __future__ import annotations

import secrets

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from services.api.store import AlertStore
from services.common.db import create_engine, metadata, migrate
from tests.service import test_api_store as store_cases
from tests.service import test_api_store_calls as call_cases

pytestmark = pytest.mark.integration

# Collect every store test here too; the `store` fixture below gives them PostgreSQL.
globals().update({name: f for name, f in vars(store_cases).items() if name.startswith("test_")})
globals().update({name: f for name, f in vars(call_cases).items() if name.startswith("test_")})
clock = store_cases.clock


@pytest.fixture
async def store(postgres_url, clock):
    engine = create_engine(postgres_url)
    await migrate(engine)
    async with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            if table.name != "schema_version":
                await conn.execute(table.delete())
    yield AlertStore(engine, clock=clock)
    await engine.dispose()


@pytest.fixture
async def blank_engine(postgres_url):
    """An engine whose tables live in a fresh, empty schema of the test database."""
    schema = f"blank_{secrets.token_hex(4)}"
    admin = create_engine(postgres_url)
    async with admin.begin() as conn:
        await conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine = create_async_engine(
        postgres_url, connect_args={"server_settings": {"search_path": schema}}
    )
    yield engine
    await engine.dispose()
    async with admin.begin() as conn:
        await conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    await admin.dispose()


async def test_blank_engine_is_postgresql_and_empty(blank_engine):
    async with blank_engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    assert (blank_engine.dialect.name, tables) == ("postgresql", [])


async def test_postgres_is_the_dialect_under_test(store):
    assert store.engine.dialect.name == "postgresql"


async def test_webhook_queue_and_tries_on_postgresql(store, clock):
    """The webhook store's SQL on PostgreSQL: queue from the history feed once, due
    deliveries, tries kept, a tenant's scope, delete with everything it holds."""
    from datetime import timedelta

    from services.api.webhooks import WebhookCreate, WebhookStore

    hooks = WebhookStore(store.engine, clock)
    acme = await hooks.create(WebhookCreate(url="http://127.0.0.1:9/acme"), "acme")
    acks = await hooks.create(
        WebhookCreate(url="http://127.0.0.1:9/acks", events=["acknowledged"]), None
    )
    await store_cases.feed(
        store,
        store_cases.alert(tenant="acme"),
        store_cases.alert(tenant="acme", severity="violation"),
        store_cases.alert("g1", tenant="globex"),
    )
    alert_id = "it.silent_rate.cumulative:c1"
    await store.ack(alert_id, by="Giulia Rossi", note="", tenant_id="acme")
    assert await hooks.enqueue() == 4  # acme: its 3 changes; acks: the one ack
    assert await hooks.enqueue() == 0
    due = await hooks.due(exclude=set(), limit=10)
    assert sorted(d.kind for d in due) == ["acknowledged", "acknowledged", "opened", "updated"]
    mine = [d for d in due if d.webhook_id == acme.id]
    assert [d.idempotency_key.rsplit(":", 1)[0] for d in mine] == [alert_id] * 3
    first, second = mine[0], mine[1]
    await hooks.record_try(
        first,
        attempted_at=clock(),
        status_code=500,
        error="HTTP 500",
        duration_ms=1.5,
        state="pending",
        next_attempt_at=clock() + timedelta(minutes=1),
    )
    await hooks.record_try(
        second,
        attempted_at=clock(),
        status_code=204,
        error=None,
        duration_ms=1.0,
        state="delivered",
        next_attempt_at=None,
    )
    assert {d.id for d in await hooks.due(exclude=set(), limit=10)} == {
        d.id for d in due if d.id not in (first.id, second.id)
    }
    page = await hooks.deliveries(acme.id, "acme")
    states = {d.id: (d.state, [a.status_code for a in d.attempts]) for d in page.items}
    assert states[first.id] == ("pending", [500]) and states[second.id] == ("delivered", [204])
    assert await hooks.deliveries(acme.id, "globex") is None
    assert (await hooks.get(acme.id, None)).deliveries == {"pending": 2, "delivered": 1, "dead": 0}
    assert {w.id for w in (await hooks.list_webhooks(None)).items} == {acme.id, acks.id}
    assert await hooks.delete(acme.id, "acme")
    assert await hooks.get(acme.id, None) is None
