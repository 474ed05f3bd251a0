"""The ingest use case: validate a batch, normalise it, publish the good records.

The publisher is a port (`Publisher`); `KafkaPublisher` is its adapter. A batch is answered
only after the broker acknowledged every good record; if it cannot, the whole request
fails (`PublisherUnavailable`, answered 503 with Retry-After) and nothing is reported
accepted. The dialer retries, and records that did reach the broker are absorbed by the
detector's dedup on `call_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict

from schemas import topics
from schemas.cdr_v1 import FieldError, NormalizedCdrV1, parse_cdr
from services.common.auth import Principal
from services.common.kafka import create_producer
from services.common.settings import IngestSettings
from services.ingest.metrics import IngestMetrics, RejectReason, Source
from services.ingest.normalize import Normalizer
from services.ingest.parsing import UnreadableRecord, media_type_of, read_body, split_records

log = logging.getLogger(__name__)

# Batches larger than this are validated in a worker thread so that the event loop keeps
# serving other requests and the producer's network I/O meanwhile.
_THREAD_THRESHOLD = 200
_CALL_ID_ECHO_MAX = 200


class PublisherUnavailable(Exception):
    """The broker did not acknowledge the batch (unreachable, timed out or refused)."""


class Publisher(Protocol):
    async def send_batch(self, records: list[NormalizedCdrV1]) -> None:
        """Return once every record is acknowledged; raise PublisherUnavailable otherwise."""
        ...


@runtime_checkable
class SupportsReadiness(Protocol):
    async def check_ready(self) -> bool:
        """True when the publisher can take a batch now (used by /readyz)."""
        ...


def encode_record(record: NormalizedCdrV1) -> tuple[bytes, bytes]:
    """Kafka key (campaign, so a campaign's calls stay in order) and JSON value.

    The value is byte for byte `orjson.dumps(record.model_dump(mode="json", by_alias=True))`
    (a test holds this), made twice as fast by letting orjson write the instants, which are
    all UTC: RFC 3339 with `Z`, microseconds only when present, like `format_instant`.
    """
    value = orjson.dumps(record.model_dump(by_alias=True), option=orjson.OPT_UTC_Z)
    return record.campaign_id.encode(), value


class KafkaPublisher:
    """Produces to `cdrwatch.cdrs.v1` with acks=all.

    `start()` returns at once and connects in the background, retrying with back-off, so
    the service comes up before the broker does; until connected, `ready` is False and
    batches are refused with PublisherUnavailable (503). After a failed batch `ready` stays
    False until a batch is acknowledged again or `check_ready()` reaches the broker.
    """

    def __init__(self, settings: IngestSettings, client_id: str = "cdrwatch-ingest") -> None:
        self._settings = settings
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._healthy = False

    @property
    def ready(self) -> bool:
        return self._producer is not None and self._healthy

    async def check_ready(self, timeout_seconds: float = 2.0) -> bool:
        producer = self._producer
        if producer is None:
            return False
        if self._healthy:
            return True
        try:
            async with asyncio.timeout(timeout_seconds):
                await producer.client.fetch_all_metadata()
        except (KafkaError, OSError, TimeoutError):
            return False
        self._healthy = True
        return True

    async def start(self) -> None:
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
        self._healthy = True

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
                delay = min(delay * 2, 5.0)
        log.info("kafka_connected", extra={"bootstrap": self._settings.kafka_bootstrap})

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
            self._connecting = None
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send_batch(self, records: list[NormalizedCdrV1]) -> None:
        producer = self._producer
        if producer is None:
            raise PublisherUnavailable("not connected to the Kafka broker")
        try:
            async with asyncio.timeout(self._settings.send_timeout_seconds):
                futures = []
                for record in records:
                    key, value = encode_record(record)
                    futures.append(await producer.send(topics.CDRS, value=value, key=key))
                results = await asyncio.gather(*futures, return_exceptions=True)
        except (KafkaError, OSError, TimeoutError) as exc:
            self._healthy = False
            raise PublisherUnavailable(f"broker did not acknowledge: {exc!r}") from exc
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            self._healthy = False
            raise PublisherUnavailable(f"broker did not acknowledge: {failures[0]!r}")
        self._healthy = True


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


@dataclass
class Validation:
    """What a list of raw records became: the good ones (first copy of each call), how many
    repeats were dropped, and the rejected ones by index with the metric reason of each."""

    good: list[NormalizedCdrV1] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    reasons: Counter[RejectReason] = field(default_factory=Counter)


def validate_items(
    items: Sequence[object],
    normalizer: Normalizer,
    *,
    source: Source,
    tenant_id: str | None = None,
) -> Validation:
    """Validate and normalise every record; a repeat of a (tenant, call_id) already good in
    `items` is dropped and counted. Shared by `POST /v1/cdrs` and the raw-topic validator.

    `tenant_id` is the caller's tenant (a tenant-bound token): records without one get it,
    records naming another are rejected (`tenant_mismatch`). None: records keep their own.
    """
    outcome = Validation()
    seen: set[tuple[str | None, str]] = set()
    for index, item in enumerate(items):
        errors, reason, record = check_item(item, normalizer, source=source, tenant_id=tenant_id)
        if record is None:
            outcome.rejected.append(
                Rejection(index=index, call_id=_echo_call_id(item), errors=errors)
            )
            outcome.reasons[reason] += 1
            continue
        key = (record.tenant_id, record.call_id)
        if key in seen:
            outcome.duplicates += 1
            continue
        seen.add(key)
        outcome.good.append(record)
    return outcome


def check_item(
    item: object,
    normalizer: Normalizer,
    *,
    source: Source,
    tenant_id: str | None = None,
) -> tuple[list[FieldError], RejectReason, NormalizedCdrV1 | None]:
    """One raw record: ([], _, the normalised record) or (its errors, the reason, None)."""
    if isinstance(item, UnreadableRecord):
        return [FieldError(field="(record)", message=item.message)], "invalid", None
    cdr, errors = parse_cdr(item)
    if cdr is None:
        return errors, "invalid", None
    tenant_errors: list[FieldError] = []
    if tenant_id is not None:
        if cdr.tenant_id is None:
            cdr = cdr.model_copy(update={"tenant_id": tenant_id})
        elif cdr.tenant_id != tenant_id:
            tenant_errors.append(
                FieldError(field="tenant_id", message="tenant_id is not the token's tenant")
            )
    record, errors = normalizer.normalize(cdr, source=source)
    if tenant_errors:
        return tenant_errors + errors, "tenant_mismatch", None
    if record is None:
        only_future = errors == [normalizer.future_error]
        return errors, "too_far_future" if only_future else "invalid", None
    return [], "invalid", record


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
        self, items: Sequence[object], principal: Principal, *, source: Source = "http"
    ) -> IngestResult:
        """Validate every record, publish the good ones, say what happened to each."""
        self.metrics.count_received(source, len(items))
        if len(items) > _THREAD_THRESHOLD:
            outcome = await asyncio.to_thread(self._validate, items, principal, source)
        else:
            outcome = self._validate(items, principal, source)
        for reason, count in outcome.reasons.items():
            self.metrics.count_rejected(reason, count)
        if outcome.good:
            try:
                await self.publisher.send_batch(outcome.good)
            except PublisherUnavailable as exc:
                self.metrics.count_rejected("publish_failed", len(outcome.good))
                log.warning(
                    "publish_failed", extra={"records": len(outcome.good), "error": str(exc)}
                )
                raise
        return IngestResult(
            accepted=len(outcome.good), duplicates=outcome.duplicates, rejected=outcome.rejected
        )

    def _validate(
        self, items: Sequence[object], principal: Principal, source: Source
    ) -> Validation:
        return validate_items(items, self.normalizer, source=source, tenant_id=principal.tenant_id)


def _echo_call_id(item: object) -> str | None:
    """The record's call_id as sent, when there is a usable one, to name it in the answer."""
    if not isinstance(item, dict):
        return None
    value = item.get("call_id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)[:_CALL_ID_ECHO_MAX]
