"""The raw-topic validator without a broker: per-message fates, dead-letter envelopes,
metrics, and at-least-once commits (fake producer and consumer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from schemas import topics
from schemas.cdr_v1 import NormalizedCdrV1
from services.common.auth import Principal
from services.common.settings import IngestSettings
from services.ingest import raw
from services.ingest import service as ingest_service
from services.ingest.metrics import IngestMetrics
from services.ingest.normalize import Normalizer
from services.ingest.raw import (
    DEAD_LETTER_RECORD_MAX_BYTES,
    STAGE,
    RawMessage,
    RawValidator,
    validate_each,
    validate_messages,
)
from services.ingest.service import IngestService
from tests.helpers import cdrs_of, wait_until_async
from tests.service.conftest import FakePublisher
from tests.service.records import RAW_DIGITS, RAW_NUMBER, make_cdr

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
KEY = b"service-test-pseudonym-key"


def message(value: object, offset: int = 0, partition: int = 0) -> RawMessage:
    body = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    return RawMessage(topics.CDRS_RAW, partition, offset, body)


# --- fakes --------------------------------------------------------------------------------


class FakeProducer:
    """Records every acknowledged send. `fail = True`: every send's acknowledgement fails,
    as with a broker that went away after accepting the connection."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.fail = False
        self.started = self.stopped = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(KafkaConnectionError("fake broker is down"))
        else:
            self.sent.append((topic, key, value))
            future.set_result(None)
        return future

    def values(self, topic: str) -> list[Any]:
        """Decoded values sent to `topic`; on the CDR topic, the CDRs of each envelope."""
        if topic == topics.CDRS:
            return [
                cdr for t, _k, value in self.sent if t == topic and value for cdr in cdrs_of(value)
            ]
        return [orjson.loads(value) for t, _key, value in self.sent if t == topic and value]

    def keys(self, topic: str) -> list[bytes | None]:
        return [key for t, key, _value in self.sent if t == topic]


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass
class FakeLog:
    """A raw topic and the group's committed offsets, outliving the consumers."""

    partitions: dict[int, list[bytes | None]] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)

    def append(self, partition: int, *values: object) -> None:
        self.partitions.setdefault(partition, []).extend(
            v if isinstance(v, bytes) or v is None else orjson.dumps(v) for v in values
        )


class FakeConsumer:
    """Reads a FakeLog from the committed offsets; `fail_after` getmany calls it raises,
    like a consumer whose broker restarted."""

    def __init__(self, log: FakeLog, fail_after: int | None = None) -> None:
        self.log = log
        self.positions = {p: log.committed.get(p, 0) for p in log.partitions}
        self.commits: list[dict[int, int]] = []
        self.seeks: list[tuple[int, int]] = []
        self.fail_after = fail_after
        self.fetches = 0
        self.stopped = False

    async def start(self) -> None:
        pass

    def subscribe(self, names: list[str]) -> None:
        assert names == [topics.CDRS_RAW]

    async def stop(self) -> None:
        self.stopped = True

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[FakeRecord]]:
        self.fetches += 1
        if self.fail_after is not None and self.fetches > self.fail_after:
            raise KafkaConnectionError("fake broker restarted")
        budget = max_records or 1_000_000
        out: dict[TopicPartition, list[FakeRecord]] = {}
        for partition, values in sorted(self.log.partitions.items()):
            start = self.positions[partition]
            taken = values[start : start + budget]
            if taken:
                tp = TopicPartition(topics.CDRS_RAW, partition)
                out[tp] = [
                    FakeRecord(topics.CDRS_RAW, partition, start + i, v)
                    for i, v in enumerate(taken)
                ]
                self.positions[partition] = start + len(taken)
                budget -= len(taken)
        if not out:
            await asyncio.sleep(0.001)
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        committed = {tp.partition: n for tp, n in (offsets or {}).items()}
        self.commits.append(committed)
        self.log.committed.update(committed)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition.partition, offset))
        self.positions[partition.partition] = offset


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def settings(tmp_path: Path) -> IngestSettings:
    return IngestSettings(data_dir=tmp_path, pseudonym_key=KEY.decode(), raw_batch_max=3)


