"""Consumes the detector's alerts, stats and call traces, and the dead letters of the
detector and the raw validator, into the store.

`apply_messages` is the whole translation from topic records to store writes; the Kafka
loop around it only fetches a batch, applies it in one transaction, and commits the
batch's offsets to Kafka after that transaction committed. The transaction also stores
the next offset of each partition (table consumer_positions) and the consumer seeks there
when partitions are assigned, so a batch whose Kafka commit was lost in a crash is not
applied twice; every store write but the rejection counts is idempotent besides (see
services.api.store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from schemas import topics
from schemas.alert_v1 import AlertV1
from schemas.call_v1 import CallBatchV1
from schemas.record_batch_v1 import records_in
from schemas.stats_v1 import COUNT_FIELDS, StatsV1
from services.api.store import (
    AlertStore,
    LiveWindow,
    MinuteBucket,
    MinuteHead,
    RejectionSeen,
    Sighting,
    StoreBatch,
)
from services.common.db import DEFAULT_TENANT
from services.common.kafka import confirm_log_ends
from services.common.settings import ApiSettings

log = logging.getLogger(__name__)

MINUTE = timedelta(minutes=1)
_MAX_WINDOW_NAME = 40  # window_stats.window
_MAX_PROFILE_NAME = 60
_MAX_TENANT = 200
_MAX_CAMPAIGN = 200
_MAX_CALL_ID = 200
_MAX_STAGE = 40  # rejections.stage
_MAX_REASON = 60  # rejections.reason


class Message(NamedTuple):
    """One topic record as `apply_messages` takes it (a plain 4-tuple works too)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


class UnreadableMessage(ValueError):
    pass


def _replay(replayed: bool) -> list[tuple[str, bytes]]:
    return [(topics.HEADER_REPLAY, b"1")] if replayed else []


def alert_message(alert: AlertV1, *, replayed: bool = False) -> Message:
    """The record the detector publishes for an alert (the inverse of parsing it)."""
    return Message(
        topics.ALERTS,
        alert.campaign_id.encode(),
        orjson.dumps(alert.model_dump(mode="json")),
        _replay(replayed),
    )


def stats_message(
    stats: StatsV1,
    window: str,
    *,
    tenant_id: str | None = None,
    profile: str | None = None,
    replayed: bool = False,
) -> Message:
    """The record the detector publishes for a minute bucket or a live window. The
    tenant travels in the body (`tenant_id`) and, for older consumers, in a header."""
    if tenant_id is not None and stats.tenant_id is None:
        stats = stats.model_copy(update={"tenant_id": tenant_id})
    return Message(
        topics.STATS,
        stats.campaign_id.encode(),
        orjson.dumps(stats.model_dump(mode="json", by_alias=True)),
        [
            (topics.HEADER_WINDOW, window.encode()),
            (topics.HEADER_TENANT, (tenant_id or stats.tenant_id or "").encode()),
            (topics.HEADER_PROFILE, (profile or "").encode()),
            *_replay(replayed),
        ],
    )


def calls_message(
    campaign_id: str, tenant_id: str, calls: Sequence[Any], *, replayed: bool = False
) -> Message:
    """The record the detector publishes for traced calls (CallV1 or their JSON bodies)."""
    batch = CallBatchV1.model_validate(
        {"campaign_id": campaign_id, "tenant_id": tenant_id, "calls": list(calls)}
    )
    return Message(
        topics.CALLS,
        campaign_id.encode(),
        orjson.dumps(batch.model_dump(mode="json")),
        _replay(replayed),
    )


