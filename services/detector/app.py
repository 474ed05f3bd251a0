"""The faust worker: topics, the state table and the agent. Translation only; every
decision is made by `services.detector.core.engine.Engine`.

Design notes (why it looks like this):
- One table (`state`) holds seen-entries, minute buckets and campaign records under
  prefixed keys, so their change log is ONE ordered log per partition; the engine's write
  order on top of that is what makes a kill -9 and restart exact (see engine docstring).
- Events are processed in batches (`take_events`); faust acks a batch only after the body
  ran, and flushes its producer (change log, stats, alerts) before committing offsets, so
  every output is published at least once; downstream upserts make that exact. faust's
  flush alone does not guarantee that (see `DeliveryGuard`): the guard makes a commit wait
  until every record sent before it was acknowledged by the broker.
- A restart re-reads from the committed offset events whose change log already landed
  while their stats and alerts (other topics, no common order with the change log) did
  not; the engine re-emits the current figures of what they touched (engine docstring).
- Table writes need to know their partition: faust takes it from the "current event"
  context variable. In a batch the current event is not the one whose state we write, so
  `TableState` sets that variable to an event of the right partition around each write.
- faust's hopping windows are not used (SPEC "Windows": they key one entry per window per
  event and expire on the wall clock); buckets are event-time minutes, summed on read.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shutil
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall_time
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.streams import _current_event  # see module docstring: partition context
from faust.types import TP, EventT
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from schemas import topics
from schemas.cdr_batch_v1 import (
    EnvelopeError,
    input_position,
    message_offset,
    record_in_envelope,
)
from services.common.gc_tuning import tune_for_throughput
from services.common.kafka import BrokerHealth, confirm_log_ends, first_offset_from, reader
from services.common.loops import run_apart
from services.common.settings import DetectorSettings
from services.detector import stage_guard, wire
from services.detector.changelog import BatchedChangelog
from services.detector.contiguous import ContiguousReads
from services.detector.core import lockouts
from services.detector.core.alerting import AlertUpdate
from services.detector.core.engine import (
    BatchOutput,
    BucketState,
    ByIdentity,
    CampaignConfig,
    CampaignState,
    DayViolations,
    Engine,
    Event,
)
from services.detector.core.profiles import ProfileError, load_profile
from services.detector.core.retention import bucket_expired, seen_expired
from services.detector.core.windows import MinuteIndex, instant_of_us, minute_of, minute_start
from services.detector.health import DetectorHttp, Readiness
from services.detector.metrics import DetectorMetrics
from services.detector.pacing import AlertPacer
from services.detector.restore import restore_before_start
from services.detector.wire import (
    EARLIEST,
    LATEST,
    UnprocessableRecord,
    scoped_key,
    split_scoped,
)

log = logging.getLogger("cdrwatch.detector")

SEEN, BUCKET, CAMPAIGN, VIOLATIONS = "s\x1f", "b\x1f", "c\x1f", "v\x1f"
# The long poll of the consumers that read a topic to its end on demand (campaign settings,
# the stage guard's heartbeats): the broker answers other requests on the connection after.
CATCH_UP_FETCH_WAIT_MS = 50
SEEN_CHUNK = "S\x1f"  # the seen-entries one batch added in one partition (TableState)


@contextlib.contextmanager
def writing_as(event: EventT) -> Iterator[None]:
    """Make faust take `event` for the current one in what follows: a table write goes to
    the change log (and store) partition of that event (see module docstring)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class TableState:
    """`StateStore` on one faust table, writing each key in its source partition.

    Seen-entries (dedup) are written in chunks: the entries a batch adds in one partition
    go to the change log as ONE record `S<partition>/<first offset>` instead of one record
    per call (issue 7: a change-log record costs 150-450 µs through faust's producer). A
    chunk is written before any other key of its partition (`_put` flushes it first), so
    the change log keeps the engine's order (seen-entries, buckets, campaign record) and a
    crash still cuts it only between whole records. Lookups go through an index
    {call key: entry} built from the table on first use after an assignment (the table is
    recovered from the change log by then) and kept up to date by every write.
    """

    def __init__(self, table: Any) -> None:
        self._table = table
        self._event_of_partition: dict[int, EventT] = {}
        # partition -> {call key -> the entry its seen chunk holds} (`_seen_index`)
        self._seen: dict[int, dict[str, Sequence[Any]]] | None = None
        self._pending_seen: dict[int, list[Sequence[Any]]] = {}
        self._minutes: MinuteIndex | None = None  # the bucket minutes, like the seen index
        # campaign -> (the record object the table holds, that record decoded): see
        # `get_campaign`.
        self._campaigns: dict[str, tuple[Any, CampaignState]] = {}

    def bind(self, events: Iterable[EventT]) -> None:
        for event in events:
            self._event_of_partition[event.message.partition] = event

    def forget_indexes(self) -> None:
        """Rebuild the seen and bucket-minute indexes from the table on next use (after a
        reassignment)."""
        self._seen = None
        self._minutes = None
        self._campaigns = {}

    def _in_partition(self, partition: int) -> contextlib.AbstractContextManager[None]:
        """Make faust write the change log of what follows to `partition`."""
        return writing_as(self._event_of_partition[partition])

    def _put(self, key: str, value: Any, partition: int) -> None:
        if self._pending_seen:
            self.flush_seen()
        with self._in_partition(partition):
            self._table[key] = value

    def delete(self, key: str, partition: int) -> None:
        if self._pending_seen:
            self.flush_seen()
        with self._in_partition(partition):
            del self._table[key]
        if key.startswith(BUCKET) and self._minutes is not None:
            campaign_id, _, minute = key[len(BUCKET) :].rpartition("\x1f")
            self._minutes.discard(campaign_id, int(minute))

    # -- dedup entries ---------------------------------------------------------------------

    def _seen_index(self) -> dict[int, dict[str, Sequence[Any]]]:
        """{partition: {call key: its entry `(call key, offset, minute, campaign)`}}: the
        very entries the table's seen chunks hold, so an entry costs its tuple in the chunk
        and a slot here, not another copy (1,000,000 calls within the dedup retention)."""
        if self._seen is None:
            index: dict[int, dict[str, Sequence[Any]]] = {}
            for key, value in list(self._table.items()):
                if key.startswith(SEEN_CHUNK):
                    partition = int(key[len(SEEN_CHUNK) :].partition("\x1f")[0])
                    entries = index.setdefault(partition, {})
                    for entry in value:
                        entries[entry[0]] = entry
                elif key.startswith(SEEN):  # one record per call (before chunks)
                    partition, offset, minute, campaign_id = value
                    call_key = key[len(SEEN) :]
                    index.setdefault(partition, {})[call_key] = (
                        call_key,
                        offset,
                        minute,
                        campaign_id,
                    )
            self._seen = index
        return self._seen

    def get_seen(self, key: str) -> tuple[int, int, int, str] | None:
        for partition, entries in self._seen_index().items():
            entry = entries.get(key)
            if entry is not None:
                return partition, entry[1], entry[2], entry[3]
        return None

    def put_seen(self, key: str, value: tuple[int, int, int, str], partition: int) -> None:
        entry_partition, offset, minute, campaign_id = value
        entry = (key, offset, minute, campaign_id)  # a tuple: untracked by the collector
        self._pending_seen.setdefault(partition, []).append(entry)
        self._seen_index().setdefault(entry_partition, {})[key] = entry

    def flush_seen(self) -> None:
        """Write the seen-entries added since the last flush, one record per partition."""
        pending, self._pending_seen = self._pending_seen, {}
        for partition, entries in pending.items():
            chunk = f"{SEEN_CHUNK}{partition}\x1f{entries[0][1]}"
            stored = self._table.get(chunk)  # the same first offset written before a crash
            if stored:
                known = {e[0] for e in entries}
                entries = [e for e in stored if e[0] not in known] + entries
            with self._in_partition(partition):
                self._table[chunk] = entries

    # -- expiry ----------------------------------------------------------------------------

    def sweep(self, dedup_retention: timedelta, lateness: timedelta) -> int:
        """Delete expired seen-entries and buckets of the partitions bound so far (see
        core.retention); deletions go to the change log as tombstones, a seen chunk that
        keeps some entries is written again without the others. Returns how many entries
        expired.

        A full scan: cheap for the in-memory store at the sizes one worker holds today;
        it runs every `sweep_interval_seconds`, not per batch.
        """
        self.flush_seen()
        newest: dict[str, int | None] = {}

        def newest_minute(campaign_id: str) -> int | None:
            if campaign_id not in newest:
                state = self.get_campaign(campaign_id)
                newest[campaign_id] = None if state is None else state.newest_minute
            return newest[campaign_id]

        def seen_gone(minute: int, campaign_id: str) -> bool:
            top = newest_minute(campaign_id)
            return top is not None and seen_expired(minute, top, dedup_retention)

        doomed: list[tuple[str, int]] = []
        shrunk: list[tuple[str, list[Sequence[Any]], int]] = []  # (chunk, kept entries, expired)
        for key, value in list(self._table.items()):
            if key.startswith(SEEN_CHUNK):
                kept = [e for e in value if not seen_gone(e[2], e[3])]
                if len(kept) < len(value):
                    shrunk.append((key, kept, len(value) - len(kept)))
            elif key.startswith(SEEN):
                partition, _offset, minute, campaign_id = value
                if seen_gone(minute, campaign_id):
                    doomed.append((key, partition))
            elif key.startswith(BUCKET):
                campaign_id, _, minute_text = key[len(BUCKET) :].rpartition("\x1f")
                top = newest_minute(campaign_id)
                state_partition = self._partition_of_campaign(campaign_id)
                if (
                    top is not None
                    and state_partition is not None
                    and bucket_expired(int(minute_text), top, lateness)
                ):
                    doomed.append((key, state_partition))
            elif key.startswith(VIOLATIONS):
                # A day record goes with the day's last minute: once no late call can reach
                # that day any more, its alert in the api store is final.
                campaign_id, _rule, day_text = key[len(VIOLATIONS) :].split("\x1f")
                top = newest_minute(campaign_id)
                state_partition = self._partition_of_campaign(campaign_id)
                day_end = minute_of(
                    datetime.combine(
                        date.fromisoformat(day_text) + timedelta(days=2), wall_time(0), UTC
                    )
                )
                if (
                    top is not None
                    and state_partition is not None
                    and bucket_expired(day_end, top, lateness)
                ):
                    doomed.append((key, state_partition))
        deleted = 0
        index = self._seen_index()
        for chunk, kept, expired in shrunk:
            partition = int(chunk[len(SEEN_CHUNK) :].partition("\x1f")[0])
            if partition not in self._event_of_partition:
                continue
            kept_keys = {entry[0] for entry in kept}
            entries = index.get(partition, {})
            for entry in self._table[chunk]:
                if entry[0] not in kept_keys:
                    entries.pop(entry[0], None)
            if kept:
                self._put(chunk, kept, partition)
            else:
                self.delete(chunk, partition)
            deleted += expired
        for key, partition in doomed:
            if partition in self._event_of_partition:
                if key.startswith(SEEN):
                    index.get(partition, {}).pop(key[len(SEEN) :], None)
                self.delete(key, partition)
                deleted += 1
        return deleted

    def _partition_of_campaign(self, campaign_id: str) -> int | None:
        raw = self._table.get(CAMPAIGN + campaign_id)
        return None if raw is None else raw.get("partition")

    def get_bucket(self, campaign_id: str, minute: int) -> BucketState | None:
        raw = self._table.get(f"{BUCKET}{campaign_id}\x1f{minute}")
        return None if raw is None else BucketState.from_json(raw)

    def put_bucket(self, campaign_id: str, minute: int, state: BucketState, partition: int) -> None:
        self._put(f"{BUCKET}{campaign_id}\x1f{minute}", state.to_json(), partition)
        self._minute_index().add(campaign_id, minute)

    def bucket_minutes(self, campaign_id: str, first: int, last_exclusive: int) -> list[int]:
        return self._minute_index().between(campaign_id, first, last_exclusive)

    def _minute_index(self) -> MinuteIndex:
        """{campaign: its bucket minutes}, built from the table on first use after an
        assignment (recovered by then) and kept by every bucket write and deletion."""
        if self._minutes is None:
            index = MinuteIndex()
            for key in list(self._table.keys()):
                if key.startswith(BUCKET):
                    campaign_id, _, minute = key[len(BUCKET) :].rpartition("\x1f")
                    index.add(campaign_id, int(minute))
            self._minutes = index
        return self._minutes

    def get_day_violations(self, campaign_id: str, rule_id: str, day: date) -> DayViolations | None:
        raw = self._table.get(f"{VIOLATIONS}{campaign_id}\x1f{rule_id}\x1f{day.isoformat()}")
        return None if raw is None else DayViolations.from_json(raw)

    def put_day_violations(
        self, campaign_id: str, rule_id: str, day: date, state: DayViolations, partition: int
    ) -> None:
        key = f"{VIOLATIONS}{campaign_id}\x1f{rule_id}\x1f{day.isoformat()}"
        self._put(key, state.to_json(), partition)

    def has_campaign(self, campaign_id: str) -> bool:
        """Whether the campaign has a record (without decoding it)."""
        return self._table.get(CAMPAIGN + campaign_id) is not None

    def get_campaign(self, campaign_id: str) -> CampaignState | None:
        """The campaign's record, decoded once per write: while the table holds the very
        object `put_campaign` (or an earlier read) saw, a copy of its decoded state is
        returned instead of decoding it again. A record faust's recovery put there is
        another object and is decoded. (A campaign's record is read twice a batch that
        touches it and its evidence samples and alerts grow: decoding it went from 5 to 8 %
        of the CDR stage's time over 1,000,000 CDRs of 2,000 campaigns, cProfile.)"""
        raw = self._table.get(CAMPAIGN + campaign_id)
        if raw is None:
            return None
        held = self._campaigns.get(campaign_id)
        if held is not None and held[0] is raw:
            return held[1].copy()
        state = CampaignState.from_json(raw)
        self._campaigns[campaign_id] = (raw, state.copy())
        return state

    def put_campaign(self, campaign_id: str, state: CampaignState, partition: int) -> None:
        raw = {**state.to_json(), "partition": partition}
        self._put(CAMPAIGN + campaign_id, raw, partition)
        self._campaigns[campaign_id] = (raw, state.copy())