@pytest.fixture
def normalizer() -> Normalizer:
    return Normalizer(KEY, lambda: NOW, timedelta(hours=1))


@pytest.fixture
def validator(
    settings: IngestSettings, normalizer: Normalizer, registry: CollectorRegistry
) -> RawValidator:
    return RawValidator(settings, normalizer, IngestMetrics(registry), retry_delay_seconds=0.01)


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


def state_of(validator: RawValidator) -> str:
    return validator.state  # read through a call: mypy must not narrow it across awaits


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# --- per-message fates --------------------------------------------------------------------


async def test_valid_record_is_published_normalised_with_source_kafka_and_no_raw_number(
    validator: RawValidator, producer: FakeProducer, registry: CollectorRegistry
) -> None:
    delivered = await validator.handle([message(make_cdr("c-1"), offset=7)], producer)

    assert delivered is True
    assert [topic for topic, _k, _v in producer.sent] == [topics.CDRS]
    assert producer.keys(topics.CDRS) == [b"energia-primavera"]
    _topic, _key, value = producer.sent[0]
    assert value is not None and RAW_DIGITS.encode() not in value
    [cdr] = cdrs_of(value)
    record = NormalizedCdrV1.model_validate(cdr)
    assert record.source == "kafka"
    assert record.callee_country == "IT"
    assert "Europe/Rome" in record.callee_zones
    assert record.originated_at == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    assert record.accepted_at == NOW
    assert sample(registry, "cdrwatch_cdrs_received_total", source="kafka") == 1
    assert sample(registry, "cdrwatch_cdrs_received_total", source="http") == 0


async def test_raw_path_normalises_exactly_like_the_http_path(
    validator: RawValidator,
    producer: FakeProducer,
    settings: IngestSettings,
    normalizer: Normalizer,
) -> None:
    cdr = make_cdr("c-9", callee_number="3471234567", callee_country="IT", extra={"lead_id": 42})
    http_publisher = FakePublisher()
    http = IngestService(settings, http_publisher, normalizer, IngestMetrics(CollectorRegistry()))

    await http.ingest([cdr], Principal(role="ingest", tenant_id=None))
    await validator.handle([message(cdr)], producer)

    from_http = http_publisher.records[0].model_dump()
    from_kafka = NormalizedCdrV1.model_validate(producer.values(topics.CDRS)[0]).model_dump()
    assert from_http.pop("source") == "http"
    assert from_kafka.pop("source") == "kafka"
    assert from_kafka == from_http
    assert from_kafka["extra"] == {"lead_id": 42}


async def test_records_keep_their_own_tenant_else_the_default(
    validator: RawValidator, producer: FakeProducer
) -> None:
    await validator.handle(
        [message(make_cdr("a", tenant_id="acme")), message(make_cdr("b"), offset=1)], producer
    )

    assert [r["tenant_id"] for r in producer.values(topics.CDRS)] == ["acme", "default"]


