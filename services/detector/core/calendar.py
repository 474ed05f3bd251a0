"""Local time, public holidays and calling hours (SPEC "Hours are half-open").

- `local_time` is the one place an instant is converted to a zone (`zoneinfo`, `tzdata`
  shipped). Instants must be aware; naive ones are refused (ValueError), never guessed.
- Holidays are a country's national public holidays from the pinned `holidays` (0.109),
  no subdivision, observed days included as the library lists them (e.g. US "Independence Day
  (observed)"); cached per (country, year). `holidays` 0.109 has Italy's 4 October (Saint
  Francis, restored by a 2025 law) from 2026 on.
- A pre-holiday ("prefestivo") is the day before a national holiday, also when the holiday is
  on a Saturday or Sunday; a day that is itself a holiday is a holiday, not a pre-holiday.
- `is_within_calling_hours` judges `originated_at` only, in every candidate zone of the
  callee: out in any zone means out (most restrictive, regulation.md §1). No zone: the
  profile's home zone. A `region` with its own hours in `profile.state_hours` (e.g. "US-FL")
  replaces the profile's hours. The profile country's holidays apply in every zone. How the
  day's facts combine is `CallingHours.allows` (weekday table narrowed by pre-holiday and
  holiday ranges; see profiles.py).
- Wall time is judged as shown on a clock: on the autumn DST day 02:30 happens twice and both
  are 02:30; spring's skipped hour never occurs, so 09:00 CEST on 2026-03-29 is 07:00 UTC.
- The verdict is the same for every instant of one UTC minute: hours ranges are whole
  minutes, and every zone's UTC offset since 1972 is whole minutes (CDRs start in 2000), so
  a minute's local hour, minute, date and weekday are one. It is kept per (UTC minute,
  zone, hours, country): most calls of a busy campaign share their minute and zones, and
  the conversion and holiday look-ups were an eighth of the engine's time.

Unknown zone names and holiday countries raise ValueError naming them; ingest validates
`callee_tz` so the detector only sees valid zones.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from functools import cache, lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

if TYPE_CHECKING:
    from .profiles import CallingHours, Profile

_ONE_DAY = timedelta(days=1)


@cache
def _zone_info(zone: str) -> ZoneInfo:
    # Only valid names are cached (a failed lookup raises), so the cache is bounded by tzdata.
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone!r}") from None


def validate_zone(zone: str) -> str:
    """`zone` if it is an IANA time zone name tzdata knows, else ValueError."""
    _zone_info(zone)
    return zone


def validate_country(country: str) -> str:
    """`country` if `holidays` has a national calendar for it (ISO 3166-1 alpha-2)."""
    if country not in holidays.list_supported_countries():
        raise ValueError(f"no national holiday calendar for country {country!r}")
    return country


def local_time(instant: datetime, zone: str) -> datetime:
    """`instant` (aware) as an aware wall-clock datetime in IANA `zone`."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"instant {instant.isoformat()} has no UTC offset")
    return instant.astimezone(_zone_info(zone))


@lru_cache(maxsize=4096)
def _holiday_dates(country: str, year: int) -> frozenset[date]:
    try:
        table = holidays.country_holidays(validate_country(country), years=year)
    except NotImplementedError:
        raise ValueError(f"no national holiday calendar for country {country!r}") from None
    return frozenset(table.keys())


def is_public_holiday(day: date, country: str) -> bool:
    """Whether `day` is a national public holiday of `country` (e.g. "IT")."""
    return day in _holiday_dates(country, day.year)


def is_pre_holiday(day: date, country: str) -> bool:
    """Whether `day` is the day before a national holiday and not a holiday itself."""
    if day == date.max or is_public_holiday(day, country):
        return False
    return is_public_holiday(day + _ONE_DAY, country)


_SINCE_1972 = datetime(1972, 1, 1, tzinfo=ZoneInfo("UTC"))
_MINUTE = timedelta(minutes=1)
_VERDICTS_MAX = 200_000
# (UTC minute, zone, country, id(hours)) -> (the hours object, within?): the object is kept
# so its id cannot be reused by another one while the entry lives.
_verdicts: dict[tuple[int, str, str, int], tuple[object, bool]] = {}


def is_within_calling_hours(
    instant: datetime, zones: Sequence[str], profile: Profile, region: str | None = None
) -> bool:
    """Whether a call originated at `instant` is within `profile`'s calling hours.

    `zones`: the callee's candidate IANA zones (empty: `profile.home_zone`); the call must be
    within hours in all of them. `region` (e.g. "US-FL") selects state hours when the profile
    has them. Ranges are half-open: with 09-20, 09:00:00 and 19:59:59 are in, 20:00:00 is out.
    """
    if isinstance(zones, str):
        raise TypeError("zones must be a sequence of zone names, not one string")
    hours = profile.hours_for(region)
    country = profile.holiday_country
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"instant {instant.isoformat()} has no UTC offset")
    if instant < _SINCE_1972:  # sub-minute UTC offsets existed: judge the instant itself
        return all(_within(instant, z, hours, country) for z in zones or (profile.home_zone,))
    minute = (instant - _SINCE_1972) // _MINUTE
    for zone in zones or (profile.home_zone,):
        key = (minute, zone, country, id(hours))
        held = _verdicts.get(key)
        if held is None or held[0] is not hours:
            if len(_verdicts) >= _VERDICTS_MAX:
                _verdicts.clear()
            held = _verdicts[key] = (hours, _within(instant, zone, hours, country))
        if not held[1]:
            return False
    return True


def _within(instant: datetime, zone: str, hours: CallingHours, country: str) -> bool:
    local = local_time(instant, zone)
    day = local.date()
    holiday = is_public_holiday(day, country)
    pre_holiday = not holiday and hours.pre_holiday is not None and is_pre_holiday(day, country)
    return hours.allows(local.time(), day.weekday(), pre_holiday=pre_holiday, holiday=holiday)
