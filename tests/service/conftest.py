"""Fixtures for service tests: fakes for the ports and a real token store on SQLite."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from schemas.cdr_v1 import NormalizedCdrV1
from services.common.auth import TokenStore
from services.common.db import create_engine, migrate
from services.common.settings import IngestSettings
from services.ingest.app import create_app
from services.ingest.service import PublisherUnavailable, encode_record


class FakePublisher:
    """Records every batch it acknowledged, read back from the envelopes it was given;
    `fail = True` makes it behave like a dead broker."""

    def __init__(self) -> None:
        self.batches: list[list[NormalizedCdrV1]] = []
        self.fail = False
        self.ready = True

    @property
    def records(self) -> list[NormalizedCdrV1]:
        return [record for batch in self.batches for record in batch]

    async def check_ready(self) -> bool:
        return self.ready

    async def send_batch(self, encoded: Sequence[tuple[bytes, bytes]]) -> None:
        batch = [record for key, value in encoded for record in _published(key, value)]
        if self.fail:
            raise PublisherUnavailable("fake broker is down")
        self.batches.append(batch)


def _published(key: bytes, value: bytes) -> list[NormalizedCdrV1]:
    """The records of one envelope, each checked to be what the ingest promises on the
    topic: a valid `NormalizedCdrV1` whose JSON is byte for byte its `model_dump`'s, keyed
    by its campaign."""
    records = []
    for data in orjson.loads(value)["cdrs"]:
        record = NormalizedCdrV1.model_validate(data)
        assert key == record.campaign_id.encode()
        assert orjson.dumps(data) == orjson.dumps(record.model_dump(mode="json", by_alias=True))
        assert encode_record(record) == (key, orjson.dumps(data))
        records.append(record)
    return records


@dataclass
class FakeClock:
    now: datetime = field(default_factory=lambda: datetime(2026, 3, 2, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def fake_publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def token_store(tmp_path: Path) -> AsyncIterator[TokenStore]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'tokens.db'}")
    await migrate(engine)
    yield TokenStore(engine)
    await engine.dispose()


@dataclass
class IngestHarness:
    """An ingest app in process with its fakes, and a client holding a token per role."""

    client: httpx.AsyncClient
    publisher: FakePublisher
    registry: CollectorRegistry
    clock: FakeClock
    tokens: TokenStore
    settings: IngestSettings

    async def token(self, role: str = "ingest", tenant: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.tokens.create(role, tenant)}"}  # type: ignore[arg-type]

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def ingest_harness(
    tmp_path: Path, token_store: TokenStore
) -> Callable[..., contextlib.AbstractAsyncContextManager[IngestHarness]]:
    """Factory: `async with ingest_harness(max_records=5) as h: ...` (settings overrides)."""

    @contextlib.asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[IngestHarness]:
        settings = IngestSettings(
            data_dir=tmp_path,
            pseudonym_key="service-test-pseudonym-key",
            **overrides,
        )
        publisher, registry, clock = FakePublisher(), CollectorRegistry(), FakeClock()
        app = create_app(settings, publisher, token_store, registry=registry, clock=clock)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield IngestHarness(client, publisher, registry, clock, token_store, settings)

    return make


@pytest.fixture
async def ingest(
    ingest_harness: Callable[..., contextlib.AbstractAsyncContextManager[IngestHarness]],
) -> AsyncIterator[IngestHarness]:
    """The ingest app with small limits: 20 records, 16 KiB."""
    async with ingest_harness(max_records=20, max_body_bytes=16 * 1024) as harness:
        yield harness
