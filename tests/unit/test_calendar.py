"""Calling hours, holidays and local time (SPEC "Hours are half-open"); instants in UTC."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest

from services.detector.core.calendar import (
    is_pre_holiday,
    is_public_holiday,
    is_within_calling_hours,
    local_time,
    validate_country,
    validate_zone,
)
from services.detector.core.profiles import HoursRange, Profile, load_profile


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def it_open_on_sundays() -> Profile:
    """`it` with Sunday 09-20, to see DST days (EU changes happen on Sundays) and a
    holiday falling on a Sunday do their own work."""
    it = load_profile("it")
    weekdays = (*it.calling_hours.weekdays[:6], (HoursRange.parse("09:00-20:00"),))
    return replace(it, calling_hours=replace(it.calling_hours, weekdays=weekdays))


# --- holidays ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "country", "expected"),
    [
        pytest.param(date(2026, 6, 2), "IT", True, id="it-festa-della-repubblica-2026-06-02"),
        pytest.param(date(2026, 6, 1), "IT", False, id="it-2026-06-01-working-day"),
        pytest.param(date(2026, 10, 4), "IT", True, id="it-4-october-holiday-from-2026"),
        pytest.param(date(2025, 10, 4), "IT", False, id="it-4-october-not-holiday-in-2025"),
        pytest.param(date(2026, 4, 6), "IT", True, id="it-easter-monday-2026"),
        pytest.param(date(2026, 4, 5), "IT", True, id="it-easter-sunday-2026"),
        pytest.param(date(2026, 12, 26), "IT", True, id="it-santo-stefano"),
        pytest.param(date(2026, 5, 8), "FR", True, id="fr-8-mai"),
        pytest.param(date(2026, 7, 3), "US", True, id="us-independence-day-observed-friday"),
        pytest.param(date(2026, 12, 28), "GB", True, id="gb-boxing-day-observed"),
        pytest.param(date(2026, 6, 2), "GB", False, id="gb-2-june-not-a-holiday"),
    ],
)
def test_is_public_holiday(day: date, country: str, expected: bool) -> None:
    assert is_public_holiday(day, country) is expected


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        pytest.param(date(2026, 6, 1), True, id="monday-before-2-june-is-pre-holiday"),
        pytest.param(date(2026, 6, 2), False, id="the-holiday-itself-is-not-pre-holiday"),
        pytest.param(date(2026, 6, 3), False, id="day-after-holiday-is-ordinary"),
        pytest.param(date(2026, 8, 14), True, id="friday-before-saturday-15-august"),
        pytest.param(date(2026, 10, 3), True, id="saturday-before-sunday-4-october"),
        pytest.param(date(2026, 12, 24), True, id="christmas-eve"),
        pytest.param(date(2026, 12, 25), False, id="christmas-before-santo-stefano-is-holiday"),
        pytest.param(date(2026, 12, 31), True, id="new-years-eve-across-the-year"),
        pytest.param(date(2028, 4, 30), True, id="sunday-before-monday-1-may-2028"),
        pytest.param(date(2026, 4, 4), True, id="saturday-before-easter-sunday"),
        pytest.param(date(2026, 4, 5), False, id="easter-sunday-before-easter-monday-is-holiday"),
    ],
)
def test_is_pre_holiday_italy(day: date, expected: bool) -> None:
    assert is_pre_holiday(day, "IT") is expected


def test_unknown_holiday_country_is_refused() -> None:
    with pytest.raises(ValueError, match="'XX'"):
        is_public_holiday(date(2026, 1, 1), "XX")
    with pytest.raises(ValueError, match="'XX'"):
        validate_country("XX")


# --- local time -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "zone", "wall"),
    [
        pytest.param(
            utc(2026, 3, 29, 0, 59, 59),
            "Europe/Rome",
            "01:59:59+01:00",
            id="rome-before-spring-forward",
        ),
        pytest.param(
            utc(2026, 3, 29, 1, 0, 0),
            "Europe/Rome",
            "03:00:00+02:00",
            id="rome-spring-forward-skips-02",
        ),
        pytest.param(
            utc(2026, 10, 25, 0, 30), "Europe/Rome", "02:30:00+02:00", id="rome-autumn-first-02:30"
        ),
        pytest.param(
            utc(2026, 10, 25, 1, 30), "Europe/Rome", "02:30:00+01:00", id="rome-autumn-second-02:30"
        ),
        pytest.param(
            utc(2026, 7, 16, 0, 0), "America/New_York", "20:00:00-04:00", id="new-york-edt"
        ),
    ],
)
def test_local_time(instant: datetime, zone: str, wall: str) -> None:
    assert local_time(instant, zone).isoformat().endswith(wall)


def test_local_time_accepts_any_aware_offset() -> None:
    instant = datetime(2026, 3, 2, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert local_time(instant, "Europe/Rome").time() == time(10, 0)


def test_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        local_time(datetime(2026, 3, 2, 10, 0), "Europe/Rome")  # noqa: DTZ001


@pytest.mark.parametrize("zone", ["Europe/Roma", "", "../etc/passwd", "Mars/Olympus"])
def test_unknown_zone_is_refused(zone: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        local_time(utc(2026, 3, 2, 10), zone)
    with pytest.raises(ValueError, match="unknown time zone"):
        validate_zone(zone)


# --- calling hours ----------------------------------------------------------------------------

ROME: tuple[str, ...] = ("Europe/Rome",)
NEW_YORK: tuple[str, ...] = ("America/New_York",)
CHICAGO: tuple[str, ...] = ("America/Chicago",)
NONE: tuple[str, ...] = ()

HOURS = [
    # it, ordinary weekday (Monday 2 Mar 2026, CET = UTC+1): 09:00-20:00
    pytest.param(
        "it", utc(2026, 3, 2, 7, 59, 59), ROME, None, False, id="it-cc1-weekday-08:59:59-out"
    ),
    pytest.param("it", utc(2026, 3, 2, 8, 0, 0), ROME, None, True, id="it-cc1-weekday-09:00:00-in"),
    pytest.param(
        "it", utc(2026, 3, 2, 18, 59, 59), ROME, None, True, id="it-cc1-weekday-19:59:59-in"
    ),
    pytest.param(
        "it", utc(2026, 3, 2, 19, 0, 0), ROME, None, False, id="it-cc1-weekday-20:00:00-out"
    ),
    # it, Saturday 7 Mar 2026: 10:00-19:00
    pytest.param(
        "it", utc(2026, 3, 7, 8, 59, 59), ROME, None, False, id="it-cc1-saturday-09:59:59-out"
    ),
    pytest.param(
        "it", utc(2026, 3, 7, 9, 0, 0), ROME, None, True, id="it-cc1-saturday-10:00:00-in"
    ),
    pytest.param(
        "it", utc(2026, 3, 7, 17, 59, 59), ROME, None, True, id="it-cc1-saturday-18:59:59-in"
    ),
    pytest.param(
        "it", utc(2026, 3, 7, 18, 0, 0), ROME, None, False, id="it-cc1-saturday-19:00:00-out"
    ),
    # it, Sunday and holidays: never
    pytest.param("it", utc(2026, 3, 8, 11, 0), ROME, None, False, id="it-cc1-sunday-noon-out"),
    pytest.param(
        "it", utc(2026, 6, 2, 10, 0), ROME, None, False, id="it-cc1-holiday-2-june-noon-out"
    ),
    pytest.param(
        "it",
        utc(2027, 10, 4, 10, 0),
        ROME,
        None,
        False,
        id="it-cc1-4-october-2027-monday-holiday-out",
    ),
    pytest.param(
        "it",
        utc(2025, 10, 4, 10, 0),
        ROME,
        None,
        True,
        id="it-cc1-4-october-2025-ordinary-saturday-in",
    ),
    pytest.param(
        "it",
        utc(2026, 10, 4, 10, 0),
        ROME,
        None,
        False,
        id="it-cc1-4-october-2026-sunday-holiday-out",
    ),
    # it, pre-holiday Monday 1 Jun 2026 (CEST = UTC+2): 10:00-19:00 instead of 09:00-20:00
    pytest.param(
        "it", utc(2026, 6, 1, 7, 30), ROME, None, False, id="it-cc1-pre-holiday-09:30-out"
    ),
    pytest.param(
        "it", utc(2026, 6, 1, 7, 59, 59), ROME, None, False, id="it-cc1-pre-holiday-09:59:59-out"
    ),
    pytest.param(
        "it", utc(2026, 6, 1, 8, 0, 0), ROME, None, True, id="it-cc1-pre-holiday-10:00:00-in"
    ),
    pytest.param(
        "it", utc(2026, 6, 1, 16, 59, 59), ROME, None, True, id="it-cc1-pre-holiday-18:59:59-in"
    ),
    pytest.param(
        "it", utc(2026, 6, 1, 17, 0, 0), ROME, None, False, id="it-cc1-pre-holiday-19:00:00-out"
    ),
    pytest.param(
        "it", utc(2026, 6, 1, 17, 30), ROME, None, False, id="it-cc1-pre-holiday-19:30-out"
    ),
    pytest.param(
        "it", utc(2026, 6, 3, 7, 0), ROME, None, True, id="it-cc1-day-after-holiday-09:00-in"
    ),
    pytest.param(
        "it",
        utc(2026, 8, 14, 7, 30),
        ROME,
        None,
        False,
        id="it-cc1-friday-before-saturday-holiday-09:30-out",
    ),
    pytest.param(
        "it",
        utc(2026, 8, 14, 10, 0),
        ROME,
        None,
        True,
        id="it-cc1-friday-before-saturday-holiday-noon-in",
    ),
    pytest.param(
        "it",
        utc(2028, 4, 30, 10, 0),
        ROME,
        None,
        False,
        id="it-cc1-sunday-pre-holiday-stays-closed",
    ),
    # it, around the DST changes (Sundays 29 Mar and 25 Oct 2026): the days either side
    pytest.param(
        "it",
        utc(2026, 3, 28, 8, 59, 59),
        ROME,
        None,
        False,
        id="it-saturday-before-spring-dst-09:59:59-cet-out",
    ),
    pytest.param(
        "it",
        utc(2026, 3, 28, 9, 0),
        ROME,
        None,
        True,
        id="it-saturday-before-spring-dst-10:00-cet-in",
    ),
    pytest.param(
        "it", utc(2026, 3, 29, 8, 0), ROME, None, False, id="it-spring-dst-sunday-10:00-cest-out"
    ),
    pytest.param(
        "it",
        utc(2026, 3, 30, 6, 59, 59),
        ROME,
        None,
        False,
        id="it-monday-after-spring-dst-08:59:59-cest-out",
    ),
    pytest.param(
        "it",
        utc(2026, 3, 30, 7, 0),
        ROME,
        None,
        True,
        id="it-monday-after-spring-dst-09:00-cest-in",
    ),
    pytest.param(
        "it",
        utc(2026, 10, 24, 8, 0),
        ROME,
        None,
        True,
        id="it-saturday-before-autumn-dst-10:00-cest-in",
    ),
    pytest.param(
        "it",
        utc(2026, 10, 26, 7, 59, 59),
        ROME,
        None,
        False,
        id="it-monday-after-autumn-dst-08:59:59-cet-out",
    ),
    pytest.param(
        "it",
        utc(2026, 10, 26, 8, 0),
        ROME,
        None,
        True,
        id="it-monday-after-autumn-dst-09:00-cet-in",
    ),
    pytest.param(
        "it",
        utc(2026, 10, 26, 18, 59, 59),
        ROME,
        None,
        True,
        id="it-monday-after-autumn-dst-19:59:59-cet-in",
    ),
    pytest.param(
        "it",
        utc(2026, 10, 26, 19, 0),
        ROME,
        None,
        False,
        id="it-monday-after-autumn-dst-20:00-cet-out",
    ),
    # zones: empty -> home zone; most restrictive of several
    pytest.param("it", utc(2026, 3, 2, 8, 0), NONE, None, True, id="it-no-zone-uses-rome-09:00-in"),
    pytest.param(
        "it", utc(2026, 3, 2, 7, 59, 59), NONE, None, False, id="it-no-zone-uses-rome-08:59:59-out"
    ),
    pytest.param(
        "it",
        utc(2026, 3, 2, 8, 30),
        ("Europe/London",),
        None,
        False,
        id="it-callee-tz-london-08:30-out",
    ),
    pytest.param(
        "us", utc(2026, 7, 15, 12, 0), NONE, None, True, id="us-no-zone-uses-new-york-08:00-in"
    ),
    pytest.param(
        "us",
        utc(2026, 7, 15, 12, 0),
        ("America/New_York", "America/Chicago"),
        None,
        False,
        id="us-two-zones-chicago-07:00-out-most-restrictive",
    ),
    pytest.param(
        "us",
        utc(2026, 7, 15, 12, 0),
        ("America/Chicago", "America/New_York"),
        None,
        False,
        id="us-two-zones-order-irrelevant",
    ),
    pytest.param(
        "us",
        utc(2026, 7, 15, 13, 0),
        ("America/New_York", "America/Chicago"),
        None,
        True,
        id="us-two-zones-both-in",
    ),
    pytest.param(
        "us",
        utc(2026, 7, 16, 1, 0),
        ("America/New_York", "America/Chicago"),
        None,
        False,
        id="us-two-zones-new-york-21:00-out",
    ),
    pytest.param(
        "us", utc(2026, 7, 16, 0, 59, 59), NEW_YORK, None, True, id="ftc-310.4c-20:59:59-in"
    ),
    pytest.param("us", utc(2026, 7, 16, 1, 0), NEW_YORK, None, False, id="ftc-310.4c-21:00:00-out"),
    pytest.param(
        "us", utc(2026, 7, 15, 11, 59, 59), NEW_YORK, None, False, id="ftc-310.4c-07:59:59-out"
    ),
    pytest.param(
        "us", utc(2026, 7, 3, 16, 0), NEW_YORK, None, True, id="ftc-federal-holiday-no-restriction"
    ),
    # US state overrides
    pytest.param(
        "us",
        utc(2026, 7, 16, 0, 0),
        NEW_YORK,
        "US-FL",
        False,
        id="fla-stat-501.616-20:00-out-federal-would-allow",
    ),
    pytest.param(
        "us",
        utc(2026, 7, 15, 23, 59, 59),
        NEW_YORK,
        "US-FL",
        True,
        id="fla-stat-501.616-19:59:59-in",
    ),
    pytest.param(
        "us", utc(2026, 7, 16, 0, 0), NEW_YORK, None, True, id="federal-20:00-in-without-region"
    ),
    pytest.param(
        "us", utc(2026, 7, 16, 0, 0), NEW_YORK, "us-fl", False, id="state-region-case-insensitive"
    ),
    pytest.param(
        "us",
        utc(2026, 7, 16, 0, 0),
        NEW_YORK,
        "US-NY",
        True,
        id="state-without-own-hours-uses-federal",
    ),
    pytest.param(
        "us", utc(2026, 7, 19, 15, 0), CHICAGO, "US-TX", False, id="texas-sunday-10:00-out"
    ),
    pytest.param("us", utc(2026, 7, 19, 17, 0), CHICAGO, "US-TX", True, id="texas-sunday-12:00-in"),
    pytest.param(
        "us", utc(2026, 7, 18, 14, 0), CHICAGO, "US-TX", True, id="texas-saturday-09:00-in"
    ),
    pytest.param(
        "us",
        utc(2027, 7, 4, 15, 0),
        CHICAGO,
        "US-TX",
        False,
        id="texas-sunday-rule-survives-holiday-on-sunday",
    ),
    pytest.param("us", utc(2026, 7, 19, 17, 0), CHICAGO, "US-AL", False, id="alabama-no-sundays"),
    pytest.param("us", utc(2026, 7, 3, 17, 0), CHICAGO, "US-AL", False, id="alabama-no-holidays"),
    pytest.param(
        "us", utc(2026, 7, 2, 17, 0), CHICAGO, "US-AL", True, id="alabama-weekday-noon-in"
    ),
    pytest.param(
        "us", utc(2026, 7, 19, 17, 0), CHICAGO, "US-MS", False, id="mississippi-no-sundays"
    ),
    pytest.param(
        "us", utc(2026, 7, 15, 13, 59, 59), NEW_YORK, "US-KY", False, id="kentucky-09:59:59-out"
    ),
    pytest.param("us", utc(2026, 7, 15, 14, 0), NEW_YORK, "US-KY", True, id="kentucky-10:00-in"),
    pytest.param(
        "us",
        utc(2026, 7, 15, 12, 59, 59),
        NEW_YORK,
        "US-MI",
        False,
        id="michigan-08:59:59-out-federal-would-allow",
    ),
    pytest.param("us", utc(2026, 7, 15, 13, 0), NEW_YORK, "US-MI", True, id="michigan-09:00-in"),
    pytest.param(
        "us",
        utc(2026, 7, 16, 3, 0),
        ("America/Los_Angeles",),
        "US-NV",
        False,
        id="nevada-20:00-pdt-out",
    ),
    # it-assocontact: no pre-holiday rule, weekdays to 21:00
    pytest.param(
        "it-assocontact",
        utc(2026, 6, 1, 7, 30),
        ROME,
        None,
        True,
        id="assocontact-pre-holiday-09:30-in-no-rule",
    ),
    pytest.param(
        "it-assocontact",
        utc(2026, 6, 1, 18, 59, 59),
        ROME,
        None,
        True,
        id="assocontact-pre-holiday-20:59:59-in",
    ),
    pytest.param(
        "it-assocontact",
        utc(2026, 6, 1, 19, 0),
        ROME,
        None,
        False,
        id="assocontact-weekday-21:00-out",
    ),
    pytest.param(
        "it-assocontact", utc(2026, 6, 2, 10, 0), ROME, None, False, id="assocontact-holiday-out"
    ),
    pytest.param(
        "it-assocontact",
        utc(2026, 3, 7, 8, 59, 59),
        ROME,
        None,
        False,
        id="assocontact-saturday-09:59:59-out",
    ),
    pytest.param(
        "it-assocontact",
        utc(2026, 3, 7, 9, 0),
        ROME,
        None,
        True,
        id="assocontact-saturday-10:00-in",
    ),
    pytest.param(
        "it-assocontact", utc(2026, 3, 8, 11, 0), ROME, None, False, id="assocontact-sunday-out"
    ),
    # fr: Mon-Fri 10-13 and 14-20
    pytest.param(
        "fr", utc(2026, 3, 2, 8, 59, 59), NONE, None, False, id="fr-d2022-1313-09:59:59-out"
    ),
    pytest.param("fr", utc(2026, 3, 2, 9, 0), NONE, None, True, id="fr-d2022-1313-10:00-in"),
    pytest.param(
        "fr", utc(2026, 3, 2, 11, 59, 59), NONE, None, True, id="fr-d2022-1313-12:59:59-in"
    ),
    pytest.param(
        "fr", utc(2026, 3, 2, 12, 0), NONE, None, False, id="fr-d2022-1313-lunch-13:00-out"
    ),
    pytest.param(
        "fr", utc(2026, 3, 2, 12, 59, 59), NONE, None, False, id="fr-d2022-1313-lunch-13:59:59-out"
    ),
    pytest.param("fr", utc(2026, 3, 2, 13, 0), NONE, None, True, id="fr-d2022-1313-14:00-in"),
    pytest.param("fr", utc(2026, 3, 2, 19, 0), NONE, None, False, id="fr-d2022-1313-20:00-out"),
    pytest.param("fr", utc(2026, 3, 7, 11, 0), NONE, None, False, id="fr-d2022-1313-saturday-out"),
    pytest.param(
        "fr", utc(2026, 5, 8, 10, 0), NONE, None, False, id="fr-d2022-1313-holiday-8-mai-out"
    ),
    pytest.param(
        "fr",
        utc(2026, 3, 2, 9, 0),
        ("America/Martinique",),
        None,
        False,
        id="fr-overseas-callee-tz-martinique-05:00-out",
    ),
    # uk: advisory 08-21 every day, holidays included
    pytest.param(
        "uk", utc(2026, 3, 29, 6, 59, 59), NONE, None, False, id="uk-spring-dst-07:59:59-bst-out"
    ),
    pytest.param("uk", utc(2026, 3, 29, 7, 0), NONE, None, True, id="uk-spring-dst-08:00-bst-in"),
    pytest.param(
        "uk", utc(2026, 12, 25, 12, 0), NONE, None, True, id="uk-christmas-no-holiday-restriction"
    ),
    pytest.param("uk", utc(2026, 12, 25, 21, 0), NONE, None, False, id="uk-21:00-gmt-out"),
]


@pytest.mark.parametrize(("profile", "instant", "zones", "region", "within"), HOURS)
def test_is_within_calling_hours(
    profile: str, instant: datetime, zones: tuple[str, ...], region: str | None, within: bool
) -> None:
    assert is_within_calling_hours(instant, zones, load_profile(profile), region) is within


DST_DAYS = [
    # spring forward, Sunday 29 Mar 2026 01:00 UTC: CEST = UTC+2 from then on
    pytest.param(utc(2026, 3, 29, 6, 59, 59), False, id="rome-spring-dst-08:59:59-cest-out"),
    pytest.param(utc(2026, 3, 29, 7, 0, 0), True, id="rome-spring-dst-09:00:00-cest-in"),
    pytest.param(utc(2026, 3, 29, 8, 0, 0), True, id="rome-spring-dst-08:00-utc-is-10:00-in"),
    pytest.param(utc(2026, 3, 29, 17, 59, 59), True, id="rome-spring-dst-19:59:59-cest-in"),
    pytest.param(utc(2026, 3, 29, 18, 0, 0), False, id="rome-spring-dst-20:00:00-cest-out"),
    # fall back, Sunday 25 Oct 2026 01:00 UTC: CET = UTC+1 from then on
    pytest.param(utc(2026, 10, 25, 7, 59, 59), False, id="rome-autumn-dst-08:59:59-cet-out"),
    pytest.param(utc(2026, 10, 25, 8, 0, 0), True, id="rome-autumn-dst-09:00:00-cet-in"),
    pytest.param(utc(2026, 10, 25, 7, 0, 0), False, id="rome-autumn-dst-07:00-utc-is-08:00-out"),
    pytest.param(utc(2026, 10, 25, 18, 59, 59), True, id="rome-autumn-dst-19:59:59-cet-in"),
    pytest.param(utc(2026, 10, 25, 19, 0, 0), False, id="rome-autumn-dst-20:00:00-cet-out"),
]


@pytest.mark.parametrize(("instant", "within"), DST_DAYS)
def test_dst_change_days_in_rome(instant: datetime, within: bool) -> None:
    """EU DST changes fall on Sundays, closed under `it`: a Sunday-open variant shows the
    09:00 and 20:00 boundaries move with the offset on the change days themselves."""
    assert is_within_calling_hours(instant, ROME, it_open_on_sundays()) is within


def test_holiday_on_a_sunday_closes_even_when_sundays_are_open() -> None:
    profile = it_open_on_sundays()
    assert is_within_calling_hours(utc(2026, 10, 11, 10, 0), ROME, profile)
    assert not is_within_calling_hours(utc(2026, 10, 4, 10, 0), ROME, profile)
    assert not is_within_calling_hours(utc(2026, 11, 1, 11, 0), ROME, profile)


def test_zones_must_be_a_sequence_not_one_string() -> None:
    with pytest.raises(TypeError):
        is_within_calling_hours(utc(2026, 3, 2, 10), "Europe/Rome", load_profile("it"))


def test_naive_instant_is_refused_by_calling_hours() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        is_within_calling_hours(datetime(2026, 3, 2, 10), ROME, load_profile("it"))  # noqa: DTZ001


def test_the_verdict_kept_per_utc_minute_is_that_of_every_instant_of_the_minute() -> None:
    """`is_within_calling_hours` keeps its verdict per (UTC minute, zone, hours, country):
    any instant of the minute, judged afresh, must agree, in zones with half-hour and
    45-minute offsets and across DST changes."""
    import random

    from services.detector.core.calendar import _within

    rng = random.Random(5)
    profiles = [load_profile(name) for name in ("it", "uk", "us", "fr")]
    zones = [
        "Europe/Rome",
        "Europe/London",
        "America/New_York",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "America/St_Johns",
        "Australia/Adelaide",
    ]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(5000):
        minute = start + timedelta(minutes=rng.randint(0, 366 * 1440))
        profile = rng.choice(profiles)
        zone = rng.choice(zones)
        region = "US-FL" if profile.name == "us" and rng.random() < 0.5 else None
        cached = is_within_calling_hours(
            minute + timedelta(microseconds=rng.randint(0, 59_999_999)), [zone], profile, region
        )
        fresh = _within(
            minute + timedelta(microseconds=rng.randint(0, 59_999_999)),
            zone,
            profile.hours_for(region),
            profile.holiday_country,
        )
        assert cached == fresh, (minute, zone, profile.name, region)