@pytest.mark.parametrize(
    ("changes", "field", "metric_reason"),
    [
        ({"ended_at": "2026-03-02T10:14:00+01:00"}, "ended_at", "invalid"),
        ({"callee_number": "+39000"}, "callee_number", "invalid"),
        ({"campaign_id": None}, "campaign_id", "invalid"),
        ({"amd_result": "fax"}, "amd_result", "invalid"),
        (
            {
                "originated_at": "2026-03-02T15:00:00+01:00",
                "answered_at": None,
                "agent_connected_at": None,
                "ended_at": "2026-03-02T15:01:00+01:00",
            },
            "originated_at",
            "too_far_future",
        ),
    ],
    ids=["ended_before_originated", "bad_number", "missing_campaign", "unknown_amd", "future"],
)
async def test_invalid_record_goes_to_the_dead_letter_topic_with_its_field_errors(
    validator: RawValidator,
    producer: FakeProducer,
    registry: CollectorRegistry,
    changes: dict[str, Any],
    field: str,
    metric_reason: str,
) -> None:
    cdr = make_cdr("bad-1", **changes)

    delivered = await validator.handle([message(cdr, offset=41, partition=2)], producer)

    assert delivered is True
    assert producer.values(topics.CDRS) == []
    assert producer.keys(topics.CDRS_DLQ) == [b"invalid"]
    [envelope] = producer.values(topics.CDRS_DLQ)
    assert envelope["reason"] == "invalid"
    assert field in [error["field"] for error in envelope["errors"]]
    assert all(set(error) == {"field", "message"} for error in envelope["errors"])
    assert envelope["source"] == {"topic": topics.CDRS_RAW, "partition": 2, "offset": 41}
    assert envelope["record"] == cdr  # as the dialer sent it
    assert sample(registry, "cdrwatch_cdrs_rejected_total", reason=metric_reason) == 1
    assert sample(registry, "cdrwatch_ingest_dead_letters_total", reason="invalid") == 1
    assert sample(registry, "cdrwatch_cdrs_received_total", source="kafka") == 1


async def test_instants_out_of_order_name_the_field(
    validator: RawValidator, producer: FakeProducer
) -> None:
    cdr = make_cdr("bad-2", agent_connected_at="2026-03-02T10:18:00+01:00")

    await validator.handle([message(cdr)], producer)

    [envelope] = producer.values(topics.CDRS_DLQ)
    assert envelope["errors"] == [
        {"field": "agent_connected_at", "message": "agent_connected_at after ended_at"}
    ]


@pytest.mark.parametrize(
    ("value", "record"),
    [
        (b"{not json", "{not json"),
        (b'{"call_id": "c-1", ', '{"call_id": "c-1", '),
        (b"\xff\xfe{}", "\ufffd\ufffd{}"),
        (b"", ""),
        (None, None),
    ],
    ids=["not_json", "truncated", "not_utf8", "empty", "tombstone"],
)
async def test_unreadable_message_is_dead_lettered_as_text(
    validator: RawValidator,
    producer: FakeProducer,
    registry: CollectorRegistry,
    value: bytes | None,
    record: str | None,
) -> None:
    delivered = await validator.handle([message(value, offset=3)], producer)

    assert delivered is True
    assert producer.keys(topics.CDRS_DLQ) == [b"unreadable"]
    [envelope] = producer.values(topics.CDRS_DLQ)
    assert envelope["reason"] == "unreadable"
    assert [error["field"] for error in envelope["errors"]] == ["(record)"]
    assert envelope["source"]["offset"] == 3
    assert envelope["record"] == record
    assert sample(registry, "cdrwatch_ingest_dead_letters_total", reason="unreadable") == 1
    assert sample(registry, "cdrwatch_cdrs_rejected_total", reason="invalid") == 1


@pytest.mark.parametrize("value", [42, "a string", None, True], ids=repr)
async def test_json_that_is_not_an_object_is_invalid(
    validator: RawValidator, producer: FakeProducer, value: object
) -> None:
    await validator.handle([message(orjson.dumps(value))], producer)

    [envelope] = producer.values(topics.CDRS_DLQ)
    assert envelope["reason"] == "invalid"
    assert envelope["errors"] == [{"field": "(record)", "message": "record must be a JSON object"}]
    assert envelope["record"] == value


