"""The window kinds (`windows.WINDOW_KINDS`): the one definition of every window a rule can
name, asked by the engine ("which windows did this batch touch", `touched`) and by the
compliance view ("the windows over these buckets", `over`). The two answers must be the
same windows with the same counts, or an alert and the compliance page would disagree."""

from __future__ import annotations

import random
from datetime import date

import pytest

from services.detector.core.model import EMPTY, BucketCounts
from services.detector.core.profiles import (
    EARLY_WARNING_WINDOWS,
    REGULATORY_WINDOWS,
    load_profile,
)
from services.detector.core.windows import (
    LIVE_ROLLING,
    MINUTE_US,
    PERIOD_US,
    WINDOW_KINDS,
    BatchTouch,
    CampaignBuckets,
    Rolling,
    boundary_in,
    instant_us,
    local_day_bounds,
    local_day_of,
    minute_of,
    period_counts,
    period_index,
    sum_buckets,
)

START = 29_000_000  # a minute in 2025
ZONES = ("Europe/Rome", "Europe/London", "America/New_York", "Australia/Lord_Howe")


def _random_campaign(seed: int) -> CampaignBuckets:
    """Buckets over ~70 days (DST changes, three 30-day periods), with heads on the
    minutes holding a period boundary, anchored at a first call inside the first minute."""
    rng = random.Random(seed)
    counts: dict[int, BucketCounts] = {}
    minute = START + rng.randrange(0, 1440)
    while minute < START + 70 * 1440:
        answered = rng.randrange(0, 40)
        counts[minute] = BucketCounts(
            attempts=answered + rng.randrange(0, 10),
            answered_by_person=answered,
            silent=rng.randrange(0, 3),
            abandoned=rng.randrange(0, 3),
        )
        minute += rng.choice((1, 7, 60, 600, 2000))
    first = min(counts)
    first_call_us = first * MINUTE_US + rng.randrange(0, MINUTE_US)
    for k in (1, 2):  # a bucket on every boundary minute, part of it before the boundary
        counts[(first_call_us + k * PERIOD_US) // MINUTE_US] = BucketCounts(
            attempts=9, answered_by_person=7, silent=1
        )
    heads: dict[int, BucketCounts] = {}
    for boundary_minute in counts:
        if boundary_in(boundary_minute, first_call_us) is not None and boundary_minute != first:
            whole = counts[boundary_minute]
            heads[boundary_minute] = BucketCounts(
                attempts=whole.attempts // 2, answered_by_person=whole.answered_by_person // 2
            )
    return CampaignBuckets(counts, rng.choice(ZONES), heads, first_call_us)


def _batch_touching_everything(campaign: CampaignBuckets) -> BatchTouch:
    """What the engine would hold had one batch counted every bucket: its sums computed
    independently of the kinds (local day bounds, `period_counts`)."""
    minutes = campaign.minutes
    anchor = campaign.first_call_us
    assert anchor is not None

    def lookup(minute: int) -> BucketCounts:
        return campaign.counts.get(minute, EMPTY)

    def head(minute: int) -> BucketCounts:
        return campaign.heads.get(minute, EMPTY)

    def day_counts(day: date) -> BucketCounts:
        return sum_buckets(lookup, *local_day_bounds(day, campaign.zone))

    newest_us = (minutes[-1] + 1) * MINUTE_US - 1
    periods = [
        k
        for k in range(period_index(newest_us, anchor) + 1)
        if period_counts(k, anchor, lookup, head) != EMPTY
    ]
    return BatchTouch(
        first_minute=minutes[0],
        newest_minute=minutes[-1],
        totals=sum_buckets(lookup, minutes[0], minutes[-1] + 1),
        zone=campaign.zone,
        days={local_day_of(m, campaign.zone) for m in minutes},
        day_counts=day_counts,
        anchor_us=anchor,
        periods=periods,
        period_counts=lambda k: period_counts(k, anchor, lookup, head),
    )


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("name", ["cumulative", "daily", "calendar_day", "period_30d"])
def test_a_batch_touching_every_bucket_touches_the_windows_over_them(seed: int, name: str) -> None:
    campaign = _random_campaign(seed)
    kind = WINDOW_KINDS[name]
    assert list(kind.touched(_batch_touching_everything(campaign))) == list(kind.over(campaign))


@pytest.mark.parametrize("seed", range(6))
def test_period_windows_are_30_days_from_the_first_calls_instant(seed: int) -> None:
    campaign = _random_campaign(seed)
    assert campaign.first_call_us is not None
    windows = list(WINDOW_KINDS["period_30d"].over(campaign))
    assert len(windows) >= 2
    for k, window in enumerate(windows):
        assert window.key == f"period-{k}"
        assert instant_us(window.start) == campaign.first_call_us + k * PERIOD_US
    total = BucketCounts()
    for window in windows:
        total = total.merge(window.counts)
    assert total == next(WINDOW_KINDS["cumulative"].over(campaign)).counts


