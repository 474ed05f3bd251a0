"""The raw-topic validator: CDRs that dialers write straight to `cdrwatch.cdrs.raw.v1`.

Message format. The header `cdrwatch-format` names the format of the message value; without
it the value is in the topic's default format (`CDRWATCH_RAW_DEFAULT_FORMAT`, "cdr-v1" unless
set). "cdr-v1": UTF-8 JSON, one CDR v1 object as a dialer writes it, or a JSON array of
them (a dialer's batch; each element is a record of its own, with its own fate). Any format
of `cdrwatch import` (asterisk-cdr-csv, asterisk-cdr-custom, asterisk-cel,
freeswitch-cdr-csv, freeswitch-json, freeswitch-xml, kamailio-acc, vicidial-csv,
cdr-v1-ndjson): the value is what the PBX writes, mapped by the very mapper and mapping file
of the import and of the HTTP format endpoints (`services.ingest.formats`, the mapping of
`CDRWATCH_FORMAT_MAPPINGS_DIR` when set). One message holds whole calls: one FreeSWITCH
document, or one or more lines of a line format (for CSV layouts with a header row, the
header first; rows of one call, as CEL writes them, in one message: calls are not joined
across messages). An internal leg or extension is skipped and counted
(`cdrwatch_cdrs_skipped`), not a dead letter. A leading UTF-8 BOM is skipped; the message
key is ignored. There is no token on this path: a record's tenant is its own `tenant_id`,
else the default tenant (`CDRWATCH_DEFAULT_TENANT`).

Valid records go through the very code of `POST /v1/cdrs` (`service.validate_items`): same
validation, normalisation (UTC instants, E.164, pseudonymised callee, derived country and
zones) and dedup (a repeat of a call_id within one fetched batch is published once), with
`source="kafka"`. They are produced to `cdrwatch.cdrs.v1` keyed by campaign, one
`CdrBatchV1` envelope per (fetched batch, campaign) (schemas.cdr_batch_v1), with the
producer settings of the HTTP path (acks=all, idempotence per `kafka_idempotence`).

Everything else goes to `cdrwatch.cdrs.dlq.v1`, keyed by the reason, as one envelope per
record:

    {"reason": "invalid" | "unreadable",
     "stage": "raw-validator",
     "errors": [{"field": ..., "message": ...}, ...],
     "source": {"topic": ..., "partition": ..., "offset": ..., "index": ...},
     "record": ...}

- `unreadable`: the value is not UTF-8 JSON, is empty, or is absent (a tombstone);
  `record` is the value as text (undecodable bytes replaced) or null.
- `invalid`: JSON that is not a valid CDR: not an object, schema errors, instants out of
  order, a bad callee number, too far in the future, or an empty array; `record` is the JSON
  as the dialer sent it (for an array, the offending element; `source.index` is its
  position in the array, and is absent for a message holding one object). For a dialer
  format: a record its mapper refuses (the error names the reason and the line in the
  message), a mapped record the validation refuses, a message holding no call, or an
  unknown `cdrwatch-format` (the error names the header and the formats there are);
  `record` is the message's text, `source.index` the record's position among the
  message's calls when it holds more than one.
- A `record` whose JSON is larger than 128 KiB is cut to its first 128 KiB of text and the
  envelope says `"record_truncated": true`, so that a dead letter always fits in a Kafka
  message and can never block the partition. A record that cannot be encoded as JSON at
  all (nested deeper than the encoder allows) is kept as the message's text, cut likewise.
- A record whose processing raises (a bug, an input nobody foresaw) is an `invalid` dead
  letter naming the exception; if a whole batch fails, its messages are validated one by
  one and a message that still fails is dead-lettered whole. The validator never stops on
  one record (CONTRACT decision 6).

Personal data: the dead-letter topic keeps the record as the dialer sent it, raw callee
number included (that is what makes it fixable), so unlike `cdrwatch.cdrs.v1` it holds
personal data. Restrict who can read it (ACLs) and give it a short retention (e.g.
`retention.ms` of 7 days). Logs never show record contents, only counts and positions.

Delivery is at least once. A batch (one `getmany`, at most `raw_batch_max` messages) is
validated, its normalised and dead-letter records are produced, and its offsets are
committed only after the broker acknowledged every one of them. When producing fails,
nothing is committed: the consumer seeks back to the batch's first offsets, backs off and
fetches the batch again. A crash or a broker restart replays from the last committed
offsets. Records produced twice are absorbed by the detector's dedup on `call_id`. With
the durable archive on (`CDRWATCH_ARCHIVE`), a batch's normalised records are archived
before they are produced and taken out of the archive again when producing fails. A
producer that keeps failing keeps the validator retrying (with back-off, logged): nothing
is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from schemas import topics
from schemas.cdr_batch_v1 import envelopes
from schemas.cdr_v1 import FieldError, nesting_exceeds
from services.common.archive import Archive, ArchivedBatch, ArchiveError
from services.common.kafka import create_producer
from services.common.settings import IngestSettings
from services.ingest.formats import FORMATS, map_text
from services.ingest.formats.base import Mapping as FormatMapping
from services.ingest.formats.base import Rejected, Skipped
from services.ingest.metrics import DeadLetterReason, IngestMetrics, RejectReason
from services.ingest.normalize import Normalizer
from services.ingest.service import (
    PublisherUnavailable,
    RecordPolicy,
    validate_items,
)

log = logging.getLogger(__name__)

CLIENT_ID = "cdrwatch-ingest-raw"
DEAD_LETTER_RECORD_MAX_BYTES = 128 * 1024
STAGE = "raw-validator"
# orjson writes at most 255 levels; the envelope adds one.
_DEAD_LETTER_MAX_DEPTH = 200
_BOM = b"\xef\xbb\xbf"
# Batches with more records than this are validated in a worker thread, so that the event
# loop keeps serving HTTP requests meanwhile (as the HTTP path does for large bodies).
_THREAD_THRESHOLD = 200
_POLL_TIMEOUT_MS = 500
_LOGGED_POSITIONS = 10

ValidatorState = Literal["off", "connecting", "consuming", "retrying"]


class RawMessage(NamedTuple):
    """One message of the raw topic, as the validator needs it; `format` is its
    `cdrwatch-format` header (None: the topic's default)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    format: str | None = None


class OutboundRecord(NamedTuple):
    topic: str
    key: bytes
    value: bytes


@dataclass
class ValidatedBatch:
    """What a batch of raw messages became: the records to produce (normalised first, then
    dead letters) and the counts to report once the broker acknowledged them."""

    records: list[OutboundRecord] = field(default_factory=list)
    published: int = 0
    duplicates: int = 0
    received: int = 0
    rejected: Counter[RejectReason] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[DeadLetterReason] = field(default_factory=Counter)
    # "partition:offset" (":index" in an array) of each dead letter, for the logs.
    dead_letter_positions: list[str] = field(default_factory=list)

    def add_dead_letter(
        self,
        reason: DeadLetterReason,
        errors: Sequence[FieldError],
        origin: _Origin,
        record: object,
    ) -> None:
        self.records.append(dead_letter(reason, errors, origin, record))
        self.dead_letters[reason] += 1
        position = f"{origin.message.partition}:{origin.message.offset}"
        if origin.position is not None:
            position += f":{origin.position}"
        self.dead_letter_positions.append(position)


class _Unreadable(NamedTuple):
    message: str
    text: str | None


class _Origin(NamedTuple):
    message: RawMessage
    position: int | None  # in a JSON array; None for a message holding one object


def decode_value(value: bytes | None) -> object:
    """The message's JSON value, or `_Unreadable` (why, and the value as text)."""
    if value is None:
        return _Unreadable("message has no value", None)
    body = value.removeprefix(_BOM)
    text = body.decode("utf-8", errors="replace")
    if not body.strip():
        return _Unreadable("message is empty", text)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _Unreadable(f"message is not valid UTF-8 JSON ({exc})", text)


def dead_letter(
    reason: DeadLetterReason,
    errors: Sequence[FieldError],
    origin: _Origin,
    record: object,
) -> OutboundRecord:
    """The dead-letter envelope of one record (see the module docstring)."""
    source: dict[str, Any] = {
        "topic": origin.message.topic,
        "partition": origin.message.partition,
        "offset": origin.message.offset,
    }
    if origin.position is not None:
        source["index"] = origin.position
    envelope: dict[str, Any] = {
        "reason": reason,
        "stage": STAGE,
        "errors": [error.model_dump() for error in errors],
        "source": source,
        "record": record,
    }
    encoded = record if isinstance(record, str) else _encode(record)
    if encoded is None:
        # Deeper than orjson writes inside the envelope: keep the message's text.
        encoded = _message_text(origin.message.value)
        envelope["record"] = encoded
        envelope["record_unencodable"] = True
    if len(encoded.encode()) > DEAD_LETTER_RECORD_MAX_BYTES:
        cut = encoded.encode()[:DEAD_LETTER_RECORD_MAX_BYTES]
        envelope["record"] = cut.decode("utf-8", errors="ignore")
        envelope["record_truncated"] = True
    return OutboundRecord(topics.CDRS_DLQ, reason.encode(), orjson.dumps(envelope))


def _encode(record: object) -> str | None:
    """The record's JSON text, or None when it cannot be written inside an envelope."""
    if nesting_exceeds(record, _DEAD_LETTER_MAX_DEPTH):
        return None
    try:
        return orjson.dumps(record).decode()
    except (TypeError, orjson.JSONEncodeError):
        return None


def _format_of(record: Any) -> str | None:
    """The `cdrwatch-format` header of a consumer record (None when absent or empty)."""
    for key, value in getattr(record, "headers", None) or ():
        if key == topics.HEADER_FORMAT and value:
            return bytes(value).decode("utf-8", errors="replace").strip() or None
    return None


def _message_text(value: bytes | None) -> str:
    return "" if value is None else value.removeprefix(_BOM).decode("utf-8", errors="replace")


CDR_V1 = "cdr-v1"


@dataclass(frozen=True)
class RawFormats:
    """The formats the raw topic reads: `default` for a message without a `cdrwatch-format`
    header, and the mapping of each dialer format (`services.ingest.dialers`)."""

    default: str = CDR_V1
    mappings: Mapping[str, FormatMapping] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default != CDR_V1 and self.default not in self.mappings:
            known = ", ".join((CDR_V1, *FORMATS))
            raise ValueError(f"unknown raw-topic default format {self.default!r}; one of {known}")

    def of(self, message: RawMessage) -> str:
        return message.format or self.default


_CDR_V1_ONLY = RawFormats()


def validate_messages(
    messages: Sequence[RawMessage],
    normalizer: Normalizer,
    policy: RecordPolicy | None = None,
    formats: RawFormats = _CDR_V1_ONLY,
) -> ValidatedBatch:
    """Validate and normalise a batch of raw messages (no I/O besides the injected clock).

    The records to produce are the normalised ones, then the dead letters in raw-topic
    order. A message that yields no record (unreadable, an empty array, no call) counts as
    one received and one rejected record, like an unreadable NDJSON line on the HTTP path.
    """
    batch = ValidatedBatch()
    items: list[object] = []
    origins: list[_Origin] = []
    # What a dead letter of each item keeps: the element itself for CDR v1, the message's
    # text for a dialer format (what the dialer wrote, not our mapping of it).
    originals: list[object] = []
    dead: list[tuple[_Origin, DeadLetterReason, list[FieldError], object]] = []
    for message in messages:
        name = formats.of(message)
        if name != CDR_V1:
            _map_format(message, name, formats, batch, items, origins, originals, dead)
            continue
        value = decode_value(message.value)
        if isinstance(value, _Unreadable):
            error = FieldError(field="(record)", message=value.message)
            dead.append((_Origin(message, None), "unreadable", [error], value.text))
        elif isinstance(value, list) and not value:
            error = FieldError(field="(record)", message="message is an empty array")
            dead.append((_Origin(message, None), "invalid", [error], value))
        elif isinstance(value, list):
            items.extend(value)
            originals.extend(value)
            origins.extend(_Origin(message, index) for index in range(len(value)))
        else:
            items.append(value)
            originals.append(value)
            origins.append(_Origin(message, None))
    batch.received = len(items) + len(dead)
    batch.rejected["invalid"] = len(dead)
    validation = validate_items(
        items, normalizer, source="kafka", records_carry_tenant=True, policy=policy
    )
    batch.published = validation.accepted
    batch.duplicates = validation.duplicates
    batch.rejected.update(validation.reasons)
    batch.records = [
        OutboundRecord(topics.CDRS, key, value) for key, value in envelopes(validation.encoded)
    ]
    for rejection in validation.rejected:
        origin = origins[rejection.index]
        dead.append((origin, "invalid", rejection.errors, originals[rejection.index]))
    dead.sort(key=lambda d: (d[0].message.partition, d[0].message.offset, d[0].position or 0))
    for origin, reason, errors, record in dead:
        batch.add_dead_letter(reason, errors, origin, record)
    return batch


def _map_format(
    message: RawMessage,
    name: str,
    formats: RawFormats,
    batch: ValidatedBatch,
    items: list[object],
    origins: list[_Origin],
    originals: list[object],
    dead: list[tuple[_Origin, DeadLetterReason, list[FieldError], object]],
) -> None:
    """One message in a dialer format: its calls join `items`, its refusals `dead`."""
    text = _message_text(message.value)
    mapping = formats.mappings.get(name)
    if mapping is None:
        known = ", ".join((CDR_V1, *FORMATS))
        error = FieldError(
            field=f"(header {topics.HEADER_FORMAT})",
            message=f"unknown format {name!r}; one of {known}",
        )
        dead.append((_Origin(message, None), "invalid", [error], text))
        return
    if message.value is None:
        error = FieldError(field="(record)", message="message has no value")
        dead.append((_Origin(message, None), "unreadable", [error], None))
        return
    outcomes = map_text(name, message.value.removeprefix(_BOM), mapping)
    calls = [o for o in outcomes if not isinstance(o, Skipped)]
    batch.skipped.update(o.reason for o in outcomes if isinstance(o, Skipped))
    if not outcomes:
        error = FieldError(field="(record)", message=f"message holds no {name} record")
        dead.append((_Origin(message, None), "invalid", [error], text))
        return
    for index, outcome in enumerate(calls):
        origin = _Origin(message, index if len(calls) > 1 else None)
        if isinstance(outcome, Rejected):
            error = FieldError(
                field="(record)",
                message=f"{outcome.reason}: {outcome.message} (line {outcome.line} of the message)",
            )
            dead.append((origin, "invalid", [error], text))
        else:
            items.append(outcome.record)
            originals.append(text)
            origins.append(origin)


def validate_each(
    messages: Sequence[RawMessage],
    normalizer: Normalizer,
    policy: RecordPolicy | None = None,
    formats: RawFormats = _CDR_V1_ONLY,
) -> ValidatedBatch:
    """`validate_messages`, and when it raises, the batch validated message by message: a
    message whose validation still raises becomes one `invalid` dead letter of its own.

    Dedup then works within each message only; the detector's dedup covers the rest.
    """
    try:
        return validate_messages(messages, normalizer, policy, formats)
    except Exception as exc:
        log.warning("raw_batch_validation_failed", extra={"error": type(exc).__name__})
    batch = ValidatedBatch()
    dead: list[OutboundRecord] = []
    for message in messages:
        try:
            one = validate_messages([message], normalizer, policy, formats)
        except Exception as exc:
            error = FieldError(
                field="(record)", message=f"message could not be processed ({type(exc).__name__})"
            )
            origin = _Origin(message, None)
            envelope = dead_letter("invalid", [error], origin, _message_text(message.value))
            dead.append(envelope)
            batch.received += 1
            batch.rejected["invalid"] += 1
            batch.dead_letters["invalid"] += 1
            batch.dead_letter_positions.append(f"{message.partition}:{message.offset}")
            continue
        batch.records.extend(r for r in one.records if r.topic == topics.CDRS)
        dead.extend(r for r in one.records if r.topic != topics.CDRS)
        batch.published += one.published
        batch.duplicates += one.duplicates
        batch.received += one.received
        batch.rejected.update(one.rejected)
        batch.skipped.update(one.skipped)
        batch.dead_letters.update(one.dead_letters)
        batch.dead_letter_positions.extend(one.dead_letter_positions)
    batch.records.extend(dead)
    return batch


class Producer(Protocol):
    """The part of `AIOKafkaProducer` the validator uses: `send` enqueues a record and
    returns a future that resolves when the broker acknowledged it."""

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Awaitable[Any]: ...


class Consumer(Protocol):
    """The part of `AIOKafkaConsumer` the loop uses."""

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[Any]]: ...

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...


