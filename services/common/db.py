"""The relational store's engine and schema (SQLite by default, PostgreSQL in production).

The schema is SQLAlchemy Core tables created by `migrate()`; each schema change bumps
`SCHEMA_VERSION` and adds a step to `_MIGRATIONS`, so an old database is brought forward
in place at start-up (the app creates and migrates its own schema, no external tool).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

metadata = sa.MetaData()

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
)

SCHEMA_VERSION = 1
Migration = Callable[[AsyncConnection], Awaitable[None]]
# version reached -> step that brings a database from version-1 to it (create_all covers 1).
_MIGRATIONS: dict[int, Migration] = {}


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
