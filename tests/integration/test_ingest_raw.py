"""The raw-topic validator on a real Kafka-protocol broker (the session's embedded Tansu):
dialer records written to cdrwatch.cdrs.raw.v1 land normalised on cdrwatch.cdrs.v1 or in
an envelope on cdrwatch.cdrs.dlq.v1, and a stop and restart of the validator loses nothing.

The broker is shared with other tests: every test uses its own consumer group and
campaigns, and reads back only its own records (by campaign, or by raw-topic position)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from schemas import topics
from schemas.cdr_v1 import NormalizedCdrV1
from services.common.kafka import ensure_topics
from services.common.settings import IngestSettings
from services.ingest.app import create_app
from services.ingest.metrics import IngestMetrics
from services.ingest.normalize import Normalizer
from services.ingest.raw import RawValidator
from tests.helpers import wait_until_async

pytestmark = pytest.mark.integration

PSEUDONYM_KEY = "integration-test-pseudonym-key"
RAW_DIGITS = b"393471234567"
Position = tuple[int, int, int | None]  # raw partition, offset, index in an array message


def make_cdr(call_id: str, campaign: str, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "call_id": call_id,
        "campaign_id": campaign,
        "callee_number": "+" + RAW_DIGITS.decode(),
        "originated_at": "2026-03-02T10:15:00+01:00",
        "answered_at": "2026-03-02T10:15:09+01:00",
        "agent_connected_at": "2026-03-02T10:15:10+01:00",
        "ended_at": "2026-03-02T10:17:00+01:00",
    }
    record.update(changes)
    return record


def settings_for(tmp_path: Path, bootstrap: str, group: str, **changes: Any) -> IngestSettings:
    return IngestSettings(
        data_dir=tmp_path,
        kafka_bootstrap=bootstrap,
        kafka_idempotence=False,  # Tansu refuses InitProducerId
        pseudonym_key=PSEUDONYM_KEY,
        raw_consumer_group=group,
        # Tansu ignores LeaveGroup: a restarted member waits for the old session to expire.
        raw_session_timeout_seconds=3,
        **changes,
    )


@pytest.fixture
async def raw_topics(kafka_broker: str) -> str:
    await ensure_topics(kafka_broker, 4, [topics.CDRS_RAW, topics.CDRS, topics.CDRS_DLQ])
    return kafka_broker


@pytest.fixture
async def raw_producer(raw_topics: str) -> AsyncIterator[AIOKafkaProducer]:
    """A dialer writing to the raw topic."""
    producer = AIOKafkaProducer(
        bootstrap_servers=raw_topics, acks="all", enable_idempotence=False, linger_ms=5
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def write_raw(
    producer: AIOKafkaProducer, values: list[bytes | None], key: bytes | None = None
) -> list[tuple[int, int]]:
    """Write the values; their (partition, offset) on the raw topic."""
    futures = [await producer.send(topics.CDRS_RAW, value=value, key=key) for value in values]
    return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]


@dataclass
class Downstream:
    """What landed on cdrwatch.cdrs.v1 for our campaigns and on the DLQ for our positions."""

    campaigns: set[str]
    positions: set[tuple[int, int]] = field(default_factory=set)
    cdrs: list[dict[str, Any]] = field(default_factory=list)
    cdr_values: list[bytes] = field(default_factory=list)
    envelopes: list[dict[str, Any]] = field(default_factory=list)  # from any raw record

    def call_ids(self) -> Counter[str]:
        return Counter(record["call_id"] for record in self.cdrs)

    @property
    def dead(self) -> dict[Position, list[dict[str, Any]]]:
        """Our dead letters by raw-topic position (array index too)."""
        out: dict[Position, list[dict[str, Any]]] = {}
        for envelope in self.envelopes:
            source = envelope["source"]
            if (source["partition"], source["offset"]) in self.positions:
                position = (source["partition"], source["offset"], source.get("index"))
                out.setdefault(position, []).append(envelope)
        return out


@contextlib.asynccontextmanager
async def reading(bootstrap: str, downstream: Downstream) -> AsyncIterator[Callable[[], Any]]:
    """A groupless reader of both output topics from the beginning; yields `poll()`."""
    consumer = AIOKafkaConsumer(
        topics.CDRS,
        topics.CDRS_DLQ,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()

    async def poll() -> Downstream:
        batches = await consumer.getmany(timeout_ms=200, max_records=5000)
        for records in batches.values():
            for record in records:
                body = orjson.loads(record.value)
                if record.topic == topics.CDRS:
                    # A CdrBatchV1 envelope (schemas.cdr_batch_v1) of one campaign key.
                    for cdr in body["cdrs"]:
                        if cdr["campaign_id"] in downstream.campaigns:
                            downstream.cdrs.append(cdr)
                            downstream.cdr_values.append(orjson.dumps(cdr))
                elif record.topic == topics.CDRS_DLQ and body["source"]["topic"] == (
                    topics.CDRS_RAW
                ):
                    downstream.envelopes.append(body)
        return downstream

    try:
        yield poll
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str) -> dict[int, int]:
    """The group's committed offsets on the raw topic, read by a consumer that does not
    subscribe (so it does not join the group). Tansu's OffsetFetch answer is one the
    aiokafka admin client cannot decode, the consumer's can."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topics.CDRS_RAW) or set()
        offsets = {
            p: await consumer.committed(TopicPartition(topics.CDRS_RAW, p)) for p in partitions
        }
    finally:
        await consumer.stop()
    return {p: offset for p, offset in offsets.items() if offset is not None}