async def test_array_message_gives_each_element_its_own_fate(
    validator: RawValidator, producer: FakeProducer, registry: CollectorRegistry
) -> None:
    batch = [make_cdr("a"), make_cdr("b", sip_code=42), make_cdr("a"), make_cdr("c"), 7]

    await validator.handle([message(batch, offset=5), message([], offset=6)], producer)

    assert [r["call_id"] for r in producer.values(topics.CDRS)] == ["a", "c"]
    envelopes = producer.values(topics.CDRS_DLQ)
    assert [(e["source"]["offset"], e["source"].get("index")) for e in envelopes] == [
        (5, 1),
        (5, 4),
        (6, None),
    ]
    assert envelopes[0]["record"] == batch[1]
    assert envelopes[0]["errors"][0]["field"] == "sip_code"
    assert envelopes[1]["record"] == 7
    assert envelopes[2]["errors"][0]["message"] == "message is an empty array"
    assert sample(registry, "cdrwatch_cdrs_received_total", source="kafka") == 6
    assert sample(registry, "cdrwatch_cdrs_rejected_total", reason="invalid") == 3


def test_a_dead_letter_never_outgrows_a_kafka_message(normalizer: Normalizer) -> None:
    huge = make_cdr("big", ended_at="2026-03-02T10:00:00+01:00", notes="x" * 300_000)

    batch = validate_messages([message(huge)], normalizer)

    [(_topic, _key, value)] = batch.records
    envelope = orjson.loads(value)
    assert envelope["record_truncated"] is True
    assert isinstance(envelope["record"], str)
    assert len(envelope["record"].encode()) <= DEAD_LETTER_RECORD_MAX_BYTES
    assert len(value) < 2 * DEAD_LETTER_RECORD_MAX_BYTES


async def test_logs_never_show_the_raw_number(
    validator: RawValidator, producer: FakeProducer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="services.ingest")
    messages = [
        message(make_cdr("ok")),
        message(make_cdr("bad", ended_at="2026-03-02T10:00:00+01:00"), offset=1),
        message(b'{"callee_number": "' + RAW_NUMBER.encode(), offset=2),
    ]

    await validator.handle(messages, producer)
    producer.fail = True
    await validator.handle(messages, producer)

    [dead_lettered] = [r for r in caplog.records if r.getMessage() == "raw_records_dead_lettered"]
    assert vars(dead_lettered)["positions"] == "0:1,0:2"
    assert any(r.getMessage() == "raw_batch_not_delivered" for r in caplog.records)
    logged = caplog.text + " ".join(str(vars(r)) for r in caplog.records)
    assert RAW_DIGITS not in logged


# --- delivery and commits -----------------------------------------------------------------


async def test_producer_failure_is_reported_and_nothing_is_counted(
    validator: RawValidator, producer: FakeProducer, registry: CollectorRegistry
) -> None:
    producer.fail = True

    delivered = await validator.handle([message(make_cdr("a")), message(b"?", 1)], producer)

    assert delivered is False
    assert producer.sent == []
    assert sample(registry, "cdrwatch_cdrs_received_total", source="kafka") == 0
    assert sample(registry, "cdrwatch_ingest_dead_letters_total", reason="unreadable") == 0


async def test_undelivered_batch_is_not_committed_and_is_retried_later(
    validator: RawValidator, producer: FakeProducer
) -> None:
    log = FakeLog()
    log.append(0, make_cdr("a"), b"garbage", make_cdr("b"), make_cdr("c"))
    consumer = FakeConsumer(log)
    producer.fail = True

    assert await validator.consume_once(consumer, producer) == 0

    assert consumer.commits == []
    assert consumer.seeks == [(0, 0)]
    assert state_of(validator) == "retrying"

    producer.fail = False
    assert await validator.consume_once(consumer, producer) == 3  # raw_batch_max
    assert await validator.consume_once(consumer, producer) == 1

    assert consumer.commits == [{0: 3}, {0: 4}]
    assert state_of(validator) == "consuming"
    assert [r["call_id"] for r in producer.values(topics.CDRS)] == ["a", "b", "c"]
    assert [e["source"]["offset"] for e in producer.values(topics.CDRS_DLQ)] == [1]


