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

from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from types import MappingProxyType
from zoneinfo import ZoneInfo

from services.detector.core.model import EMPTY, BucketCounts

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
MICROSECOND = timedelta(microseconds=1)
MINUTE_US = MINUTE // MICROSECOND
PERIOD_30D = timedelta(days=30)  # US: successive 30-day periods (16 CFR 310.4(b)(4)(i))
PERIOD_US = PERIOD_30D // MICROSECOND
MINUTES_PER_DAY = 24 * 60

BucketLookup = Callable[[int], BucketCounts]
"""A campaign's bucket counts by minute (EMPTY for a minute without a bucket)."""


class SparseLookup:
    """A `BucketLookup` that also says which minutes of a range may hold a bucket, so that
    a sum over a range costs the buckets in it, not its minutes. A campaign calling every
    20 minutes over 7 days (2,000 campaigns, `bench/detector_throughput.py`) made the
    rolling windows step and the day sums look up every empty minute in between: two
    thirds of the detector's time (py-spy, 2026-12-04). A plain lookup function is read
    minute by minute (`minutes_in`)."""

    __slots__ = ("_counts", "_minutes")

    def __init__(self, counts: BucketLookup, minutes: Callable[[int, int], Iterable[int]]) -> None:
        self._counts = counts
        self._minutes = minutes

    def __call__(self, minute: int) -> BucketCounts:
        return self._counts(minute)

    def minutes(self, first: int, last_exclusive: int) -> Iterable[int]:
        """Ascending minutes in [first, last_exclusive), every one that holds a bucket
        among them (others may be there too: they count EMPTY)."""
        return self._minutes(first, last_exclusive)


def minutes_in(lookup: BucketLookup, first: int, last_exclusive: int) -> Iterable[int]:
    """The minutes of [first, last_exclusive) worth looking up, ascending."""
    if isinstance(lookup, SparseLookup):
        return lookup.minutes(first, last_exclusive)
    return range(first, last_exclusive)


class MinuteIndex:
    """The minutes at which each campaign has a bucket, ascending (a list per campaign:
    minutes arrive mostly in order, so an insert is mostly an append)."""

    __slots__ = ("_minutes",)

    def __init__(self) -> None:
        self._minutes: dict[str, list[int]] = {}

    def add(self, campaign_id: str, minute: int) -> None:
        minutes = self._minutes.get(campaign_id)
        if minutes is None:
            self._minutes[campaign_id] = [minute]
        elif minute > minutes[-1]:
            minutes.append(minute)
        else:
            at = bisect_left(minutes, minute)
            if at == len(minutes) or minutes[at] != minute:
                minutes.insert(at, minute)

    def discard(self, campaign_id: str, minute: int) -> None:
        minutes = self._minutes.get(campaign_id)
        if minutes is None:
            return
        at = bisect_left(minutes, minute)
        if at < len(minutes) and minutes[at] == minute:
            del minutes[at]
            if not minutes:
                del self._minutes[campaign_id]

    def between(self, campaign_id: str, first: int, last_exclusive: int) -> list[int]:
        minutes = self._minutes.get(campaign_id)
        if not minutes or first >= last_exclusive:
            return []
        return minutes[bisect_left(minutes, first) : bisect_left(minutes, last_exclusive)]


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
    for minute in minutes_in(lookup, first, last_exclusive):
        counts = lookup(minute)
        if counts is not EMPTY:
            total = total.merge(counts)
    return total


def subtract(a: BucketCounts, b: BucketCounts) -> BucketCounts:
    return a.minus(b)


