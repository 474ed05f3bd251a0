"""The durable archive against a real Kafka-protocol broker (a Tansu broker of the test's
own, so that it can be killed): ingest archives exactly what the broker acknowledged,
fails fast when the broker dies, and a replay into a fresh broker publishes the settings
first and then every archived CDR, in order, marked as replayed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from schemas import topics
from services.common.archive import Archive
from services.common.auth import TokenStore
from services.common.broker import EmbeddedBroker
from services.common.db import create_engine, migrate
from services.common.kafka import ensure_topics
from services.common.replay import replay_archive
from services.common.settings import CommonSettings, IngestSettings
from services.ingest.app import create_app
from tests.helpers import wait_until_async

pytestmark = pytest.mark.integration

KEY = "integration-archive-pseudonym-key"


def make_cdr(call_id: str) -> dict[str, Any]:
    originated = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    return {
        "call_id": call_id,
        "campaign_id": "camp-archive",
        "callee_number": "+393471234567",
        "originated_at": originated.isoformat(),
        "ended_at": (originated + timedelta(seconds=60)).isoformat(),
    }


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as own:
        own.start()
        yield own


async def read_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:

        async def enough() -> bool:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
            return len(records) >= expected

        await wait_until_async(enough, timeout=20, message=f"{expected} records on {topic}")
    finally:
        await consumer.stop()
    return records


async def test_replay_publishes_settings_then_every_cdr_in_order_marked_replayed(
    tmp_path: Path, broker: EmbeddedBroker
) -> None:
    bootstrap = broker.bootstrap
    await ensure_topics(bootstrap, 1, [topics.CDRS, topics.CAMPAIGNS])
    with Archive.in_data_dir(tmp_path) as archive:
        archive.put_setting(b"default/a", b'{"campaign_id": "a", "profile": "it"}')
        archive.put_setting(b"default/a", b'{"campaign_id": "a", "profile": "uk"}')
        for start in range(0, 12, 4):
            archive.append_cdrs([(b"a", f"cdr-{n}".encode()) for n in range(start, start + 4)])
        settings = CommonSettings(kafka_bootstrap=bootstrap, kafka_idempotence=False)
        result = await replay_archive(archive, settings, batch_size=5)

    assert (result.settings, result.cdrs) == (1, 12)
    campaigns = await read_all(bootstrap, topics.CAMPAIGNS, 1)
    cdrs = await read_all(bootstrap, topics.CDRS, 12)
    assert [orjson.loads(r.value)["profile"] for r in campaigns] == ["uk"]
    assert [r.value for r in cdrs] == [f"cdr-{n}".encode() for n in range(12)]
    assert all((topics.HEADER_REPLAY, b"1") in list(r.headers) for r in [*campaigns, *cdrs])


@pytest.fixture
async def ingest_client(
    tmp_path: Path, broker: EmbeddedBroker
) -> AsyncIterator[tuple[httpx.AsyncClient, str, IngestSettings]]:
    await ensure_topics(broker.bootstrap, 2, topics.ALL)
    settings = IngestSettings(
        data_dir=tmp_path,
        kafka_bootstrap=broker.bootstrap,
        kafka_idempotence=False,
        pseudonym_key=KEY,
        consume_raw=False,
        archive=True,
        broker_probe_interval_seconds=0.2,
    )
    engine = create_engine(settings.resolved_database_url())
    await migrate(engine)
    tokens = TokenStore(engine)
    token = await tokens.create("ingest")
    app = create_app(settings, tokens=tokens)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://ingest",
            headers={"Authorization": f"Bearer {token}"},
        ) as client:

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await wait_until_async(ready, timeout=20, message="ingest ready")
            yield client, broker.bootstrap, settings
    await engine.dispose()


async def test_ingest_archives_what_the_broker_acknowledged_and_fails_fast_when_it_dies(
    ingest_client: tuple[httpx.AsyncClient, str, IngestSettings], broker: EmbeddedBroker
) -> None:
    client, bootstrap, settings = ingest_client
    accepted = await client.post("/v1/cdrs", json=[make_cdr(f"c{n}") for n in range(5)])
    assert accepted.status_code == 202, accepted.text

    # One campaign, one request: one CdrBatchV1 envelope of 5 CDRs, archived as published.
    on_topic = await read_all(bootstrap, topics.CDRS, 1)
    assert [len(orjson.loads(r.value)["cdrs"]) for r in on_topic] == [5]
    with Archive.in_data_dir(settings.data_dir) as archive:
        archived = [(k, v) for batch in archive.cdr_batches() for _, k, v in batch]
    assert sorted(archived) == sorted((r.key, r.value) for r in on_topic)

    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGKILL)
    started = time.monotonic()
    refused = await client.post("/v1/cdrs", json=[make_cdr("after-kill")])
    assert refused.status_code == 503
    assert refused.headers["Retry-After"]
    assert time.monotonic() - started <= 1.0

    async def not_ready() -> bool:
        return (await client.get("/readyz")).status_code == 503

    await wait_until_async(not_ready, timeout=2, message="readyz 503 with the broker dead")
    with Archive.in_data_dir(settings.data_dir) as archive:
        assert archive.count_records() == 1  # the envelope; the refused batch is not archived