async def test_offsets_are_committed_per_partition_after_delivery(
    validator: RawValidator, producer: FakeProducer
) -> None:
    log = FakeLog()
    log.append(0, make_cdr("a"))
    log.append(3, make_cdr("b"), make_cdr("c"))
    consumer = FakeConsumer(log)

    assert await validator.consume_once(consumer, producer) == 3

    assert consumer.commits == [{0: 1, 3: 2}]


async def test_run_restarts_after_a_broker_failure_and_resumes_from_committed_offsets(
    settings: IngestSettings, normalizer: Normalizer, registry: CollectorRegistry
) -> None:
    log = FakeLog()
    log.append(0, *(make_cdr(f"call-{i}") for i in range(10)))
    producer = FakeProducer()
    consumers: list[FakeConsumer] = []

    def consumer_factory() -> Any:
        # The first consumer dies on its third fetch, as if the broker restarted.
        consumers.append(FakeConsumer(log, fail_after=2 if not consumers else None))
        return consumers[-1]

    validator = RawValidator(
        settings,
        normalizer,
        IngestMetrics(registry),
        consumer_factory=consumer_factory,
        producer_factory=lambda: producer,
        retry_delay_seconds=0.01,
    )
    await validator.start()
    try:
        await wait_until_async(
            lambda: log.committed.get(0) == 10, timeout=5, message="all ten committed"
        )
    finally:
        await validator.stop()

    assert len(consumers) == 2 and consumers[0].stopped
    assert consumers[1].positions[0] == 10
    assert consumers[1].commits[0] == {0: 9}  # resumed at 6, the first consumer committed
    published = [r["call_id"] for r in producer.values(topics.CDRS)]
    assert published == [f"call-{i}" for i in range(10)]  # nothing lost, nothing twice
    assert producer.started == producer.stopped == 2
    assert state_of(validator) == "off"


async def test_stop_while_the_broker_is_unreachable_returns_promptly(
    settings: IngestSettings, normalizer: Normalizer, registry: CollectorRegistry
) -> None:
    class Unreachable(FakeProducer):
        async def start(self) -> None:
            raise KafkaConnectionError("connection refused")

    validator = RawValidator(
        settings,
        normalizer,
        IngestMetrics(registry),
        consumer_factory=lambda: FakeConsumer(FakeLog()),
        producer_factory=Unreachable,
        retry_delay_seconds=60,
    )
    await validator.start()
    await asyncio.sleep(0)
    assert state_of(validator) == "connecting"

    await asyncio.wait_for(validator.stop(), timeout=2)

    assert state_of(validator) == "off"


def test_settings_default_to_consuming_the_raw_topic(tmp_path: Path) -> None:
    settings = IngestSettings(data_dir=tmp_path)

    assert settings.consume_raw is True
    assert settings.raw_consumer_group == "cdrwatch-ingest-raw"
    assert settings.raw_batch_max == 500


# --- poison pills: the validator never stalls ----------------------------------------------

POISON = make_cdr("poison", originated_at="0001-01-01T00:30:00+01:00")


async def test_an_overflowing_instant_is_a_dead_letter_and_the_rest_is_published(
    validator: RawValidator, producer: FakeProducer, registry: CollectorRegistry
) -> None:
    messages = [message(POISON, offset=0), message(make_cdr("a"), offset=1)]

    assert await validator.handle(messages, producer) is True

    assert [r["call_id"] for r in producer.values(topics.CDRS)] == ["a"]
    [envelope] = producer.values(topics.CDRS_DLQ)
    assert envelope["reason"] == "invalid"
    assert envelope["stage"] == STAGE == "raw-validator"
    assert envelope["errors"] == [
        {"field": "originated_at", "message": "timestamp before 2000-01-01T00:00:00Z"}
    ]
    assert envelope["record"] == POISON


