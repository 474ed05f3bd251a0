"""The ingest use case: validate a batch, normalise it, publish the good records.

The publisher is a port (`Publisher`); `KafkaPublisher` is its adapter. A request's good
records go out as one Kafka record per campaign, a `CdrBatchV1` envelope keyed by the
campaign (schemas.cdr_batch_v1; more than one only past an envelope's limits). A batch is answered
only after the broker acknowledged every good record; if it cannot, the whole request
fails (`PublisherUnavailable`, answered 503 with Retry-After) and nothing is reported
accepted. The dialer retries, and records that did reach the broker are absorbed by the
detector's dedup on `call_id`.

Nothing is half-accepted: everything that could make a good record unpublishable (its
depth, size, encoding) is checked per record by `validate_items` before anything is sent,
so such a record is rejected alone (422-style field errors) and 503 means only a broker
that did not acknowledge. A record whose check raises is rejected alone too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import BaseModel, ConfigDict

from schemas import topics
from schemas.cdr_batch_v1 import envelopes
from schemas.cdr_v1 import FieldError, NormalizedCdrV1, excerpt
from schemas.cdr_v1_body import Parsed, parse_cdrs
from services.common.archive import Archive, ArchiveError
from services.common.auth import Principal
from services.common.kafka import BrokerHealth, create_producer, send_keyed
from services.common.settings import IngestSettings
from services.ingest.metrics import IngestMetrics, RejectReason, Source
from services.ingest.normalize import Normalizer
from services.ingest.parsing import UnreadableRecord, media_type_of, read_body, split_records

log = logging.getLogger(__name__)

# A body is validated on the event loop a slice of this many records at a time, and the
# loop serves other requests and the producer's network I/O between two slices (a slice
# takes about 5 ms here). Not in a worker thread, as it was: the two threads handing the
# GIL to each other cost the ingest a third of its throughput
# (`bench/ingest_throughput.py --batches 20`: 35,800-38,800 CDR/s with the thread,
# 47,900-51,800 without, same tree; bench/README.md).
VALIDATION_SLICE = 500
_CALL_ID_ECHO_MAX = 128


class PublisherUnavailable(Exception):
    """The broker did not acknowledge the batch (unreachable, timed out or refused)."""


class Publisher(Protocol):
    async def send_batch(self, encoded: Sequence[tuple[bytes, bytes]]) -> None:
        """Return once every Kafka record (key, value) is acknowledged; raise
        PublisherUnavailable otherwise. They are the `envelopes` of the good records'
        `encode_fields`, encoded once, by the validation that checked their size."""
        ...


@runtime_checkable
class SupportsReadiness(Protocol):
    async def check_ready(self) -> bool:
        """True when the publisher can take a batch now (used by /readyz)."""
        ...


_NORMALIZED_FIELDS = tuple(
    name for name, info in NormalizedCdrV1.model_fields.items() if info.alias is None
)


def encode_record(record: NormalizedCdrV1) -> tuple[bytes, bytes]:
    """`encode_fields` of a record's field values."""
    fields = record.__dict__
    if tuple(fields) != _NORMALIZED_FIELDS:  # not as the model makes it (or aliased)
        fields = record.model_dump(by_alias=True)
    return encode_fields(fields)


def encode_fields(fields: dict[str, Any]) -> tuple[bytes, bytes]:
    """Kafka key (campaign, so a campaign's calls stay in order) and JSON value of a
    `NormalizedCdrV1`'s field values, in its field order.

    The value is byte for byte `orjson.dumps(record.model_dump(mode="json", by_alias=True))`
    of the record they make (tests hold this, and every service test's publisher checks
    it), made twice as fast by letting orjson write the instants, which are all UTC:
    RFC 3339 with `Z`, microseconds only when present, like `format_instant`. The model has
    no aliases and holds only JSON types, tuples and UTC datetimes, which orjson writes as
    model_dump would have them written.
    """
    value = orjson.dumps(fields, option=orjson.OPT_UTC_Z)
    return fields["campaign_id"].encode(), value