async def deliver(producer: Producer, records: Sequence[OutboundRecord], timeout: float) -> None:
    """Produce every record and return once the broker acknowledged all of them; raise
    PublisherUnavailable when any was refused, failed or not acknowledged in `timeout` s."""
    try:
        async with asyncio.timeout(timeout):
            futures = [
                await producer.send(record.topic, value=record.value, key=record.key)
                for record in records
            ]
            results = await asyncio.gather(*futures, return_exceptions=True)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise PublisherUnavailable(f"broker did not acknowledge: {exc!r}") from exc
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        raise PublisherUnavailable(f"broker did not acknowledge: {failures[0]!r}")


ConsumerFactory = Callable[[], AIOKafkaConsumer]
ProducerFactory = Callable[[], AIOKafkaProducer]


class RawValidator:
    """Consumes `cdrwatch.cdrs.raw.v1` in the group `raw_consumer_group` until stopped.

    `start()` returns at once; the loop connects in the background and restarts its clients
    after any failure (broker down, restarted, group errors), from the committed offsets.
    Both that and the retry of an unacknowledged batch back off from `retry_delay_seconds`,
    doubling up to `retry_delay_max_seconds`. `state` says what it is doing, for /readyz:
    connecting, consuming, or retrying an unacknowledged batch.
    """

    def __init__(
        self,
        settings: IngestSettings,
        normalizer: Normalizer,
        metrics: IngestMetrics,
        *,
        consumer_factory: ConsumerFactory | None = None,
        producer_factory: ProducerFactory | None = None,
        retry_delay_seconds: float = 0.5,
        retry_delay_max_seconds: float = 30.0,
        archive: Archive | None = None,
        mappings: Mapping[str, FormatMapping] | None = None,
    ) -> None:
        self.settings = settings
        self.formats = RawFormats(settings.raw_default_format, mappings or {})
        self.archive = archive
        self.normalizer = normalizer
        self.metrics = metrics
        self._consumer_factory = consumer_factory or self._kafka_consumer
        self._producer_factory = producer_factory or self._kafka_producer
        self._retry_delay_initial = retry_delay_seconds
        self._retry_delay_max = retry_delay_max_seconds
        self._retry_delay = retry_delay_seconds
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.state: ValidatorState = "off"
        self.policy = RecordPolicy.from_settings(settings)

    def _kafka_consumer(self) -> AIOKafkaConsumer:
        session_ms = int(self.settings.raw_session_timeout_seconds * 1000)
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.settings.raw_consumer_group,
            client_id=CLIENT_ID,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 10),
        )

    def _kafka_producer(self) -> AIOKafkaProducer:
        return create_producer(self.settings, CLIENT_ID)

    # -- one batch -------------------------------------------------------------------------

    async def handle(self, messages: Sequence[RawMessage], producer: Producer) -> bool:
        """Validate a batch, produce its records and count it. True when the broker
        acknowledged every record (the batch may be committed); False when it did not (do
        not commit: fetch the batch again later)."""
        if len(messages) > _THREAD_THRESHOLD:
            batch = await asyncio.to_thread(
                validate_each, messages, self.normalizer, self.policy, self.formats
            )
        else:
            batch = validate_each(messages, self.normalizer, self.policy, self.formats)
        archived = await self._archive(batch)
        if archived is False:
            return False
        try:
            await deliver(producer, batch.records, self.settings.send_timeout_seconds)
        except PublisherUnavailable as exc:
            if archived is not None and self.archive is not None:
                try:
                    await asyncio.to_thread(self.archive.discard, archived)
                except ArchiveError as discard_error:  # replayed; the dedup absorbs it
                    log.error("archive_discard_failed", extra={"error": str(discard_error)})
            log.warning(
                "raw_batch_not_delivered",
                extra={"messages": len(messages), "records": len(batch.records), "error": str(exc)},
            )
            return False
        self.metrics.count_received("kafka", batch.received)
        for reason, count in batch.rejected.items():
            self.metrics.count_rejected(reason, count)
        for dead_reason, count in batch.dead_letters.items():
            self.metrics.count_dead_letters(dead_reason, count)
        for skip_reason, count in batch.skipped.items():
            self.metrics.count_skipped(skip_reason, count)
        if batch.dead_letters:
            log.info(
                "raw_records_dead_lettered",
                extra={
                    "invalid": batch.dead_letters["invalid"],
                    "unreadable": batch.dead_letters["unreadable"],
                    "positions": ",".join(batch.dead_letter_positions[:_LOGGED_POSITIONS]),
                },
            )
        log.debug(
            "raw_batch_delivered",
            extra={
                "messages": len(messages),
                "published": batch.published,
                "duplicates": batch.duplicates,
            },
        )
        return True

    async def _archive(self, batch: ValidatedBatch) -> ArchivedBatch | None | bool:
        """Archive the batch's normalised records before they are produced (see
        services.common.archive): their rows, None without an archive, False when the
        archive cannot be written (the batch is then not delivered, and fetched again)."""
        if self.archive is None:
            return None
        records = [(r.key, r.value) for r in batch.records if r.topic == topics.CDRS]
        try:
            return await asyncio.to_thread(self.archive.append_cdrs, records)
        except ArchiveError as exc:
            log.error("archive_write_failed", extra={"error": str(exc)})
            return False

    async def consume_once(self, consumer: Consumer, producer: Producer) -> int:
        """Fetch one batch, handle it, then commit its offsets; or, when it was not
        delivered, seek back to its first offsets and back off. The messages committed."""
        fetched = await consumer.getmany(
            timeout_ms=_POLL_TIMEOUT_MS, max_records=self.settings.raw_batch_max
        )
        messages = [
            RawMessage(
                record.topic, record.partition, record.offset, record.value, _format_of(record)
            )
            for records in fetched.values()
            for record in records
        ]
        if not messages:
            return 0
        if not await self.handle(messages, producer):
            self._rewind(consumer, fetched)
            self.state = "retrying"
            await self._pause(self._retry_delay)
            self._retry_delay = min(self._retry_delay * 2, self._retry_delay_max)
            return 0
        self.state = "consuming"
        self._retry_delay = self._retry_delay_initial
        offsets = {tp: records[-1].offset + 1 for tp, records in fetched.items() if records}
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # Delivered but not committed: replayed after a rebalance or restart, and
            # absorbed downstream by the dedup on call_id. A later commit supersedes it.
            log.warning("raw_commit_failed", extra={"error": repr(exc)})
        return len(messages)

    @staticmethod
    def _rewind(consumer: Consumer, fetched: Mapping[TopicPartition, Sequence[Any]]) -> None:
        for tp, records in fetched.items():
            if not records:
                continue
            # Not assigned any more: its new owner resumes from the committed offset.
            with contextlib.suppress(IllegalStateError):
                consumer.seek(tp, records[0].offset)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self.state = "connecting"
            self._task = asyncio.create_task(self.run(), name="raw-validator")

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Finish the batch in hand (for at most `grace_seconds`), then stop the clients."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), grace_seconds)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.state = "off"

    async def run(self) -> None:
        """Consume until `stop()`; restart the clients with back-off after any failure."""
        delay = self._retry_delay_initial
        while not self._stopping.is_set():
            consumer = self._consumer_factory()
            producer = self._producer_factory()
            try:
                self.state = "connecting"
                await producer.start()
                await consumer.start()
                consumer.subscribe([topics.CDRS_RAW])
                self.state = "consuming"
                delay = self._retry_delay_initial
                log.info(
                    "raw_validator_started",
                    extra={"group": self.settings.raw_consumer_group, "topic": topics.CDRS_RAW},
                )
                while not self._stopping.is_set():
                    await self.consume_once(consumer, producer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker down or restarted, group errors: start over
                log.warning(
                    "raw_validator_failed",
                    extra={
                        "bootstrap": self.settings.kafka_bootstrap,
                        "error": repr(exc),
                        "retry_in_s": delay,
                    },
                )
            finally:
                self.state = "connecting"
                with contextlib.suppress(Exception):
                    await consumer.stop()
                with contextlib.suppress(Exception):
                    await producer.stop()
            if self._stopping.is_set():
                break
            await self._pause(delay)
            delay = min(delay * 2, self._retry_delay_max)
        log.info("raw_validator_stopped", extra={"group": self.settings.raw_consumer_group})

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