class CampaignConfigs:
    """Campaign profiles from `cdrwatch.campaigns.v1` (written by PUT /v1/campaigns/{id}).

    Every worker reads the whole topic (no consumer group) into memory: configurations are
    few and every worker needs the ones of the campaigns it owns after any rebalance.
    """

    def __init__(self, settings: DetectorSettings) -> None:
        self._settings = settings
        self._default = CampaignConfig(load_profile(settings.default_profile))
        self._configs: dict[str, CampaignConfig] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._partitions: list[TopicPartition] = []
        # Set once start() has read the topic: the agents may get their first events
        # before this service started (a replayed archive is there at once).
        self._started = asyncio.Event()
        self._starting = False

    def config_for(self, scoped: str) -> CampaignConfig:
        """The configuration of a campaign by its scoped key `tenant/campaign`."""
        return self._configs.get(scoped, self._default)

    @property
    def awaiting_start(self) -> bool:
        """A running worker whose settings were not read yet."""
        return self._starting and not self._started.is_set()

    @property
    def started(self) -> bool:
        """True once the settings written before the worker started were read."""
        return self._started.is_set()

    def knows(self, scoped: str) -> bool:
        return scoped in self._configs

    def apply(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            record = wire.read_settings(value)
            campaign_id = record.campaign_id
            tenant_id = record.tenant_id or self._settings.default_tenant
            profile = load_profile(
                record.profile or self._settings.default_profile, record.overrides or None
            )
            ratio = Fraction(str(record.amd_false_positive_ratio))
        except (ProfileError, ValueError, KeyError, TypeError, ArithmeticError) as exc:
            log.error("campaign_config_unreadable error=%s", exc)
            return
        # Keyed by the scoped key: a setting applies to its tenant's campaign only.
        self._configs[scoped_key(tenant_id, campaign_id)] = CampaignConfig(profile, ratio)

    def expect_start(self) -> None:
        """A worker is running and will start this service: until it has, events wait."""
        self._starting = True

    async def start(self) -> None:
        self._consumer = reader(
            self._settings.kafka_bootstrap,
            "cdrwatch-campaign-settings",
            # `catch_up` asks for the end offsets on this consumer's connection, where the
            # broker answers only after the fetch it holds: a long poll of 500 ms (the
            # default) stalled every catch-up, at each start and each new campaign.
            fetch_max_wait_ms=CATCH_UP_FETCH_WAIT_MS,
        )
        await self._consumer.start()
        parts = await self._consumer._client.fetch_all_metadata()  # noqa: SLF001
        numbers = parts.partitions_for_topic(topics.CAMPAIGNS) or set()
        self._partitions = [TopicPartition(topics.CAMPAIGNS, p) for p in sorted(numbers)]
        if self._partitions:
            self._consumer.assign(self._partitions)
            await self._consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._run())
        await self.catch_up(wait_start=False)
        self._started.set()

    async def _run(self) -> None:
        assert self._consumer is not None
        if not self._partitions:
            return
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for message in messages:
                    self.apply(message.value)

    async def catch_up(self, timeout: float = 5.0, *, wait_start: bool = True) -> None:
        """Wait until every configuration written so far is applied (bounded), and first
        until the service started (bounded by 30 s) if a worker is to start it (the engine
        driven without a broker, as the adapter tests do, has nothing to wait for)."""
        if wait_start and self._starting and not self._started.is_set():
            try:
                await asyncio.wait_for(self._started.wait(), 30.0)
            except TimeoutError:
                log.warning("campaign_config_start_timeout timeout_s=30")
        if self._consumer is None or not self._partitions:
            return
        ends = await self._consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The reported end may stop short of the last record batch (the embedded
            # broker, see confirm_log_ends); the high watermark of this consumer's own
            # fetches is the true end: wait for that too once a fetch has seen it.
            positions = [await self._position(tp) for tp in ends]
            if all(
                pos >= max(end, self._consumer.highwater(tp) or 0)
                for pos, (tp, end) in zip(positions, ends.items(), strict=True)
            ):
                return
            await asyncio.sleep(0.02)
        log.warning("campaign_config_catch_up_timeout timeout_s=%s", timeout)

    async def _position(self, tp: TopicPartition) -> int:
        assert self._consumer is not None
        return await self._consumer.position(tp)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()


class DeliveryGuard:
    """Offsets are committed only after everything sent before the commit was delivered.

    faust commits a source offset after `producer.flush()`, which is meant to push out the
    change log, stats and alerts of every acked event first. But faust's
    `ProducerBuffer.flush()` (faust-streaming 0.15) waits at most 0.1 s for each message to
    leave its buffer and then RETURNS with messages still queued (`flush_atmost`: a
    `wait_for(..., timeout=0.1)` whose TimeoutError ends the flush); the aiokafka flush
    that follows covers only what already left the buffer. Under load (a batch writes
    thousands of records, the loop is busy) the offset commit then overtakes the batch's
    change-log records; a SIGKILL before they are sent loses them for good: the events are
    past the committed offset and are never read again, so the buckets they counted in end
    short (tests/service/test_detector_delivery.py reproduces the early return).

    The guard tracks every `FutureMessage` put into the producer buffer (faust resolves it
    when the broker acknowledged the record) and makes `producer.flush()` wait for all of
    those queued before the flush began. A record that failed makes the flush (hence the
    commit) fail, so the events are read again: at-least-once, never a commit over a hole.
    """

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[Any]] = set()
        # Run at the start of every flush, before the records to wait for are taken: what
        # must leave before a commit and is not in the producer yet (held alert updates).
        self.before_flush: Callable[[], Awaitable[None]] | None = None

    def track(self, fut: asyncio.Future[Any]) -> None:
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def wait_delivered(self, futures: Iterable[asyncio.Future[Any]]) -> None:
        waiting = [f for f in futures if not f.done()]
        if waiting:
            await asyncio.wait(waiting)
        for fut in futures:
            if fut.cancelled():
                raise RuntimeError("a record sent before the commit was cancelled")
            exc = fut.exception()
            if exc is not None:
                raise RuntimeError(f"a record sent before the commit failed: {exc!r}") from exc

    def install(self, producer: Any) -> Any:
        """Wrap `producer.buffer.put` and `producer.flush` (instance attributes)."""
        buffer = producer.buffer
        put = buffer.put
        flush = producer.flush

        def tracked_put(fut: Any) -> None:
            self.track(fut)
            put(fut)

        async def flush_delivered() -> None:
            if self.before_flush is not None:
                await self.before_flush()
            sent_before = list(self._pending)
            await flush()
            await self.wait_delivered(sent_before)

        buffer.put = tracked_put
        producer.flush = flush_delivered
        return producer


