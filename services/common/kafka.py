"""Kafka client factory: producer configuration and topic creation, shared by the services.

Producers use acks=all. The idempotent producer is a setting (`kafka_idempotence`): on for
Apache Kafka, off for the embedded Tansu broker, which answers InitProducerId with an
error. Records are deduplicated by `call_id` downstream, so producer retries are absorbed
either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code
from aiokafka.partitioner import DefaultPartitioner

from schemas import topics as topic_names
from services.common.settings import CommonSettings

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_PARTITIONER = DefaultPartitioner()

# Per-topic settings at creation. Campaign configuration is a table (latest per campaign).
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    topic_names.CAMPAIGNS: {"cleanup.policy": "compact"},
}


def producer_config(settings: CommonSettings, client_id: str = "cdrwatch") -> dict[str, Any]:
    """Keyword arguments for `AIOKafkaProducer`.

    A short linger batches the records of one HTTP request per partition without adding
    noticeable latency; no compression (CDRs are small and the broker may be Tansu).
    """
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotence,
        "linger_ms": 5,
        "compression_type": None,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 15_000,
        "retry_backoff_ms": 200,
    }


def create_producer(settings: CommonSettings, client_id: str = "cdrwatch") -> AIOKafkaProducer:
    """A configured, not yet started producer (call it inside the running event loop)."""
    return AIOKafkaProducer(**producer_config(settings, client_id))


async def send_keyed(
    producer: AIOKafkaProducer, topic: str, records: Sequence[tuple[bytes, bytes]]
) -> list[asyncio.Future[Any]]:
    """Queue keyed (key, value) records as whole batches, one or more per partition, and
    return their futures (each done when the broker acknowledged its batch).

    Each record goes to the partition `producer.send` would choose for its key (the
    default partitioner: murmur2 of the key, as the Java client), in the order given.
    Building the batches here costs about a third of queueing records one by one with
    `send` (~5 against ~15 µs a record, `bench/README.md`), which the ingest pays for
    every CDR."""
    partitions = sorted(await producer.partitions_for(topic))
    by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
    partition_of: dict[bytes, int] = {}
    for key, value in records:
        partition = partition_of.get(key)
        if partition is None:
            partition = partition_of[key] = _PARTITIONER(key, partitions, partitions)
        by_partition.setdefault(partition, []).append((key, value))
    return await send_partitioned(producer, topic, by_partition)


Headers = Sequence[tuple[str, bytes]]


async def send_partitioned(
    producer: AIOKafkaProducer,
    topic: str,
    by_partition: Mapping[int, Sequence[tuple[bytes | None, bytes | None]]]
    | Mapping[int, Sequence[tuple[bytes | None, bytes | None, Headers]]],
    *,
    on_delivered: Callable[[int, int], None] | None = None,
) -> list[asyncio.Future[Any]]:
    """Queue (key, value) or (key, value, headers) records to the partitions given, in
    order, as whole batches (a None value is a tombstone); the futures are done when the
    broker acknowledged. `on_delivered(partition, offset of the batch's last record)` is
    called as each batch is acknowledged."""
    futures: list[asyncio.Future[Any]] = []

    async def send(batch: Any, partition: int, count: int) -> None:
        future = await producer.send_batch(batch, topic, partition=partition)
        if on_delivered is not None:
            future.add_done_callback(
                lambda done: (
                    None
                    if done.cancelled() or done.exception() is not None
                    else on_delivered(partition, done.result().offset + count - 1)
                )
            )
        futures.append(future)

    for partition, records in by_partition.items():
        batch = producer.create_batch()
        count = 0
        for record in records:
            key, value = record[0], record[1]
            headers = record[2] if len(record) > 2 else None
            if _append(batch, key, value, headers) is None:
                await send(batch, partition, count)
                batch = producer.create_batch()
                # an empty batch takes any one record (aiokafka's builder)
                _append(batch, key, value, headers)
                count = 0
            count += 1
        await send(batch, partition, count)
    return futures


def _append(batch: Any, key: bytes | None, value: bytes | None, headers: Headers | None) -> Any:
    if headers:
        return batch.append(key=key, value=value, timestamp=None, headers=list(headers))
    return batch.append(key=key, value=value, timestamp=None)


async def ensure_topics(
    bootstrap: str,
    partitions: int,
    topics: Iterable[str] = topic_names.ALL,
    *,
    replication_factor: int = 1,
    timeout_seconds: float = 30.0,
) -> None:
    """Create the missing topics; existing ones are left as they are (idempotent).

    Retries the connection until `timeout_seconds` so that it can run right after a broker
    was started. A topic created concurrently by someone else counts as success.
    """
    wanted = list(dict.fromkeys(topics))
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="cdrwatch-admin")
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [name for name in wanted if name not in existing]
            if missing:
                response = await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            partitions,
                            replication_factor,
                            topic_configs=TOPIC_CONFIGS.get(name, {}),
                        )
                        for name in missing
                    ]
                )
                _raise_topic_errors(response.topic_errors)
                log.info("topics_created", extra={"topics": missing, "partitions": partitions})
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


def _raise_topic_errors(topic_errors: Iterable[tuple[Any, ...]]) -> None:
    """Raise the first real error of a CreateTopics response (TopicAlreadyExists is fine)."""
    for entry in topic_errors:
        name, code = entry[0], entry[1]
        if code in (0, _TOPIC_ALREADY_EXISTS):
            continue
        message = entry[2] if len(entry) > 2 and entry[2] else ""
        error_class: type[KafkaError] = for_code(code)
        raise error_class(f"creating topic {name}: {message}".rstrip(": "))


# -- broker health -------------------------------------------------------------------------

_API_VERSIONS_V0 = struct.pack(">hhih", 18, 0, 1, len(b"cdrwatch-probe")) + b"cdrwatch-probe"


def _bootstrap_hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            hosts.append((host.strip("[]"), int(port)))
    return hosts


async def broker_answers(bootstrap: str, timeout: float = 0.5) -> bool:
    """True when a bootstrap broker answers an ApiVersions request within `timeout`."""
    for host, port in _bootstrap_hosts(bootstrap):
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(struct.pack(">i", len(_API_VERSIONS_V0)) + _API_VERSIONS_V0)
                await writer.drain()
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                if size < 6:
                    continue
                body = await reader.readexactly(min(size, 64))
                (correlation, error) = struct.unpack_from(">ih", body, 0)
                if correlation == 1 and error in (0, 35):  # 35: version not supported
                    return True
        except (OSError, TimeoutError, asyncio.IncompleteReadError, struct.error):
            continue
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    return False


def reader(bootstrap: str, client_id: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer of its own: no group, nothing committed, partitions assigned by the
    caller, and a fetch that waits at most 100 ms for records (`options` override)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id=client_id,
        **{"fetch_max_wait_ms": 100, **options},
    )


async def confirm_log_ends(
    bootstrap: str, reported: dict[TopicPartition, int], timeout: float = 3.0
) -> dict[TopicPartition, int]:
    """The log end offset of each partition, confirmed by a fetch.

    A ListOffsets(latest) answer is what Kafka clients (aiokafka's `end_offsets`, faust's
    table recovery) take as the log end. The embedded Tansu broker (0.6) answers it with
    the base offset of the partition's last record batch plus one: with a batch of 10
    records at offsets 20..29 it says 21, not 30 (measured; a fetch response on the same
    log says 30). A reader that stops at that offset misses the last batch: faust's
    recovery then restored a table without its newest change-log records, and a restarted
    detector counted on from stale campaign totals (tests/integration/
    test_detector_sigkill.py). A fetch from `reported - 1` returns the high watermark in
    its response; the end is the larger of the two. On Apache Kafka both agree and this
    costs one fetch. A partition whose fetch does not answer within `timeout` keeps the
    reported offset."""
    ends = dict(reported)
    probe = [tp for tp, end in reported.items() if end > 0]
    if not probe:
        return ends
    consumer = reader(bootstrap, "cdrwatch-log-end")
    await consumer.start()
    try:
        consumer.assign(probe)
        for tp in probe:
            consumer.seek(tp, reported[tp] - 1)
        pending = set(probe)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending and loop.time() < deadline:
            await consumer.getmany(*pending, timeout_ms=100, max_records=1)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    ends[tp] = max(reported[tp], highwater)
                    pending.discard(tp)
        if pending:
            log.warning("log_end_unconfirmed partitions=%s", sorted(map(str, pending)))
    finally:
        await consumer.stop()
    return ends


async def first_offset_from(
    bootstrap: str, topic: str, partition: int, offset: int, timeout: float = 3.0
) -> int | None:
    """The offset of the first record the broker serves at or after `offset` of one
    partition, read by a consumer of its own (no group); None when no record came within
    `timeout` (nothing written there yet, or no answer: the caller cannot tell).

    It tells a hole that is really in the log (transaction control records, retention
    past `offset`: the answer is larger than `offset`) from records a consumer dropped on
    its side (the answer is `offset`). A fetch below the log start restarts at the log
    start, hence `auto_offset_reset="earliest"`."""
    tp = TopicPartition(topic, partition)
    consumer = reader(bootstrap, "cdrwatch-hole-probe", auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        got = await consumer.getmany(tp, timeout_ms=int(timeout * 1000), max_records=1)
        records = got.get(tp) or []
        return records[0].offset if records else None
    finally:
        await consumer.stop()


class BrokerHealth:
    """Probes the broker every `interval` seconds in the background (a TCP connection
    and an ApiVersions round trip, bounded by `timeout`).

    `healthy` is the latest verdict (False until the first probe answered); `down` is an
    event set while the broker does not answer, so a send in flight can give up as soon as
    the broker is known to be gone instead of waiting for its own timeout."""

    def __init__(self, bootstrap: str, interval: float = 0.5, timeout: float | None = None) -> None:
        self.bootstrap = bootstrap
        self.interval = interval
        self.timeout = timeout if timeout is not None else min(interval, 1.0)
        self.healthy = False
        self.down = asyncio.Event()
        self.down.set()
        self._task: asyncio.Task[None] | None = None

    async def probe(self) -> bool:
        ok = await broker_answers(self.bootstrap, self.timeout)
        if ok != self.healthy:
            log.log(
                logging.INFO if ok else logging.WARNING,
                "broker_reachable" if ok else "broker_unreachable",
                extra={"bootstrap": self.bootstrap},
            )
        self.healthy = ok
        if ok:
            self.down.clear()
        else:
            self.down.set()
        return ok

    async def start(self) -> None:
        if self._task is None:
            await self.probe()
            self._task = asyncio.create_task(self._run(), name="broker-health")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            with contextlib.suppress(Exception):
                await self.probe()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