class RollingSum:
    """Sum of the buckets in (end − length, end], `end` being the campaign's newest minute.

    `move_end` looks up the minutes moved past (leaving and entering); a jump of a whole
    window or more sums the window again. With a `SparseLookup` only minutes holding a
    bucket are looked up.
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
        leaving = minutes_in(
            lookup, old_end - self.length + 1, min(target - self.length, old_end) + 1
        )
        for minute in leaving:
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


# -- window kinds ------------------------------------------------------------------------
#
# A rule's `window` names one of the kinds below. Each kind knows its length and anchoring
# and answers the two questions asked of windows: which of its windows a batch touched (the
# engine, after counting the batch) and which windows lie over a campaign's buckets (the
# compliance view). A new window kind is one class here and one entry in WINDOW_KINDS.


@dataclass(frozen=True, slots=True)
class Window:
    """One window `[start, end)` (UTC) of a kind, its counts and its key: the alert's
    window key ("cumulative", the local day "2026-12-04", "period-3", or the start of a
    rolling window)."""

    key: str
    start: datetime
    end: datetime
    counts: BucketCounts


@dataclass(frozen=True, slots=True)
class CampaignBuckets:
    """A campaign's minute buckets as the read side holds them. `heads`: for a minute
    holding a 30-day boundary, the counts of its calls before it (missing: none).
    `first_call_us`: the exact instant of the campaign's earliest call (None: the start of
    its first bucket's minute). `zone`: the profile's home zone."""

    counts: Mapping[int, BucketCounts]
    zone: str
    heads: Mapping[int, BucketCounts] = field(default_factory=dict)
    first_call_us: int | None = None

    @property
    def minutes(self) -> list[int]:
        return sorted(self.counts)


@dataclass(frozen=True, slots=True)
class BatchTouch:
    """What a batch left in one campaign, as the engine holds it after counting: the days
    and periods its calls fell in (`periods`: every period when a backfilled first call
    moved the anchor) and the sums the engine keeps for them."""

    first_minute: int
    newest_minute: int
    totals: BucketCounts
    zone: str
    days: Iterable[date]
    day_counts: Callable[[date], BucketCounts]
    anchor_us: int
    periods: Iterable[int]
    period_counts: Callable[[int], BucketCounts]


class WindowKind(ABC):
    """What every window kind answers. `name`: a rule's `window`; `regulatory`: a
    regulator's own window (judged by the compliance view), else an early warning;
    `sample`: the window sample a rule over this kind is judged on between batches (the
    api's metrics); `published`: whether the detector publishes that sample live (stats),
    else the api sums it from the minute buckets; `alert_scope`: for kinds with one alert
    per window, the tag of the window in the campaign's alert keys (None: one alert per
    rule, episodes following one another); `episodic`: judged after every call over the
    window ending with the campaign's newest minute (the engine's rolling episodes), not
    per batch."""

    name: str
    regulatory: bool
    sample: str
    published: bool = False
    alert_scope: str | None = None
    episodic: bool = False
    length_minutes: int | None = None
    worst_only: bool = False  # the regulator judges the worst of its windows

    @abstractmethod
    def touched(self, batch: BatchTouch) -> Iterator[Window]:
        """The windows of this kind the batch changed, with their counts."""

    @abstractmethod
    def over(self, campaign: CampaignBuckets) -> Iterator[Window]:
        """Every window of this kind holding at least one of the campaign's buckets, in
        time order."""

    @abstractmethod
    def holding(
        self, minute: int, *, first_minute: int, zone: str, first_call_us: int | None
    ) -> tuple[datetime, datetime]:
        """[start, end) of this kind's window holding `minute` (the current one when it is
        the campaign's newest), for a campaign whose first bucket is `first_minute` and
        first call `first_call_us` (None: that minute's start)."""

    def evidence_days(self, window: Window, zone: str) -> list[date] | None:
        """The local days whose sampled silent/abandoned calls are a window's evidence;
        None: the campaign's own recent samples inside the window."""
        del window, zone  # the campaign's samples need neither
        return None


class Cumulative(WindowKind):
    """The whole campaign (Garante: "within each campaign"): `[first minute, newest + 1)`."""

    def __init__(self) -> None:
        self.name, self.regulatory, self.sample = "cumulative", True, "cumulative"
        self.published = True

    def holding(
        self, minute: int, *, first_minute: int, zone: str, first_call_us: int | None
    ) -> tuple[datetime, datetime]:
        del zone, first_call_us  # from the first bucket, whatever the zone or anchor
        return minute_start(first_minute), minute_start(minute + 1)

    def touched(self, batch: BatchTouch) -> Iterator[Window]:
        start, end = minute_start(batch.first_minute), minute_start(batch.newest_minute + 1)
        yield Window("cumulative", start, end, batch.totals)

    def over(self, campaign: CampaignBuckets) -> Iterator[Window]:
        minutes = campaign.minutes
        if minutes:
            total = sum_over(campaign.counts, minutes)
            yield Window(
                "cumulative", minute_start(minutes[0]), minute_start(minutes[-1] + 1), total
            )


class CalendarDay(WindowKind):
    """Midnight to midnight in the profile's home zone (Ofcom 2010; the `it` 4 % daily
    rule): 23 h or 25 h on DST change days (`local_day_bounds`). One alert per day."""

    def __init__(self, name: str) -> None:
        self.name, self.regulatory, self.sample, self.alert_scope = name, True, "day", "day"

    def touched(self, batch: BatchTouch) -> Iterator[Window]:
        for day in sorted(batch.days):
            yield self._window(day, batch.zone, batch.day_counts(day))

    def over(self, campaign: CampaignBuckets) -> Iterator[Window]:
        by_day: dict[date, BucketCounts] = {}
        for minute in campaign.minutes:  # sorted: days come out in order
            day = local_day_of(minute, campaign.zone)
            by_day[day] = by_day.get(day, EMPTY).merge(campaign.counts[minute])
        for day, counts in by_day.items():
            yield self._window(day, campaign.zone, counts)

    def holding(
        self, minute: int, *, first_minute: int, zone: str, first_call_us: int | None
    ) -> tuple[datetime, datetime]:
        del first_minute, first_call_us  # midnight to midnight in the zone
        first, last = local_day_bounds(local_day_of(minute, zone), zone)
        return minute_start(first), minute_start(last)

    def evidence_days(self, window: Window, zone: str) -> list[date] | None:
        del zone  # the key is the local day
        return [date.fromisoformat(window.key)]

    @staticmethod
    def _window(day: date, zone: str, counts: BucketCounts) -> Window:
        first, last = local_day_bounds(day, zone)
        return Window(day.isoformat(), minute_start(first), minute_start(last), counts)


class Rolling(WindowKind):
    """The `length_minutes` minutes `(m − length, m]` ending with a minute m, judged after
    every call over the window ending with the newest minute (early warnings 15 min, 1 h,
    24 h). An episode's key is the start of the window that opened it."""

    def __init__(
        self, name: str, length_minutes: int, *, sample: str | None = None, regulatory: bool = False
    ) -> None:
        self.name, self.regulatory, self.length_minutes = name, regulatory, length_minutes
        self.sample, self.episodic, self.published = sample or name, True, True

    def holding(
        self, minute: int, *, first_minute: int, zone: str, first_call_us: int | None
    ) -> tuple[datetime, datetime]:
        del first_minute, zone, first_call_us  # the minutes before `minute`, however many
        return minute_start(minute - self.length + 1), minute_start(minute + 1)

    @property
    def length(self) -> int:
        assert self.length_minutes is not None
        return self.length_minutes

    def touched(self, batch: BatchTouch) -> Iterator[Window]:
        """None: the engine judges these call by call (its episodes), not per batch."""
        del batch
        return iter(())

    def over(self, campaign: CampaignBuckets) -> Iterator[Window]:
        """One window per position where its content changes: where a bucket enters
        (m = b) or leaves (m = b + length). Between two such positions the content is the
        same, and the earliest window with it is the one at the position: O(B log B) for
        B buckets, however long the campaign, instead of one window per minute."""
        minutes = campaign.minutes
        if not minutes:
            return
        length = self.length_minutes
        assert length is not None
        last_position = minutes[-1] + length - 1
        entering = {m: campaign.counts[m] for m in minutes}
        leaving = {m + length: campaign.counts[m] for m in minutes if m + length <= last_position}
        total = EMPTY
        for position in sorted(entering.keys() | leaving.keys()):
            if position in entering:
                total = total.merge(entering[position])
            if position in leaving:
                total = total.minus(leaving[position])
            first = position - length + 1
            yield Window(
                minute_start(first).isoformat(),
                minute_start(first),
                minute_start(position + 1),
                total,
            )


class Sliding24h(Rolling):
    """Ofcom 2008's "any 24-hour period": a rolling 24 h window the regulator judges at
    its worst position."""

    def __init__(self) -> None:
        super().__init__("sliding_24h", MINUTES_PER_DAY, sample="24h", regulatory=True)
        self.worst_only = True


class Period30d(WindowKind):
    """Successive periods `[anchor + k·30 d, anchor + (k+1)·30 d)` from the exact instant
    of the campaign's first call (16 CFR 310.4(b)(4)(i), 47 CFR 64.1200(a)(7)); the last
    one is partial and reported with its nominal end. A boundary need not fall on a
    minute: the minute holding it counts its head in the earlier period and the rest in
    the later one, so both edges are exact. One alert per period."""

    def __init__(self) -> None:
        self.name, self.regulatory, self.sample = "period_30d", True, "period_30d"
        self.alert_scope = "period"

    def touched(self, batch: BatchTouch) -> Iterator[Window]:
        for k in batch.periods:
            yield self._window(k, batch.anchor_us, batch.period_counts(k))

    def over(self, campaign: CampaignBuckets) -> Iterator[Window]:
        """A bucket wholly before `first_call_us` contradicts it (it would be an earlier
        call): ValueError."""
        minutes = campaign.minutes
        if not minutes:
            return
        anchor_us = (
            minutes[0] * MINUTE_US if campaign.first_call_us is None else campaign.first_call_us
        )
        if (minutes[0] + 1) * MINUTE_US <= anchor_us:
            raise ValueError(
                f"first_call {instant_of_us(anchor_us).isoformat()} is after the earliest "
                f"bucket {minute_start(minutes[0]).isoformat()}: it cannot be the campaign's "
                "first call"
            )
        totals: dict[int, BucketCounts] = {}
        for minute in minutes:
            # The period of the minute's last instant takes the minute, less its head.
            index = period_index((minute + 1) * MINUTE_US - 1, anchor_us)
            counts = campaign.counts[minute]
            head = EMPTY
            if boundary_in(minute, anchor_us) is not None:
                head = campaign.heads.get(minute, EMPTY)
            if head != EMPTY and index > 0:
                totals[index - 1] = totals.get(index - 1, EMPTY).merge(head)
                counts = counts.minus(head)
                if counts == EMPTY:
                    continue  # every call of the minute was before the boundary
            totals[index] = totals.get(index, EMPTY).merge(counts)
        for index in sorted(totals):
            yield self._window(index, anchor_us, totals[index])

    def holding(
        self, minute: int, *, first_minute: int, zone: str, first_call_us: int | None
    ) -> tuple[datetime, datetime]:
        """The period holding the end of `minute` (the minute's calls after a boundary
        inside it are that period's)."""
        del zone  # periods are 30 × 24 h of absolute time
        anchor_us = first_minute * MINUTE_US if first_call_us is None else first_call_us
        window = self._window(
            period_index((minute + 1) * MINUTE_US - 1, anchor_us), anchor_us, EMPTY
        )
        return window.start, window.end

    def evidence_days(self, window: Window, zone: str) -> list[date] | None:
        first_day = local_day_of(minute_of(window.start), zone)
        last_day = local_day_of(minute_of(window.end - MICROSECOND), zone)
        return [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]

    @staticmethod
    def _window(k: int, anchor_us: int, counts: BucketCounts) -> Window:
        start = instant_of_us(anchor_us) + k * PERIOD_30D
        return Window(f"period-{k}", start, start + PERIOD_30D, counts)


def sum_over(counts: Mapping[int, BucketCounts], minutes: Iterable[int]) -> BucketCounts:
    total = EMPTY
    for minute in minutes:
        total = total.merge(counts[minute])
    return total


WINDOW_KINDS: Mapping[str, WindowKind] = MappingProxyType(
    {
        kind.name: kind
        for kind in (
            Cumulative(),
            CalendarDay("daily"),
            CalendarDay("calendar_day"),
            Sliding24h(),
            Period30d(),
            Rolling("15m", 15),
            Rolling("1h", 60),
            Rolling("24h", MINUTES_PER_DAY),
        )
    }
)
"""Every window a rule can name, by name (profiles check rules against it)."""

LIVE_ROLLING: Mapping[str, int] = MappingProxyType(
    {
        kind.sample: kind.length_minutes
        for kind in sorted(WINDOW_KINDS.values(), key=lambda k: k.length_minutes or 0)
        if kind.length_minutes
    }
)
"""The rolling windows the detector keeps live sums of and publishes, by sample name."""