class _GuardedApp(faust.App):
    """A faust app whose producer commits only over delivered records (DeliveryGuard) and
    whose table recovery reads each change log to its confirmed end (`confirm_log_ends`:
    faust reads up to the ListOffsets answer, which the embedded broker gives short)."""

    def __init__(
        self,
        *args: Any,
        bootstrap: str,
        contiguous_topics: Iterable[str],
        fetch_max_wait_ms: int,
        **kwargs: Any,
    ) -> None:
        self.delivery_guard = DeliveryGuard()
        self._bootstrap = bootstrap
        self._fetch_max_wait_ms = fetch_max_wait_ms

        async def probe(topic: str, partition: int, offset: int) -> int | None:
            return await first_offset_from(bootstrap, topic, partition, offset)

        self.contiguous = ContiguousReads(contiguous_topics, probe)
        super().__init__(*args, **kwargs)

    def _new_producer(self) -> Any:
        return self.delivery_guard.install(super()._new_producer())

    def _new_consumer(self) -> Any:
        consumer = self.contiguous.install(super()._new_consumer())
        reported_highwaters = consumer.highwaters
        bootstrap = self._bootstrap

        async def confirmed_highwaters(*partitions: Any) -> dict[Any, int | None]:
            reported = await reported_highwaters(*partitions)
            known = {
                TopicPartition(tp.topic, tp.partition): end
                for tp, end in reported.items()
                if end is not None
            }
            confirmed = await confirm_log_ends(bootstrap, known)
            return {
                tp: confirmed.get(TopicPartition(tp.topic, tp.partition), end)
                for tp, end in reported.items()
            }

        consumer.highwaters = confirmed_highwaters
        # faust builds its aiokafka consumer with fetch_max_wait_ms=1500 and no setting to
        # change it (CommonSettings.kafka_fetch_max_wait_ms says why that matters): the
        # consumer is built when faust's consumer thread starts, and takes the wait to its
        # fetcher when it starts, after this.
        thread = consumer._thread
        create_worker_consumer = thread._create_worker_consumer
        fetch_max_wait_ms = self._fetch_max_wait_ms

        def create_waiting_less(transport: Any) -> Any:
            worker_consumer = create_worker_consumer(transport)
            worker_consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return worker_consumer

        thread._create_worker_consumer = create_waiting_less
        commit = consumer._commit

        async def logged_commit(offsets: Any) -> bool:
            done = await commit(offsets)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "offsets_committed done=%s %s",
                    done,
                    " ".join(f"{tp.topic}/{tp.partition}={o}" for tp, o in offsets.items()),
                )
            return bool(done)

        consumer._commit = logged_commit
        return consumer