def ends_of(written: list[tuple[int, int]]) -> dict[int, int]:
    """Per raw partition, the offset after the last record written there."""
    ends: dict[int, int] = {}
    for partition, offset in written:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


async def test_good_records_are_normalised_and_bad_ones_dead_lettered(
    raw_topics: str,
    raw_producer: AIOKafkaProducer,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    campaign, other = unique_name("raw-campaign"), unique_name("raw-campaign")
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    good = [make_cdr(f"good-{i}", campaign if i % 2 else other) for i in range(12)]
    invalid = {
        "backwards": make_cdr("bad-1", campaign, ended_at="2026-03-02T10:00:00+01:00"),
        "bad_number": make_cdr("bad-2", campaign, callee_number="+39000"),
        "no_campaign": {k: v for k, v in make_cdr("bad-3", campaign).items() if k != "campaign_id"},
        "future": make_cdr(
            "bad-4",
            campaign,
            originated_at=future,
            answered_at=None,
            agent_connected_at=None,
            ended_at=future,
        ),
        "not_object": 42,
    }
    unreadable = [b"{not json", b"\xff\xfe", None]
    array = [make_cdr("arr-0", campaign), make_cdr("arr-1", campaign, sip_code=1)]

    keyed = await write_raw(raw_producer, [orjson.dumps(r) for r in good[:6]], key=b"dialer-7")
    unkeyed = await write_raw(raw_producer, [orjson.dumps(r) for r in good[6:]])
    bad_at = await write_raw(raw_producer, [orjson.dumps(v) for v in invalid.values()])
    unreadable_at = await write_raw(raw_producer, unreadable, key=b"dialer-7")
    [array_at] = await write_raw(raw_producer, [orjson.dumps(array)])
    written = keyed + unkeyed + bad_at + unreadable_at + [array_at]

    group = unique_name("ingest-raw")
    settings = settings_for(tmp_path, raw_topics, group)
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry)
    downstream = Downstream({campaign, other}, set(written))
    expected_dead: dict[Position, str] = {
        **{(*at, None): "invalid" for at in bad_at},
        **{(*at, None): "unreadable" for at in unreadable_at},
        (*array_at, 1): "invalid",
    }
    expected_good = sorted([r["call_id"] for r in good] + ["arr-0"])

    async with app.router.lifespan_context(app), reading(raw_topics, downstream) as poll:

        async def everything_landed() -> bool:
            seen = await poll()
            return sorted(seen.call_ids()) == expected_good and len(seen.dead) == len(expected_dead)

        await wait_until_async(everything_landed, timeout=60, message="all records downstream")
        ends = ends_of(written)
        await wait_until_async(
            lambda: _committed_past(raw_topics, group, ends), timeout=20, message="commit"
        )
        await poll()  # anything extra that arrived meanwhile would show below
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            ready = (await client.get("/readyz")).json()

    # Exactly which records landed where.
    assert sorted(downstream.call_ids().elements()) == expected_good
    assert {p: [e["reason"] for e in envs] for p, envs in downstream.dead.items()} == {
        p: [reason] for p, reason in expected_dead.items()
    }
    for value in downstream.cdr_values:
        assert RAW_DIGITS not in value
        record = NormalizedCdrV1.model_validate_json(value)
        assert record.source == "kafka"
        assert record.callee_country == "IT"
        assert record.originated_at == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    dead = {p: envs[0] for p, envs in downstream.dead.items()}
    for (name, record), at in zip(invalid.items(), bad_at, strict=True):
        envelope = dead[(*at, None)]
        assert envelope["record"] == record, name  # kept as the dialer sent it
        assert envelope["source"] == {"topic": topics.CDRS_RAW, "partition": at[0], "offset": at[1]}
    fields = {
        name: [e["field"] for e in dead[(*at, None)]["errors"]]
        for name, at in zip(invalid, bad_at, strict=True)
    }
    assert fields == {
        "backwards": ["ended_at", "agent_connected_at"],
        "bad_number": ["callee_number"],
        "no_campaign": ["campaign_id"],
        "future": ["originated_at", "ended_at"],
        "not_object": ["(record)"],
    }
    assert [dead[(*at, None)]["record"] for at in unreadable_at] == [
        "{not json",
        "\ufffd\ufffd",
        None,
    ]
    assert dead[(*array_at, 1)]["record"] == array[1]
    assert dead[(*array_at, 1)]["errors"][0]["field"] == "sip_code"
    assert ready == {"status": "ready", "raw_validator": "consuming", "database": "ok"}

    def metric(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    # The validator also replays the raw topic's older records (other tests'): at least ours.
    assert metric("cdrwatch_cdrs_received_total", source="kafka") >= len(written) + 1
    assert metric("cdrwatch_cdrs_rejected_total", reason="too_far_future") >= 1
    assert metric("cdrwatch_ingest_dead_letters_total", reason="unreadable") >= 3


async def _polled_at_least(poll: Callable[[], Any], count: int) -> bool:
    return len((await poll()).cdrs) >= count


async def _committed_past(bootstrap: str, group: str, ends: dict[int, int]) -> bool:
    committed = await committed_offsets(bootstrap, group)
    return all(committed.get(partition, -1) >= end for partition, end in ends.items())


async def test_stopping_and_restarting_mid_stream_loses_nothing_and_resumes_offsets(
    raw_topics: str,
    raw_producer: AIOKafkaProducer,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    campaign = unique_name("raw-restart")
    group = unique_name("ingest-raw")
    batch_max = 10
    settings = settings_for(tmp_path, raw_topics, group, raw_batch_max=batch_max)
    total, chunk = 400, 10

    def validator() -> RawValidator:
        normalizer = Normalizer(
            PSEUDONYM_KEY.encode(),
            lambda: datetime.now(UTC),
            timedelta(seconds=settings.future_tolerance_seconds),
        )
        return RawValidator(settings, normalizer, IngestMetrics(CollectorRegistry()))

    def value(i: int) -> bytes:
        if i % 40 == 39:
            return b"not json " + campaign.encode()  # a dead letter now and then
        return orjson.dumps(make_cdr(f"call-{i}", campaign))

    written: list[tuple[int, int]] = []

    async def dialer() -> None:
        """Keeps writing while the validator is stopped and restarted."""
        for start in range(0, total, chunk):
            written.extend(
                await write_raw(raw_producer, [value(i) for i in range(start, start + chunk)])
            )
            await asyncio.sleep(0.1)

    expected = {f"call-{i}" for i in range(total) if i % 40 != 39}
    downstream = Downstream({campaign})
    async with contextlib.AsyncExitStack() as stack:
        poll = await stack.enter_async_context(reading(raw_topics, downstream))
        writing = asyncio.create_task(dialer())
        stack.push_async_callback(_cancel, writing)
        first = validator()
        await first.start()
        try:
            await wait_until_async(
                lambda: _polled_at_least(poll, 60), timeout=60, message="first records through"
            )
        finally:
            await first.stop(grace_seconds=0)  # abrupt: the batch in hand is not finished
        stopped_mid_stream = not writing.done()
        committed_at_stop = await committed_offsets(raw_topics, group)
        seen_at_stop = len(downstream.cdrs)

        second = validator()
        await second.start()
        try:
            await writing  # the dialer is done: every raw position is known
            downstream.positions.update(written)

            async def all_through() -> bool:
                await poll()
                return set(downstream.call_ids()) == expected and len(downstream.dead) == 10

            await wait_until_async(all_through, timeout=90, message="every record downstream")
            await wait_until_async(
                lambda: _committed_past(raw_topics, group, ends_of(written)),
                timeout=20,
                message="final commit",
            )
        finally:
            await second.stop()
        await poll()

    assert stopped_mid_stream, "the first validator should stop while the dialer still writes"
    assert 0 < seen_at_stop < len(expected)
    assert sum(committed_at_stop.values()) > 0  # the first validator committed its progress
    counts = downstream.call_ids()
    assert set(counts) == expected  # every good record at least once
    # Offsets resumed: the second validator did not start over from the beginning; at most
    # the one batch in hand at the stop can have been produced twice.
    assert sum(counts.values()) - len(counts) <= batch_max
    assert all(len(envelopes) <= 2 for envelopes in downstream.dead.values())


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_poison_pill_is_dead_lettered_and_every_record_behind_it_published(
    raw_topics: str,
    raw_producer: AIOKafkaProducer,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """The issue's reproduction: an instant whose UTC conversion overflows, in front of
    valid records on the same partition (same key), used to stall the validator forever."""
    campaign = unique_name("raw-poison")
    poison = make_cdr("poison", campaign, originated_at="0001-01-01T00:30:00+01:00")
    too_deep = orjson.dumps(make_cdr("deep", campaign, amd_result="fax"))[:-1]
    too_deep += b',"vendor":' + b"[" * 300 + b"1" + b"]" * 300 + b"}"
    # call_id is unique per tenant: other tests' records on the raw topic must not share one.
    good = [make_cdr(f"{campaign}-{i}", campaign, dnis="+393471234567") for i in range(20)]
    good[0]["tenant_id"] = "acme"
    values = [orjson.dumps(poison), too_deep, *(orjson.dumps(r) for r in good)]
    written = await write_raw(raw_producer, values, key=b"dialer-poison")
    assert len({partition for partition, _ in written}) == 1

    group = unique_name("ingest-raw")
    settings = settings_for(tmp_path, raw_topics, group)
    app = create_app(settings, registry=CollectorRegistry())
    downstream = Downstream({campaign}, set(written))
    expected_good = sorted(r["call_id"] for r in good)

    async with app.router.lifespan_context(app), reading(raw_topics, downstream) as poll:

        async def everything_landed() -> bool:
            seen = await poll()
            return sorted(seen.call_ids()) == expected_good and len(seen.dead) == 2

        await wait_until_async(everything_landed, timeout=60, message="all records downstream")
        await wait_until_async(
            lambda: _committed_past(raw_topics, group, ends_of(written)),
            timeout=20,
            message="commit past the poison pill",
        )
        await poll()

    assert sorted(downstream.call_ids().elements()) == expected_good
    pill = downstream.dead[(*written[0], None)]
    assert [(e["reason"], e["stage"]) for e in pill] == [("invalid", "raw-validator")]
    assert pill[0]["errors"] == [
        {"field": "originated_at", "message": "timestamp before 2000-01-01T00:00:00Z"}
    ]
    [deep] = downstream.dead[(*written[1], None)]
    assert deep["record_unencodable"] is True
    assert [e["field"] for e in deep["errors"]] == ["amd_result"]
    tenants = {record["call_id"]: record["tenant_id"] for record in downstream.cdrs}
    assert tenants.pop(f"{campaign}-0") == "acme"
    assert set(tenants.values()) == {"default"}
    for value in downstream.cdr_values:
        assert RAW_DIGITS not in value
        assert b"dnis" not in value


def _confluent_write(bootstrap: str, messages: list[tuple[bytes, str | None]]) -> list[Any]:
    """A dialer's own Kafka client (confluent-kafka, librdkafka; not our code) writes
    `messages` (value, `cdrwatch-format` header or none); their delivery reports
    (error, value, partition, offset), in the order the client reports them."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False}
    )
    reports: list[Any] = []
    for value, fmt in messages:
        headers = [(topics.HEADER_FORMAT, fmt.encode())] if fmt is not None else None
        producer.produce(
            topics.CDRS_RAW,
            value=value,
            headers=headers,
            on_delivery=lambda err, msg: reports.append(
                (err, msg.value(), msg.partition(), msg.offset())
            ),
        )
    assert producer.flush(30) == 0, "confluent-kafka could not deliver to the broker"
    return reports


async def test_dialer_formats_written_by_a_foreign_kafka_client_are_mapped_or_dead_lettered(
    raw_topics: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """The header names the format; the mapping comes from CDRWATCH_FORMAT_MAPPINGS_DIR."""
    campaign = unique_name("raw-dialer")
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "asterisk-cdr-csv.toml").write_text('timezone = "Europe/Rome"\ncountry = "IT"\n')
    line = (
        f'"{campaign}","0612345678","3471234567","outbound","Sales","SIP/trunk-1",'
        '"SIP/agent7-2","Dial","SIP/trunk/3471234567","2026-03-02 12:30:00",'
        '"2026-03-02 12:30:10","2026-03-02 12:31:40",100,90,"ANSWERED","DOCUMENTATION",'
        f'"{campaign}.1","MACHINE","","{campaign}.1","1"\n'
    ).encode()
    fs_json = (
        Path(__file__).resolve().parent.parent
        / "fixtures/cdr/freeswitch/fs_json_cdr_2018_callflow_array.json"
    ).read_bytes()
    reports = await asyncio.to_thread(
        _confluent_write,
        raw_topics,
        [
            (line, "asterisk-cdr-csv"),
            (orjson.dumps(make_cdr(f"{campaign}.v1", campaign)), None),
            (line + b"\n", "asterix"),
            (fs_json, "freeswitch-json"),
        ],
    )
    assert [err for err, *_ in reports] == [None] * 4
    at = {value: (partition, offset) for _err, value, partition, offset in reports}
    csv_at, unknown_at = at[line], at[line + b"\n"]

    settings = settings_for(
        tmp_path, raw_topics, unique_name("ingest-raw"), format_mappings_dir=mappings
    )
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry)
    downstream = Downstream({campaign}, {csv_at, unknown_at})
    async with app.router.lifespan_context(app), reading(raw_topics, downstream) as poll:

        async def landed() -> bool:
            seen = await poll()
            return len(seen.cdrs) == 2 and unknown_at + (None,) in seen.dead

        await wait_until_async(landed, timeout=60, message="dialer records downstream")

    by_id = {r["call_id"]: NormalizedCdrV1.model_validate(r) for r in downstream.cdrs}
    assert set(by_id) == {f"{campaign}.1", f"{campaign}.v1"}
    csv = by_id[f"{campaign}.1"]
    assert csv.campaign_id == campaign
    assert csv.originated_at == datetime(2026, 3, 2, 11, 30, tzinfo=UTC)
    assert csv.answered_at == datetime(2026, 3, 2, 11, 30, 10, tzinfo=UTC)
    assert csv.amd_result == "machine"
    assert csv.callee_country == "IT"  # the national number read with the mapping's country
    assert csv.source == "kafka"
    [envelope] = downstream.dead[unknown_at + (None,)]
    assert envelope["errors"][0]["field"] == "(header cdrwatch-format)"
    assert "unknown format 'asterix'" in envelope["errors"][0]["message"]
    assert envelope["record"] == (line + b"\n").decode()
    # The FreeSWITCH sample's callee is an extension: skipped and counted, no dead letter.
    assert (
        registry.get_sample_value("cdrwatch_cdrs_skipped_total", {"reason": "internal_extension"})
        == 1.0
    )
