"""Event-time minute buckets and the windows summed from them.

Counts are kept per campaign in one-minute buckets of `originated_at` (UTC minutes since
the epoch, an int). Every window (whole campaign, calendar day in a zone, rolling 15 min /
1 h / 24 h) is a sum of buckets, so any `[from, to)` on minute boundaries is exact. The
sums below are caches over the buckets kept incrementally: each holds the invariant
`counts == Σ bucket(m) for m in its range`, updated by every bucket change inside the
range and, for rolling windows, by the buckets leaving and entering when the end moves.

The one window whose boundaries need not be on a minute is the US 30-day period: periods
are `[anchor + k·30 d, anchor + (k+1)·30 d)` from the exact instant of the campaign's
first call (16 CFR 310.4(b)(4)(i)). 30 days are whole minutes, so every boundary falls at
the same offset within its minute as the anchor; the minute holding a boundary keeps, next
to its counts, its *head*: the counts of its calls before the boundary (`boundary_in`).
A period is then its whole minutes, minus the head of its first minute, plus the head of
the minute after its last (`period_counts`): exact at both edges, whatever the anchor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from services.detector.core.model import EMPTY, BucketCounts

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
MICROSECOND = timedelta(microseconds=1)
MINUTE_US = MINUTE // MICROSECOND
PERIOD_30D = timedelta(days=30)  # US: successive 30-day periods (16 CFR 310.4(b)(4)(i))
PERIOD_US = PERIOD_30D // MICROSECOND

BucketLookup = Callable[[int], BucketCounts]


def minute_of(instant: datetime) -> int:
    """UTC minute index (minutes since the epoch) holding `instant`; exact, no floats."""
    return (instant - EPOCH) // MINUTE


def minute_start(minute: int) -> datetime:
    return EPOCH + minute * MINUTE


def instant_us(instant: datetime) -> int:
    """Microseconds since the epoch of an aware `instant` (exact; CDR times carry µs)."""
    return (instant - EPOCH) // MICROSECOND


def instant_of_us(us: int) -> datetime:
    return EPOCH + us * MICROSECOND


def period_index(at_us: int, anchor_us: int) -> int:
    """Index of the 30-day period holding instant `at_us` (periods from `anchor_us`)."""
    return (at_us - anchor_us) // PERIOD_US


def boundary_in(minute: int, anchor_us: int) -> int | None:
    """The period boundary `anchor + k·30 d` (k ≥ 0, in µs) that falls inside `minute`,
    if one does. A call of that minute before it belongs to the minute's head."""
    last_us = (minute + 1) * MINUTE_US - 1
    boundary = anchor_us + (last_us - anchor_us) // PERIOD_US * PERIOD_US
    return boundary if boundary >= minute * MINUTE_US else None


def period_counts(
    k: int,
    anchor_us: int,
    lookup: BucketLookup,
    head: BucketLookup,
    *,
    within: tuple[int, int] | None = None,
) -> BucketCounts:
    """Counts of period k `[anchor + k·30 d, anchor + (k+1)·30 d)`: the buckets of its
    minutes, less the head of its first minute (calls before its start), plus the head of
    the minute holding its end (calls before the next period's start). `head(minute)` is
    EMPTY for a minute holding no boundary. `within`: (first, last) minute that can hold
    a bucket; no other is looked up."""
    start_us = anchor_us + k * PERIOD_US
    first, last = start_us // MINUTE_US, (start_us + PERIOD_US) // MINUTE_US
    low, high = first, last
    if within is not None:
        low, high = max(first, within[0]), min(last, within[1] + 1)
    return subtract(sum_buckets(lookup, low, high), head(first)).merge(head(last))


def sum_buckets(lookup: BucketLookup, first: int, last_exclusive: int) -> BucketCounts:
    total = EMPTY
    for minute in range(first, last_exclusive):
        counts = lookup(minute)
        if counts is not EMPTY:
            total = total.merge(counts)
    return total


def subtract(a: BucketCounts, b: BucketCounts) -> BucketCounts:
    return a.minus(b)


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


@lru_cache(maxsize=16_384)
def local_day_of(minute: int, zone: str) -> date:
    """The calendar day in `zone` of a UTC minute. Cached: asked twice per call, for a
    few minutes per campaign and batch, and a zone conversion costs ten cache hits."""
    return minute_start(minute).astimezone(ZoneInfo(zone)).date()
