"""The embedded Tansu broker, for real: topics, acks=all, consumer groups, committed
offsets, loopback-only listening, and a stop that leaves no process behind."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.common.broker import BrokerError, EmbeddedBroker, free_port, kafka_metadata_brokers
from tests.helpers import wait_until, wait_until_async

pytestmark = pytest.mark.integration

PARTITIONS = 3


async def _create_topics(bootstrap: str, names: list[str], partitions: int = PARTITIONS) -> None:
    try:
        from services.common.kafka import ensure_topics
    except ImportError:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
        finally:
            await admin.close()
    else:
        await ensure_topics(bootstrap, partitions, names)


@pytest.fixture
async def topic(kafka_broker: str, unique_name: Callable[[str], str]) -> AsyncIterator[str]:
    name = unique_name("cdrwatch.test")
    await _create_topics(kafka_broker, [name])
    yield name


def _producer(bootstrap: str) -> AIOKafkaProducer:
    # Tansu refuses InitProducerId: idempotence must be off against the embedded broker.
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)


def _consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # Tansu ignores LeaveGroup: a restarted member waits for the old one's session to
        # expire, and the first join takes about half a session. Short sessions keep it fast.
        session_timeout_ms=3_000,
        heartbeat_interval_ms=300,
    )


async def _produce(bootstrap: str, topic: str, count: int, key: bytes = b"campaign-1") -> None:
    producer = _producer(bootstrap)
    await producer.start()
    try:
        for index in range(count):
            metadata = await producer.send_and_wait(topic, f"cdr-{index}".encode(), key=key)
            assert metadata.offset == index  # one key, one partition: offsets are dense
    finally:
        await producer.stop()


async def _consume(consumer: AIOKafkaConsumer, count: int) -> list[bytes]:
    """Exactly `count` values (bounded wait), in the order the consumer returns them."""
    received: list[bytes] = []

    async def enough() -> bool:
        batches = await consumer.getmany(timeout_ms=200, max_records=count - len(received))
        for records in batches.values():
            received.extend(record.value for record in records)
        return len(received) >= count

    await wait_until_async(enough, timeout=30, message=f"{count} records")
    return received


async def test_ensure_topics_creates_topics_with_their_partitions(
    kafka_broker: str, unique_name: Callable[[str], str]
) -> None:
    names = [unique_name("cdrwatch.cdrs"), unique_name("cdrwatch.alerts")]
    await _create_topics(kafka_broker, names)
    await _create_topics(kafka_broker, names)  # a second run is a no-op, not an error

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker)
    await admin.start()
    try:
        assert set(names) <= set(await admin.list_topics())
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    partitions = {
        entry["topic"]: sorted(part["partition"] for part in entry["partitions"])
        for entry in described
    }
    assert partitions == {name: list(range(PARTITIONS)) for name in names}


async def test_records_produced_with_acks_all_come_back_through_a_consumer_group(
    kafka_broker: str, topic: str, unique_name: Callable[[str], str]
) -> None:
    producer = _producer(kafka_broker)
    await producer.start()
    try:
        sent: dict[str, list[bytes]] = {f"campaign-{index}": [] for index in range(5)}
        futures = []
        for index in range(100):
            key = f"campaign-{index % 5}"
            value = f"{key}/cdr-{index}".encode()
            sent[key].append(value)
            futures.append(await producer.send(topic, value, key=key.encode()))
        acknowledged = [await future for future in futures]
    finally:
        await producer.stop()
    assert all(metadata.topic == topic for metadata in acknowledged)

    consumer = _consumer(kafka_broker, topic, unique_name("group"))
    await consumer.start()
    try:
        received = await _consume(consumer, 100)
    finally:
        await consumer.stop()
    assert sorted(received) == sorted(value for values in sent.values() for value in values)
    for key, values in sent.items():  # per key (one partition each) the order is kept
        assert [value for value in received if value.startswith(f"{key}/".encode())] == values


async def test_committed_offsets_survive_a_consumer_restart(
    kafka_broker: str, topic: str, unique_name: Callable[[str], str]
) -> None:
    await _produce(kafka_broker, topic, 10)
    group = unique_name("group")

    first = _consumer(kafka_broker, topic, group)
    await first.start()
    try:
        # Read exactly six records (bounded), then commit the offset after the sixth.
        seen: list[ConsumerRecord[bytes, bytes]] = []

        async def six_read() -> bool:
            batches = await first.getmany(timeout_ms=200, max_records=6 - len(seen))
            for records in batches.values():
                seen.extend(records)
            return len(seen) >= 6

        await wait_until_async(six_read, timeout=30, message="six records")
        partition = TopicPartition(topic, seen[0].partition)
        await first.commit({partition: seen[-1].offset + 1})
        assert await first.committed(partition) == 6
    finally:
        await first.stop()
    assert [record.value for record in seen] == [f"cdr-{index}".encode() for index in range(6)]

    second = _consumer(kafka_broker, topic, group)
    await second.start()
    try:
        rest = await _consume(second, 4)
        assert await second.committed(partition) == 6
    finally:
        await second.stop()
    assert rest == [f"cdr-{index}".encode() for index in range(6, 10)]


async def test_tansu_refuses_the_idempotent_producer(kafka_broker: str) -> None:
    """Why `kafka_idempotence` is off for the embedded broker (SPEC "Architecture")."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker, enable_idempotence=True)
    with pytest.raises(Exception):  # noqa: B017 - aiokafka raises UnknownError here
        await producer.start()
    await producer.stop()


