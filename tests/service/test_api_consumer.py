"""The api's consumer loop with a fake Kafka consumer: store first, then commit; positions
stored with the data; unreadable records skipped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import orjson
import pytest
from aiokafka import TopicPartition

from schemas import topics
from schemas.record_batch_v1 import envelopes
from schemas.stats_v1 import COUNT_FIELDS, stats_from_counts
from services.api.consumer import Message, StoreConsumer, parse_messages, stats_message
from services.api.store import AlertStore
from services.common.db import create_engine, migrate
from services.common.settings import ApiSettings
from tests.helpers import wait_until_async

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
STATS_0 = TopicPartition(topics.STATS, 0)


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class FakeConsumer:
    """Hands out the given batches, then nothing; records commits and seeks."""

    def __init__(self, batches, *, assigned=(STATS_0,), commit_error=None) -> None:
        self.batches = list(batches)
        self.assigned = assigned
        self.commit_error = commit_error
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.listener = None
        self.stopped = False

    async def start(self) -> None:
        pass

    def subscribe(self, topics, listener) -> None:
        self.listener = listener

    async def getmany(self, timeout_ms: int, max_records: int):
        if self.listener is not None and self.assigned is not None:
            assigned, self.assigned = self.assigned, None
            await self.listener.on_partitions_assigned(list(assigned))
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        self.commits.append(dict(offsets))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def end_offsets(self, partitions):
        # The log is longer than anything stored: positions are within it.
        return dict.fromkeys(partitions, 10**9)

    async def seek_to_beginning(self, *partitions) -> None:
        self.seeks.extend((tp, 0) for tp in partitions)

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture
async def store(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
    await migrate(engine)
    yield AlertStore(engine, clock=lambda: T0)
    await engine.dispose()


@pytest.fixture
def settings(tmp_path) -> ApiSettings:
    return ApiSettings(data_dir=tmp_path, consumer_group="api-test", serve_ingest=False)


def minute_record(offset: int, start: datetime, attempts: int, timestamp_ms: int = 0) -> Record:
    counts = dict.fromkeys(COUNT_FIELDS, 0) | {"attempts": attempts}
    message = stats_message(stats_from_counts("c1", start, start + MINUTE, counts), "minute")
    return Record(
        topics.STATS, 0, offset, timestamp_ms, message.key, message.value, message.headers
    )


async def attempts(store: AlertStore) -> int:
    return (await store.sum_stats("c1", T0, T0 + timedelta(hours=1)))["attempts"]


async def test_batch_is_stored_then_committed_with_its_positions(store, settings):
    produced_ms = int((T0 + timedelta(seconds=5)).timestamp() * 1000)
    fake = FakeConsumer(
        [{STATS_0: [minute_record(7, T0, 3), minute_record(8, T0 + MINUTE, 4, produced_ms)]}]
    )
    consumer = StoreConsumer(settings, store)
    assert await consumer.consume_once(fake) == 2
    assert await attempts(store) == 7
    assert fake.commits == [{STATS_0: 9}]
    assert await store.consumer_positions("api-test") == {(topics.STATS, 0): 9}
    assert consumer.newest_output_at == T0 + timedelta(seconds=5)
    assert await consumer.consume_once(FakeConsumer([])) == 0


async def test_nothing_is_committed_when_the_store_fails(store, settings):
    class BrokenStore(AlertStore):
        async def apply_batch(self, batch):
            raise RuntimeError("database down")

    fake = FakeConsumer([{STATS_0: [minute_record(0, T0, 1)]}])
    with pytest.raises(RuntimeError):
        await StoreConsumer(settings, BrokenStore(store.engine)).consume_once(fake)
    assert fake.commits == []


async def test_a_lost_kafka_commit_does_not_apply_the_batch_twice(store, settings):
    """Stored, then the process died before the Kafka commit: on restart the consumer seeks
    to the position stored with the data instead of re-reading the batch."""
    batch = {STATS_0: [minute_record(0, T0, 1), minute_record(1, T0 + MINUTE, 1)]}
    crashed = FakeConsumer([batch], commit_error=ConnectionError("broker gone"))
    with pytest.raises(ConnectionError):
        await StoreConsumer(settings, store).consume_once(crashed)
    assert await attempts(store) == 2

    restarted = FakeConsumer([], assigned=[STATS_0, TopicPartition(topics.ALERTS, 0)])
    consumer = StoreConsumer(settings, store, consumer_factory=lambda: restarted)
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until_async(lambda: restarted.seeks, timeout=5, message="seek on assignment")
        assert consumer.running
        assert restarted.seeks == [(STATS_0, 2)]  # the alerts partition has no stored position
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert restarted.stopped
    assert not consumer.running


def test_unreadable_records_are_skipped_and_the_rest_kept():
    good = minute_record(0, T0, 1)
    misaligned = minute_record(1, T0 + timedelta(seconds=30), 1)
    no_window = Message(topics.STATS, b"c1", good.value, [])
    long_window = Message(topics.STATS, b"c1", good.value, [(topics.HEADER_WINDOW, b"w" * 41)])
    batch = parse_messages(
        [
            Message(topics.ALERTS, b"c1", b"{not json"),
            Message(topics.ALERTS, b"c1", orjson.dumps({"id": "x"})),
            Message(topics.STATS, b"c1", None),
            Message("cdrwatch.other.v1", b"c1", good.value),
            (misaligned.topic, misaligned.key, misaligned.value, misaligned.headers),
            no_window,
            long_window,
            (good.topic, good.key, good.value, good.headers),
        ]
    )
    assert [(m.campaign_id, m.minute_start) for m in batch.minutes] == [("c1", T0)]
    assert batch.alerts == []
    assert batch.windows == []


async def test_records_that_raise_while_decoding_are_counted_skipped_and_consumption_goes_on(
    store, settings
):
    from prometheus_client import CollectorRegistry

    good = minute_record(0, T0, 4)
    overflowing_alert = orjson.dumps(
        {
            "id": "a1",
            "rule": "r",
            "profile": "it",
            "campaign_id": "c1",
            "severity": "warning",
            "state": "firing",
            "value": None,
            "threshold": None,
            "numerator": 0,
            "denominator": 0,
            "window": {"start": "0001-01-01T00:30:00+01:00", "end": "2026-03-02T10:00:00Z"},
            "opened_at": "0001-01-01T00:30:00+01:00",
        }
    )
    bad_stats = good.value.replace(b"2026-03-02T10:00:00Z", b"0001-01-01T00:30:00+01:00", 1)
    batch = {
        STATS_0: [
            Record(topics.ALERTS, 0, 0, 0, b"c1", overflowing_alert, []),
            Record(topics.STATS, 0, 1, 0, b"c1", bad_stats, good.headers),
            Record(topics.STATS, 0, 2, 0, b"c1", b"\xff\xfe", good.headers),
            Record(
                topics.STATS,
                0,
                3,
                0,
                b"c1",
                good.value.replace(b'"c1"', b'"c\\u0000"'),
                good.headers,
            ),
            good._replace(offset=4),
        ]
    }
    registry = CollectorRegistry()
    fake = FakeConsumer([batch])
    consumer = StoreConsumer(settings, store, consumer_factory=lambda: fake, registry=registry)
    assert await consumer.consume_once(fake) == 5
    assert fake.commits == [{STATS_0: 5}]
    assert await attempts(store) == 4
    assert consumer.skipped_total == 4
    skipped = {
        t: registry.get_sample_value("cdrwatch_api_messages_skipped_total", {"topic": t})
        for t in (topics.ALERTS, topics.STATS)
    }
    assert skipped == {topics.ALERTS: 1, topics.STATS: 3}


def test_tenant_and_replay_mark_travel_from_the_message_to_the_store_batch():
    counts = dict.fromkeys(COUNT_FIELDS, 0) | {"attempts": 2}
    stats = stats_from_counts("c1", T0, T0 + MINUTE, counts, tenant_id="acme")
    older = stats_from_counts("c1", T0, T0 + MINUTE, counts)
    batch = parse_messages(
        [
            stats_message(stats, "minute", replayed=True),
            stats_message(older, "minute"),  # an older detector: no tenant at all
            Message(  # tenant in the header only
                topics.STATS,
                b"c1",
                orjson.dumps(older.model_dump(mode="json", by_alias=True)),
                [(topics.HEADER_WINDOW, b"cumulative"), (topics.HEADER_TENANT, b"globex")],
            ),
        ],
        default_tenant="house",
    )
    assert [(m.tenant_id, m.campaign_id) for m in batch.minutes] == [
        ("acme", "c1"),
        ("house", "c1"),
    ]
    assert [(w.tenant_id, w.window) for w in batch.windows] == [("globex", "cumulative")]


async def test_minute_heads_are_stored_and_a_head_outside_its_minute_is_unreadable(store):
    """`minute-head` (schemas.stats_v1): the calls of a minute before the period boundary
    inside it, [minute start, boundary). One that does not start a minute, or ends past
    it, is unreadable; last write wins per minute."""
    counts = dict.fromkeys(COUNT_FIELDS, 0) | {"attempts": 3}

    def head(start: datetime, end: datetime, attempts: int = 3) -> Message:
        body = stats_from_counts("c1", start, end, counts | {"attempts": attempts})
        return stats_message(body, "minute-head")

    boundary = T0 + timedelta(seconds=20, microseconds=5)
    batch = parse_messages(
        [
            head(T0 + timedelta(seconds=1), boundary),
            head(T0, T0 + MINUTE),
            head(T0, boundary, attempts=2),
            head(T0, boundary),
        ]
    )
    assert [(h.minute_start, h.boundary_at, h.counts["attempts"]) for h in batch.heads] == [
        (T0, boundary, 2),
        (T0, boundary, 3),
    ]
    await store.apply_batch(batch)
    assert await store.minute_heads("c1") == {T0: (boundary, counts)}


def test_a_record_batch_envelope_is_read_record_by_record():
    """The detector's stats and alerts come in record batch envelopes
    (schemas.record_batch_v1): each record is read with its own headers (window, tenant,
    replay mark), a bad one is skipped alone, and an unreadable envelope is skipped whole."""
    counts = dict.fromkeys(COUNT_FIELDS, 0)
    good = [
        stats_message(
            stats_from_counts("c1", T0 + n * MINUTE, T0 + (n + 1) * MINUTE, counts),
            "minute",
            tenant_id="acme",
            replayed=n == 1,
        )
        for n in range(3)
    ]
    bad = stats_message(stats_from_counts("c1", T0, T0 + MINUTE, counts), "minute")
    bad_value = orjson.loads(bad.value) | {"attempts": -1}
    records = [(m.value, m.headers) for m in good[:2]]
    records += [(orjson.dumps(bad_value), bad.headers), (good[2].value, good[2].headers)]
    [envelope] = envelopes(records)
    skipped: list[str] = []
    batch = parse_messages(
        [
            Message(topics.STATS, None, envelope),
            Message(topics.STATS, None, b'{"v":1,"records":[]}'),
            Message(topics.ALERTS, None, b'{"v":1,"records":[{"value":{}}]}'),
        ],
        skipped=skipped.append,
    )
    assert [(m.minute_start, m.tenant_id) for m in batch.minutes] == [
        (T0 + n * MINUTE, "acme") for n in range(3)
    ]
    assert batch.live_feeds == {("acme", "c1")}  # from the records not marked replayed
    assert skipped == [topics.STATS, topics.STATS, topics.ALERTS]
