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
on Apache Kafka, where holes are normal; faust's recovery reads those. Should a guarded
partition show the same hole `ACCEPT_AFTER` times in a row anyway (a producer using
transactions writes control records that take offsets), the hole is accepted with a
warning instead of re-reading forever.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

log = logging.getLogger(__name__)

ACCEPT_AFTER = 5


class ContiguousReads:
    """Wraps a faust consumer's `getmany`, `seek` and `perform_seek` (instance attributes)."""

    def __init__(self, topics: Iterable[str]) -> None:
        self._topics = frozenset(topics)
        self._next: dict[Any, int] = {}  # tp -> offset expected next
        self._repeats: dict[Any, tuple[int, int]] = {}  # tp -> (hole offset, times seen)
        self.holes_seen = 0

    def expect(self, positions: dict[Any, int | None]) -> None:
        """After faust sought partitions to their committed offsets: reading goes on
        there (a partition never committed: any offset may come first)."""
        for tp, offset in positions.items():
            if offset is None:
                self._next.pop(tp, None)
            else:
                self._next[tp] = offset

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
                        if self._accept_hole(tp, expected, message.offset):
                            self._next[tp] = message.offset + 1
                            yield tp, message
                            continue
                        rewound.add(tp)
                        await seek(tp, expected)
                        continue
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

    def _accept_hole(self, tp: Any, expected: int, got: int) -> bool:
        self.holes_seen += 1
        offset, times = self._repeats.get(tp, (expected, 0))
        times = times + 1 if offset == expected else 1
        self._repeats[tp] = (expected, times)
        if times >= ACCEPT_AFTER:
            log.warning(
                "offset_hole_accepted topic=%s partition=%s missing=%s..%s times=%s",
                tp.topic,
                tp.partition,
                expected,
                got - 1,
                times,
            )
            self._repeats.pop(tp, None)
            return True
        log.warning(
            "offset_hole_reread topic=%s partition=%s missing=%s..%s",
            tp.topic,
            tp.partition,
            expected,
            got - 1,
        )
        return False
