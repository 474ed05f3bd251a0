"""The regulators' windows over minute buckets (services.detector.core.compliance).

Table ids name the rule and its source: Garante 2014 point 3 (it cumulative), IT-SC-3a
(it daily), Ofcom 2008/2010 UK-1 (uk calendar day, any 24 h), UK-1a (AMD estimate),
16 CFR 310.4(b)(4)(i) (us successive 30-day periods).
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from services.detector.core.compliance import WindowVerdict, evaluate_windows
from services.detector.core.model import BucketCounts
from services.detector.core.profiles import Profile, load_profile
from services.detector.core.rules import assess, explain, headroom, rate_terms
from services.detector.core.windows import minute_of, minute_start

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def calls(live: int, silent: int = 0, abandoned: int = 0, amd_machine: int = 0) -> BucketCounts:
    """`live` answered-by-person calls, of which `silent` silent and `abandoned` abandoned,
    plus `amd_machine` calls AMD judged to be machines."""
    return BucketCounts(
        attempts=live + amd_machine,
        answered=live + amd_machine,
        answered_by_person=live,
        amd_machine=amd_machine,
        silent=silent,
        abandoned=abandoned,
    )


def buckets(*items: tuple[datetime, BucketCounts]) -> dict[int, BucketCounts]:
    out: dict[int, BucketCounts] = {}
    for at, counts in items:
        out[minute_of(at)] = out.get(minute_of(at), BucketCounts()).merge(counts)
    return out


def only(verdicts: list[WindowVerdict], window: str) -> list[WindowVerdict]:
    return [v for v in verdicts if v.window == window]


def spans(verdicts: list[WindowVerdict]) -> list[tuple[datetime, datetime, int, int]]:
    return [(v.start, v.end, int(v.numerator), int(v.denominator)) for v in verdicts]


# --- it: whole campaign ------------------------------------------------------------------

CUMULATIVE = [
    pytest.param(3, 100, "warning", 0, id="garante-2014-p3-3-of-100-is-warning-not-violation"),
    pytest.param(4, 100, "violation", 0, id="garante-2014-p3-4-of-100-is-violation"),
    pytest.param(2, 100, "ok", 1, id="garante-2014-p3-2-of-100-ok-below-80pct-of-cap"),
    pytest.param(12, 500, "warning", 3, id="garante-2014-p3-2.4pct-is-exactly-the-warning"),
    pytest.param(3, 99, "insufficient", 0, id="garante-2014-p3-99-answered-below-min-sample"),
    pytest.param(4, 99, "violation", 0, id="garante-2014-p3-4-of-99-certain-below-min-sample"),
    pytest.param(30, 1000, "warning", 0, id="garante-2014-p3-30-of-1000-at-cap"),
    pytest.param(0, 1000, "ok", 30, id="garante-2014-p3-0-of-1000-headroom-30"),
]


@pytest.mark.parametrize(("silent", "live", "verdict", "room"), CUMULATIVE)
def test_it_cumulative_window_over_the_whole_campaign(
    silent: int, live: int, verdict: str, room: int
) -> None:
    # Split over three buckets a month apart: the window is the whole campaign.
    data = buckets(
        (utc(2026, 3, 2, 10, 0, 59), calls(live - live // 2, silent=silent)),
        (utc(2026, 3, 3, 9, 0), calls(live // 2 - 1)),
        (utc(2026, 4, 2, 17, 59, 30), calls(1)),
    )
    [window] = evaluate_windows(load_profile("it"), data)
    assert window.rule_id == "it-silent-rate-cumulative"
    assert window.window == "cumulative"
    assert (window.start, window.end) == (utc(2026, 3, 2, 10, 0), utc(2026, 4, 2, 18, 0))
    assert (window.numerator, window.denominator) == (silent, live)
    assert window.value == Fraction(silent, live)
    assert window.cap == Fraction(3, 100)
    assert (window.verdict, window.headroom) == (verdict, room)


# Issue 10: a certain violation is never hidden by the minimum sample ("3 ogni 100").
CERTAIN = [
    pytest.param(
        3,
        99,
        "insufficient",
        "insufficient: 99 answered-by-person calls, below the 100-call minimum sample; "
        "3 silent calls do not exceed 3 % of it",
        id="garante-2014-it-sc3-3-of-99-insufficient",
    ),
    pytest.param(
        4,
        99,
        "violation",
        "certain: 4 silent calls exceed 3 % of the 100-call minimum sample (at most 3), "
        "whatever the denominator (99 answered-by-person calls so far)",
        id="garante-2014-it-sc3-4-of-99-certain-violation",
    ),
    pytest.param(
        4,
        1,
        "violation",
        "certain: 4 silent calls exceed 3 % of the 100-call minimum sample (at most 3), "
        "whatever the denominator (4 answered-by-person calls so far)",
        id="garante-2014-it-sc3-4-of-4-certain-violation",
    ),
    pytest.param(
        4,
        100,
        "violation",
        "violation: 4 silent calls of 100 answered-by-person calls = 4 %, above the 3 % cap",
        id="garante-2014-it-sc3-4-of-100-violation",
    ),
    pytest.param(
        4,
        134,
        "warning",
        "warning: 4 silent calls of 134 answered-by-person calls = 2.99 %, at or above the "
        "warning level 2.4 % (80 % of the 3 % cap)",
        id="garante-2014-it-sc3-4-of-134-warning",
    ),
    pytest.param(
        5,
        134,
        "violation",
        "violation: 5 silent calls of 134 answered-by-person calls = 3.73 %, above the 3 % cap",
        id="garante-2014-it-sc3-5-of-134-violation",
    ),
    pytest.param(
        1,
        100,
        "ok",
        "ok: 1 silent calls of 100 answered-by-person calls = 1 %, below the warning level 2.4 %",
        id="garante-2014-it-sc3-1-of-100-ok",
    ),
]


@pytest.mark.parametrize(("silent", "live", "verdict", "reason"), CERTAIN)
def test_it_certain_violation_below_the_minimum_sample(
    silent: int, live: int, verdict: str, reason: str
) -> None:
    live = max(live, silent)
    data = buckets((utc(2026, 3, 2, 10, 0), calls(live, silent=silent)))
    [window] = evaluate_windows(load_profile("it"), data)
    assert (window.verdict, window.reason) == (verdict, reason)
    assert assess(Fraction(silent), Fraction(live), Fraction(3, 100), Fraction(4, 5), 100) == (
        verdict
    )


@pytest.mark.parametrize(
    ("profile_name", "overrides", "metric", "start", "window"),
    [
        pytest.param(
            "it",
            {"daily_rule_enabled": True},
            "silent",
            utc(2026, 3, 2, 10),
            "daily",
            id="it-daily-4pct",
        ),
        pytest.param(
            "it-assocontact",
            {},
            "silent",
            utc(2026, 3, 2, 10),
            "cumulative",
            id="it-assocontact-cumulative",
        ),
        pytest.param(
            "uk", {}, "abandoned", utc(2026, 3, 2, 10), "calendar_day", id="ofcom-calendar-day"
        ),
        pytest.param(
            "uk", {}, "abandoned", utc(2026, 3, 2, 10), "sliding_24h", id="ofcom-sliding-24h"
        ),
        pytest.param(
            "us", {}, "abandoned", utc(2026, 3, 2, 15), "period_30d", id="16cfr310-period-30d"
        ),
    ],
)
def test_every_rate_window_of_every_profile_has_the_certain_violation(
    profile_name: str, overrides: dict[str, object], metric: str, start: datetime, window: str
) -> None:
    """numerator > cap × minimum sample below the sample: a violation; one call fewer is
    insufficient (warnings wait for the sample)."""
    profile = load_profile(profile_name, overrides)
    [rule] = [r for r in profile.rate_rules if r.window == window]
    allowed = rule.cap * rule.min_sample
    assert allowed.denominator == 1
    live = rule.min_sample - 1
    for count, verdict in ((int(allowed), "insufficient"), (int(allowed) + 1, "violation")):
        data = buckets((start, calls(live, **{metric: count})))
        [got] = only(evaluate_windows(profile, data), window)
        assert (got.numerator, got.denominator, got.verdict) == (count, live, verdict)
        assert got.reason.startswith("certain:" if verdict == "violation" else "insufficient:")


HEADROOM = [
    pytest.param({}, 2, 100, 1, id="garante-2014-p3-2-of-100-one-more-allowed"),
    pytest.param({}, 3, 100, 0, id="garante-2014-p3-at-cap-none-more"),
    pytest.param({}, 4, 100, 0, id="garante-2014-p3-above-cap-zero-not-negative"),
    pytest.param({}, 0, 100, 3, id="garante-2014-p3-0-of-100-three-more"),
    pytest.param({}, 27, 1000, 3, id="garante-2014-p3-27-of-1000-three-more"),
    # Below the minimum sample ("insufficient"): the calls before the certain violation
    # (a 4th silent call whatever the denominator), never 0 while room is left.
    pytest.param({}, 0, 0, 3, id="garante-2014-p3-no-answered-calls-three-before-certain"),
    pytest.param({}, 1, 1, 2, id="garante-2014-p3-1-of-1-two-before-certain"),
    pytest.param({}, 3, 50, 0, id="garante-2014-p3-3-of-50-a-4th-is-certain"),
    pytest.param({}, 0, 99, 3, id="garante-2014-p3-0-of-99-sample-then-rate"),
    pytest.param({"silent_rate_max": 1}, 5, 10, -1, id="override-cap-100pct-unbounded"),
    pytest.param({"silent_rate_max": "1/10"}, 0, 9, 10, id="override-cap-10pct-0-of-9-unsampled"),
    pytest.param(
        {"silent_rate_max": "1/10", "min_sample": 9}, 0, 9, 1, id="override-cap-10pct-0-of-9"
    ),
]


@pytest.mark.parametrize(("overrides", "silent", "live", "room"), HEADROOM)
def test_headroom_by_hand(overrides: dict[str, object], silent: int, live: int, room: int) -> None:
    # (silent + k) / (live + k) <= cap: 2 of 100 -> 3/101 ok, 4/102 > 3 %: k = 1;
    # 27 of 1000 -> 30/1003 ok, 31/1004 > 3 %; 0 of 9 at 10 % -> 1/10 ok, 2/11 > 10 %.
    profile = load_profile("it", overrides)
    data = buckets((utc(2026, 3, 2, 10, 0), calls(live, silent=silent)))
    [window] = evaluate_windows(profile, data)
    assert window.headroom == room
    assert window.value == (None if live == 0 else Fraction(silent, live))


def test_it_daily_window_is_off_by_default_and_per_rome_day_when_on() -> None:
    data = buckets(
        (utc(2026, 12, 31, 22, 59), calls(50, silent=1)),  # 23:59 in Rome, 31 Dec
        (utc(2026, 12, 31, 23, 0), calls(60, silent=3)),  # 00:00 in Rome, 1 Jan 2027
    )
    assert [v.window for v in evaluate_windows(load_profile("it"), data)] == ["cumulative"]
    verdicts = evaluate_windows(load_profile("it", {"daily_rule_enabled": True}), data)
    assert [v.rule_id for v in verdicts] == [
        "it-silent-rate-cumulative",
        "it-silent-rate-daily",
        "it-silent-rate-daily",
    ]
    assert spans(only(verdicts, "daily")) == [
        (utc(2026, 12, 30, 23, 0), utc(2026, 12, 31, 23, 0), 1, 50),
        (utc(2026, 12, 31, 23, 0), utc(2027, 1, 1, 23, 0), 3, 60),
    ]
    assert only(verdicts, "daily")[0].cap == Fraction(4, 100)


# --- uk: calendar day in Europe/London ---------------------------------------------------

CALENDAR_DAYS = [
    pytest.param(
        [
            utc(2026, 3, 28, 23, 59),  # 28 Mar, GMT: London = UTC
            utc(2026, 3, 29, 0, 0),  # 29 Mar starts at 00:00 GMT
            utc(2026, 3, 29, 22, 59),  # 23:59 BST, still 29 Mar
            utc(2026, 3, 29, 23, 0),  # 00:00 BST, 30 Mar
        ],
        [
            (utc(2026, 3, 28, 0, 0), utc(2026, 3, 29, 0, 0)),
            (utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 23, 0)),  # 23 h
            (utc(2026, 3, 29, 23, 0), utc(2026, 3, 30, 23, 0)),
        ],
        [(1, 10), (2 + 3, 20 + 30), (4, 40)],
        id="ofcom-2010-acr-calendar-day-london-spring-forward-23h",
    ),
    pytest.param(
        [
            utc(2026, 10, 24, 22, 59),  # 23:59 BST, 24 Oct
            utc(2026, 10, 24, 23, 0),  # 00:00 BST, 25 Oct
            utc(2026, 10, 25, 23, 59),  # 23:59 GMT, 25 Oct
            utc(2026, 10, 26, 0, 0),  # 00:00 GMT, 26 Oct
        ],
        [
            (utc(2026, 10, 23, 23, 0), utc(2026, 10, 24, 23, 0)),
            (utc(2026, 10, 24, 23, 0), utc(2026, 10, 26, 0, 0)),  # 25 h
            (utc(2026, 10, 26, 0, 0), utc(2026, 10, 27, 0, 0)),
        ],
        [(1, 10), (2 + 3, 20 + 30), (4, 40)],
        id="ofcom-2010-acr-calendar-day-london-fall-back-25h",
    ),
    pytest.param(
        [
            utc(2026, 12, 31, 0, 0),
            utc(2026, 12, 31, 23, 59),
            utc(2027, 1, 1, 0, 0),
            utc(2027, 1, 1, 23, 59),
        ],
        [
            (utc(2026, 12, 31, 0, 0), utc(2027, 1, 1, 0, 0)),
            (utc(2027, 1, 1, 0, 0), utc(2027, 1, 2, 0, 0)),
        ],
        [(1 + 2, 10 + 20), (3 + 4, 30 + 40)],
        id="ofcom-2010-acr-calendar-day-london-new-year",
    ),
]


@pytest.mark.parametrize(("instants", "days", "figures"), CALENDAR_DAYS)
def test_uk_calendar_days_in_london(
    instants: list[datetime],
    days: list[tuple[datetime, datetime]],
    figures: list[tuple[int, int]],
) -> None:
    # The n-th bucket holds n abandoned of 10·n live calls.
    data = buckets(*((at, calls(10 * n, abandoned=n)) for n, at in enumerate(instants, 1)))
    verdicts = only(evaluate_windows(load_profile("uk"), data), "calendar_day")
    assert [v.rule_id for v in verdicts] == ["uk-abandoned-rate-calendar-day"] * len(days)
    assert spans(verdicts) == [(s, e, n, d) for (s, e), (n, d) in zip(days, figures, strict=True)]


def midnight_breach() -> dict[int, BucketCounts]:
    """Two London days each at 4 of 150 (2.67 %: warning, no violation); 23:00 and 01:00
    around the midnight between them hold 8 abandoned of 100 live calls (8 %)."""
    return buckets(
        (utc(2026, 1, 14, 8, 0), calls(100)),
        (utc(2026, 1, 14, 23, 0), calls(50, abandoned=4)),
        (utc(2026, 1, 15, 1, 0), calls(50, abandoned=4)),
        (utc(2026, 1, 15, 20, 0), calls(100)),
    )


def test_uk_breach_spanning_midnight_is_caught_by_the_sliding_24h_only() -> None:
    verdicts = evaluate_windows(load_profile("uk"), midnight_breach())
    days = only(verdicts, "calendar_day")
    assert [(v.verdict, v.numerator, v.denominator) for v in days] == [
        ("warning", 4, 150),
        ("warning", 4, 150),
    ]
    [worst] = only(verdicts, "sliding_24h")
    # Windows [m − 1439, m] hold both breach buckets and neither clean one for m in
    # [08:00, 19:59] on 15 Jan; the earliest is m = 08:00: [08:01 14 Jan, 08:01 15 Jan).
    assert worst == WindowVerdict(
        rule_id="uk-abandoned-rate-sliding-24h",
        window="sliding_24h",
        start=utc(2026, 1, 14, 8, 1),
        end=utc(2026, 1, 15, 8, 1),
        numerator=Fraction(8),
        denominator=Fraction(100),
        value=Fraction(8, 100),
        cap=Fraction(3, 100),
        verdict="violation",
        headroom=0,
        reason="violation: 8 abandoned calls of 100 answered-by-person calls = 8 %, above the "
        "3 % cap",
    )


SLIDING = [
    pytest.param(
        [(utc(2026, 5, 1, 9, 0), calls(100, abandoned=2))],
        (utc(2026, 4, 30, 9, 1), utc(2026, 5, 1, 9, 1)),
        "ok",
        (2, 100),
        id="ofcom-2008-any-24h-one-bucket-earliest-window-holding-it",
    ),
    pytest.param(
        [
            (utc(2026, 5, 1, 9, 0), calls(100, abandoned=2)),
            (utc(2026, 5, 3, 9, 0), calls(100, abandoned=2)),
        ],
        (utc(2026, 4, 30, 9, 1), utc(2026, 5, 1, 9, 1)),
        "ok",
        (2, 100),
        id="ofcom-2008-any-24h-equal-values-earliest-start-wins",
    ),
    pytest.param(
        [
            (utc(2026, 5, 1, 9, 0), calls(100, abandoned=2)),
            (utc(2026, 5, 3, 9, 0), calls(200, abandoned=5)),
        ],
        (utc(2026, 5, 2, 9, 1), utc(2026, 5, 3, 9, 1)),
        "warning",
        (5, 200),
        id="ofcom-2008-any-24h-higher-value-later-wins",
    ),
    pytest.param(
        [
            (utc(2026, 5, 1, 9, 0), calls(60, abandoned=1)),
            (utc(2026, 5, 2, 8, 0), calls(60, abandoned=1)),
            (utc(2026, 5, 2, 10, 0), calls(30, abandoned=2)),
        ],
        (utc(2026, 5, 1, 8, 1), utc(2026, 5, 2, 8, 1)),
        "ok",
        (2, 120),
        id="ofcom-2008-any-24h-small-sample-breach-not-certain-cannot-be-the-worst",
    ),
    pytest.param(
        [
            (utc(2026, 5, 1, 9, 0), calls(60, abandoned=1)),
            (utc(2026, 5, 2, 8, 0), calls(60, abandoned=1)),
            (utc(2026, 5, 2, 10, 0), calls(30, abandoned=9)),
        ],
        # 9 abandoned > 3 % of the 100-call minimum sample: certain below the sample; the
        # highest value among the violations is B alone (9/30), m in [08:00, 09:59] 3 May.
        (utc(2026, 5, 2, 8, 1), utc(2026, 5, 3, 8, 1)),
        "violation",
        (9, 30),
        id="ofcom-2008-any-24h-small-sample-certain-breach-is-the-worst",
    ),
    pytest.param(
        [
            (utc(2026, 5, 1, 9, 0), calls(100, abandoned=4)),
            (utc(2026, 5, 2, 10, 0), calls(5, abandoned=5)),
        ],
        # Both are violations; the one meeting the minimum sample (4/100) is reported, not
        # the certain 5/5 below it.
        (utc(2026, 4, 30, 9, 1), utc(2026, 5, 1, 9, 1)),
        "violation",
        (4, 100),
        id="ofcom-2008-any-24h-sampled-violation-before-certain-one",
    ),
    pytest.param(
        [
            (utc(2026, 5, 1, 9, 0), calls(40)),
            (utc(2026, 5, 1, 10, 0), calls(30, abandoned=3)),
            (utc(2026, 5, 2, 9, 30), calls(20)),
        ],
        # A + B (70 live, 4.3 %) for m in [10:00 1 May, 08:59 2 May] outweighs B + C
        # (50 live, 6 %): the largest denominator, not the highest value.
        (utc(2026, 4, 30, 10, 1), utc(2026, 5, 1, 10, 1)),
        "insufficient",
        (3, 70),
        id="ofcom-2008-any-24h-no-window-meets-sample-largest-denominator",
    ),
]


@pytest.mark.parametrize(("items", "window", "verdict", "figures"), SLIDING)
def test_uk_sliding_24h_reports_the_worst_window(
    items: list[tuple[datetime, BucketCounts]],
    window: tuple[datetime, datetime],
    verdict: str,
    figures: tuple[int, int],
) -> None:
    [worst] = only(evaluate_windows(load_profile("uk"), buckets(*items)), "sliding_24h")
    assert (worst.start, worst.end) == window
    assert (worst.verdict, worst.numerator, worst.denominator) == (verdict, *figures)


def brute_force_worst(
    profile: Profile, data: dict[int, BucketCounts], ratio: Fraction
) -> WindowVerdict:
    """Every window [m − 1439, m] summed from scratch; the worst by the documented order."""
    [rule] = [r for r in profile.rate_rules if r.window == "sliding_24h"]
    rank = {"insufficient": 0, "ok": 1, "warning": 2, "violation": 3}
    candidates = []
    for m in range(min(data), max(data) + 1440):
        total = BucketCounts()
        for minute, counts in data.items():
            if m - 1439 <= minute <= m:
                total = total.merge(counts)
        num, den = rate_terms(rule.metric, total, ratio)
        level = assess(num, den, rule.cap, rule.warning_fraction, rule.min_sample)
        value = None if den == 0 else num / den
        verdict = WindowVerdict(
            rule.id,
            rule.window,
            minute_start(m - 1439),
            minute_start(m + 1),
            num,
            den,
            value,
            rule.cap,
            level,
            headroom(num, den, rule.cap, rule.min_sample),
            explain(level, rule.metric, num, den, rule.cap, rule.warning_fraction, rule.min_sample),
        )
        candidates.append((verdict, -1 if value is None else value, -(m - 1439)))
    qualified = [c for c in candidates if c[0].verdict != "insufficient"]
    if qualified:
        return max(
            qualified,
            key=lambda c: (rank[c[0].verdict], c[0].denominator >= rule.min_sample, c[1], c[2]),
        )[0]
    return max(candidates, key=lambda c: (c[0].denominator, c[1], c[2]))[0]


@pytest.mark.parametrize("seed", range(40))
def test_sliding_24h_worst_equals_a_brute_force_scan_on_random_data(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - test data
    profile = load_profile("uk", {"min_sample": rng.choice([1, 20, 60, 150, 400])})
    ratio = rng.choice([Fraction(0), Fraction(1, 10), Fraction(1, 3)])
    origin = utc(2026, 3, 28, 12, 0) + rng.randrange(0, 600) * MINUTE
    spread = rng.choice([90, 1440, 3 * 1440, 5 * 1440])  # minutes
    data: dict[int, BucketCounts] = {}
    for _ in range(rng.randint(1, 25)):
        live = rng.randint(0, 120)
        counts = calls(
            live,
            abandoned=min(live, rng.choice([0, 0, 0, 0, 0, 0, 1, 1, 2])),
            amd_machine=rng.choice([0, 0, rng.randint(1, 10)]),
        )
        at = origin + rng.randrange(spread) * MINUTE
        data[minute_of(at)] = data.get(minute_of(at), BucketCounts()).merge(counts)
    [worst] = only(evaluate_windows(profile, data, amd_false_positive_ratio=ratio), "sliding_24h")
    assert worst == brute_force_worst(profile, data, ratio)


def test_amd_false_positive_estimate_is_added_to_both_terms() -> None:
    # Ofcom UK-1a: 2 abandoned of 90 live and 100 AMD=machine at ratio 1/10: the estimate
    # 10 makes it 12 of 100 (12 %); without it 2 of 90 is below the minimum sample.
    data = buckets((utc(2026, 6, 1, 12, 0), calls(90, abandoned=2, amd_machine=100)))
    profile = load_profile("uk")
    plain = evaluate_windows(profile, data)
    assert [(v.numerator, v.denominator, v.verdict) for v in plain] == [
        (2, 90, "insufficient"),
        (2, 90, "insufficient"),
    ]
    estimated = evaluate_windows(profile, data, amd_false_positive_ratio=Fraction(1, 10))
    assert [(v.window, v.numerator, v.denominator, v.value, v.verdict) for v in estimated] == [
        ("calendar_day", 12, 100, Fraction(12, 100), "violation"),
        ("sliding_24h", 12, 100, Fraction(12, 100), "violation"),
    ]
    # Only the abandoned rate takes the estimate: the it silent rate ignores it.
    [it] = evaluate_windows(
        load_profile("it"),
        buckets((utc(2026, 6, 1, 12, 0), calls(100, silent=2, amd_machine=100))),
        amd_false_positive_ratio=Fraction(1, 10),
    )
    assert (it.numerator, it.denominator) == (2, 100)


# --- us: successive 30-day periods from the first call -----------------------------------

ANCHOR = utc(2026, 1, 10, 15, 30, 20)
P = timedelta(days=30)

PERIODS = [
    pytest.param(
        ANCHOR,
        [
            (ANCHOR, calls(100, abandoned=1)),
            (ANCHOR + 29 * DAY, calls(100, abandoned=2)),
            (ANCHOR + P + MINUTE, calls(100, abandoned=3)),
            (ANCHOR + 2 * P - MINUTE, calls(100, abandoned=4)),
            (ANCHOR + 2 * P + MINUTE, calls(100, abandoned=5)),
            (ANCHOR + 64 * DAY, calls(100, abandoned=6)),
        ],
        [
            (ANCHOR, ANCHOR + P, 3, 200),
            (ANCHOR + P, ANCHOR + 2 * P, 7, 200),
            (ANCHOR + 2 * P, ANCHOR + 3 * P, 11, 200),  # partial, nominal end
        ],
        id="16cfr310.4b4i-30-day-periods-from-first-call-65-day-campaign",
    ),
    pytest.param(
        ANCHOR,
        [(ANCHOR, calls(50, abandoned=1)), (ANCHOR + 10 * DAY, calls(50, abandoned=1))],
        [(ANCHOR, ANCHOR + P, 2, 100)],
        id="16cfr310.4b4i-campaign-shorter-than-30-days-is-one-period",
    ),
    pytest.param(
        None,
        [(ANCHOR, calls(50, abandoned=1)), (ANCHOR + P, calls(50, abandoned=1))],
        [
            (utc(2026, 1, 10, 15, 30), utc(2026, 2, 9, 15, 30), 1, 50),
            (utc(2026, 2, 9, 15, 30), utc(2026, 3, 11, 15, 30), 1, 50),
        ],
        id="16cfr310.4b4i-no-first-call-anchors-at-first-bucket-minute",
    ),
    pytest.param(
        utc(2026, 1, 1, 8, 0),
        [
            (utc(2026, 1, 1, 8, 0), calls(10, abandoned=1)),  # the backfilled first call
            (ANCHOR, calls(100, abandoned=1)),
            (ANCHOR + 29 * DAY, calls(100, abandoned=2)),
            (ANCHOR + P + MINUTE, calls(100, abandoned=3)),
        ],
        [
            (utc(2026, 1, 1, 8, 0), utc(2026, 1, 31, 8, 0), 2, 110),
            (utc(2026, 1, 31, 8, 0), utc(2026, 3, 2, 8, 0), 5, 200),
        ],
        id="16cfr310.4b4i-backfilled-earlier-first-call-re-anchors-every-period",
    ),
    pytest.param(
        utc(2026, 12, 15, 12, 0),
        [
            (utc(2026, 12, 15, 12, 0), calls(100)),
            (utc(2026, 12, 31, 23, 59), calls(100, abandoned=1)),
            (utc(2027, 1, 1, 0, 0), calls(100, abandoned=2)),
            (utc(2027, 1, 14, 11, 59), calls(100, abandoned=3)),
            (utc(2027, 1, 14, 12, 0), calls(100, abandoned=4)),
        ],
        [
            (utc(2026, 12, 15, 12, 0), utc(2027, 1, 14, 12, 0), 6, 400),
            (utc(2027, 1, 14, 12, 0), utc(2027, 2, 13, 12, 0), 4, 100),
        ],
        id="16cfr310.4b4i-period-across-the-year-boundary",
    ),
]


@pytest.mark.parametrize(("first_call", "items", "periods"), PERIODS)
def test_us_successive_30_day_periods(
    first_call: datetime | None,
    items: list[tuple[datetime, BucketCounts]],
    periods: list[tuple[datetime, datetime, int, int]],
) -> None:
    verdicts = evaluate_windows(load_profile("us"), buckets(*items), first_call=first_call)
    assert {v.rule_id for v in verdicts} == {"us-abandoned-rate-period-30d"}
    assert {v.window for v in verdicts} == {"period_30d"}
    assert spans(verdicts) == periods


def test_a_boundary_inside_a_minute_splits_it_by_its_head() -> None:
    """The boundary ANCHOR + 30 d is 15:30:20 on 9 Feb, inside minute 15:30. That minute
    holds 20 calls: 10 before 15:30:20 (its head, 1 abandoned) count in period 0, the other
    10 (2 abandoned) in period 1. A minute whose calls are all before the boundary makes
    no period of its own."""
    boundary_minute = ANCHOR + P - timedelta(seconds=20)
    data = buckets(
        (ANCHOR, calls(100)),
        (boundary_minute, calls(20, abandoned=3)),
        (ANCHOR + 2 * P - timedelta(seconds=20), calls(5, abandoned=1)),
    )
    heads = {
        minute_of(boundary_minute): calls(10, abandoned=1),
        minute_of(ANCHOR + 2 * P): calls(5, abandoned=1),
    }
    verdicts = evaluate_windows(load_profile("us"), data, first_call=ANCHOR, heads=heads)
    assert spans(verdicts) == [(ANCHOR, ANCHOR + P, 1, 110), (ANCHOR + P, ANCHOR + 2 * P, 3, 15)]
    # Without heads (none reported) the minute's calls are all after the boundary.
    plain = evaluate_windows(load_profile("us"), data, first_call=ANCHOR)
    assert spans(plain)[:2] == [(ANCHOR, ANCHOR + P, 0, 100), (ANCHOR + P, ANCHOR + 2 * P, 3, 20)]


def test_us_period_verdicts_and_headroom() -> None:
    data = buckets(
        (ANCHOR, calls(200, abandoned=6)),  # 3 %: at the cap, a warning
        (ANCHOR + 31 * DAY, calls(100, abandoned=1)),  # 1 %: ok, headroom 2
    )
    verdicts = evaluate_windows(load_profile("us"), data, first_call=ANCHOR)
    assert [(v.verdict, v.headroom) for v in verdicts] == [("warning", 0), ("ok", 2)]


def test_a_first_call_after_the_earliest_bucket_is_refused() -> None:
    data = buckets((ANCHOR, calls(10)))
    with pytest.raises(ValueError, match="first_call"):
        evaluate_windows(load_profile("us"), data, first_call=ANCHOR + MINUTE)


# --- general -----------------------------------------------------------------------------


def test_no_buckets_no_windows_and_a_profile_without_rate_rules_has_none() -> None:
    assert evaluate_windows(load_profile("uk"), {}) == []
    assert evaluate_windows(load_profile("fr"), buckets((ANCHOR, calls(100, abandoned=50)))) == []


def test_disabled_rules_are_left_out() -> None:
    profile = load_profile("uk", {"sliding_24h_rule_enabled": False})
    verdicts = evaluate_windows(profile, buckets((ANCHOR, calls(10))))
    assert [v.window for v in verdicts] == ["calendar_day"]


def test_an_unknown_window_raises() -> None:
    base = load_profile("it")
    profile = replace(base, rate_rules=(replace(base.rate_rules[0], window="weekly"),))
    with pytest.raises(ValueError, match="weekly"):
        evaluate_windows(profile, buckets((ANCHOR, calls(10))))


def _brute_force_headroom(n: Fraction, d: Fraction, cap: Fraction, min_sample: int) -> int:
    """Add one silent (and answered) call at a time until `assess` says violation."""
    k = 0
    while assess(n + k + 1, d + k + 1, cap, Fraction(4, 5), min_sample) != "violation":
        k += 1
    return k if assess(n, d, cap, Fraction(4, 5), min_sample) != "violation" else 0


@pytest.mark.parametrize("cap", [Fraction(3, 100), Fraction(1, 10), Fraction(1, 3)])
@pytest.mark.parametrize("min_sample", [0, 1, 10, 100])
def test_headroom_is_the_calls_before_assess_says_violation(cap: Fraction, min_sample: int) -> None:
    """Every window, sampled or not: headroom is exactly how many silent calls more keep
    the verdict off `violation` (also with the fractional terms of the UK AMD estimate)."""
    for d in range(0, 130):
        for n in range(0, min(d, 12) + 1):
            for extra in (Fraction(0), Fraction(3, 10)):
                num, den = n + extra, d + extra
                assert headroom(num, den, cap, min_sample) == _brute_force_headroom(
                    num, den, cap, min_sample
                ), (num, den, cap, min_sample)
