"""The detector's batched change log (`services.detector.changelog`): table writes are
queued and sent per flush as record batches per partition, in write order, each batch's
future handed to the delivery guard; consecutive flushes each send their own writes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas.record_batch_v1 import envelopes, records_in
from services.detector.changelog import BatchedChangelog


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def append(
        self, *, key: bytes, value: bytes | None, timestamp: None, headers: Any = None
    ) -> object:
        self.records.append((key, value) if headers is None else (key, value, headers))
        return object()


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes | None]]]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch.records))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def fake_table(name: str) -> Any:
    topic = SimpleNamespace(get_topic_name=lambda: f"{name}-changelog")
    return SimpleNamespace(changelog_topic=topic)


async def test_writes_go_out_per_flush_in_order_and_every_future_is_tracked() -> None:
    tracked: list[Any] = []
    changelog = BatchedChangelog("127.0.0.1:1", tracked.append)
    state, callees = fake_table("state"), fake_table("callees")
    changelog.install(state)
    changelog.install(callees)
    producer = FakeProducer()
    changelog._producer = producer  # type: ignore[assignment]
    changelog._started.set()

    assert state.send_changelog(2, "b\x1fc\x1f7", [3, 1]).message.partition == 2
    state.send_changelog(0, "c\x1fc", {"watermark": 9})
    state.send_changelog(2, "b\x1fc\x1f8", None, value_serializer="raw")  # a deletion
    callees.send_changelog(1, "t\x1fk", [["call-1", "t/c", 0, 0, ""]])
    assert changelog.pending == 4
    await changelog.flush()
    assert changelog.pending == 0
    assert sorted(producer.sent) == [
        ("callees-changelog", 1, [(b'"t\\u001fk"', orjson.dumps([["call-1", "t/c", 0, 0, ""]]))]),
        ("state-changelog", 0, [(b'"c\\u001fc"', b'{"watermark":9}')]),
        (
            "state-changelog",
            2,
            [(b'"b\\u001fc\\u001f7"', b"[3,1]"), (b'"b\\u001fc\\u001f8"', None)],
        ),
    ]
    assert len(tracked) == 3

    # The next batch's writes are the next flush's (the queue is emptied, not replaced).
    producer.sent.clear()
    state.send_changelog(2, "b\x1fc\x1f9", [1])
    await changelog.flush()
    assert producer.sent == [("state-changelog", 2, [(b'"b\\u001fc\\u001f9"', b"[1]")])]
    assert changelog.records_sent == 5
    await changelog.flush()  # nothing queued: nothing sent
    assert len(producer.sent) == 1


async def test_outputs_go_out_with_the_change_log_keyed_like_a_keyed_send() -> None:
    tracked: list[Any] = []
    changelog = BatchedChangelog("127.0.0.1:1", tracked.append)
    producer = FakeProducer()
    changelog._producer = producer  # type: ignore[assignment]
    changelog._started.set()
    stats, callees = changelog.topic("stats"), changelog.topic("callee-calls")
    keys = [f"t/campaign-{n}".encode() for n in range(12)]
    for n, key in enumerate(keys):
        stats.send_soon(key=key, value=b"%d" % n, headers=[("cdrwatch-window", b"minute")])
    callees.send_soon(key=None, value=b"envelope", partition=3)
    await changelog.flush()

    partitioner = DefaultPartitioner()
    expected: dict[int, list[Any]] = {}
    for n, key in enumerate(keys):  # where aiokafka's own keyed send would put each
        partition = partitioner(key, [0, 1, 2, 3], [0, 1, 2, 3])
        expected.setdefault(partition, []).append(
            (key, b"%d" % n, [("cdrwatch-window", b"minute")])
        )
    sent = {(topic, partition): records for topic, partition, records in producer.sent}
    assert {p: r for (t, p), r in sent.items() if t == "stats"} == expected
    assert len(expected) > 1  # the keys spread over partitions
    assert sent[("callee-calls", 3)] == [(None, b"envelope")]
    assert len(tracked) == len(producer.sent)
    with pytest.raises(ValueError, match="needs a key or a partition"):
        stats.send_soon(key=None, value=b"x")


async def test_a_batched_topic_sends_one_envelope_per_partition_in_order() -> None:
    """Stats and alerts (issue 7 items 1 and 3): the records a flush would have sent to a
    partition of a batched topic go as ONE record batch envelope, holding each record's
    value and headers in the order they were queued (schemas.record_batch_v1)."""
    changelog = BatchedChangelog("127.0.0.1:1", lambda _f: None)
    producer = FakeProducer()
    changelog._producer = producer  # type: ignore[assignment]
    changelog._started.set()
    stats = changelog.topic("stats", batched=True)
    keys = [f"t/campaign-{n}".encode() for n in range(12)]
    queued = []
    for round_ in range(3):
        for n, key in enumerate(keys):
            value = orjson.dumps({"n": n, "round": round_})
            headers = [("cdrwatch-window", b"minute"), ("cdrwatch-replay", b"1")][: 1 + n % 2]
            stats.send_soon(key=key, value=value, headers=headers)
            queued.append((key, value, headers))
    await changelog.flush()

    partitioner = DefaultPartitioner()
    expected: dict[int, list[Any]] = {}
    for key, value, headers in queued:
        partition = partitioner(key, [0, 1, 2, 3], [0, 1, 2, 3])
        expected.setdefault(partition, []).append((orjson.loads(value), headers))
    assert len(producer.sent) == len(expected) > 1  # one record per partition
    for topic, partition, records in producer.sent:
        assert topic == "stats"
        [(key, envelope)] = records
        assert key is None
        assert records_in(envelope) == expected[partition]


def test_record_batch_envelopes_close_before_their_size_limit() -> None:
    records = [(orjson.dumps({"n": n, "pad": "x" * 100}), [("h", b"v")]) for n in range(50)]
    made = list(envelopes(records, max_bytes=1000))
    assert len(made) > 1 and all(len(e) <= 1000 for e in made)
    assert [r for e in made for r in records_in(e)] == [
        ({"n": n, "pad": "x" * 100}, [("h", b"v")]) for n in range(50)
    ]
    assert records_in(b'{"n":1}', [("h", b"v")]) == [({"n": 1}, [("h", b"v")])]  # plain
    with pytest.raises(ValueError):
        records_in(b'{"v":1,"records":[{"value":1,"extra":2}]}')


async def test_overlapping_flushes_send_in_the_order_their_records_were_queued() -> None:
    """Two agents flush after their batches, and the CDR stage yields between chunks of a
    batch, so flushes overlap. A flush held up while sending (here: asking for the
    partitions of a keyed topic) must not be overtaken by the next: the newer snapshot of
    a minute bucket would reach the broker first and the api keep the older one. The
    second flush also returns only once the first has handed over every future."""
    tracked: list[Any] = []
    changelog = BatchedChangelog("127.0.0.1:1", tracked.append)
    producer = FakeProducer()
    changelog._producer = producer  # type: ignore[assignment]
    changelog._started.set()
    release = asyncio.Event()
    asked = 0

    async def slow_partitions_for(topic: str) -> set[int]:
        nonlocal asked
        asked += 1
        if asked == 1:
            await release.wait()
        return {0, 1, 2, 3}

    producer.partitions_for = slow_partitions_for  # type: ignore[method-assign]
    stats = changelog.topic("stats")
    stats.send_soon(key=b"t/c", value=b'"older"')
    first = asyncio.create_task(changelog.flush())
    await asyncio.sleep(0)  # the first flush took the older record and waits
    stats.send_soon(key=b"t/c", value=b'"newer"')
    second = asyncio.create_task(changelog.flush())
    await asyncio.sleep(0)
    assert producer.sent == [], "the second flush waits for the first"
    release.set()
    await asyncio.gather(first, second)
    assert [records for _t, _p, records in producer.sent] == [
        [(b"t/c", b'"older"')],
        [(b"t/c", b'"newer"')],
    ]

    # A flush with nothing of its own left to send still waits for the one sending.
    release.clear()
    asked = 0
    stats.send_soon(key=b"t/c", value=b'"taken"')
    taker = asyncio.create_task(changelog.flush())
    await asyncio.sleep(0)
    late = asyncio.create_task(changelog.flush())
    await asyncio.sleep(0)
    assert not late.done(), "returned before the records it relies on were tracked"
    release.set()
    await asyncio.gather(taker, late)
    assert len(tracked) == 3
