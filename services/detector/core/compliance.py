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
- `sliding_24h` (Ofcom 2008 "any 24-hour period"): the worst 24 h, see `_worst`.
- `period_30d` (16 CFR 310.4(b)(4)(i), 47 CFR 64.1200(a)(7): "each successive 30-day
  period"): periods of exactly 30 × 24 h anchored at the exact instant of the campaign's
  first call, see `windows.Period30d`.

Each is a window kind of `windows.WINDOW_KINDS`, the one definition the detector's
engine uses too.

Only windows holding at least one bucket are reported (a bucket whose counts are all
zero still counts as data), so no buckets means no windows. Every figure is a
`Fraction`; datetimes are aware and in UTC; windows are half-open `[start, end)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from services.detector.core.model import BucketCounts
from services.detector.core.profiles import Profile, RateRule
from services.detector.core.rules import Level, assess, explain, headroom, rate_terms
from services.detector.core.windows import WINDOW_KINDS, CampaignBuckets, Window, instant_us

_RANK: Mapping[Level, int] = {"insufficient": 0, "ok": 1, "warning": 2, "violation": 3}


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

    The windows are the rule's window kind's (`windows.WINDOW_KINDS`) over the buckets;
    a kind the regulator judges at its worst (`sliding_24h`) reports that one window only
    (`_worst`). Order: rules in profile order; each rule's windows in time order.
    Early-warning rules are not regulatory windows and are not evaluated. A rule whose
    window is not a regulatory window kind raises ValueError.
    """
    if first_call is not None and first_call.utcoffset() is None:
        raise ValueError("first_call must be timezone-aware")
    campaign = CampaignBuckets(
        buckets,
        profile.home_zone,
        heads or {},
        None if first_call is None else instant_us(first_call),
    )
    verdicts: list[WindowVerdict] = []
    for rule in profile.rate_rules:
        if not rule.enabled:
            continue
        kind = WINDOW_KINDS.get(rule.window)
        if kind is None or not kind.regulatory:
            raise ValueError(f"rule {rule.id!r}: {rule.window!r} is not a regulatory window")
        windows = kind.over(campaign)
        if kind.worst_only:
            worst = _worst(windows, rule, amd_false_positive_ratio)
            verdicts.extend(
                () if worst is None else (_verdict(rule, amd_false_positive_ratio, worst),)
            )
        else:
            verdicts.extend(_verdict(rule, amd_false_positive_ratio, w) for w in windows)
    return verdicts


def _verdict(rule: RateRule, ratio: Fraction, window: Window) -> WindowVerdict:
    numerator, denominator = rate_terms(rule.metric, window.counts, ratio)
    level = assess(numerator, denominator, rule.cap, rule.warning_fraction, rule.min_sample)
    return WindowVerdict(
        rule_id=rule.id,
        window=rule.window,
        start=window.start,
        end=window.end,
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


def _worst(windows: Iterable[Window], rule: RateRule, ratio: Fraction) -> Window | None:
    """The worst of a rule's windows (for `sliding_24h`: every position where a window's
    content changes, `windows.Rolling.over`).

    Worst: among windows with a verdict (minimum sample met, or a certain violation below
    it), the highest level (violation > warning > ok), then one meeting the minimum sample
    (its rate is the regulator's figure; a certain violation below the sample is reported
    only when no sampled window is a violation), then the highest value, then the earliest
    start. When no window has one, the window with the largest denominator (then
    highest value, then earliest start) is reported as `insufficient`. Only the chosen
    window gets its headroom and reason computed (`_verdict`).
    """
    best: tuple[int, bool, Fraction, int] | None = None  # (rank, sampled, value, -start)
    fallback: tuple[Fraction, Fraction, int] | None = None  # (denominator, value, -start)
    chosen: Window | None = None
    for window in windows:
        numerator, denominator = rate_terms(rule.metric, window.counts, ratio)
        level = assess(numerator, denominator, rule.cap, rule.warning_fraction, rule.min_sample)
        value = Fraction(-1) if denominator == 0 else numerator / denominator
        earliness = -instant_us(window.start)
        if level != "insufficient":
            key = (_RANK[level], denominator >= rule.min_sample, value, earliness)
            if best is None or key > best:
                best, chosen = key, window
        elif best is None:
            tie = (denominator, value, earliness)
            if fallback is None or tie > fallback:
                fallback, chosen = tie, window
    return chosen
