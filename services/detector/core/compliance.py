"""The regulators' own windows over a campaign's minute buckets, each with its verdict.

SPEC "Windows": counts are kept in one-minute event-time buckets and summed on read, so
every regulatory window is exact; the 30-day periods, whose boundaries need not fall on
a minute, split the minute holding a boundary by its head (`windows.boundary_in`).
`evaluate_windows` is the read side used by `GET /v1/campaigns/{id}/compliance`: for every
enabled rate rule of a profile it returns the windows the regulator judges, with the
figures, the level (`rules.assess`) and the headroom (`rules.headroom`).

Windows (a rule's `window`):

- `cumulative` (Garante 20 Feb 2014 n. 83, point 3: "within each campaign"): one window
  over every bucket, `[first minute, last minute + 1)`.
- `daily`, `calendar_day` (it optional 4 %; Ofcom 2010 "midnight to midnight"): one
  window per calendar day of the profile's home zone that holds a bucket; a DST change
  day is 23 h or 25 h (`windows.local_day_bounds`).
- `sliding_24h` (Ofcom 2008 "any 24-hour period"): the worst 24 h, see
  `_worst_sliding_24h`.
- `period_30d` (16 CFR 310.4(b)(4)(i), 47 CFR 64.1200(a)(7): "each successive 30-day
  period"): periods of exactly 30 × 24 h anchored at the exact instant of the campaign's
  first call, see `_periods_30d`.

Only windows holding at least one bucket are reported (a bucket whose counts are all
zero still counts as data), so no buckets means no windows. Every figure is a
`Fraction`; datetimes are aware and in UTC; windows are half-open `[start, end)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from services.detector.core.model import EMPTY, BucketCounts
from services.detector.core.profiles import REGULATORY_WINDOWS, Profile, RateRule
from services.detector.core.rules import Level, assess, explain, headroom, rate_terms
from services.detector.core.windows import (
    MINUTE_US,
    PERIOD_30D,
    boundary_in,
    instant_us,
    local_day_bounds,
    local_day_of,
    minute_start,
    period_index,
    subtract,
)

SLIDING_MINUTES = 24 * 60

_RANK: Mapping[Level, int] = {"insufficient": 0, "ok": 1, "warning": 2, "violation": 3}

Counts = list[int]  # BucketCounts.to_list(): a mutable running sum


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    """One rule over one window `[start, end)` (UTC) and what it amounts to.

    `value` is numerator ÷ denominator, None when the denominator is 0. `headroom` is
    `rules.headroom`: how many more silent/abandoned calls (each also an answered call)
    the window can take before its verdict becomes `violation` (below the minimum sample:
    before the numerator passes cap × minimum sample, the certain violation); -1 when
    unbounded (cap ≥ 1).
    `reason` says why the window has its verdict (`rules.explain`), e.g. "certain: 4 silent
    calls exceed 3 % of the 100-call minimum sample (at most 3), whatever the denominator
    (99 answered-by-person calls so far)".
    """

    rule_id: str
    window: str
    start: datetime
    end: datetime
    numerator: Fraction
    denominator: Fraction
    value: Fraction | None
    cap: Fraction
    verdict: Level
    headroom: int
    reason: str


def evaluate_windows(
    profile: Profile,
    buckets: Mapping[int, BucketCounts],
    *,
    amd_false_positive_ratio: Fraction = Fraction(0),
    first_call: datetime | None = None,
    heads: Mapping[int, BucketCounts] | None = None,
) -> list[WindowVerdict]:
    """Every regulatory window of every enabled rate rule of `profile`, with its verdict.

    `buckets` maps a UTC minute index (`windows.minute_of`) to that minute's counts, for one
    campaign. `amd_false_positive_ratio` is the campaign's Ofcom estimate ratio
    (`rules.rate_terms` adds ratio × AMD=machine calls to both terms of the abandoned
    rate). `first_call` is the exact `originated_at` of the campaign's earliest call: the
    anchor of `period_30d` (default: the start of the first bucket's minute). `heads` maps
    a minute holding a period boundary to the counts of its calls before the boundary
    (`BucketState.head`; missing: none).

    Order: rules in profile order; each rule's windows in time order. Early-warning rules
    are not regulatory windows and are not evaluated. A rule whose window is not one of
    the five regulatory windows raises ValueError.
    """
    minutes = sorted(buckets)
    verdicts: list[WindowVerdict] = []
    for rule in profile.rate_rules:
        if not rule.enabled:
            continue
        if rule.window not in REGULATORY_WINDOWS:
            raise ValueError(f"rule {rule.id!r}: {rule.window!r} is not a regulatory window")
        if not minutes:
            continue
        judge = _judge(rule, amd_false_positive_ratio)
        if rule.window == "cumulative":
            verdicts.append(judge(*_cumulative(minutes, buckets)))
        elif rule.window in ("daily", "calendar_day"):
            verdicts.extend(judge(*w) for w in _calendar_days(minutes, buckets, profile.home_zone))
        elif rule.window == "sliding_24h":
            verdicts.append(
                _worst_sliding_24h(minutes, buckets, rule, amd_false_positive_ratio, judge)
            )
        else:
            verdicts.extend(
                judge(*w) for w in _periods_30d(minutes, buckets, first_call, heads or {})
            )
    return verdicts


Window = tuple[datetime, datetime, Counts]
Judge = Callable[[datetime, datetime, Counts], WindowVerdict]


def _judge(rule: RateRule, ratio: Fraction) -> Judge:
    def judge(start: datetime, end: datetime, counts: Counts) -> WindowVerdict:
        numerator, denominator = rate_terms(rule.metric, BucketCounts.from_list(counts), ratio)
        level = assess(numerator, denominator, rule.cap, rule.warning_fraction, rule.min_sample)
        return WindowVerdict(
            rule_id=rule.id,
            window=rule.window,
            start=start,
            end=end,
            numerator=numerator,
            denominator=denominator,
            value=None if denominator == 0 else numerator / denominator,
            cap=rule.cap,
            verdict=level,
            headroom=headroom(numerator, denominator, rule.cap, rule.min_sample),
            reason=explain(
                level,
                rule.metric,
                numerator,
                denominator,
                rule.cap,
                rule.warning_fraction,
                rule.min_sample,
            ),
        )

    return judge


def _add(total: Counts, counts: BucketCounts, sign: int = 1) -> None:
    for index, value in enumerate(counts.to_list()):
        total[index] += sign * value


def _empty() -> Counts:
    return BucketCounts().to_list()


def _cumulative(minutes: list[int], buckets: Mapping[int, BucketCounts]) -> Window:
    total = _empty()
    for minute in minutes:
        _add(total, buckets[minute])
    return minute_start(minutes[0]), minute_start(minutes[-1] + 1), total


def _calendar_days(
    minutes: list[int], buckets: Mapping[int, BucketCounts], zone: str
) -> Iterator[Window]:
    """One window per local calendar day in `zone` holding a bucket, in order. Day bounds
    come from `local_day_bounds` (00:00 to the next 00:00 local, 23 h or 25 h on DST change
    days); `minutes` is sorted, so each day's bounds are computed once."""
    first = last = 0
    total: Counts | None = None
    for minute in minutes:
        if total is not None and minute >= last:
            yield minute_start(first), minute_start(last), total
            total = None
        if total is None:
            first, last = local_day_bounds(local_day_of(minute, zone), zone)
            total = _empty()
        _add(total, buckets[minute])
    if total is not None:
        yield minute_start(first), minute_start(last), total


def _worst_sliding_24h(
    minutes: list[int],
    buckets: Mapping[int, BucketCounts],
    rule: RateRule,
    ratio: Fraction,
    judge: Judge,
) -> WindowVerdict:
    """The worst of the 24-hour windows `[m − 1439, m]` (minutes, inclusive), for every m
    from the first bucket to the last bucket + 1439: every position where a window holds
    data (or lies between two buckets more than 24 h apart: then it is empty).

    Worst: among windows with a verdict (minimum sample met, or a certain violation below
    it), the highest level (violation > warning > ok), then one meeting the minimum sample
    (its rate is the regulator's figure; a certain violation below the sample is reported
    only when no sampled window is a violation), then the highest value, then the earliest
    start. When no window has one, the window with the largest denominator (then
    highest value, then earliest start) is reported as `insufficient`.

    A window's content only changes at a minute where a bucket enters (m = b) or leaves
    (m = b + 1440), so only those positions are judged, each with the running sum updated
    by the buckets entering and leaving: O(B log B) for B buckets, however long the
    campaign, instead of O(minutes × 1440). Between two such positions the content is the
    same, and the earliest window with it is the one at the position, which is what the
    tie on start needs. Only the chosen window gets its headroom computed.
    """
    last_position = minutes[-1] + SLIDING_MINUTES - 1
    entering = {m: buckets[m] for m in minutes}
    leaving = {
        m + SLIDING_MINUTES: buckets[m] for m in minutes if m + SLIDING_MINUTES <= last_position
    }
    total = _empty()
    best: tuple[int, bool, Fraction, int] | None = None  # (rank, sampled, value, -first)
    fallback: tuple[Fraction, Fraction, int] | None = None  # (denominator, value, -first)
    chosen: tuple[int, Counts] | None = None  # (first, counts)
    for position in sorted(entering.keys() | leaving.keys()):
        if position in entering:
            _add(total, entering[position])
        if position in leaving:
            _add(total, leaving[position], -1)
        first = position - SLIDING_MINUTES + 1
        numerator, denominator = rate_terms(rule.metric, BucketCounts.from_list(total), ratio)
        level = assess(numerator, denominator, rule.cap, rule.warning_fraction, rule.min_sample)
        value = Fraction(-1) if denominator == 0 else numerator / denominator
        if level != "insufficient":
            key = (_RANK[level], denominator >= rule.min_sample, value, -first)
            if best is None or key > best:
                best, chosen = key, (first, list(total))
        elif best is None:
            tie = (denominator, value, -first)
            if fallback is None or tie > fallback:
                fallback, chosen = tie, (first, list(total))
    assert chosen is not None  # minutes is not empty: at least one position
    first, counts = chosen
    return judge(minute_start(first), minute_start(first + SLIDING_MINUTES), counts)


def _periods_30d(
    minutes: list[int],
    buckets: Mapping[int, BucketCounts],
    first_call: datetime | None,
    heads: Mapping[int, BucketCounts],
) -> Iterator[Window]:
    """Successive periods `[anchor + k·30 d, anchor + (k+1)·30 d)` holding a call, in
    order; the last one is partial and reported with its nominal end. The anchor is
    `first_call` (SPEC "Windows": the instant of the campaign's earliest `originated_at`;
    a backfilled earlier call moves it and every boundary), else the first bucket's start.

    A boundary need not fall on a minute: the minute holding it counts its head (the calls
    before the boundary, `heads`) in the earlier period and the rest in the later one, so
    both edges are exact.

    A bucket wholly before `first_call` contradicts it (it would be an earlier call):
    ValueError.
    """
    if first_call is not None and first_call.utcoffset() is None:
        raise ValueError("first_call must be timezone-aware")
    anchor = minute_start(minutes[0]) if first_call is None else first_call
    if minute_start(minutes[0] + 1) <= anchor:
        raise ValueError(
            f"first_call {anchor.isoformat()} is after the earliest bucket "
            f"{minute_start(minutes[0]).isoformat()}: it cannot be the campaign's first call"
        )
    anchor_us = instant_us(anchor)
    totals: dict[int, Counts] = {}
    for minute in minutes:
        # The period of the minute's last instant takes the minute, less its head.
        index = period_index((minute + 1) * MINUTE_US - 1, anchor_us)
        counts = buckets[minute]
        head = heads.get(minute, EMPTY) if boundary_in(minute, anchor_us) is not None else EMPTY
        if head != EMPTY and index > 0:
            _add(totals.setdefault(index - 1, _empty()), head)
            counts = subtract(counts, head)
            if counts == EMPTY:
                continue  # every call of the minute was before the boundary
        _add(totals.setdefault(index, _empty()), counts)
    for index in sorted(totals):
        yield _period(anchor, index, totals[index])


def _period(anchor: datetime, index: int, total: Counts) -> Window:
    return anchor + index * PERIOD_30D, anchor + (index + 1) * PERIOD_30D, total
