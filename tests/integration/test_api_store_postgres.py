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
