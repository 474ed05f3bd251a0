"""The api's consumer on a real broker: stored positions beyond the end of a recreated
topic (an in-memory broker restarted) fall back to the beginning instead of skipping."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from schemas import stats_from_counts, topics
from services.api.consumer import StoreConsumer, stats_message
from services.api.store import AlertStore, StoreBatch
from services.common.db import create_engine, migrate
from services.common.settings import ApiSettings
from tests.helpers import wait_until_async

pytestmark = pytest.mark.integration

MINUTE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def broker_partitions() -> int:
    return 2


async def test_positions_beyond_a_recreated_log_are_read_again_from_the_start(
    broker: str, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
    await migrate(engine)
    store = AlertStore(engine)
    settings = ApiSettings(
        kafka_bootstrap=broker, data_dir=tmp_path, consumer_group="api-reset", serve_ingest=False
    )
    # What a previous run (with a broker that is gone) left behind.
    await store.apply_batch(
        StoreBatch(
            positions={("api-reset", topics.STATS, p): 5000 for p in range(2)}
            | {("api-reset", topics.ALERTS, p): 5000 for p in range(2)}
        )
    )
    stats = stats_from_counts("fresh", MINUTE, MINUTE.replace(minute=1), {"attempts": 7})
    _topic, key, value, headers = stats_message(stats, "minute", tenant_id=None, profile="it")
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topics.STATS, key=key, value=value, headers=headers)
    finally:
        await producer.stop()

    consumer = StoreConsumer(settings, store)
    task = asyncio.create_task(consumer.run())
    try:
        totals = await wait_until_async(
            lambda: store.sum_stats("fresh", MINUTE, MINUTE.replace(minute=5)),
            timeout=60,
            interval=0.2,
        )
        assert totals["attempts"] == 7
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.dispose()
