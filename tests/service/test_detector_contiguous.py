"""ContiguousReads: a source partition is handed to faust without holes and in order
(services/detector/contiguous.py)."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from services.detector.contiguous import PROBE_AFTER, ContiguousReads

TP = namedtuple("TP", "topic partition")
Message = namedtuple("Message", "offset")
CDRS = TP("cdrs", 0)
OTHER = TP("cdrs", 1)
CHANGELOG = TP("state-changelog", 0)


class FakeConsumer:
    """Serves fetches from a script; a seek makes the log readable from the new offset."""

    def __init__(self, logs: dict[Any, int]) -> None:
        self.logs = logs  # tp -> end offset (records 0..end-1)
        self.position: dict[Any, int] = dict.fromkeys(logs, 0)
        self.skips: dict[Any, list[tuple[int, int]]] = {}  # tp -> [(at, skip_to)] once
        self.seeks: list[tuple[Any, int]] = []
        self.fetch_size = 4
        self.committed: dict[Any, int | None] = {}
        self._read_offset: dict[Any, int | None] = {}

    async def getmany(self, timeout: float):
        for tp in self.logs:
            start = self.position[tp]
            for at, to in list(self.skips.get(tp, ())):
                if start == at:
                    self.skips[tp].remove((at, to))
                    start = to  # faust dropped records without moving back: a hole
            end = min(start + self.fetch_size, self.logs[tp])
            self.position[tp] = end
            for offset in range(start, end):
                yield tp, Message(offset)

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.position[tp] = offset

    async def perform_seek(self) -> None:
        """faust: every partition to its committed offset, recorded in `_read_offset`."""
        for tp, offset in self.committed.items():
            self.position[tp] = offset
        self._read_offset = dict(self.committed)


async def read_all(consumer: Any, rounds: int = 20) -> dict[Any, list[int]]:
    got: dict[Any, list[int]] = {}
    for _ in range(rounds):
        async for tp, message in consumer.getmany(1.0):
            got.setdefault(tp, []).append(message.offset)
    return got


async def test_a_hole_is_read_again_in_order() -> None:
    fake = FakeConsumer({CDRS: 12, OTHER: 6})
    fake.skips[CDRS] = [(4, 7)]  # offsets 4..6 fetched and dropped
    guard = ContiguousReads({"cdrs"})
    consumer = guard.install(fake)

    got = await read_all(consumer)

    assert got[CDRS] == list(range(12))
    assert got[OTHER] == list(range(6))
    assert fake.seeks == [(CDRS, 4)]
    assert guard.holes_seen == 1


async def test_without_the_guard_the_hole_is_lost() -> None:
    """The failure the guard exists for (the fake reproduces faust's dropped records)."""
    fake = FakeConsumer({CDRS: 12})
    fake.skips[CDRS] = [(4, 7)]

    got = await read_all(fake)

    assert got[CDRS] == [0, 1, 2, 3, 7, 8, 9, 10, 11]


async def test_unguarded_topics_keep_their_holes() -> None:
    """A compacted change log has holes on Apache Kafka: not read again forever."""
    fake = FakeConsumer({CHANGELOG: 10})
    fake.skips[CHANGELOG] = [(4, 8)]
    consumer = ContiguousReads({"cdrs"}).install(fake)

    got = await read_all(consumer)

    assert got[CHANGELOG] == [0, 1, 2, 3, 8, 9]
    assert fake.seeks == []


async def test_a_seek_to_committed_offsets_resets_the_expectation() -> None:
    """After faust seeks to the committed offsets (rebalance), reading goes on there:
    higher (another worker went on) or lower (read again) is no hole."""
    fake = FakeConsumer({CDRS: 20})
    guard = ContiguousReads({"cdrs"})
    consumer = guard.install(fake)
    await read_all(consumer, rounds=1)  # 0..3

    fake.committed = {CDRS: 10}
    await consumer.perform_seek()
    got = await read_all(consumer, rounds=1)

    assert got[CDRS] == [10, 11, 12, 13]
    assert fake.seeks == []

    await consumer.seek(CDRS, 2)  # a seek back through the consumer: read again from 2
    got = await read_all(consumer, rounds=1)
    assert got[CDRS] == [2, 3, 4, 5]


async def test_a_hole_across_a_rebalance_without_a_seek_is_read_again() -> None:
    """The case seen on the embedded broker: the partition stayed assigned, faust did not
    seek, the fetch position had moved past records it never handed over."""
    fake = FakeConsumer({CDRS: 16})
    consumer = ContiguousReads({"cdrs"}).install(fake)
    await read_all(consumer, rounds=1)  # 0..3
    fake.position[CDRS] = 9  # 4..8 fetched, dropped at the generation change

    got = await read_all(consumer)

    assert got[CDRS] == list(range(4, 16))
    assert fake.seeks == [(CDRS, 4)]


async def test_a_hole_that_never_fills_is_accepted_once_the_broker_proves_it() -> None:
    """Transaction control records take offsets no consumer sees: after PROBE_AFTER
    re-reads of the same hole the broker is asked, and its answer moves reading on."""
    fake = FakeConsumer({CDRS: 10})
    fake.skips[CDRS] = [(4, 6)] * (PROBE_AFTER + 1)
    probes: list[tuple[str, int, int]] = []

    async def probe(topic: str, partition: int, offset: int) -> int | None:
        probes.append((topic, partition, offset))
        return 6

    consumer = ContiguousReads({"cdrs"}, probe).install(fake)

    got = await read_all(consumer)

    assert got[CDRS] == [0, 1, 2, 3, 6, 7, 8, 9]
    assert fake.seeks == [(CDRS, 4)] * (PROBE_AFTER - 1)
    assert probes == [("cdrs", 0, 4)]


async def test_records_the_broker_still_has_are_read_again_however_often_faust_drops_them() -> None:
    """The loss seen in CI: faust dropped the same re-read again and again; the broker
    says the records are there, so they are read (never skipped), however long it takes."""
    drops = 3 * PROBE_AFTER + 2
    fake = FakeConsumer({CDRS: 10})
    fake.skips[CDRS] = [(4, 6)] * drops
    probes: list[int] = []

    async def probe(topic: str, partition: int, offset: int) -> int | None:
        probes.append(offset)
        return offset  # the record at `offset` is in the log

    consumer = ContiguousReads({"cdrs"}, probe).install(fake)

    got = await read_all(consumer, rounds=40)

    assert got[CDRS] == list(range(10))
    assert probes == [4, 4, 4]
    assert len(fake.seeks) == drops


async def test_without_a_probe_a_hole_is_never_skipped() -> None:
    fake = FakeConsumer({CDRS: 10})
    fake.skips[CDRS] = [(4, 6)] * (2 * PROBE_AFTER)
    consumer = ContiguousReads({"cdrs"}).install(fake)

    got = await read_all(consumer, rounds=40)

    assert got[CDRS] == list(range(10))


async def test_a_partition_never_committed_is_read_from_its_start_after_a_seek() -> None:
    """A record of a fetch interrupted by the rebalance (offset 3) must not reach faust
    before the re-read from the start (committed: none)."""
    fake = FakeConsumer({CDRS: 8})
    consumer = ContiguousReads({"cdrs"}).install(fake)
    fake.committed = {CDRS: None}
    await consumer.perform_seek()
    fake.position[CDRS] = 3  # what the interrupted fetch still hands over

    got = await read_all(consumer)

    assert got[CDRS] == list(range(8))
    assert fake.seeks == [(CDRS, 0)]
