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

What is left out of faust's path: `_on_changelog_sent`, which records each acknowledged
offset in a RocksDB table's local files. Here `delivered` keeps, per change-log topic and
partition, the last acknowledged offset, and the detector writes it into the local files
once, at a clean stop (`app.LocalStore`): the next start on the same data directory then
reads only the change log after it.

The detector's outputs (stats, alerts, traced calls, dead letters, and the envelopes of its
own internal stages) go the same way (`OutputTopic.send_soon`, faust's `send_soon`
signature): through faust's producer buffer a batch of envelopes' worth of outputs filled
the buffer ("producer buffer full") and stalled the agent while it drained record by
record. A record without a partition goes where a keyed send would put it (murmur2 of
the key, as aiokafka and the Java client). On a topic opened with `batched=True` (stats,
alerts) the records a flush sends to one partition travel as record batch envelopes
(schemas.record_batch_v1): one Kafka record per partition and flush instead of one per
minute bucket, window or alert.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from schemas.record_batch_v1 import envelopes
from services.common.kafka import Headers, send_partitioned
from services.detector.wire import murmur2

log = logging.getLogger("cdrwatch.detector")

Record = tuple[bytes | None, bytes | None, Headers]


class BatchedChangelog:
    """Queues the change-log records of the tables it is installed on and the records of its
    output topics (`topic`); `flush` sends them all."""

    def __init__(self, bootstrap: str, track: Callable[[asyncio.Future[Any]], None]) -> None:
        self._bootstrap = bootstrap
        self._track = track
        # (topic, partition or None for "by key") -> records in the order they were queued
        self._pending: dict[tuple[str, int | None], list[Record]] = {}
        self._batched: set[str] = set()  # topics whose records go in envelopes
        self._producer: AIOKafkaProducer | None = None
        self._started = asyncio.Event()
        # One flush at a time: each agent flushes after its batches, and the CDR stage's
        # batches yield between chunks, so two flushes can overlap; the second must not
        # send before the first has queued all it took, or an older snapshot of a minute
        # bucket or an alert could reach the broker after a newer one (the api keeps the
        # last it reads).
        self._sending = asyncio.Lock()
        self.records_sent = 0
        # (key, partition count) -> index among the partitions: aiokafka's partitioner
        # (a byte-wise murmur2 in Python) ran for every keyed record, about four stats
        # records a CDR at 2,000 campaigns, whose keys are the campaigns (py-spy: 4.6 %).
        self._keyed: dict[tuple[bytes | None, int], int] = {}
        # change-log topic -> partition -> offset of the last record the broker acknowledged
        self.delivered: dict[str, dict[int, int]] = {}

    def install(self, table: Any) -> None:
        """Route `table`'s change-log records through this queue."""
        topic = table.changelog_topic.get_topic_name()
        pending = self._pending
        self.delivered.setdefault(topic, {})

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
            pending.setdefault((topic, partition), []).append((orjson.dumps(key), encoded, ()))
            # faust reads the partition of the returned future's message (key TTLs)
            return SimpleNamespace(message=SimpleNamespace(partition=partition))

        table.send_changelog = send_changelog

    def queue(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        """Queue one change-log record already encoded (a table written around faust)."""
        self._pending.setdefault((topic, partition), []).append((key, value, ()))

    def topic(self, name: str, *, batched: bool = False) -> OutputTopic:
        """A topic whose `send_soon` queues here, sent by the next `flush`; `batched`: as
        record batch envelopes, one per partition (schemas.record_batch_v1)."""
        if batched:
            self._batched.add(name)
        return OutputTopic(name, self._pending)

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
        if not self._pending and not self._sending.locked():
            return
        # Also when this batch's records were taken by a flush still sending: this one
        # returns after that one has handed their futures to the delivery guard.
        async with self._sending:
            if self._pending:
                await self._started.wait()
                await self._send_pending()

    async def _send_pending(self) -> None:
        assert self._producer is not None
        pending = dict(self._pending)  # the tables' send_changelog append to this dict
        self._pending.clear()
        by_topic: dict[str, dict[int, list[Record]]] = {}
        for (topic, partition), records in pending.items():
            partitions = by_topic.setdefault(topic, {})
            self.records_sent += len(records)
            if partition is not None:
                partitions.setdefault(partition, []).extend(records)
                continue
            available = sorted(await self._producer.partitions_for(topic))
            for record in records:
                chosen = available[self._index_of(record[0], len(available))]
                partitions.setdefault(chosen, []).append(record)
        for topic, by_partition in by_topic.items():
            if topic in self._batched:
                by_partition = {
                    partition: [
                        (None, envelope, ())
                        for envelope in envelopes((r[1], r[2]) for r in records if r[1])
                    ]
                    for partition, records in by_partition.items()
                }
            acked = self.delivered.get(topic)
            on_delivered = None if acked is None else functools.partial(_note, acked)
            sent = await send_partitioned(
                self._producer, topic, by_partition, on_delivered=on_delivered
            )
            for future in sent:
                self._track(future)

    def _index_of(self, key: bytes | None, count: int) -> int:
        """Where aiokafka's `DefaultPartitioner` puts `key` among `count` partitions (sorted):
        murmur2 of the key, a random one for no key (never here: `send_soon` refuses a
        record without key or partition), memoised per key."""
        index = self._keyed.get((key, count))
        if index is None:
            assert key is not None
            if len(self._keyed) > 100_000:
                self._keyed.clear()
            index = self._keyed[(key, count)] = (murmur2(key) & 0x7FFFFFFF) % count
        return index


def _note(acked: dict[int, int], partition: int, offset: int) -> None:
    if offset > acked.get(partition, -1):
        acked[partition] = offset


class OutputTopic:
    """faust's `topic.send_soon(key=, value=, headers=, partition=)`, queued for the next
    `BatchedChangelog.flush` (which the agents await after each batch)."""

    def __init__(self, name: str, pending: dict[tuple[str, int | None], list[Record]]) -> None:
        self.name = name
        self._pending = pending

    def send_soon(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> None:
        if partition is None and key is None:
            raise ValueError(f"a record for {self.name} needs a key or a partition")
        self._pending.setdefault((self.name, partition), []).append((key, value, headers or ()))
