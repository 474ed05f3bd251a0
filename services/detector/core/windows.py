"""Event-time minute buckets and the windows summed from them.

Counts are kept per campaign in one-minute buckets of `originated_at` (UTC minutes since
the epoch, an int). Every window (whole campaign, calendar day in a zone, rolling 15 min /
1 h / 24 h) is a sum of buckets, so any `[from, to)` on minute boundaries is exact. The
sums below are caches over the buckets kept incrementally: each holds the invariant
`counts == Σ bucket(m) for m in its range`, updated by every bucket change inside the
range and, for rolling windows, by the buckets leaving and entering when the end moves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.detector.core.model import EMPTY, BucketCounts

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

BucketLookup = Callable[[int], BucketCounts]


def minute_of(instant: datetime) -> int:
    """UTC minute index (minutes since the epoch) holding `instant`; exact, no floats."""
    return (instant - EPOCH) // MINUTE


def minute_start(minute: int) -> datetime:
    return EPOCH + minute * MINUTE


def sum_buckets(lookup: BucketLookup, first: int, last_exclusive: int) -> BucketCounts:
    total = EMPTY
    for minute in range(first, last_exclusive):
        counts = lookup(minute)
        if counts is not EMPTY:
            total = total.merge(counts)
    return total


def subtract(a: BucketCounts, b: BucketCounts) -> BucketCounts:
    return BucketCounts(*(x - y for x, y in zip(a.to_list(), b.to_list(), strict=True)))


class RollingSum:
    """Sum of the buckets in (end − length, end], `end` being the campaign's newest minute.

    `move_end` costs two lookups per minute moved (one leaving, one entering); a jump of
    a whole window or more rebuilds with `length` lookups.
    """

    __slots__ = ("counts", "end", "length")

    def __init__(self, length_minutes: int, end: int, lookup: BucketLookup) -> None:
        self.length = length_minutes
        self.end = end
        self.counts = sum_buckets(lookup, end - length_minutes + 1, end + 1)

    @property
    def first(self) -> int:
        return self.end - self.length + 1

    def move_end(self, new_end: int, lookup: BucketLookup) -> None:
        if new_end <= self.end:
            return
        if new_end - self.end >= self.length:
            self.end = new_end
            self.counts = sum_buckets(lookup, self.first, new_end + 1)
            return
        leaving = sum_buckets(lookup, self.first, new_end - self.length + 1)
        entering = sum_buckets(lookup, self.end + 1, new_end + 1)
        self.counts = subtract(self.counts, leaving).merge(entering)
        self.end = new_end

    def step_to(self, target: int, lookup: BucketLookup) -> Iterator[int]:
        """Move the end to `target` minute by minute, past the newest bucket (nothing
        enters), yielding each end at which a non-empty bucket has left the window
        (`counts` is then that window's): the ends at which the window's figures differ
        from the previous end's. At most `length` lookups."""
        if target <= self.end:
            return
        old_end = self.end
        for minute in range(old_end - self.length + 1, min(target - self.length, old_end) + 1):
            counts = lookup(minute)
            if counts is not EMPTY and counts.attempts:
                self.counts = subtract(self.counts, counts)
                self.end = minute + self.length
                yield self.end
        self.end = target

    def on_bucket_change(self, minute: int, delta: BucketCounts) -> None:
        if self.first <= minute <= self.end:
            self.counts = self.counts.merge(delta)


def local_day_bounds(day: date, zone: str) -> tuple[int, int]:
    """[first, last_exclusive) UTC minutes of a calendar day in `zone` (23 h or 25 h on DST
    change days)."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return minute_of(start), minute_of(end)


def local_day_of(minute: int, zone: str) -> date:
    return minute_start(minute).astimezone(ZoneInfo(zone)).date()
