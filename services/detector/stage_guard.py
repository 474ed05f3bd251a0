"""The per-callee stage must run in one form only: `all` workers, or `cdrs` beside
`callees` workers, never `all` beside `callees` (README "Design decisions").

Why it matters: the two forms are two consumer groups (`<app>` and `<app>-callees`), so
beside each other both would read every callee call and both would write the histories'
one change log, `<app>-callees-changelog`. The violations' consumer counts each call once,
but a worker recovering from that change log may take a history written by the group
that is behind its own committed offset, and miss calls of it.

How it is enforced: every worker that runs the per-callee stage (`all` or `callees`)
writes a heartbeat, `{"worker", "form", "at_ms", "running"}`, to the one-partition topic
`<app>-stage-heartbeats` every `stage_check_seconds`, and a last one with `running`
false when it stops cleanly. A worker is live while its newest heartbeat says running and
is at most three intervals old.
- A worker refuses to start (exit status 2) while a worker of the other form is live.
- While it runs, each heartbeat also checks: a conflict sets
  `cdrwatch_detector_stage_conflict` to 1 (alert CdrwatchDetectorStageConflict) and logs an
  error each check until it is gone. Two workers started in the same few seconds are
  caught this way.
A worker killed without a clean stop counts as live for three intervals (90 s by default):
switching forms after a crash waits that long.

Why heartbeats and not the broker's group membership (DescribeGroups): the embedded broker
(Tansu 0.6) lists a member that left the group, or whose session timed out, as a member
still, and fails on a group it does not know; a topic works the same on every broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger("cdrwatch.detector.stage_guard")

FORMS = ("all", "callees")  # the stages that run the per-callee stage
LIVE_INTERVALS = 3  # a heartbeat counts this many intervals
_READ_BACK = 1000  # heartbeats read back at most (a few workers, one each interval)
_RETENTION_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Heartbeat:
    worker: str
    form: str
    at_ms: int
    running: bool

    def encode(self) -> bytes:
        return orjson.dumps(
            {"worker": self.worker, "form": self.form, "at_ms": self.at_ms, "running": self.running}
        )

    @classmethod
    def decode(cls, value: bytes | None) -> Heartbeat | None:
        try:
            data: Any = orjson.loads(value or b"")
            return cls(
                str(data["worker"]), str(data["form"]), int(data["at_ms"]), bool(data["running"])
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None  # not ours: ignored


@dataclass(frozen=True)
class StageConflict:
    form: str
    workers: int
    message: str


def heartbeat_topic(app_id: str) -> str:
    return f"{app_id}-stage-heartbeats"


def find_conflict(
    form: str, worker: str, beats: Iterable[Heartbeat], now_ms: int, horizon_ms: int
) -> StageConflict | None:
    """The conflict a worker of `form` makes with the workers the heartbeats show live."""
    if form not in FORMS:
        return None
    newest: dict[str, Heartbeat] = {}
    for beat in beats:
        if beat.worker != worker and beat.at_ms >= newest.get(beat.worker, beat).at_ms:
            newest[beat.worker] = beat
    other = "callees" if form == "all" else "all"
    live = [
        beat
        for beat in newest.values()
        if beat.running and beat.form == other and now_ms - beat.at_ms <= horizon_ms
    ]
    if not live:
        return None
    fix = (
        "run this worker as `--stage cdrs`, or stop the `--stage callees` workers"
        if form == "all"
        else "run the `--stage all` workers as `--stage cdrs`, or stop this one"
    )
    return StageConflict(
        other,
        len(live),
        f"{len(live)} `--stage {other}` worker(s) run the per-callee stage already: {fix} "
        f"(a worker stopped without a clean stop counts for {horizon_ms // 1000} s)",
    )


class StageGuard:
    """This worker's heartbeats and its check against the others'."""

    def __init__(
        self,
        bootstrap: str,
        app_id: str,
        form: str,
        interval_seconds: float,
        *,
        replication_factor: int = 1,
    ) -> None:
        self.bootstrap = bootstrap
        self.replication_factor = replication_factor
        self.topic = heartbeat_topic(app_id)
        self.form = form
        self.worker = uuid.uuid4().hex
        self.horizon_ms = int(LIVE_INTERVALS * interval_seconds * 1000)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._partition = TopicPartition(self.topic, 0)

    @property
    def started(self) -> bool:
        """Started for writing (heartbeats and checks)."""
        return self._producer is not None

    async def start(self, *, write: bool = True) -> None:
        """Connect. `write=False` only reads (the start-up check): no topic is created,
        no producer started, and a topic that does not exist yet holds no heartbeat."""
        if write:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                # Replicated like the other internal topics (acks=all on a cluster whose
                # min.insync.replicas is 2 needs it); a day of heartbeats at most.
                topic = NewTopic(
                    self.topic,
                    1,
                    self.replication_factor,
                    topic_configs={"retention.ms": str(_RETENTION_MS)},
                )
                await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
            finally:
                await admin.close()
        # A short long poll: `_recent` asks for end offsets on this consumer's connection,
        # which the broker answers only after the fetch it holds (500 ms by default).
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        await consumer.start()
        self._consumer = consumer
        if not write:
            return
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        try:
            await producer.start()
        except BaseException:
            await self.stop(beat=False)
            raise
        self._producer = producer

    async def stop(self, *, beat: bool) -> None:
        try:
            if beat and self._producer is not None:
                await self.beat(running=False)
        finally:
            if self._producer is not None:
                await self._producer.stop()
            if self._consumer is not None:
                await _stop_consumer(self._consumer)
            self._producer = self._consumer = None

    async def beat(self, *, running: bool = True) -> None:
        assert self._producer is not None, "start() first"
        heartbeat = Heartbeat(self.worker, self.form, _now_ms(), running)
        await self._producer.send_and_wait(self.topic, heartbeat.encode(), partition=0)

    async def check(self) -> StageConflict | None:
        """The conflict the heartbeats on the topic show now, if any."""
        return find_conflict(
            self.form, self.worker, await self._recent(), _now_ms(), self.horizon_ms
        )

    async def _recent(self) -> list[Heartbeat]:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        if self._producer is None and not consumer.partitions_for_topic(self.topic):
            return []  # read only, and the topic does not exist: no heartbeat yet
        consumer.assign([self._partition])
        end = (await consumer.end_offsets([self._partition]))[self._partition]
        consumer.seek(self._partition, max(0, end - _READ_BACK))
        beats: list[Heartbeat] = []
        deadline = time.monotonic() + 10
        while await consumer.position(self._partition) < end and time.monotonic() < deadline:
            batch = await consumer.getmany(self._partition, timeout_ms=500)
            for message in batch.get(self._partition, []):
                beat = Heartbeat.decode(message.value)
                if beat is not None:
                    beats.append(beat)
        return beats


async def _stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """`consumer.stop()`. aiokafka (0.14) raises CancelledError from the stop of a consumer
    that never had a partition assigned (its coordinator awaits a task it has just
    cancelled): that one is not ours and is dropped; a cancellation of this task is not."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


def _now_ms() -> int:
    return int(time.time() * 1000)