class _NamedChangelogTable(faust.Table):  # type: ignore[misc]
    """A faust table whose change-log topic is `changelog_name` instead of faust's
    `<app id>-<table>-changelog` (with every other property of the topic faust's)."""

    def __init__(self, app: faust.App, *, changelog_name: str, **kwargs: Any) -> None:
        self._changelog_name = changelog_name
        # Called as the table stops, its agents done and its store still open.
        self.before_stop: Callable[[], None] | None = None
        super().__init__(app, **kwargs)

    def _changelog_topic_name(self) -> str:
        return self._changelog_name

    async def on_stop(self) -> None:
        if self.before_stop is not None:
            self.before_stop()
        await super().on_stop()


@dataclass
class _Chunk:
    """The calls of the CDR messages the engine counts at once (`Detector.handle`)."""

    decoded: list[Event] = field(default_factory=list)
    replayed: set[str] = field(default_factory=set)  # campaigns with a replayed record
    newest_accepted: datetime | None = None
    started: float = field(default_factory=time.perf_counter)


def _faust_broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


class Detector:
    """Wires the faust app, the engine and the publishers together."""

    def __init__(
        self,
        settings: DetectorSettings,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.registry = registry or CollectorRegistry()
        self.metrics = DetectorMetrics(self.registry)
        # Heartbeats of the per-callee stage's form (stage_guard): `all` and `callees` only.
        self.stage_guard = (
            stage_guard.StageGuard(
                settings.kafka_bootstrap,
                settings.app_id,
                settings.stage,
                settings.stage_check_seconds,
                replication_factor=settings.kafka_replication_factor,
            )
            if settings.stage in stage_guard.FORMS
            else None
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # The stages this worker runs (DetectorSettings.stage). Topic names derive from
        # `settings.app_id` whatever the stage; a "callees" worker is its own faust app.
        self.runs_cdrs = settings.stage in ("all", "cdrs")
        self.runs_callees = settings.stage in ("all", "callees")
        callee_calls = f"{settings.app_id}-callee-calls"
        violations = f"{settings.app_id}-lockout-violations"
        self.app = _GuardedApp(
            settings.app_id if self.runs_cdrs else f"{settings.app_id}-callees",
            broker=_faust_broker_url(settings.kafka_bootstrap),
            bootstrap=settings.kafka_bootstrap,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            contiguous_topics=(
                *((topics.CDRS, violations) if self.runs_cdrs else ()),
                *((callee_calls,) if self.runs_callees else ()),
            ),
            store=settings.store,
            web_enabled=False,
            # A "callees" worker is another faust app: its files apart from the CDR stage's
            # (one data dir may hold both; everything under "detector" is derived state).
            datadir=str(
                settings.data_dir / "detector" / ("callees-worker" if not self.runs_cdrs else "")
            ),
            topic_partitions=settings.kafka_partitions,
            topic_replication_factor=settings.kafka_replication_factor,
            broker_session_timeout=settings.session_timeout_seconds,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
            broker_commit_interval=1.0,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_linger_ms=5,
            table_key_serializer="json",
            table_value_serializer="json",
        )
        # The tables' change logs and every output go out in record batches once per
        # processed batch (services/detector/changelog.py), not through faust's producer.
        self.changelog = BatchedChangelog(settings.kafka_bootstrap, self.app.delivery_guard.track)
        self.cdrs = self.app.topic(topics.CDRS, key_serializer="raw", value_serializer="raw")
        self.alerts = self.changelog.topic(topics.ALERTS, batched=True)
        # Transitions at once, new figures at most once per alert and interval; what is
        # held leaves before the next offset commit (the producer flush faust awaits).
        self.alert_pacer = AlertPacer(
            self._send_alert,
            settings.alert_update_interval_seconds,
            monotonic,
            self.metrics.alerts_coalesced.inc,
        )
        self.app.delivery_guard.before_flush = self.before_commit
        self.stats = self.changelog.topic(topics.STATS, batched=True)
        self.dlq = self.changelog.topic(topics.CDRS_DLQ)
        self.traces = self.changelog.topic(topics.CALLS)
        # The per-callee stage: calls re-keyed by (tenant, pseudonymised callee), and the
        # violations it finds keyed back by campaign (same partition count as the CDRs).
        # The faust topics are the agents' sources; sending goes through the batches.
        self.callee_source = self.app.topic(
            callee_calls,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.kafka_partitions,
            internal=True,
        )
        self.violation_source = self.app.topic(
            violations,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.kafka_partitions,
            internal=True,
        )
        self.callee_topic = self.changelog.topic(self.callee_source.get_topic_name())
        self.violation_topic = self.changelog.topic(self.violation_source.get_topic_name())
        self._callee_partition = wire.CalleePartitions(settings.kafka_partitions)
        # `LockoutRules.of(profile)` once per profile object (it validates the zone).
        self._lockout_rules = ByIdentity(lockouts.LockoutRules.of)
        self._callee_campaigns: set[str] = set()  # campaigns the callee stage has seen
        self.callees: Any = None
        self._callee_changelog = ""  # its change-log topic, when in RocksDB
        if self.runs_callees:
            self.callees = self._callee_table(settings)
            self.changelog.install(self.callees)
        if self.runs_cdrs:
            self.table = self.app.Table(
                "state",
                default=None,
                partitions=settings.kafka_partitions,
            )
            self.changelog.install(self.table)
        else:
            self.table = {}  # never written: the campaign state lives in the "cdrs" worker
        self.state = TableState(self.table)
        self.configs = CampaignConfigs(settings)
        self.engine = Engine(
            self.state,
            self.configs.config_for,
            lateness=timedelta(days=settings.lateness_days),
            clock=clock,
        )
        self._next_sweep = time.monotonic() + settings.sweep_interval_seconds
        # CDR partition -> the offset after the highest one handed to the engine since the
        # last assignment (see `_note_order`).
        self._applied_next: dict[int, int] = {}
        self.broker_health = BrokerHealth(
            settings.kafka_bootstrap, settings.broker_probe_interval_seconds
        )
        self._register()

    def _callee_table(self, settings: DetectorSettings) -> Any:
        """The per-callee histories. Its change log is `<app_id>-callees-changelog` in
        every stage form: faust names it after the app, and a "callees" worker's app is
        `<app_id>-callees`, so the name is given."""
        rocks = settings.callee_store.startswith("rocksdb")
        files = LocalStore(Path(self.app.conf.tabledir), "callees")
        if rocks:
            files.open()
        table = self.app.tables.add(
            _NamedChangelogTable(
                self.app,
                name="callees",
                changelog_name=f"{settings.app_id}-callees-changelog",
                default=None,
                beacon=self.app.tables.beacon,
                partitions=settings.kafka_partitions,
                store=settings.callee_store,
                options=callee_store_options(settings) if rocks else None,
            )
        )
        if rocks:
            _write_without_wal(table.data)
            topic = self._callee_changelog = table.changelog_topic.get_topic_name()
            delivered = self.changelog.delivered.setdefault(topic, {})
            table.before_stop = lambda: files.close_clean(table.data, topic, delivered)
        return table

    def restore_callee_files(self) -> None:
        """Before the worker starts: bring the per-callee RocksDB files up to their change
        log's end in bulk (services/detector/restore.py); faust's recovery reads the rest.
        Nothing to do without a per-callee stage in RocksDB."""
        if self._callee_changelog:
            restore_before_start(
                self.settings.kafka_bootstrap, self._callee_changelog, self.callees.data
            )

    def _register(self) -> None:
        app = self.app

        if self.runs_cdrs:

            @app.agent(self.cdrs, name="cdrwatch-detector-process")
            async def process(stream: Any) -> None:
                # A running worker starts the Configs service below: until it has, a
                # campaign seen for the first time waits for it (the adapter tests drive
                # `handle` alone).
                self.configs.expect_start()
                await self._run_batches(stream, "cdrs", self.handle)

            @app.agent(self.violation_source, name="cdrwatch-detector-lockouts")
            async def lockouts(stream: Any) -> None:
                await self._run_batches(stream, "lockouts", self.handle_lockout_violations)

        if self.runs_callees:

            @app.agent(self.callee_source, name="cdrwatch-detector-callees")
            async def callees(stream: Any) -> None:
                self.configs.expect_start()
                await self._run_batches(stream, "callees", self.handle_callee_batch)

        @app.on_partitions_assigned.connect  # type: ignore[misc]
        async def on_assigned(*_args: Any, **_kwargs: Any) -> None:
            self.engine.reset_caches()
            self.state.forget_indexes()
            self._applied_next.clear()

        @app.service
        class Configs(faust.Service):  # noqa: N801 - faust registers the class itself
            async def on_start(inner) -> None:  # noqa: N805
                # The topic each stage writes for the other: created here too, as a stage
                # may send before the worker that reads it has started.
                for topic in (self.callee_source, self.violation_source):
                    await topic.maybe_declare()
                await self.changelog.start()
                await self.configs.start()

            async def on_stop(inner) -> None:  # noqa: N805
                await self.configs.stop()
                # The agents are done: what they held goes out before the last commit.
                self.alert_pacer.release_all()
                await self.changelog.flush()
                await self.changelog.stop()

        if self.stage_guard is not None:
            guard = self.stage_guard

            @app.service
            class StageHeartbeats(faust.Service):  # noqa: N801 - faust registers the class
                async def on_start(inner) -> None:  # noqa: N805
                    # The first heartbeat at once, not one interval later: a worker of the
                    # other form starting in between is then refused. (A failure here is
                    # logged; each timer tick tries again.)
                    await self.check_stage()

                async def on_stop(inner) -> None:  # noqa: N805
                    with contextlib.suppress(Exception):
                        await guard.stop(beat=True)

            @app.timer(self.settings.stage_check_seconds)
            async def stage_check() -> None:
                await self.check_stage()

        if self.settings.metrics_port:
            http = DetectorHttp(
                self.settings.metrics_host,
                self.settings.metrics_port,
                self.registry,
                self.readiness,
            )

            @app.service
            class Http(faust.Service):  # noqa: N801 - faust registers the class itself
                async def on_start(inner) -> None:  # noqa: N805
                    await self.broker_health.start()
                    await http.start()

                async def on_stop(inner) -> None:  # noqa: N805
                    await http.stop()
                    await self.broker_health.stop()

    async def check_stage(self) -> stage_guard.StageConflict | None:
        """This worker's heartbeat, and whether the per-callee stage runs in both forms
        (services/detector/stage_guard.py): the gauge says so, and an error is logged each
        check while it does."""
        guard = self.stage_guard
        if guard is None:
            return None
        try:
            if not guard.started:
                await guard.start()
            await guard.beat()
            conflict = await guard.check()
        except Exception as exc:  # the broker away: the next check tries again
            log.warning("stage_check_failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return None
        self.metrics.stage_conflict.set(1 if conflict else 0)
        if conflict is not None:
            log.error(
                "stage_conflict",
                extra={
                    "stage": guard.form,
                    "workers": conflict.workers,
                    "detail": conflict.message,
                },
            )
        return conflict

    async def _run_batches(
        self, stream: Any, stage: str, handle: Callable[[Sequence[EventT]], Any]
    ) -> None:
        """An agent's loop: each batch handled, then its change log sent (before faust
        acknowledges the batch); a batch that fails ends the worker (`_exit_unacked`)."""
        async for events in stream.take_events(
            self.settings.batch_max, within=self.settings.batch_within_seconds
        ):
            try:
                handled = handle(events)
                if inspect.isawaitable(handled):
                    await handled
                await self.changelog.flush()
            except Exception:
                _exit_unacked(stage)

    def readiness(self) -> Readiness:
        """What `/readyz` reports (see services.detector.health)."""
        broker = "ok" if self.broker_health.healthy else "unreachable"
        if self.settings.recovering():
            broker = "recovering"
        recovery = self.app.tables.recovery
        if not recovery.completed.is_set():
            worker = "starting"
        elif self.app.rebalancing:
            worker = "rebalancing"
        elif recovery.in_recovery:
            worker = "recovering-tables"
        else:
            worker = "ok"
        return Readiness(broker, worker, "ok" if self.configs.started else "loading")

    def _note_order(self, events: Sequence[EventT]) -> None:
        """Log an error when a CDR partition skips ahead within one assignment: the engine
        needs each partition's events without holes (its watermarks), which
        `ContiguousReads` guarantees at the fetch; this says so if anything between the
        fetch and the engine ever breaks it (a diagnosis, it changes nothing)."""
        applied = self._applied_next
        for event in events:
            message = event.message
            expected = applied.get(message.partition)
            if expected is not None and message.offset > expected:
                log.error(
                    "applied_out_of_order partition=%s missing=%s..%s",
                    message.partition,
                    expected,
                    message.offset - 1,
                )
            if expected is None or message.offset >= expected:
                applied[message.partition] = message.offset + 1

    async def handle(self, events: Sequence[EventT]) -> None:
        """Count a batch of CDR messages. The engine takes it in chunks of about
        `batch_cdrs_max` CDRs (whole messages), and the worker returns to the event loop
        between two: the engine's work is synchronous, and a batch of 2,000 envelopes of
        1,000 CDRs each (a single-campaign backfill) would otherwise hold the loop, and the
        consumer's heartbeats, for minutes, past any session timeout. A chunk is what a
        smaller batch would have been; faust acknowledges the batch after the last one."""
        self._note_order(events)
        self.state.bind(events)
        limit = self.settings.batch_cdrs_max
        chunk = _Chunk()
        for event in events:
            self._decode_into(chunk, event)
            if len(chunk.decoded) >= limit:
                await self._count_chunk(chunk)
                await asyncio.sleep(0)  # heartbeats, fetches, the metrics server
                chunk = _Chunk()
        await self._count_chunk(chunk)
        if log.isEnabledFor(logging.INFO) and events:
            spans: dict[int, list[int]] = {}
            for event in events:
                span = spans.setdefault(event.message.partition, [event.message.offset] * 2)
                span[0] = min(span[0], event.message.offset)
                span[1] = max(span[1], event.message.offset)
            log.info(
                "batch_processed %s",
                " ".join(f"p{p}={a}..{b}" for p, (a, b) in sorted(spans.items())),
            )
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.settings.sweep_interval_seconds
            expired = self.state.sweep(
                timedelta(days=self.settings.dedup_retention_days),
                timedelta(days=self.settings.lateness_days),
            )
            self.metrics.expired.inc(expired)

    def _decode_into(self, chunk: _Chunk, event: EventT) -> None:
        """The calls of one CDR message into `chunk`; a record that is not one is a dead
        letter (never a crash loop)."""
        message = event.message
        envelope, records = wire.calls_in_message(event.value, self.settings.default_tenant)
        replayed = is_replayed(message)
        for index, decoded_call in enumerate(records):
            if isinstance(decoded_call, Exception):
                in_envelope = envelope and not isinstance(decoded_call, EnvelopeError)
                self._reject_cdr(event, decoded_call, index if in_envelope else None)
                continue
            call, accepted_at = decoded_call
            if chunk.newest_accepted is None or accepted_at > chunk.newest_accepted:
                chunk.newest_accepted = accepted_at
            if replayed:
                chunk.replayed.add(call.campaign_id)
            position = input_position(message.offset, index)
            chunk.decoded.append(Event(message.partition, position, call))

    async def _count_chunk(self, chunk: _Chunk) -> None:
        if self.configs.awaiting_start:
            # A restarted worker knows its campaigns from the restored table but not yet
            # their settings: counting now would judge them by the default profile.
            await self.configs.catch_up()
        elif any(
            not self.configs.knows(campaign) and not self.state.has_campaign(campaign)
            for campaign in {e.call.campaign_id for e in chunk.decoded}
        ):
            # A campaign seen for the first time: make sure a profile set just before its
            # first CDRs (SPEC: set the profile first) is applied.
            await self.configs.catch_up()
        out = self.engine.process(chunk.decoded)
        self.state.flush_seen()
        self._publish(out, chunk.replayed)
        self.metrics.observe_batch(out, time.perf_counter() - chunk.started)
        if chunk.newest_accepted is not None:
            self.metrics.lag.set(max(0.0, (self.clock() - chunk.newest_accepted).total_seconds()))

    def _reject_cdr(self, event: EventT, exc: Exception, index: int | None) -> None:
        """Dead-letter one CDR: the message, or record `cdrs[index]` of an envelope (the
        record alone, its detail prefixed with where it was)."""
        if isinstance(exc, ValidationError):
            reason, detail = "unreadable", str(exc.errors(include_url=False)[:3])
        else:
            reason, detail = "unprocessable", f"{type(exc).__name__}: {exc}"
        record = None
        if index is not None:
            record = record_in_envelope(event.value, index)
            detail = f"cdrs[{index}]: {detail}"
        self._reject(event, reason, detail, "cdr", record=record)

    def _reject(
        self, event: EventT, reason: str, detail: str, stage: str, *, record: bytes | None = None
    ) -> None:
        """Dead-letter `event` (or `record`, one call out of the record) and count it."""
        message = event.message
        self._dead_letter(
            event.value if record is None else record,
            message.partition,
            message.offset,
            reason,
            detail,
            stage=stage,
            topic=getattr(message, "topic", topics.CDRS),
        )
        self.metrics.rejected.labels(reason=reason).inc()
        log.warning(
            "record_dead_lettered stage=%s reason=%s partition=%s offset=%s detail=%s",
            stage,
            reason,
            message.partition,
            message.offset,
            detail[:300],
        )

    def handle_callee_call(self, event: EventT) -> None:
        """One record of the callee topic (see `handle_callee_calls`)."""
        self.handle_callee_calls([event])

    def handle_callee_calls(self, events: Sequence[EventT]) -> None:
        """Records of the callee topic (envelopes of calls, `services.detector.wire`): each
        call updates its callee's history and sends any lockout or frequency violation it
        reveals. A history is written once per batch, after its last call, in the
        partition of the record that carried that call (faust's current event).

        A call already in the history is a repeat after a restart: its violations are
        derived again and sent again (the violations' consumer counts each call once),
        because the first sending may have been lost with the crash. A record, or a call
        in it, that cannot be decoded or applied is a dead letter (stage `callee`); the
        stage goes on."""
        self._apply_callee_records(self._callee_records(events))

    async def handle_callee_batch(self, events: Sequence[EventT]) -> None:
        """`handle_callee_calls` as the agent runs it: a campaign this worker has not seen
        in the stage yet first waits for the campaign settings written so far. The CDR stage
        did so before it sent the call; a "callees" worker (another process) has its own
        copy of the settings, which may lag (a profile set just before the first CDRs)."""
        records = self._callee_records(events)
        campaigns = {
            row[1]
            for _event, entries in records
            for _key, row in entries
            if isinstance(row, list) and len(row) > 1 and isinstance(row[1], str)
        }
        if self.configs.awaiting_start or not campaigns <= self._callee_campaigns:
            await self.configs.catch_up()
            if len(self._callee_campaigns) > 100_000:
                self._callee_campaigns.clear()
            self._callee_campaigns |= campaigns
        # In chunks of about `batch_cdrs_max` calls, back to the event loop between two
        # (see `handle`): each chunk writes the histories it changed.
        limit, start, calls = self.settings.batch_cdrs_max, 0, 0
        for end, (_event, entries) in enumerate(records, start=1):
            calls += len(entries)
            if calls >= limit and end < len(records):
                self._apply_callee_records(records[start:end])
                await asyncio.sleep(0)
                start, calls = end, 0
        self._apply_callee_records(records[start:])

    def _callee_records(
        self, events: Sequence[EventT]
    ) -> list[tuple[EventT, list[tuple[str, Any]]]]:
        """Each record's (callee key, row) pairs; a record that cannot be read is a dead
        letter (stage `callee`) and left out."""
        records = []
        for event in events:
            try:
                records.append((event, wire.callee_entries(event.key, event.value)))
            except Exception as exc:  # one bad record is a dead letter, never a crash loop
                self._reject(event, "unprocessable", f"{type(exc).__name__}: {exc}", "callee")
        return records

    def _apply_callee_records(self, records: list[tuple[EventT, list[tuple[str, Any]]]]) -> None:
        working: dict[str, tuple[tuple[lockouts.CalleeCall, ...], EventT]] = {}
        applied = 0
        for event, entries in records:
            headers = _replay_headers(is_replayed(event.message))
            for index, (key, row) in enumerate(entries):
                try:
                    found = self._apply_callee_call(key, row, event, working)
                    applied += 1
                except Exception as exc:  # one bad call is a dead letter, the others count
                    self._reject(
                        event,
                        "unprocessable",
                        f"calls[{index}]: {type(exc).__name__}: {exc}",
                        "callee",
                        record=wire.callee_call_record(key, row),
                    )
                    continue
                for violation in found:
                    self._send_violation(violation, headers)
        for key, (history, source) in working.items():
            self._store_history(key, lockouts.to_json(history), source)
        self.metrics.callee_calls.inc(applied)

    def _apply_callee_call(
        self,
        key: str,
        row: Any,
        event: EventT,
        working: dict[str, tuple[tuple[lockouts.CalleeCall, ...], EventT]],
    ) -> tuple[lockouts.LockoutViolation, ...]:
        new = lockouts.from_json([row])[0]
        if not EARLIEST <= new.originated_at < LATEST:
            raise UnprocessableRecord(f"originated_at {new.originated_at} out of range")
        rules = self._lockout_rules(self.configs.config_for(new.campaign_id).profile)
        held = working.get(key)
        if held is not None:
            history = held[0]
        else:
            history = lockouts.from_json(self._stored_history(key, event.message.partition) or [])
        if any(c.call_id == new.call_id for c in history):
            others = tuple(c for c in history if c.call_id != new.call_id)
            _, found = lockouts.record_call(others, new, rules)
            return tuple(found)
        history, found = lockouts.record_call(history, new, rules)
        history = lockouts.prune(history, max(c.originated_at for c in history), rules)
        working[key] = (tuple(history), event)
        return tuple(found)

    def _partition_databases(self) -> Callable[[int], Any] | None:
        """The per-callee RocksDB database of a partition (faust's store), or None when the
        table is not in RocksDB (the memory store of the service tests)."""
        store = getattr(self.callees, "data", None)
        return getattr(store, "_db_for_partition", None)

    def _stored_history(self, key: str, partition: int) -> Any:
        """A callee's stored history, read from the database of the partition whose record
        carried the call: the callee topic is co-partitioned with the table, and a history
        is written in the partition of its calls. faust's own lookup, without a current
        event in a batch, asked every partition database twice (`in`, then the value): a
        fifth of the per-callee stage (py-spy, a `--split` run of
        bench/detector_throughput.py)."""
        database = self._partition_databases()
        if database is None:
            return self.callees.get(key)
        raw = database(partition).get(orjson.dumps(key))
        return None if raw is None else orjson.loads(raw)

    def _store_history(self, key: str, history: list[list[str | int]], source: EventT) -> None:
        """Write a callee's history in the partition of `source`, the record that carried
        its last call: its change-log record queued (`BatchedChangelog.queue`, sent before
        the batch is acknowledged) and the same bytes put in that partition's database,
        the bytes faust's recovery puts there from the change log. faust's table write
        encoded key and value a second time with the standard library's json (py-spy: a
        sixth of the stage)."""
        database = self._partition_databases()
        if database is None:
            with writing_as(source):
                self.callees[key] = history
            return
        partition = source.message.partition
        encoded_key, encoded = orjson.dumps(key), orjson.dumps(history)
        self.changelog.queue(self._callee_changelog, partition, encoded_key, encoded)
        database(partition).put(encoded_key, encoded)

    def _send_violation(
        self, violation: lockouts.LockoutViolation, headers: list[tuple[str, bytes]]
    ) -> None:
        _tenant, campaign = split_scoped(violation.campaign_id)
        self.violation_topic.send_soon(
            # Keyed like the CDR topic (plain campaign id, see services.ingest), so a
            # campaign's violations land in the partition that holds its state.
            key=campaign.encode(),
            value=wire.violation_body(violation),
            headers=headers,
        )

    def handle_lockout_violations(self, events: Sequence[EventT]) -> None:
        decoded = []
        replayed: set[str] = set()
        for event in events:
            try:
                violation = wire.read_violation(event.value)
                if not EARLIEST <= violation.originated_at < LATEST:
                    raise UnprocessableRecord(
                        f"originated_at {violation.originated_at} is out of range"
                    )
            except Exception as exc:  # one bad record is a dead letter, never a crash loop
                self._reject(event, "unprocessable", f"{type(exc).__name__}: {exc}", "lockouts")
                continue
            if is_replayed(event.message):
                replayed.add(violation.campaign_id)
            decoded.append((event.message.partition, event.message.offset, violation))
        self.state.bind(events)
        self._publish(self.engine.process_lockout_violations(decoded), replayed)
        self._send_calls(((v.campaign_id, wire.lockout_hit(v)) for _p, _o, v in decoded), replayed)

    def _publish(self, out: BatchOutput, replayed: set[str] | frozenset[str] = frozenset()) -> None:
        """Send what a batch produced. The core's campaign ids are scoped keys: every
        message carries the plain `campaign_id` and the `tenant_id`; a message derived from
        a campaign that had a replayed record in the batch carries the replay header."""
        callee_calls = (
            (key, call, call.campaign_id in replayed) for key, call in out.callee_events
        )
        for partition, replay, value in wire.callee_batches(callee_calls, self._callee_partition):
            self.callee_topic.send_soon(
                key=None, value=value, partition=partition, headers=_replay_headers(replay)
            )
        self.metrics.callee_calls_forwarded.inc(len(out.callee_events))
        for m in out.minute_stats:
            tenant, campaign = split_scoped(m.campaign_id)
            start = minute_start(m.minute)
            parts = [(topics.WINDOW_MINUTE, minute_start(m.minute + 1), m.counts)]
            if m.boundary_us is not None:  # and the calls before the period boundary in it
                parts.append((topics.WINDOW_MINUTE_HEAD, instant_of_us(m.boundary_us), m.head))
            for window, end, counts in parts:
                self._send_stats(
                    wire.stats_body(campaign, start, end, counts, tenant_id=tenant),
                    m.campaign_id,
                    window,
                    tenant,
                    m.profile,
                    replay=m.campaign_id in replayed,
                )
        for w in out.window_stats:
            tenant, campaign = split_scoped(w.campaign_id)
            self._send_stats(
                wire.stats_body(campaign, w.start, w.end, w.counts, tenant_id=tenant),
                w.campaign_id,
                w.window,
                tenant,
                w.profile,
                replay=w.campaign_id in replayed,
            )
        for payload in out.alerts:
            self.alert_pacer.offer(payload, payload["campaign_id"] in replayed)
        self._send_calls(
            ((call.campaign_id, wire.traced_call(call, outcome)) for call, outcome in out.calls),
            replayed,
        )
        for dead in out.dead_letters:
            tenant, campaign = split_scoped(dead.event.call.campaign_id)
            self._dead_letter(
                wire.too_late_record(dead.event.call, campaign_id=campaign, tenant_id=tenant),
                dead.event.partition,
                message_offset(dead.event.offset),  # the engine's offsets are positions
                dead.reason,
                dead.detail,
                stage="cdr",
            )

    def _send_alert(self, update: AlertUpdate, replay: bool) -> None:
        scoped = update["campaign_id"]
        tenant, campaign = split_scoped(scoped)
        self.alerts.send_soon(
            key=scoped.encode(),
            value=wire.alert_body(update, campaign_id=campaign, tenant_id=tenant),
            headers=_replay_headers(replay),
        )
        self.metrics.alerts_published.inc()

    async def before_commit(self) -> None:
        """Run by the producer flush faust awaits before it commits offsets: the alert
        updates held back (services/detector/pacing.py) are sent, once each is due, and
        queued with the rest of the change log, so no commit covers a batch whose latest
        figures were never sent (a kill -9 after it would keep them from the api for good).
        Waiting here delays the commit, never the agents."""
        pacer = self.alert_pacer
        held = pacer.held_ids()  # made by batches before the commit began, maybe covered
        if held:
            await asyncio.sleep(pacer.wait_seconds())
        pacer.release(held)  # also forgets the alerts sent over an interval ago
        if held:
            await self.changelog.flush()

    def _send_calls(
        self, traced: Iterable[tuple[str, dict[str, Any]]], replayed: set[str] | frozenset[str]
    ) -> None:
        """Publish call traces (scoped key, CallV1 body) on cdrwatch.calls.v1, batched per
        campaign, keyed like the CDR topic, with the replay mark of their campaign."""
        scoped_calls = ((*split_scoped(scoped), body) for scoped, body in traced)
        for tenant, campaign, value in wire.call_batches(scoped_calls):
            self.traces.send_soon(
                key=campaign.encode(),
                value=value,
                headers=_replay_headers(scoped_key(tenant, campaign) in replayed),
            )

    def _send_stats(
        self,
        body: bytes,
        scoped: str,
        window: str,
        tenant: str | None,
        profile: str,
        *,
        replay: bool = False,
    ) -> None:
        self.stats.send_soon(
            key=scoped.encode(),
            value=body,
            headers=[
                (topics.HEADER_WINDOW, window.encode()),
                (topics.HEADER_TENANT, (tenant or "").encode()),
                (topics.HEADER_PROFILE, profile.encode()),
                *_replay_headers(replay),
            ],
        )

    def _dead_letter(
        self,
        value: bytes | None,
        partition: int,
        offset: int,
        reason: str,
        detail: str,
        *,
        stage: str,
        topic: str = topics.CDRS,
    ) -> None:
        body = wire.dead_letter_body(
            value,
            topic=topic,
            partition=partition,
            offset=offset,
            reason=reason,
            detail=detail,
            stage=stage,
        )
        self.dlq.send_soon(key=reason.encode(), value=body)


def _exit_unacked(stage: str) -> NoReturn:
    """End the worker at once when a batch failed after records had been decoded.

    faust's `take_events` acks its batch in a `finally`, whether the body ran or raised, so
    the next commit would skip a batch that was never (or half) applied: its calls lost
    for good (issue 6 #2 was this path). Records a stage cannot read are dead letters
    before the engine; an exception here is a bug, and a crash the supervisor restarts
    from the committed offset is at-least-once, where going on is a silent loss."""
    log.critical("batch_failed_exiting stage=%s", stage, exc_info=True)
    logging.shutdown()
    os._exit(70)


def is_replayed(message: Any) -> bool:
    """True when a consumed record carries `cdrwatch-replay: 1` (CONTRACT decision 4)."""
    headers = getattr(message, "headers", None) or ()
    items = headers.items() if isinstance(headers, dict) else headers
    for name, value in items:
        if name == topics.HEADER_REPLAY:
            return bytes(value or b"") == b"1"
    return False


def _replay_headers(replay: bool) -> list[tuple[str, bytes]]:
    return [(topics.HEADER_REPLAY, b"1")] if replay else []


def callee_store_options(settings: DetectorSettings) -> dict[str, Any]:
    """RocksDB options of the per-callee table: an explicit memory budget per partition
    database (faust's defaults allow a 2 GiB block cache each), the rocksdict driver, and
    the wall-clock TTL that expires untouched histories."""
    mib = 1024 * 1024
    return {
        "driver": "rocksdict",
        "ttl": settings.callee_ttl_days * 86400,
        "block_cache_size": settings.callee_cache_mib * mib,
        "block_cache_compressed_size": 16 * mib,
        "write_buffer_size": 16 * mib,
        "max_write_buffer_number": 2,
    }


def _write_without_wal(store: Any) -> None:
    """Open the partition databases of a faust RocksDB `store` with RocksDB's write-ahead
    log off. The local files are kept only from a clean stop, which flushes them
    (`LocalStore`); after a crash they are rebuilt from the change log, so a log that would
    let them survive one buys nothing; it doubled the cost of the per-callee write made for
    every call."""
    options = getattr(store, "rocksdb_options", None)
    if options is None or not getattr(options, "use_rocksdict", False):
        return
    import rocksdict

    open_db = options.open

    def open_without_wal(path: Path, *, read_only: bool = False) -> Any:
        db = open_db(path, read_only=read_only)
        write_options = rocksdict.WriteOptions()
        write_options.disable_wal = True
        db.set_write_options(write_options)
        return db

    options.open = open_without_wal


class LocalStore:
    """The local RocksDB files of a table, kept from a clean stop to the next start.

    faust's RocksDB store keeps, inside the files, the change-log offset up to which they
    hold the table, and a start reads only the change log after it. The detector sends its
    change logs itself (`changelog.BatchedChangelog`, which keeps the last acknowledged
    offset per partition) and writes that offset into the files once, at a clean stop,
    after which every open database is flushed and a marker `<table>.clean` is left in the
    table directory. A start that finds the marker removes it and keeps the files. One that
    does not (the first start, a SIGKILL, a crash, a power loss: RocksDB runs without its
    write-ahead log, `_write_without_wal`, so the files may have lost their last writes)
    drops them, and they are rebuilt from the whole change log (in bulk before the worker
    joins, `restore.py`; faust's recovery reads whatever that left).

    Why a kept copy is exact: the offset written was acknowledged by the broker and every
    write up to it is in the flushed files, so they hold the table as of that offset.
    Writes after it are in the change log, which the start reads, or belong to inputs whose
    offsets were never committed (`DeliveryGuard`), which are read again (the per-callee
    stage takes a call it already holds as a repeat). The change log stays the source of
    truth: `cdrwatch up` drops the detector's data whenever it starts a fresh embedded
    broker, and files ahead of a broker's change log make faust refuse to start
    (ConsistencyError) with the marker already gone, so the start after rebuilds.
    Each worker needs a data directory of its own.

    A partition that moved to another worker and back is caught up from the offset in its
    files, which is exact because the change log of this table holds no deletions whose
    compaction could be missed: a history is pruned in place (`lockouts.prune`), never
    deleted, and an untouched one expires locally by the files' TTL.
    """

    def __init__(self, tabledir: Path, table: str) -> None:
        self._tabledir = tabledir
        self._table = table
        self._marker = tabledir / f"{table}.clean"

    def open(self) -> bool:
        """Keep the files if the last stop was clean (True), else drop them (False)."""
        if self._marker.exists():
            self._marker.unlink()
            log.info("local_store_kept table=%s", self._table)
            return True
        for path in (
            *self._tabledir.glob(f"{self._table}-*.db"),
            self._tabledir / f"{self._table}-backups",
        ):
            shutil.rmtree(path, ignore_errors=True)
        log.info("local_store_rebuilt table=%s reason=no_clean_stop", self._table)
        return False

    def close_clean(self, store: Any, topic: str, delivered: Mapping[int, int]) -> None:
        """At a clean stop: write each open partition's last acknowledged change-log offset
        into its files, flush them, then leave the marker."""
        dbs = dict(getattr(store, "_dbs", {}))  # faust's open partition databases
        for partition, db in dbs.items():
            tp = TP(topic, partition)
            offset = delivered.get(partition)
            if offset is not None and offset > (store.persisted_offset(tp) or -1):
                store.set_persisted_offset(tp, offset)
            db.flush()
        self._tabledir.mkdir(parents=True, exist_ok=True)
        self._marker.write_text("stopped cleanly\n", encoding="utf-8")
        log.info("local_store_closed table=%s partitions=%s", self._table, sorted(dbs))


def main(settings: DetectorSettings) -> None:
    """Run one detector worker in the foreground until SIGINT/SIGTERM. A worker that would
    run the per-callee stage a second time refuses to start (exit status 2)."""
    refuse_a_second_callee_stage(settings)
    detector = Detector(settings)
    detector.restore_callee_files()
    worker = faust.Worker(
        detector.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False
    )
    tune_for_throughput()  # start-up frozen, a larger young generation (gc_tuning)
    worker.execute_from_commandline()


def refuse_a_second_callee_stage(settings: DetectorSettings) -> None:
    """Exit with status 2 when a worker of the other form of the per-callee stage is live
    (services/detector/stage_guard.py). A broker that does not answer skips the check: the
    worker waits for the broker anyway, and checks again with each heartbeat."""
    if settings.stage not in stage_guard.FORMS:
        return
    guard = stage_guard.StageGuard(
        settings.kafka_bootstrap, settings.app_id, settings.stage, settings.stage_check_seconds
    )

    async def look() -> stage_guard.StageConflict | None:
        try:
            await guard.start(write=False)
            return await guard.check()
        finally:
            await guard.stop(beat=False)

    try:
        conflict = run_apart(asyncio.wait_for(look(), timeout=20))
    except Exception as exc:
        log.warning("stage_check_skipped", extra={"error": f"{type(exc).__name__}: {exc}"})
        return
    if conflict is not None:
        message = f"cdrwatch detector --stage {settings.stage} refused: {conflict.message}"
        log.error("stage_conflict", extra={"stage": settings.stage, "detail": message})
        sys.stderr.write(message + "\n")
        raise SystemExit(2)