def _header(headers: Iterable[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value:
            return value.decode("utf-8", errors="replace")
    return None


def _printable(value: str | None, what: str) -> str | None:
    # A control character (NUL above all: PostgreSQL refuses it in text) would fail the
    # batch's transaction on every retry; such an id cannot come from a current ingest.
    if value is not None and not value.isprintable():
        raise UnreadableMessage(f"{what} holds a control character")
    return value


def _bounded(value: str | None, limit: int, what: str) -> str | None:
    if value is not None and len(value) > limit:
        raise UnreadableMessage(f"{what} longer than {limit} characters")
    return value


def _parse_stats(
    body: Any,
    headers: Sequence[tuple[str, bytes]],
    batch: StoreBatch,
    default_tenant: str,
    *,
    replayed: bool = False,
) -> None:
    stats = StatsV1.model_validate(body)
    _printable(stats.campaign_id, "campaign_id")
    window = _bounded(_header(headers, topics.HEADER_WINDOW), _MAX_WINDOW_NAME, "window header")
    if window is None:
        raise UnreadableMessage(f"no {topics.HEADER_WINDOW} header")
    tenant = stats.tenant_id or _bounded(
        _header(headers, topics.HEADER_TENANT), _MAX_TENANT, "tenant header"
    )
    tenant = _printable(tenant, "tenant") or default_tenant
    profile = _bounded(_header(headers, topics.HEADER_PROFILE), _MAX_PROFILE_NAME, "profile")
    counts = {name: getattr(stats, name) for name in COUNT_FIELDS}
    if window == topics.WINDOW_MINUTE:
        start = stats.from_
        if start.second or start.microsecond or stats.to - start != MINUTE:
            raise UnreadableMessage(f"minute bucket [{start}, {stats.to}) is not one minute")
        batch.minutes.append(MinuteBucket(stats.campaign_id, start, counts, tenant))
    elif window == topics.WINDOW_MINUTE_HEAD:
        start = stats.from_
        if start.second or start.microsecond or not start <= stats.to < start + MINUTE:
            raise UnreadableMessage(
                f"minute head [{start}, {stats.to}) does not start a minute and end in it"
            )
        batch.heads.append(MinuteHead(stats.campaign_id, start, stats.to, counts, tenant))
    else:
        batch.windows.append(
            LiveWindow(stats.campaign_id, window, profile, stats.from_, stats.to, counts, tenant)
        )
    batch.sightings.append(Sighting(stats.campaign_id, tenant, profile))
    if not replayed:
        batch.live_feeds.add((tenant, stats.campaign_id))


def _text_field(record: Mapping[str, Any], name: str, limit: int) -> str | None:
    """`record[name]` when it is a printable, non-empty string of at most `limit`
    characters, else None (a dead letter's record is whatever was sent)."""
    value = record.get(name)
    if isinstance(value, str) and value and len(value) <= limit and value.isprintable():
        return value
    return None


def decode_dead_letter(value: bytes, default_tenant: str) -> RejectionSeen | None:
    """The rejection one `cdrwatch.cdrs.dlq.v1` envelope stands for, or None when it names
    no tenant and no campaign (an undecodable record: not attributable to anyone).

    The one place that knows the envelope, as the detector (services/detector/app.py
    `_dead_letter`) and the raw validator (services/ingest/raw.py) write it: a JSON object
    with `reason`, `stage` and `record`, the record as received (an object, text, or null)
    or, for `too_late`, `{call_id, campaign_id, tenant_id}`. The record's `tenant_id`,
    else the default tenant when it names a campaign (both producers file a record without
    a tenant under the default tenant); `campaign_id` "" when only the tenant is known."""
    envelope = orjson.loads(value)
    if not isinstance(envelope, dict):
        raise UnreadableMessage("dead letter is not a JSON object")
    reason = envelope.get("reason")
    stage = envelope.get("stage")
    for what, item, limit in (("reason", reason, _MAX_REASON), ("stage", stage, _MAX_STAGE)):
        if not isinstance(item, str) or not item:
            raise UnreadableMessage(f"dead letter without {what}")
        _printable(_bounded(item, limit, what), what)
    record = envelope.get("record")
    if not isinstance(record, dict):
        return None
    campaign = _text_field(record, "campaign_id", _MAX_CAMPAIGN)
    tenant = _text_field(record, "tenant_id", _MAX_TENANT)
    if tenant is None:
        if campaign is None:
            return None
        tenant = default_tenant
    return RejectionSeen(
        tenant,
        campaign or "",
        str(stage),
        str(reason),
        _text_field(record, "call_id", _MAX_CALL_ID),
    )


def parse_messages(
    messages: Iterable[Message | tuple[Any, ...]],
    *,
    default_tenant: str = DEFAULT_TENANT,
    skipped: Callable[[str], None] | None = None,
) -> StoreBatch:
    """The store writes for a batch of records. A record that cannot be decoded, for any
    reason, is logged, reported to `skipped(topic)` and skipped, never retried (the
    detector and the raw validator are the only producers: a record they cannot have
    meant would fail forever). A
    message without a tenant (older detectors) belongs to `default_tenant`; a message
    with header `cdrwatch-replay: 1` is passed on to the store as replayed."""
    batch = StoreBatch()

    def skip(topic: Any, exc: Exception) -> None:
        log.warning(
            "message_skipped topic=%s error=%s: %s", topic, type(exc).__name__, str(exc)[:500]
        )
        if skipped is not None:
            skipped(str(topic))

    for message in messages:
        topic, _key, value, *rest = message
        headers = rest[0] if rest else ()
        try:
            if value is None:
                raise UnreadableMessage("no value")
            if topic in (topics.ALERTS, topics.STATS):
                # A record batch envelope (schemas.record_batch_v1) or one record; each
                # record of an envelope is read, or skipped, alone.
                for body, record_headers in records_in(value, headers):
                    try:
                        _parse_output(topic, body, record_headers, batch, default_tenant)
                    except Exception as exc:  # one bad record is skipped, its neighbours kept
                        skip(topic, exc)
            elif topic == topics.CALLS:
                # Merged per (tenant, campaign, call id), so a replayed batch is the same
                # upsert as the first (schemas.call_v1).
                traced = CallBatchV1.model_validate(orjson.loads(value))
                for call in traced.calls:
                    batch.calls.append((traced.tenant_id, traced.campaign_id, call))
            elif topic == topics.CDRS_DLQ:
                rejection = decode_dead_letter(value, default_tenant)
                if rejection is not None:
                    batch.rejections.append(rejection)
            else:
                raise UnreadableMessage(f"not a topic the api consumes: {topic}")
        except Exception as exc:  # one bad record is skipped, never a crash loop
            skip(topic, exc)
    return batch


def _parse_output(
    topic: str,
    body: Any,
    headers: Sequence[tuple[str, bytes]],
    batch: StoreBatch,
    default_tenant: str,
) -> None:
    """One alert or stats record of the detector (its decoded JSON value and headers)."""
    replayed = _header(headers, topics.HEADER_REPLAY) == "1"
    if topic == topics.ALERTS:
        alert = AlertV1.model_validate(body)
        for what in ("id", "campaign_id", "tenant_id", "rule", "profile"):
            _printable(getattr(alert, what), what)
        if alert.tenant_id is None:
            alert = alert.model_copy(update={"tenant_id": default_tenant})
        batch.add_alert(alert, replayed=replayed)
    else:
        _parse_stats(body, headers, batch, default_tenant, replayed=replayed)


async def apply_messages(
    store: AlertStore,
    messages: Iterable[Message | tuple[Any, ...]],
    *,
    positions: Mapping[tuple[str, str, int], int] | None = None,
    skipped: Callable[[str], None] | None = None,
) -> StoreBatch:
    """Parse a batch of records and write it, with the consumer `positions` reached
    ((group, topic, partition) -> next offset), in one transaction."""
    batch = parse_messages(messages, default_tenant=store.default_tenant, skipped=skipped)
    batch.positions.update(positions or {})
    await store.apply_batch(batch)
    return batch


ConsumerFactory = Callable[[], AIOKafkaConsumer]


class _SeekToStoredPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self, consumer: AIOKafkaConsumer, store: AlertStore, group_id: str, bootstrap: str
    ) -> None:
        self._consumer = consumer
        self._store = store
        self._group_id = group_id
        self._bootstrap = bootstrap

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        partitions = list(assigned)
        stored = await self._store.consumer_positions(self._group_id)
        ends = await self._consumer.end_offsets(partitions) if partitions else {}
        beyond = {
            tp: ends[tp]
            for tp in partitions
            if tp in ends and stored.get((tp.topic, tp.partition), -1) > ends[tp]
        }
        if beyond:
            # The embedded broker reports an end short of the last record batch: confirm
            # before taking a stored position for one beyond the log (a full re-read).
            ends.update(await confirm_log_ends(self._bootstrap, beyond))
        for tp in partitions:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                continue
            if offset > ends.get(tp, offset):
                # The log is shorter than what we already read: the topic was recreated
                # (e.g. an in-memory broker restarted). Read it again from the start; the
                # stats (last write wins) and alert (by id) upserts are idempotent.
                log.warning(
                    "consumer_position_beyond_log_end topic=%s partition=%s stored=%s end=%s",
                    tp.topic,
                    tp.partition,
                    offset,
                    ends.get(tp),
                )
                await self._consumer.seek_to_beginning(tp)
                continue
            self._consumer.seek(tp, offset)


class StoreConsumer:
    """Runs the consumer loop, restarting it with back-off after any failure.

    `running` is True while connected to the broker and consuming; `newest_output_at` is
    the broker timestamp of the newest record consumed (the detector's produce time), from
    which /metrics derives cdrwatch_detector_lag_seconds.
    """

    def __init__(
        self,
        settings: ApiSettings,
        store: AlertStore,
        *,
        consumer_factory: ConsumerFactory | None = None,
        max_records: int = 2000,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._factory = consumer_factory or self._kafka_consumer
        self._max_records = max_records
        self.running = False
        self.newest_output_at: datetime | None = None
        self.skipped_total = 0
        self._skipped_metric = (
            None
            if registry is None
            else Counter(
                "cdrwatch_api_messages_skipped_total",
                "Detector messages the api could not decode and skipped, by topic.",
                ["topic"],
                registry=registry,
            )
        )

    def _skipped(self, topic: str) -> None:
        self.skipped_total += 1
        if self._skipped_metric is not None:
            self._skipped_metric.labels(topic=topic).inc()

    def _kafka_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=self._settings.consumer_group,
            client_id="cdrwatch-api",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=self._settings.kafka_fetch_max_wait_ms,
        )

    async def run(self) -> None:
        """Consume until cancelled."""
        delay = 0.5
        while True:
            consumer = self._factory()
            try:
                await consumer.start()
                consumer.subscribe(
                    [topics.ALERTS, topics.STATS, topics.CALLS, topics.CDRS_DLQ],
                    listener=_SeekToStoredPositions(
                        consumer,
                        self._store,
                        self._settings.consumer_group,
                        self._settings.kafka_bootstrap,
                    ),
                )
                self.running = True
                delay = 0.5
                log.info("consumer_started group=%s", self._settings.consumer_group)
                while True:
                    await self.consume_once(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer_failed error=%r retry_in_s=%s", exc, delay)
            finally:
                self.running = False
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def consume_once(self, consumer: AIOKafkaConsumer) -> int:
        """Fetch one batch, store it in one transaction, then commit its offsets."""
        fetched = await consumer.getmany(timeout_ms=1000, max_records=self._max_records)
        messages: list[Message] = []
        offsets: dict[TopicPartition, int] = {}
        newest = 0
        for tp, records in fetched.items():
            for record in records:
                messages.append(Message(record.topic, record.key, record.value, record.headers))
                newest = max(newest, record.timestamp or 0)
            if records:
                offsets[tp] = records[-1].offset + 1
        if not offsets:
            return 0
        group = self._settings.consumer_group
        await apply_messages(
            self._store,
            messages,
            positions={(group, tp.topic, tp.partition): n for tp, n in offsets.items()},
            skipped=self._skipped,
        )
        await consumer.commit(offsets)
        if newest > 0:
            produced = datetime.fromtimestamp(newest / 1000, UTC)
            if self.newest_output_at is None or produced > self.newest_output_at:
                self.newest_output_at = produced
        return len(messages)