def test_metadata_probe_reports_the_advertised_loopback_address(kafka_broker: str) -> None:
    host, port = kafka_broker.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert kafka_metadata_brokers(host, int(port)) == [("127.0.0.1", int(port))]


# -- process behaviour: a broker of the test's own ------------------------------------------


def _listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: TCP_LISTEN
                continue
            address_hex, port_hex = local.split(":")
            raw = bytes.fromhex(address_hex)
            # /proc prints the address as host-order 32-bit words.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return found


def _process_exists(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is no longer running


def test_broker_listens_on_loopback_only_and_stop_leaves_no_process(tmp_path: Path) -> None:
    log_path = tmp_path / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        bootstrap = broker.start()
        pid = broker.pid
        assert pid is not None
        port = broker.port
        assert bootstrap == f"127.0.0.1:{port}"

        listening = wait_until(lambda: _listening_addresses(pid), timeout=5)
        assert ("127.0.0.1", port) in listening
        assert all(address == "127.0.0.1" for address, _ in listening), listening
        assert log_path.read_text()  # the broker writes its banner to the log file
    assert not broker.is_running()
    assert not _process_exists(pid)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    broker.stop()  # idempotent
    with pytest.raises(BrokerError):
        _ = broker.bootstrap


def test_a_taken_port_fails_with_the_log_tail_and_leaves_no_process(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", startup_timeout=10)
        with pytest.raises(BrokerError, match=rf"127\.0\.0\.1:{port}") as failure:
            broker.start(port)
    assert "log" in str(failure.value)
    assert broker.pid is None and not broker.is_running()


async def test_the_hole_probe_answers_the_offset_of_a_record_that_is_there(
    kafka_broker: str, topic: str
) -> None:
    """`first_offset_from` (services/detector/contiguous.py: a hole is skipped only when
    the broker proves it): a record present answers its own offset, nothing written yet
    answers None."""
    from services.common.kafka import first_offset_from

    await _produce(kafka_broker, topic, 12)
    found = [
        p
        for p in range(PARTITIONS)
        if await first_offset_from(kafka_broker, topic, p, 0, timeout=1.0) is not None
    ]
    assert len(found) == 1  # one key, one partition
    partition = found[0]

    assert await first_offset_from(kafka_broker, topic, partition, 7) == 7
    assert await first_offset_from(kafka_broker, topic, partition, 11) == 11
    assert await first_offset_from(kafka_broker, topic, partition, 12, timeout=0.5) is None


async def test_keyed_batches_land_where_send_puts_each_key_in_order(
    kafka_broker: str, topic: str
) -> None:
    """`send_keyed` (the ingest's publisher): every record on the partition `send` chooses
    for its key, a key's records in the order given, several batches when one partition's
    records outgrow `max_batch_size`, each future done once the broker acknowledged."""
    from services.common.kafka import send_keyed

    keys = [f"campaign-{n}".encode() for n in range(7)]
    records = [(keys[i % 7], f"{i:04d}".encode() * 100) for i in range(300)]  # 400 B each
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_broker,
        acks="all",
        enable_idempotence=False,
        max_batch_size=16 * 1024,  # ~40 records a batch: several per partition
    )
    await producer.start()
    try:
        futures = await send_keyed(producer, topic, records)
        assert len(futures) > PARTITIONS
        for future in futures:
            await future
        expected_partition = {}
        for key in keys:
            metadata = await producer.send_and_wait(topic, b"probe", key=key)
            expected_partition[key] = metadata.partition
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_broker, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        received: list[ConsumerRecord[bytes, bytes]] = []

        async def enough() -> bool:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                received.extend(batch)
            return len(received) >= len(records) + len(keys)

        await wait_until_async(enough, timeout=30, message="every record and probe")
    finally:
        await consumer.stop()
    for key in keys:
        on_partitions = {r.partition for r in received if r.key == key}
        assert on_partitions == {expected_partition[key]}
        values = [r.value for r in sorted(received, key=lambda r: r.offset) if r.key == key]
        assert values == [v for k, v in records if k == key] + [b"probe"]