async def test_a_record_whose_check_raises_is_a_dead_letter_naming_the_exception(
    validator: RawValidator, producer: FakeProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_check = ingest_service.check_item

    def check_or_raise(item: object, *args: Any, **kwargs: Any) -> Any:
        if isinstance(item, dict) and item.get("call_id") == "boom":
            raise OverflowError("date value out of range")
        return real_check(item, *args, **kwargs)

    monkeypatch.setattr(ingest_service, "check_item", check_or_raise)

    await validator.handle(
        [message(make_cdr("a")), message(make_cdr("boom"), 1), message(make_cdr("b"), 2)],
        producer,
    )

    assert [r["call_id"] for r in producer.values(topics.CDRS)] == ["a", "b"]
    [envelope] = producer.values(topics.CDRS_DLQ)
    assert envelope["errors"] == [
        {"field": "(record)", "message": "record could not be processed (OverflowError)"}
    ]
    assert envelope["source"]["offset"] == 1


def test_a_batch_whose_validation_raises_is_validated_message_by_message(
    settings: IngestSettings, normalizer: Normalizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_validate = raw.validate_items

    def validate_or_raise(items: Any, *args: Any, **kwargs: Any) -> Any:
        if any(isinstance(i, dict) and i.get("call_id") == "boom" for i in items):
            raise RecursionError("maximum recursion depth exceeded")
        return real_validate(items, *args, **kwargs)

    monkeypatch.setattr(raw, "validate_items", validate_or_raise)
    messages = [message(make_cdr("a")), message(make_cdr("boom"), 1), message(make_cdr("b"), 2)]

    batch = validate_each(messages, normalizer)

    assert batch.published == 2
    assert batch.received == 3
    assert batch.rejected["invalid"] == 1
    outbound = [(r.topic, orjson.loads(r.value)) for r in batch.records]
    cdrs = [cdr for r in batch.records if r.topic == topics.CDRS for cdr in cdrs_of(r.value)]
    assert [cdr["call_id"] for cdr in cdrs] == ["a", "b"]
    [envelope] = [v for t, v in outbound if t == topics.CDRS_DLQ]
    assert envelope["stage"] == "raw-validator"
    assert envelope["errors"] == [
        {"field": "(record)", "message": "message could not be processed (RecursionError)"}
    ]
    assert orjson.loads(envelope["record"])["call_id"] == "boom"


async def test_a_record_too_deep_to_encode_is_dead_lettered_as_text(
    validator: RawValidator, producer: FakeProducer
) -> None:
    # Written by hand: orjson itself refuses to write 300 levels.
    head = orjson.dumps(make_cdr("deep", amd_result="fax"))[:-1]
    value = head + b',"vendor":' + b"[" * 300 + b"1" + b"]" * 300 + b"}"

    await validator.handle([message(value), message(make_cdr("a"), 1)], producer)

    assert [r["call_id"] for r in producer.values(topics.CDRS)] == ["a"]
    [envelope] = producer.values(topics.CDRS_DLQ)
    assert envelope["record_unencodable"] is True
    assert envelope["record"] == value.decode()
    assert envelope["errors"][0]["field"] == "amd_result"


async def test_the_loop_passes_a_poison_pill_and_commits_everything_behind_it(
    settings: IngestSettings, normalizer: Normalizer, registry: CollectorRegistry
) -> None:
    log = FakeLog()
    log.append(0, POISON, *(make_cdr(f"call-{i}") for i in range(7)))
    producer = FakeProducer()
    validator = RawValidator(
        settings,
        normalizer,
        IngestMetrics(registry),
        consumer_factory=lambda: FakeConsumer(log),
        producer_factory=lambda: producer,
        retry_delay_seconds=0.01,
    )
    await validator.start()
    try:
        await wait_until_async(
            lambda: log.committed.get(0) == 8, timeout=5, message="all eight committed"
        )
    finally:
        await validator.stop()

    assert [r["call_id"] for r in producer.values(topics.CDRS)] == [f"call-{i}" for i in range(7)]
    assert [e["record"]["call_id"] for e in producer.values(topics.CDRS_DLQ)] == ["poison"]


# --- dialer formats on the raw topic ------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cdr"
# Asterisk Master.csv, the PBX writing local time of Rome: a predictive call answered by a
# person and bridged to an agent (userfield carries AMDSTATUS, accountcode the campaign).
MASTER_CSV = (
    b'"spring","0612345678","+393471234567","outbound","""Sales"" <0612345678>",'
    b'"SIP/trunk-00000001","SIP/agent7-00000002","Dial","SIP/trunk/+393471234567,30",'
    b'"2026-03-02 12:30:00","2026-03-02 12:30:10","2026-03-02 12:31:40",100,90,'
    b'"ANSWERED","DOCUMENTATION","1772451000.1","HUMAN","","1772451000.1","1"\n'
)


def format_message(value: bytes | None, fmt: str | None, offset: int = 0) -> RawMessage:
    return RawMessage(topics.CDRS_RAW, 0, offset, value, fmt)


@pytest.fixture
def dialer_validator(
    settings: IngestSettings, normalizer: Normalizer, registry: CollectorRegistry
) -> RawValidator:
    from services.ingest.dialers import load_format_mappings
    from services.ingest.formats.base import load_mapping

    mappings = load_format_mappings(None)
    mappings["asterisk-cdr-csv"] = load_mapping(
        "asterisk-cdr-csv", overrides={"timezone": "Europe/Rome", "country": "IT"}
    )
    return RawValidator(settings, normalizer, IngestMetrics(registry), mappings=mappings)


async def test_a_master_csv_line_named_by_its_header_is_mapped_like_the_import(
    dialer_validator: RawValidator, producer: FakeProducer, registry: CollectorRegistry
) -> None:
    delivered = await dialer_validator.handle(
        [format_message(MASTER_CSV, "asterisk-cdr-csv", offset=3)], producer
    )

    assert delivered is True
    assert producer.keys(topics.CDRS_DLQ) == []
    [value] = producer.values(topics.CDRS)
    record = NormalizedCdrV1.model_validate(value)
    assert record.call_id == "1772451000.1"
    assert record.campaign_id == "spring"
    assert record.originated_at == datetime(2026, 3, 2, 11, 30, tzinfo=UTC)  # Rome, UTC+1
    assert record.answered_at == datetime(2026, 3, 2, 11, 30, 10, tzinfo=UTC)
    assert record.ended_at == datetime(2026, 3, 2, 11, 31, 40, tzinfo=UTC)
    assert record.amd_result == "human"
    assert record.callee_country == "IT"
    assert record.source == "kafka"
    assert RAW_DIGITS.encode() not in orjson.dumps(value)
    assert sample(registry, "cdrwatch_cdrs_received_total", source="kafka") == 1


async def test_the_topic_default_format_reads_messages_without_a_header(
    settings: IngestSettings, normalizer: Normalizer, producer: FakeProducer
) -> None:
    from services.ingest.dialers import load_format_mappings
    from services.ingest.formats.base import load_mapping

    mappings = load_format_mappings(None)
    mappings["asterisk-cdr-csv"] = load_mapping(
        "asterisk-cdr-csv", overrides={"timezone": "Europe/Rome"}
    )
    validator = RawValidator(
        settings.model_copy(update={"raw_default_format": "asterisk-cdr-csv"}),
        normalizer,
        IngestMetrics(CollectorRegistry()),
        mappings=mappings,
    )

    await validator.handle(
        [format_message(MASTER_CSV, None), format_message(orjson.dumps(make_cdr("j")), "cdr-v1")],
        producer,
    )

    assert sorted(r["call_id"] for r in producer.values(topics.CDRS)) == ["1772451000.1", "j"]


def test_an_unknown_default_format_stops_the_validator_from_being_created(
    settings: IngestSettings, normalizer: Normalizer
) -> None:
    with pytest.raises(ValueError, match="unknown raw-topic default format 'asterix'"):
        RawValidator(
            settings.model_copy(update={"raw_default_format": "asterix"}),
            normalizer,
            IngestMetrics(CollectorRegistry()),
        )


async def test_an_unknown_format_header_is_a_dead_letter_naming_the_header(
    dialer_validator: RawValidator, producer: FakeProducer
) -> None:
    await dialer_validator.handle([format_message(MASTER_CSV, "asterix-csv", offset=5)], producer)

    assert producer.values(topics.CDRS) == []
    [envelope] = producer.values(topics.CDRS_DLQ)
    assert envelope["reason"] == "invalid"
    [error] = envelope["errors"]
    assert error["field"] == "(header cdrwatch-format)"
    assert "unknown format 'asterix-csv'" in error["message"]
    assert "asterisk-cdr-csv" in error["message"]
    assert envelope["record"] == MASTER_CSV.decode()
    assert envelope["source"] == {"topic": topics.CDRS_RAW, "partition": 0, "offset": 5}


async def test_a_row_the_mapper_refuses_is_a_dead_letter_and_its_neighbour_is_published(
    dialer_validator: RawValidator, producer: FakeProducer, registry: CollectorRegistry
) -> None:
    bad = MASTER_CSV.replace(b"2026-03-02 12:30:00", b"2026-03-02:12:30:00").replace(
        b"1772451000.1", b"1772451000.2"
    )

    await dialer_validator.handle([format_message(bad + MASTER_CSV, "asterisk-cdr-csv")], producer)

    assert [r["call_id"] for r in producer.values(topics.CDRS)] == ["1772451000.1"]
    [envelope] = producer.values(topics.CDRS_DLQ)
    [error] = envelope["errors"]
    assert error["message"].startswith("bad_timestamp: ")
    assert "(line 1 of the message)" in error["message"]
    assert envelope["source"]["index"] == 0
    assert envelope["record"] == (bad + MASTER_CSV).decode()
    assert sample(registry, "cdrwatch_ingest_dead_letters_total", reason="invalid") == 1


async def test_a_mapped_record_the_validation_refuses_keeps_what_the_dialer_wrote(
    dialer_validator: RawValidator, producer: FakeProducer
) -> None:
    late = MASTER_CSV.replace(b"2026-03-02 12:31:40", b"2026-03-02 12:29:00")

    await dialer_validator.handle([format_message(late, "asterisk-cdr-csv")], producer)

    [envelope] = producer.values(topics.CDRS_DLQ)
    assert "ended_at" in [error["field"] for error in envelope["errors"]]
    assert envelope["record"] == late.decode()


async def test_a_freeswitch_internal_extension_is_skipped_and_counted_not_dead_lettered(
    dialer_validator: RawValidator, producer: FakeProducer, registry: CollectorRegistry
) -> None:
    body = (FIXTURES / "freeswitch/fs_json_cdr_2018_callflow_array.json").read_bytes()

    await dialer_validator.handle([format_message(body, "freeswitch-json")], producer)

    assert producer.sent == []
    assert sample(registry, "cdrwatch_cdrs_skipped_total", reason="internal_extension") == 1


async def test_a_dialer_format_message_without_a_call_is_a_dead_letter(
    dialer_validator: RawValidator, producer: FakeProducer
) -> None:
    await dialer_validator.handle(
        [format_message(b"\n", "asterisk-cdr-csv"), format_message(None, "freeswitch-xml", 1)],
        producer,
    )

    envelopes = producer.values(topics.CDRS_DLQ)
    assert [e["reason"] for e in envelopes] == ["invalid", "unreadable"]
    assert envelopes[0]["errors"][0]["message"] == "message holds no asterisk-cdr-csv record"