class KafkaPublisher:
    """Produces to `cdrwatch.cdrs.v1` with acks=all.

    `start()` returns at once and connects in the background, retrying with back-off, so
    the service comes up before the broker does; until connected, `ready` is False and
    batches are refused with PublisherUnavailable (503).

    Fail fast: a background probe (`BrokerHealth`, every `broker_probe_interval_seconds`)
    tells whether the broker answers. While it does not, or while the stack is recovering
    (`recovery_marker`), a batch is refused at once, before anything is sent; a batch in
    flight when the probe finds the broker gone gives up then (within about one probe
    interval) instead of waiting for `send_timeout_seconds`.
    """

    def __init__(self, settings: IngestSettings, client_id: str = "cdrwatch-ingest") -> None:
        self._settings = settings
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self.health = BrokerHealth(settings.kafka_bootstrap, settings.broker_probe_interval_seconds)

    @property
    def ready(self) -> bool:
        return (
            self._producer is not None and self.health.healthy and not self._settings.recovering()
        )

    async def check_ready(self) -> bool:
        return self.ready

    def raise_if_unavailable(self) -> None:
        """PublisherUnavailable when a batch cannot be published now (nothing is sent)."""
        if self._settings.recovering():
            raise PublisherUnavailable("the stack is recovering (replaying its archive)")
        if self._producer is None:
            raise PublisherUnavailable("not connected to the Kafka broker")
        if not self.health.healthy:
            raise PublisherUnavailable("the Kafka broker does not answer")

    async def start(self) -> None:
        await self.health.start()
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect_forever())

    async def connect(self) -> None:
        """One connection attempt; raises the broker error when it fails."""
        producer = create_producer(self._settings, self._client_id)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def _connect_forever(self) -> None:
        delay = 0.2
        while self._producer is None:
            try:
                await self.connect()
            except (KafkaError, OSError) as exc:
                log.warning(
                    "kafka_connect_failed",
                    extra={"bootstrap": self._settings.kafka_bootstrap, "error": str(exc)},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        log.info("kafka_connected", extra={"bootstrap": self._settings.kafka_bootstrap})

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
            self._connecting = None
        await self.health.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send_batch(self, encoded: Sequence[tuple[bytes, bytes]]) -> None:
        await self.send_encoded(encoded)

    async def send_encoded(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce encoded (key, value) records; return once every one is acknowledged."""
        self.raise_if_unavailable()
        producer = self._producer
        assert producer is not None
        gone = asyncio.ensure_future(self.health.down.wait())
        try:
            async with asyncio.timeout(self._settings.send_timeout_seconds):
                futures = await send_keyed(producer, topics.CDRS, records)
                acked = asyncio.ensure_future(asyncio.gather(*futures, return_exceptions=True))
                done, _ = await asyncio.wait({acked, gone}, return_when=asyncio.FIRST_COMPLETED)
                if acked not in done:
                    acked.cancel()
                    raise PublisherUnavailable("the Kafka broker stopped answering")
                results = acked.result()
        except (KafkaError, OSError, TimeoutError, PublisherUnavailable) as exc:
            await self._abandon(producer)
            if isinstance(exc, PublisherUnavailable):
                raise
            raise PublisherUnavailable(f"broker did not acknowledge: {exc!r}") from exc
        finally:
            gone.cancel()
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self._abandon(producer)
            raise PublisherUnavailable(f"broker did not acknowledge: {failures[0]!r}")

    async def _abandon(self, producer: AIOKafkaProducer) -> None:
        """Drop a producer whose batch was answered 503, with everything it still holds, so
        that no record of a refused request reaches a broker later (the producer would
        otherwise retry it until its request timeout, e.g. into a restarted broker:
        CONTRACT decision 7); then connect a new one in the background."""
        if self._producer is not producer:
            return  # a concurrent failure dropped it already
        self._producer = None
        log.warning("kafka_producer_abandoned", extra={"bootstrap": self._settings.kafka_bootstrap})
        with contextlib.suppress(Exception):
            sender = producer._sender  # noqa: SLF001 - aiokafka has no abort
            producer._closed = True  # noqa: SLF001
            await sender.close()  # cancels the sending task: nothing more goes out
        with contextlib.suppress(Exception):
            producer._message_accumulator.fail_all(  # noqa: SLF001
                KafkaConnectionError("producer abandoned after a refused batch")
            )
        with contextlib.suppress(Exception):
            await producer.client.close()
        if self._connecting is not None:
            self._connecting.cancel()
        self._connecting = asyncio.create_task(self._connect_forever())


class ArchivingPublisher:
    """A publisher that also keeps every batch in the durable archive
    (services.common.archive): archived first, then published; when the broker does not
    acknowledge, the batch is removed from the archive again before the 503. So every
    record answered 202 is in the archive, and a record the client must retry is not."""

    def __init__(self, inner: Publisher, archive: Archive) -> None:
        self.inner = inner
        self.archive = archive

    async def start(self) -> None:
        start = getattr(self.inner, "start", None)
        if start is not None:
            await start()

    async def stop(self) -> None:
        stop = getattr(self.inner, "stop", None)
        if stop is not None:
            await stop()

    async def check_ready(self) -> bool:
        return not isinstance(self.inner, SupportsReadiness) or await self.inner.check_ready()

    async def send_batch(self, encoded: Sequence[tuple[bytes, bytes]]) -> None:
        if isinstance(self.inner, KafkaPublisher):
            self.inner.raise_if_unavailable()  # nothing to archive and take back
        try:
            batch = await asyncio.to_thread(self.archive.append_cdrs, encoded)
        except ArchiveError as exc:
            log.error("archive_write_failed", extra={"error": str(exc)})
            raise PublisherUnavailable(f"the archive could not be written: {exc}") from exc
        try:
            await self.inner.send_batch(encoded)
        except PublisherUnavailable:
            try:
                await asyncio.to_thread(self.archive.discard, batch)
            except ArchiveError as exc:  # replayed later; the client's retry is deduplicated
                log.error("archive_discard_failed", extra={"error": str(exc)})
            raise


def build_publisher(
    settings: IngestSettings, archive: Archive | None
) -> KafkaPublisher | ArchivingPublisher:
    """The Kafka publisher of the settings, archiving when an archive is given."""
    kafka = KafkaPublisher(settings)
    return kafka if archive is None else ArchivingPublisher(kafka, archive)


class Rejection(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    call_id: str | None
    errors: list[FieldError]


class IngestResult(BaseModel):
    """SPEC "Shapes": what `POST /v1/cdrs` answers."""

    model_config = ConfigDict(frozen=True)

    accepted: int
    duplicates: int
    rejected: list[Rejection]


@dataclass(frozen=True)
class RecordPolicy:
    """What `validate_items` needs from the settings: the tenant of records written without
    one, the unknown fields kept in `extra`, and the largest record it may publish."""

    default_tenant: str = "default"
    extra_fields_allowed: frozenset[str] = frozenset()
    max_record_bytes: int = 64 * 1024

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> RecordPolicy:
        return cls(
            default_tenant=settings.default_tenant,
            extra_fields_allowed=settings.extra_fields_allowed_set(),
            max_record_bytes=settings.max_record_bytes,
        )


@dataclass
class Validation:
    """What a list of raw records became: the good ones (first copy of each call) as their
    Kafka key and normalised JSON, in order, how many repeats were dropped, and the rejected
    ones by index with the metric reason of each."""

    encoded: list[tuple[bytes, bytes]] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    reasons: Counter[RejectReason] = field(default_factory=Counter)
    # The body's one reading of the ingest clock (every record's `accepted_at`), taken by
    # its first slice, and the (tenant, call_id) of its good records so far.
    now: datetime | None = None
    seen: set[tuple[str | None, str]] = field(default_factory=set, repr=False)

    @property
    def accepted(self) -> int:
        return len(self.encoded)


def validate_items(
    items: Sequence[object],
    normalizer: Normalizer,
    *,
    source: Source,
    tenant_id: str | None = None,
    records_carry_tenant: bool = False,
    policy: RecordPolicy | None = None,
    into: Validation | None = None,
    first_index: int = 0,
) -> Validation:
    """Validate and normalise every record; a repeat of a (tenant, call_id) already good in
    `items` is dropped and counted. Shared by `POST /v1/cdrs` and the raw-topic validator.

    A body can be validated a slice at a time: each slice's `items` with `into`, the
    Validation of the slices before it, and `first_index`, the index of its first record
    in the body (rejections name records by their index in the body).

    Tenancy (CONTRACT decision 1), per record; every good record carries a tenant:
    - `tenant_id` set (a tenant-bound token): records without one get it, records naming
      another are rejected (`tenant_mismatch`);
    - `tenant_id` None (an unbound token): records without one get the default tenant,
      records naming another one are rejected (`tenant_mismatch`);
    - `records_carry_tenant` (the raw topic, no token): a record's own tenant, else the
      default.
    A record whose check raises (a bug, an input nobody foresaw) is rejected alone.
    """
    policy = policy or RecordPolicy()
    outcome = Validation() if into is None else into
    if outcome.now is None:
        outcome.now = normalizer.now()
    now, seen = outcome.now, outcome.seen
    try:  # the body's records validated at once (schemas/cdr_v1_body.py)
        parsed: Sequence[Parsed | None] = parse_cdrs(
            items, extra_fields_allowed=policy.extra_fields_allowed
        )
    except Exception:  # a record whose validation raises: each is then checked alone
        parsed = [None] * len(items)
    for index, item in enumerate(items, start=first_index):
        try:
            errors, reason, record, encoded = check_item(
                item,
                normalizer,
                source=source,
                tenant_id=tenant_id,
                records_carry_tenant=records_carry_tenant,
                policy=policy,
                parsed=parsed[index - first_index],
                now=now,
            )
        except Exception as exc:  # one record's failure must not fail its neighbours
            log.warning("record_check_failed", extra={"index": index, "error": type(exc).__name__})
            message = f"record could not be processed ({type(exc).__name__})"
            errors, reason, record, encoded = (
                [FieldError(field="(record)", message=message)],
                "invalid",
                None,
                None,
            )
        if record is None or encoded is None:
            outcome.rejected.append(
                Rejection(index=index, call_id=_echo_call_id(item), errors=errors)
            )
            outcome.reasons[reason] += 1
            continue
        key = (record["tenant_id"], record["call_id"])
        if key in seen:
            outcome.duplicates += 1
            continue
        seen.add(key)
        outcome.encoded.append(encoded)
    return outcome


def _tenant_error(
    record_tenant: str | None,
    token_tenant: str | None,
    default_tenant: str,
    records_carry_tenant: bool,
) -> tuple[str, FieldError | None]:
    """The record's tenant after ingest, and the error when it may not be written."""
    if records_carry_tenant:
        return record_tenant or default_tenant, None
    allowed = token_tenant or default_tenant
    if record_tenant is None or record_tenant == allowed:
        return allowed, None
    if token_tenant is not None:
        message = f"tenant_id is not the token's tenant ({excerpt(token_tenant)})"
    else:
        message = f"an unbound token writes only the default tenant ({excerpt(default_tenant)})"
    return allowed, FieldError(field="tenant_id", message=message)


def check_item(
    item: object,
    normalizer: Normalizer,
    *,
    source: Source,
    tenant_id: str | None = None,
    records_carry_tenant: bool = False,
    policy: RecordPolicy | None = None,
    parsed: Parsed | None = None,
    now: datetime | None = None,
) -> tuple[list[FieldError], RejectReason, dict[str, Any] | None, tuple[bytes, bytes] | None]:
    """One raw record: ([], _, the normalised record's field values, its Kafka key and
    value) or (its errors, the reason, None, None). `parsed` is its `parse_cdrs` result
    when the caller has it already; `now`, the ingest clock's reading for its body."""
    policy = policy or RecordPolicy()
    if isinstance(item, UnreadableRecord):
        return [FieldError(field="(record)", message=item.message)], "invalid", None, None
    if parsed is None:
        [parsed] = parse_cdrs([item], extra_fields_allowed=policy.extra_fields_allowed)
    fields, errors = parsed
    if fields is None:
        return errors, "invalid", None, None
    tenant, tenant_error = _tenant_error(
        fields["tenant_id"], tenant_id, policy.default_tenant, records_carry_tenant
    )
    record, errors = normalizer.normalize_fields(
        fields, source=source, tenant_id=tenant, now=normalizer.now() if now is None else now
    )
    if tenant_error is not None:
        return [tenant_error, *errors], "tenant_mismatch", None, None
    if record is None:
        future = normalizer.future_errors.values()
        only_future = all(error in future for error in errors)
        return errors, "too_far_future" if only_future else "invalid", None, None
    encoded = _publishable(record, policy.max_record_bytes)
    if isinstance(encoded, FieldError):
        return [encoded], "invalid", None, None
    return [], "invalid", record, encoded


def _publishable(record: dict[str, Any], max_bytes: int) -> tuple[bytes, bytes] | FieldError:
    """The record's Kafka key and value when it encodes to at most `max_bytes`, else why
    not."""
    try:
        encoded = encode_fields(record)
    except (TypeError, orjson.JSONEncodeError):
        return FieldError(field="(record)", message="record cannot be encoded as JSON")
    if len(encoded[1]) > max_bytes:
        return FieldError(
            field="(record)", message=f"record larger than {max_bytes} bytes once normalised"
        )
    return encoded


class IngestService:
    def __init__(
        self,
        settings: IngestSettings,
        publisher: Publisher,
        normalizer: Normalizer,
        metrics: IngestMetrics,
        *,
        retry_after_seconds: int = 5,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.normalizer = normalizer
        self.metrics = metrics
        self.retry_after_seconds = retry_after_seconds
        self.policy = RecordPolicy.from_settings(settings)

    async def ingest_body(
        self,
        chunks: AsyncIterator[bytes],
        *,
        principal: Principal,
        content_type: str | None,
        content_length: str | None = None,
        content_encoding: str | None = None,
    ) -> IngestResult:
        """Read, split and ingest one HTTP body (BodyError for a body that cannot be taken)."""
        started = time.perf_counter()
        try:
            media_type = media_type_of(content_type, content_encoding)
            body = await read_body(chunks, content_length, self.settings.max_body_bytes)
            items = split_records(body, media_type, self.settings.max_records)
            return await self.ingest(items, principal)
        finally:
            self.metrics.request_seconds.observe(time.perf_counter() - started)

    async def ingest(
        self,
        items: Sequence[object],
        principal: Principal,
        *,
        source: Source = "http",
        count_received: bool = True,
    ) -> IngestResult:
        """Validate every record, publish the good ones, say what happened to each."""
        if count_received:
            self.metrics.count_received(source, len(items))
        outcome = Validation()
        for start in range(0, len(items), VALIDATION_SLICE):
            if start:
                await asyncio.sleep(0)  # the loop's other work between two slices
            self._validate(
                items[start : start + VALIDATION_SLICE], principal, source, outcome, start
            )
        for reason, count in outcome.reasons.items():
            self.metrics.count_rejected(reason, count)
        if outcome.accepted:
            try:
                await self.publisher.send_batch(envelopes(outcome.encoded))
            except PublisherUnavailable as exc:
                self.metrics.count_rejected("publish_failed", outcome.accepted)
                log.warning(
                    "publish_failed", extra={"records": outcome.accepted, "error": str(exc)}
                )
                raise
        return IngestResult(
            accepted=outcome.accepted, duplicates=outcome.duplicates, rejected=outcome.rejected
        )

    def _validate(
        self,
        items: Sequence[object],
        principal: Principal,
        source: Source,
        outcome: Validation,
        first_index: int,
    ) -> None:
        validate_items(
            items,
            self.normalizer,
            source=source,
            tenant_id=principal.tenant_id,
            policy=self.policy,
            into=outcome,
            first_index=first_index,
        )


def _echo_call_id(item: object) -> str | None:
    """The record's call_id as sent, when there is a usable one, to name it in the answer."""
    if not isinstance(item, dict):
        return None
    value = item.get("call_id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)[:_CALL_ID_ECHO_MAX]
