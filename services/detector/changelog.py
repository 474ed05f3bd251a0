"""The detector's table change logs, sent in whole record batches once per processed batch.

faust sends one change-log record per table write through its Python producer buffer
(a `FutureMessage`, a callback and a buffer round per record). The detector writes about
1.2 records per CDR (a callee history per call, the state table's chunks, buckets and
campaign records), so the per-record path was a fixed cost on every CDR. Here a table's
`send_changelog` only queues (partition, key, value); `flush()`, awaited by each agent
after its batch and before the batch is acknowledged, sends what was queued as record
batches per partition (`services.common.kafka.send_partitioned`) on a producer of its own
(acks=all), in the order of the writes, and hands every future to the `DeliveryGuard`,
so an offset commit still waits until the change log of everything it covers was
acknowledged. The records are what faust would have sent (JSON keys and values, a null
value for a deletion), so faust's recovery reads them as its own.

What is left out of faust's path: `_on_changelog_sent`, which records the offset in a
RocksDB table's local files; the detector starts every RocksDB table afresh from its
change log (`app._drop_local_rocksdb`), so that offset is never read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from services.common.kafka import send_partitioned

log = logging.getLogger("cdrwatch.detector")


class BatchedChangelog:
    """Queues the change-log records of the tables it is installed on; `flush` sends."""

    def __init__(self, bootstrap: str, track: Callable[[asyncio.Future[Any]], None]) -> None:
        self._bootstrap = bootstrap
        self._track = track
        self._pending: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._started = asyncio.Event()
        self.records_sent = 0

    def install(self, table: Any) -> None:
        """Route `table`'s change-log records through this queue."""
        topic = table.changelog_topic.get_topic_name()
        pending = self._pending

        def send_changelog(
            partition: int | None,
            key: Any,
            value: Any,
            key_serializer: Any = None,  # noqa: ARG001 - faust's signature; JSON here
            value_serializer: Any = None,  # noqa: ARG001 - (a deletion's "raw": null)
        ) -> Any:
            if partition is None:
                raise RuntimeError(f"a write to {topic} outside of a partition's event")
            encoded = None if value is None else orjson.dumps(value)
            pending.setdefault((topic, partition), []).append((orjson.dumps(key), encoded))
            # faust reads the partition of the returned future's message (key TTLs)
            return SimpleNamespace(message=SimpleNamespace(partition=partition))

        table.send_changelog = send_changelog

    @property
    def pending(self) -> int:
        return sum(len(records) for records in self._pending.values())

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            linger_ms=0,
            client_id="cdrwatch-detector-changelog",
        )
        await self._producer.start()
        self._started.set()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def flush(self) -> None:
        """Send everything queued, per topic and partition in write order; the futures go
        to the delivery guard before this returns (the batch is acknowledged after)."""
        if not self._pending:
            return
        await self._started.wait()
        assert self._producer is not None
        pending = dict(self._pending)  # the tables' send_changelog append to this dict
        self._pending.clear()
        by_topic: dict[str, dict[int, list[tuple[bytes, bytes | None]]]] = {}
        for (topic, partition), records in pending.items():
            by_topic.setdefault(topic, {})[partition] = records
            self.records_sent += len(records)
        for topic, partitions in by_topic.items():
            for future in await send_partitioned(self._producer, topic, partitions):
                self._track(future)
