"""Source partitions read without holes: a record is handed to faust only if it follows the
last one handed over, else the partition is read again from the first missing offset.

Why: faust's consumer can drop records it already fetched without moving the fetch
position back. `Consumer.getmany` stops yielding a fetched batch when the consumer group
generation changes or the flow stops (a rebalance), and the fetch position is already
past the records it did not yield. When the partition stays assigned, the next fetch
goes on after them, and faust's drain loop takes the jump for a hole in the log (as left
by compaction or transaction markers), records it as a "gap" and later commits over it.
The records in the hole are never processed and never read again: seen on the embedded
broker when a restarted worker's group rebalanced once more after a killed member's
session expired (tests/integration/test_detector_sigkill.py: the log showed one partition
go from offset 1505 to 2070; 564 calls were lost for good).

The engine's exactness also needs order: a campaign's events must be applied in offset
order (its watermark tells "already applied" on a re-read), so skipping ahead and coming
back later would be just as wrong. Hence the guard drops every record past a hole and
seeks the partition back to the hole, so the records arrive again, in order.

The expectation survives a rebalance: a partition that stays assigned is not always sought
back (the dropped records above are exactly that case). It is reset where faust seeks:
`seek` and `perform_seek` (to the committed offsets, after an assignment). A partition
that another worker moved on meanwhile is read again from the expected offset: the engine
finds those events applied and only re-publishes their figures.

Only topics that cannot have holes are guarded (the CDR topic and the detector's own
repartition topics: cleanup policy delete, no transactions). A change log is compacted
on Apache Kafka, where holes are normal; faust's recovery reads those.

A hole is accepted only when the broker proves it real: after the same hole was seen
`PROBE_AFTER` times in a row, a consumer of its own asks the broker for the first record
at or after the missing offset (`services.common.kafka.first_offset_from`). A larger
answer is a hole in the log (a producer using transactions writes control records that
take offsets; retention deleted the records): reading goes on from there, with a warning.
The answer "the record is there" means faust keeps dropping it: reading it again goes on.
An earlier version accepted any hole seen five times in a row, and a CI run of
tests/integration/test_detector_sigkill.py lost 157 calls of one campaign: exactly
offsets 1630..1787 of its partition, the mark of a hole taken as real (the worker that
did it was killed and its log not kept; no other path skips a range of offsets). faust
can drop a re-read more than once: its `getmany` drops what it fetched for a partition
paused meanwhile, and rebalances come in a row after a kill. The worker went on past
the records, and the campaign's watermark made the next worker skip them too. Without a probe
(unit tests) a hole is never accepted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

PROBE_AFTER = 5

Probe = Callable[[str, int, int], Awaitable[int | None]]
"""(topic, partition, offset) -> the first offset the broker serves at or after it, or
None when it cannot tell."""


class ContiguousReads:
    """Wraps a faust consumer's `getmany`, `seek` and `perform_seek` (instance attributes)."""

    def __init__(self, topics: Iterable[str], probe: Probe | None = None) -> None:
        self._topics = frozenset(topics)
        self._probe = probe
        self._next: dict[Any, int] = {}  # tp -> offset expected next
        self._repeats: dict[Any, tuple[int, int]] = {}  # tp -> (hole offset, times seen)
        self.holes_seen = 0

    def expect(self, positions: dict[Any, int | None]) -> None:
        """After faust sought partitions to their committed offsets: reading goes on
        there. A partition never committed (None) is read from its start, offset 0; where
        retention removed the head, the broker's answer to the probe moves reading on.
        Expecting nothing there instead let a record of an interrupted fetch through ahead
        of the re-read: offset 3 reached the engine before offset 2 on a fresh topic
        (seen as `applied_out_of_order` in a SIGKILL test run)."""
        for tp, offset in positions.items():
            if tp.topic in self._topics:
                self._next[tp] = 0 if offset is None else offset

    def install(self, consumer: Any) -> Any:
        getmany = consumer.getmany
        seek = consumer.seek
        perform_seek = consumer.perform_seek

        async def contiguous_getmany(timeout: float) -> AsyncIterator[tuple[Any, Any]]:
            rewound: set[Any] = set()
            async for tp, message in getmany(timeout):
                if tp.topic in self._topics:
                    if tp in rewound:
                        continue
                    expected = self._next.get(tp)
                    if expected is not None and message.offset > expected:
                        expected = await self._hole(tp, expected, message.offset)
                    if expected is not None and message.offset > expected:
                        rewound.add(tp)
                        await seek(tp, expected)
                        continue
                    self._repeats.pop(tp, None)
                    self._next[tp] = message.offset + 1
                yield tp, message

        async def tracked_seek(partition: Any, offset: int) -> None:
            await seek(partition, offset)
            self._next[partition] = offset

        async def tracked_perform_seek() -> None:
            await perform_seek()
            # faust's own record of where each partition is read next (its committed
            # offset after this seek; None when nothing was committed).
            self.expect(dict(consumer._read_offset))

        consumer.getmany = contiguous_getmany
        consumer.seek = tracked_seek
        consumer.perform_seek = tracked_perform_seek
        return consumer

    async def _hole(self, tp: Any, expected: int, got: int) -> int:
        """Records `expected..got-1` did not come: the offset to read from next (a real
        hole, proven by the broker, moves it on)."""
        self.holes_seen += 1
        offset, times = self._repeats.get(tp, (expected, 0))
        times = times + 1 if offset == expected else 1
        self._repeats[tp] = (expected, times)
        if times >= PROBE_AFTER and self._probe is not None:
            self._repeats[tp] = (expected, 0)  # probe again after as many more
            first = await self._probe(tp.topic, tp.partition, expected)
            if first is not None and first > expected:
                log.warning(
                    "offset_hole_accepted topic=%s partition=%s missing=%s..%s times=%s",
                    tp.topic,
                    tp.partition,
                    expected,
                    first - 1,
                    times,
                )
                self._repeats.pop(tp, None)
                self._next[tp] = first
                return first
        log.warning(
            "offset_hole_reread topic=%s partition=%s missing=%s..%s times=%s",
            tp.topic,
            tp.partition,
            expected,
            got - 1,
            times,
        )
        return expected
