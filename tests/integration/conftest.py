"""Fixtures of the integration lane: a real Kafka-protocol broker per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.broker import EmbeddedBroker
from services.common.kafka import ensure_topics


@pytest.fixture
def broker_partitions() -> int:
    """Partitions of each topic the `broker` fixture creates (a module may override it)."""
    return 4


@pytest.fixture
async def broker(tmp_path: Path, broker_partitions: int) -> AsyncIterator[str]:
    """An embedded broker of the test's own (memory storage, 127.0.0.1, a free port) with
    cdrwatch's topics created: whatever a test starts reads them from the beginning."""
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    bootstrap = broker.start()
    try:
        await ensure_topics(bootstrap, broker_partitions)
        yield bootstrap
    finally:
        broker.stop()
