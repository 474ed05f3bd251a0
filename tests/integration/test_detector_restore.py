"""The per-callee files restored from their change log in bulk before the worker starts
(services/detector/restore.py), against a real broker and the detector's own RocksDB store:
every key holds the last value the log has for it, a tombstone removes its key, each
partition's persisted offset is its last record's, and a restore starts after the offset
the files already hold."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from services.common.broker import free_port
from services.common.kafka import ensure_topics
from services.common.settings import DetectorSettings
from services.detector.app import Detector
from services.detector.restore import PartitionFiles, restore_changelog

pytestmark = pytest.mark.integration

TOPIC = "restore-test-callees-changelog"


async def _write_log(
    bootstrap: str, records: list[tuple[int, bytes, bytes | None]]
) -> dict[int, int]:
    """Send (partition, key, value) in order, in batches of various sizes; the last offset
    of each partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    last: dict[int, int] = {}
    try:
        futures = [
            (partition, await producer.send(TOPIC, value, key=key, partition=partition))
            for partition, key, value in records
        ]
        for partition, future in futures:
            last[partition] = max(last.get(partition, -1), (await future).offset)
    finally:
        await producer.stop()
    return last


def _history(rng: random.Random, n: int) -> bytes:
    return f'[["c-{rng.randrange(9)}","k",{n},{rng.randrange(10**9)},""]]'.encode()


def _store(tmp_path: Path, bootstrap: str) -> object:
    settings = DetectorSettings(
        kafka_bootstrap=bootstrap, data_dir=tmp_path / "data", stage="callees"
    )
    return Detector(settings).callees.data


async def test_the_files_hold_the_change_log_s_last_value_per_key_and_its_offsets(
    broker: str, tmp_path: Path
) -> None:
    await ensure_topics(broker, 3, [TOPIC])
    rng = random.Random(11)
    keys = [f"default/+3906{n:07d}".encode() for n in range(3000)]
    records: list[tuple[int, bytes, bytes | None]] = []
    for n in range(12_000):
        key = rng.choice(keys)
        partition = hash(key) % 3
        value = None if n % 997 == 0 else _history(rng, n)  # a few tombstones
        records.append((partition, key, value))
    last = await _write_log(broker, records)
    expected: dict[int, dict[bytes, bytes | None]] = {0: {}, 1: {}, 2: {}}
    for partition, key, value in records:
        expected[partition][key] = value

    store = _store(tmp_path, broker)
    files = PartitionFiles(store)
    done = await restore_changelog(broker, TOPIC, files)

    assert done.stopped == ""
    assert done.total == len(records)
    assert done.offsets == last
    for partition, values in expected.items():
        db = store._db_for_partition(partition)  # type: ignore[attr-defined]
        for key, value in values.items():
            assert db.get(key) == value, (partition, key)
        held = set(db.keys()) - {store.offset_key}  # type: ignore[attr-defined]
        assert held == {k for k, v in values.items() if v is not None}
        assert files.persisted(TP(TOPIC, partition)) == last[partition]

    # A second restore finds the files at the log's end: nothing to read.
    again = await restore_changelog(broker, TOPIC, files)
    assert (again.total, again.stopped) == (0, "")

    # Records after the files' offset, and only those, are read the next time.
    more = [(1, keys[0], _history(rng, 1)), (1, keys[1], None), (2, keys[2], _history(rng, 2))]
    await _write_log(broker, more)
    later = await restore_changelog(broker, TOPIC, files)
    assert later.records == {1: 2, 2: 1}
    assert store._db_for_partition(1).get(keys[0]) == more[0][2]  # type: ignore[attr-defined]
    assert store._db_for_partition(1).get(keys[1]) is None  # type: ignore[attr-defined]


async def test_no_change_log_yet_restores_nothing_and_says_so(broker: str, tmp_path: Path) -> None:
    done = await restore_changelog(
        broker, "never-written-changelog", PartitionFiles(_store(tmp_path, broker))
    )
    assert (done.total, done.stopped) == (0, "no change log yet")


async def test_an_unreachable_broker_ends_the_restore_and_leaves_it_to_faust(
    tmp_path: Path,
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    done = await restore_changelog(nowhere, TOPIC, PartitionFiles(_store(tmp_path, nowhere)))
    assert done.total == 0
    assert done.stopped