@pytest.mark.parametrize("seed", range(6))
def test_day_windows_are_local_midnight_to_midnight(seed: int) -> None:
    campaign = _random_campaign(seed)
    for window in WINDOW_KINDS["calendar_day"].over(campaign):
        day = date.fromisoformat(window.key)
        first, last = local_day_bounds(day, campaign.zone)
        assert (minute_of(window.start), minute_of(window.end)) == (first, last)
        assert window.counts == sum_buckets(lambda m: campaign.counts.get(m, EMPTY), first, last)
        assert WINDOW_KINDS["calendar_day"].evidence_days(window, campaign.zone) == [day]


@pytest.mark.parametrize("length", [15, 60, 1440])
@pytest.mark.parametrize("seed", range(4))
def test_rolling_windows_are_every_distinct_content_of_a_minute_by_minute_scan(
    seed: int, length: int
) -> None:
    """`Rolling.over` yields only the positions where a bucket enters or leaves; a scan of
    every minute from the first bucket to the last + length - 1 finds the same contents,
    and each yielded window holds exactly the buckets between its bounds."""
    rng = random.Random(seed)
    counts = {
        START + rng.randrange(0, 3 * length): BucketCounts(attempts=rng.randrange(1, 9))
        for _ in range(8)
    }
    kind = Rolling("test", length)
    got = list(kind.over(CampaignBuckets(counts, "UTC")))
    first, last = min(counts), max(counts) + length - 1
    scanned: dict[BucketCounts, int] = {}
    previous = None
    for end in range(first, last + 1):
        content = sum_buckets(lambda m: counts.get(m, EMPTY), end - length + 1, end + 1)
        if content != previous:
            scanned.setdefault(content, end)
            previous = content
    for window in got:
        end = minute_of(window.end) - 1
        assert minute_of(window.start) == end - length + 1
        assert window.counts == sum_buckets(
            lambda m: counts.get(m, EMPTY), end - length + 1, end + 1
        )
    assert {w.counts for w in got} == set(scanned)


def test_every_window_a_profile_names_is_a_kind_and_the_split_follows_the_kinds() -> None:
    assert set(REGULATORY_WINDOWS) | set(EARLY_WARNING_WINDOWS) == set(WINDOW_KINDS)
    assert all(WINDOW_KINDS[name].regulatory for name in REGULATORY_WINDOWS)
    assert not any(WINDOW_KINDS[name].regulatory for name in EARLY_WARNING_WINDOWS)
    for name in ("it", "uk", "us", "fr"):
        profile = load_profile(name)
        for rule in (*profile.rate_rules, *profile.early_warning):
            assert rule.window in WINDOW_KINDS, rule.id
    # The detector keeps one live sum per rolling length; sliding_24h shares the 24 h one.
    assert dict(LIVE_ROLLING) == {"15m": 15, "1h": 60, "24h": 1440}
    assert WINDOW_KINDS["sliding_24h"].sample == "24h"
    assert [k.alert_scope for k in WINDOW_KINDS.values() if k.alert_scope] == [
        "day",
        "day",
        "period",
    ]


def test_a_first_call_after_the_earliest_bucket_is_refused() -> None:
    campaign = CampaignBuckets(
        {START: BucketCounts(attempts=1)}, "UTC", {}, (START + 1) * MINUTE_US
    )
    with pytest.raises(ValueError, match="cannot be the campaign's first call"):
        list(WINDOW_KINDS["period_30d"].over(campaign))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", ["cumulative", "calendar_day", "period_30d", "1h"])
def test_the_window_holding_a_minute_is_the_one_over_the_buckets_that_holds_it(
    seed: int, name: str
) -> None:
    """`holding` (the api's current window) agrees with `over` (the compliance view): for
    every bucket's minute, the window `over` puts it in has the bounds `holding` gives."""
    campaign = _random_campaign(seed)
    kind = WINDOW_KINDS[name]
    minutes = campaign.minutes
    windows = list(kind.over(campaign))
    # A sample of the minutes, and every minute holding a period boundary.
    for minute in sorted({*minutes[:: max(1, len(minutes) // 40)], *campaign.heads}):
        start, end = kind.holding(
            minute,
            first_minute=minutes[0],
            zone=campaign.zone,
            first_call_us=campaign.first_call_us,
        )
        # The window holding the minute's last instant (a period boundary may lie inside).
        last_us = (minute + 1) * MINUTE_US - 1
        assert instant_us(start) <= last_us < instant_us(end)
        if name == "1h":  # rolling: the window ending with the minute
            assert minute_of(end) == minute + 1 and minute_of(start) == minute - 59
            continue
        if name == "cumulative":
            assert (minute_of(start), minute_of(end)) == (minutes[0], minute + 1)
            continue
        assert any((w.start, w.end) == (start, end) for w in windows), (minute, start, end)
