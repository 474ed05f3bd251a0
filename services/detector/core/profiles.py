"""Rule profiles: every regulatory number is data, read from `services/detector/profiles/*.toml`.

A profile file holds each parameter with its source and a `reviewed` date (see `it.toml` for
the annotated layout); this module parses and validates it strictly (unknown keys, bad values,
inconsistent references are a `ProfileError` naming the file and the key) and applies
per-campaign overrides. Nothing here evaluates a rule: calling hours are judged in
`calendar.is_within_calling_hours`, calls are classified in `classify.classify`.

Representations (units are in the names):

- Seconds, caps and fractions are `Fraction` (exact): a string `"3/100"`, `"0.03"`, `"2"`, an
  integer, or a float (TOML or JSON overrides) read through its shortest repr, so `0.03` is
  exactly 3/100. Booleans, NaN and infinities are refused.
- `HoursRange` is half-open `[start_minute, end_minute)` of local wall time in minutes since
  midnight, `0 <= start_minute < end_minute <= 1440`; 1440 is 24:00, the end of the day. TOML
  writes it `"09:00-20:00"`. With 09:00-20:00, 09:00:00 and 19:59:59.999999 are in, 20:00:00
  is out (SPEC "Hours are half-open").
- `CallingHours` narrows, never widens: a call is allowed when its weekday's ranges allow it
  AND, on a public holiday, the `holiday` ranges allow it, or, on a pre-holiday (a day before
  a holiday that is not itself one) of a profile with that rule, the `pre_holiday` ranges do.
  Precedence is holiday > pre-holiday > weekday table, but as successive restrictions, so a
  Sunday before a Monday holiday stays closed under `it` ("never on Sundays", code of conduct
  2024) and Texas's Sunday 12:00 start survives a federal holiday on a Sunday. "No holiday
  restriction" is written `holiday = ["00:00-24:00"]`; `holiday = []` means no calls.
- Rate rule ids are `<profile>-<metric>-rate-<window>` with `_` as `-`, e.g.
  `it-silent-rate-cumulative`, `uk-abandoned-rate-sliding-24h`; early-warning rules add the
  15m, 1h and 24h rolling windows on the metric and cap of the rule named in
  `[early_warning] follows` (`it-silent-rate-15m`), with the same warning fraction and minimum
  sample. A profile without a rate rule (`fr`) has no early warning.
- Lockouts (`hours` rolling, or `calendar_days`: locked until the end of the Nth calendar day
  after the triggering call's day in the home zone, 0 = the same day; `after = "<id>"`: only
  from the end of that shorter lockout of the same trigger on), frequency caps and
  per-call rules are data for the lockout and per-call issues; they are parsed and validated
  here and not yet evaluated.

A parameter or rule table may carry `reviewed = YYYY-MM-DD`, the date its number was last
checked against its source (kept in `sources` under `reviewed:<key>`). `min_retention_days`
(optional) is the shortest retention of stored reports the profile allows
(`retention_refusal`; `it`: 730 days, Garante 2014).

Overrides (`load_profile(name, overrides)`, SPEC `PUT /v1/campaigns/{id}`): a mapping from a
key of `override_keys()` to a value. Every key is validated before anything is applied; an
unknown key, a bad value or a key that does not apply to the profile (e.g. `silent_rate_max`
on `uk`, which has no silent rate rule) raises one `ProfileError` listing every offending
key, and the profile is never half-applied (profiles are immutable: a new one is returned).

- `connect_limit_seconds`, `short_ring_min_seconds` (> 0); `silent_release_max_seconds`,
  `message_start_max_seconds`, `silent_wait_max_seconds` (> 0, only where the profile has
  that rule);
- `amd_false_positive_ratio` in [0, 1] (any profile; only the `uk` formula uses it);
- `min_sample` (integer >= 1) and `warning_fraction` in (0, 1]: every rate and early-warning rule;
- `silent_rate_max`, `abandoned_rate_max` in (0, 1]: every rule on that metric except the
  Italian supplementary `daily` rule, early-warning rules included;
- `daily_silent_rate_max`, `daily_abandoned_rate_max`: the `daily` rule's cap;
- `<window>_rule_enabled` (bool) for cumulative, daily, calendar_day, sliding_24h, period_30d;
  `early_warning_enabled` (bool).

An overridden parameter's `sources` entry becomes "per-campaign override (profile file: ...)".
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from fractions import Fraction
from functools import cache, lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from .calendar import validate_country, validate_zone
from .windows import MINUTES_PER_DAY, WINDOW_KINDS

METRICS = ("silent", "abandoned")
REGULATORY_WINDOWS = tuple(name for name, kind in WINDOW_KINDS.items() if kind.regulatory)
EARLY_WARNING_WINDOWS = tuple(name for name, kind in WINDOW_KINDS.items() if not kind.regulatory)
LOCKOUT_TRIGGERS = ("silent", "abandoned", "amd_machine", "refusal")
PER_CALL_CHECKS = (
    "out_of_hours",  # outcome.out_of_hours
    "short_ring",  # outcome.short_ring
    "silent_release",  # silent and ended_at - answered_at > silent_release_max_seconds (IT-SC-2)
    "silent_wait",  # answered by a person, agent_connected_at - answered_at > silent_wait_max_s.
    "comfort_noise",  # silent without message_type comfort_noise (IT-SC-4), when reported
    "message",  # abandoned without a message (UK-2 within message_start_max_seconds; US)
    "silent_call",  # any silent call (uk, Ofcom 2016)
)

_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_REGION = re.compile(r"^[A-Z]{2}-[A-Z0-9]{1,3}$")
_HHMM = re.compile(r"^(\d{2}):(\d{2})$")

T = TypeVar("T")


class ProfileError(ValueError):
    """A profile file or an override is invalid; the message names the file or key."""


@dataclass(frozen=True, slots=True, order=True)
class HoursRange:
    """Half-open `[start_minute, end_minute)` of local wall time, minutes since midnight.

    `0 <= start_minute < end_minute <= 1440` (1440 = 24:00). Bounds are whole minutes, so
    `contains` only looks at a moment's hour and minute: 19:59:59.999 is in 09:00-20:00.
    """

    start_minute: int
    end_minute: int

    def __post_init__(self) -> None:
        if not 0 <= self.start_minute < self.end_minute <= MINUTES_PER_DAY:
            raise ValueError(
                f"hours range needs 0 <= start < end <= 1440 minutes, got "
                f"{self.start_minute}..{self.end_minute}"
            )

    @classmethod
    def parse(cls, text: str) -> HoursRange:
        """`"09:00-20:00"` (an en dash is accepted too); `"24:00"` only as an end."""
        parts = text.replace("\u2013", "-").split("-")
        if len(parts) != 2:
            raise ValueError(f"{text!r} is not HH:MM-HH:MM")
        try:
            start, end = (_minute_of_day(part.strip()) for part in parts)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not HH:MM-HH:MM ({exc})") from None
        if start >= end:
            raise ValueError(f"{text!r}: start must be before end")
        if start == MINUTES_PER_DAY:
            raise ValueError(f"{text!r}: 24:00 is only valid as an end")
        return cls(start, end)

    def contains(self, moment: time) -> bool:
        """Whether the local wall time `moment` is in `[start, end)`; `fold` is ignored."""
        minute = moment.hour * 60 + moment.minute
        return self.start_minute <= minute < self.end_minute

    def __str__(self) -> str:
        return f"{_hhmm(self.start_minute)}-{_hhmm(self.end_minute)}"


def _within(ranges: tuple[HoursRange, ...], moment: time) -> bool:
    return any(r.contains(moment) for r in ranges)


@dataclass(frozen=True, slots=True)
class CallingHours:
    """When calls may start, in the callee's local wall time (SPEC "Hours are half-open").

    `weekdays[0]` is Monday ... `weekdays[6]` Sunday; `()` = no calls that day.
    `pre_holiday` None = the profile has no pre-holiday rule. `holiday` `()` = no calls on
    public holidays; `(HoursRange(0, 1440),)` = holidays add no restriction. `advisory`: out
    of hours is counted but alerts as a warning only (uk).
    """

    weekdays: tuple[tuple[HoursRange, ...], ...]
    pre_holiday: tuple[HoursRange, ...] | None
    holiday: tuple[HoursRange, ...]
    advisory: bool

    def __post_init__(self) -> None:
        if len(self.weekdays) != 7:
            raise ValueError(f"calling hours need 7 weekdays, got {len(self.weekdays)}")

    def allows(
        self, moment: time, weekday: int, *, pre_holiday: bool = False, holiday: bool = False
    ) -> bool:
        """Whether a call may start at local `moment` on a day with these facts.

        `weekday` 0 = Monday. The weekday's ranges must allow it; on a holiday the holiday
        ranges must too; otherwise on a pre-holiday (if the profile has the rule) the
        pre-holiday ranges must too. Restrictions narrow, they never widen.
        """
        if not _within(self.weekdays[weekday], moment):
            return False
        if holiday:
            return _within(self.holiday, moment)
        if pre_holiday and self.pre_holiday is not None:
            return _within(self.pre_holiday, moment)
        return True


@dataclass(frozen=True, slots=True)
class RateRule:
    """A cap on `metric` ÷ answered_by_person over `window` (SPEC "Rates and thresholds").

    Violation: value > cap (caps are inclusive). Warning: value >= cap × warning_fraction.
    Neither before the window's denominator reaches `min_sample`.
    """

    id: str
    metric: str
    window: str
    cap: Fraction
    warning_fraction: Fraction
    min_sample: int
    enabled: bool
    reference: str


@dataclass(frozen=True, slots=True)
class PerCallRule:
    """A per-call violation rule (`check` is one of PER_CALL_CHECKS); not evaluated yet."""

    id: str
    check: str
    enabled: bool
    advisory: bool
    reference: str


@dataclass(frozen=True, slots=True)
class LockoutRule:
    """No new call to a number after a `trigger` call (one of LOCKOUT_TRIGGERS) for
    `hours` (rolling) or until the end of the `calendar_days`-th day after the triggering
    call's day in the home zone (0 = same day); exactly one of the two is set. With
    `agent_guaranteed_exempt`, a call in an agent-guaranteed dial mode is allowed.

    `after` (another lockout of the profile, same trigger, shorter): this rule covers only
    the calls from the end of `after`'s lockout on (inclusive), not those from the trigger
    on. The `it` "next call with an operator guaranteed" rule (IT-SC-5) is one: it starts
    where `it-silent-lockout` ends and lets only agent-guaranteed calls through."""

    id: str
    trigger: str
    hours: int | None
    calendar_days: int | None
    agent_guaranteed_exempt: bool
    reference: str
    after: LockoutRule | None = None


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most `max_calls` attempts to one number within `window_days` rolling calendar days."""

    id: str
    max_calls: int
    window_days: int
    reference: str


@dataclass(frozen=True, slots=True)
class Profile:
    """One campaign rule profile: all numbers, each with its source in `sources`.

    `state_hours` replace `calling_hours` when a call's `callee_region` (e.g. "US-FL") is a
    key. `state_hours` and `sources` are read-only mappings, left out of the hash.
    """

    name: str
    title: str
    reviewed: date
    home_zone: str
    holiday_country: str
    connect_limit_seconds: Fraction
    short_ring_min_seconds: Fraction
    silent_release_max_seconds: Fraction | None
    calling_hours: CallingHours
    state_hours: Mapping[str, CallingHours] = field(hash=False)
    rate_rules: tuple[RateRule, ...]
    early_warning: tuple[RateRule, ...]
    amd_false_positive_ratio: Fraction
    sources: Mapping[str, str] = field(hash=False)
    message_start_max_seconds: Fraction | None = None
    per_call_rules: tuple[PerCallRule, ...] = ()
    lockouts: tuple[LockoutRule, ...] = ()
    frequency_caps: tuple[FrequencyCap, ...] = ()
    silent_wait_max_seconds: Fraction | None = None
    min_retention_days: int | None = None

    def hours_for(self, region: str | None) -> CallingHours:
        """The state's hours when `region` (e.g. "US-FL", any case) has its own, else the
        profile's."""
        if region:
            state = self.state_hours.get(region.upper())
            if state is not None:
                return state
        return self.calling_hours


# --- public loading API -------------------------------------------------------------------


def available_profiles() -> tuple[str, ...]:
    """Names of the shipped profiles (file stems matching `[a-z][a-z0-9]*(-[a-z0-9]+)*`;
    support tables such as `us_states.toml` have an underscore and are not profiles)."""
    return _available()


def load_profile(name: str, overrides: Mapping[str, object] | None = None) -> Profile:
    """The shipped profile `name`, with per-campaign `overrides` applied (module docstring).

    Raises ProfileError for an unknown name, an invalid file or invalid overrides.
    """
    if name not in _available():
        raise ProfileError(f"unknown profile {name!r}; available: {', '.join(_available())}")
    base = _load_shipped(name)
    return _apply_overrides(base, overrides) if overrides else base


def retention_refusal(retention_days: int, names: Iterable[str] | None = None) -> str | None:
    """Why keeping stored reports (alerts, minute statistics) `retention_days` days is too
    short for one of the profiles `names` (default: every shipped profile, since any
    campaign may be set to any of them), naming the profile and its source; None when it
    is long enough. `it`: 730 days (Garante 2014, "conservare per almeno due anni i report
    statistici ... per ciascuna campagna")."""
    for name in available_profiles() if names is None else names:
        profile = load_profile(name)
        required = profile.min_retention_days
        if required is not None and retention_days < required:
            return (
                f"a retention of {retention_days} days is shorter than the {required} days "
                f"profile {profile.name!r} requires ({profile.sources['min_retention_days']})"
            )
    return None


def load_profile_file(
    path: str | PathLike[str], overrides: Mapping[str, object] | None = None
) -> Profile:
    """A profile from any TOML file (tests, operators trying a profile); not cached.

    A `state_hours_file` it names is read from the same directory.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ProfileError(f"{file.name}: cannot read: {exc.strerror}") from None
    base = _parse_profile(raw, file.name, file.parent)
    return _apply_overrides(base, overrides) if overrides else base


def override_keys(profile: Profile | None = None) -> frozenset[str]:
    """Override keys accepted by `load_profile`; with `profile`, only those that apply to it."""
    if profile is None:
        return _ALL_OVERRIDE_KEYS
    return frozenset(key for key in _ALL_OVERRIDE_KEYS if _not_applicable(profile, key) is None)


# --- shipped files ------------------------------------------------------------------------


def _profiles_dir() -> Traversable:
    return resources.files("services.detector").joinpath("profiles")


@lru_cache(maxsize=1)
def _available() -> tuple[str, ...]:
    names = (
        entry.name.removesuffix(".toml")
        for entry in _profiles_dir().iterdir()
        if entry.name.endswith(".toml")
    )
    return tuple(sorted(name for name in names if _NAME.match(name)))


@cache
def _load_shipped(name: str) -> Profile:
    directory = _profiles_dir()
    file_name = f"{name}.toml"
    return _parse_profile(directory.joinpath(file_name).read_bytes(), file_name, directory)


# --- value parsers: raise ValueError with the problem; the caller adds file and key ---------


def _minute_of_day(text: str) -> int:
    match = _HHMM.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not HH:MM")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes >= 60 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{text!r} is not a time of day between 00:00 and 24:00")
    return hours * 60 + minutes


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _fraction(value: object) -> Fraction:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, Fraction | int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return Fraction(repr(value))
    if isinstance(value, str):
        try:
            return Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{value!r} is not a number such as '3/100' or '0.03'") from None
    raise ValueError(f"expected a number, got {type(value).__name__}")


def _positive_seconds(value: object) -> Fraction:
    seconds = _fraction(value)
    if seconds <= 0:
        raise ValueError(f"must be > 0 seconds, got {seconds}")
    return seconds


def _cap(value: object) -> Fraction:
    cap = _fraction(value)
    if not 0 < cap <= 1:
        raise ValueError(f"a cap must be in (0, 1], got {cap}")
    return cap


def _ratio(value: object) -> Fraction:
    ratio = _fraction(value)
    if not 0 <= ratio <= 1:
        raise ValueError(f"must be in [0, 1], got {ratio}")
    return ratio


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _positive_int(value: object) -> int:
    number = _integer(value)
    if number < 1:
        raise ValueError(f"must be >= 1, got {number}")
    return number


def _non_negative_int(value: object) -> int:
    number = _integer(value)
    if number < 0:
        raise ValueError(f"must be >= 0, got {number}")
    return number


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _rule_id(value: object) -> str:
    text = _text(value)
    if not _NAME.match(text):
        raise ValueError(f"{text!r} is not a lower-case hyphenated id")
    return text


def _date(value: object) -> date:
    if not isinstance(value, date) or isinstance(value, datetime):
        raise ValueError(f"expected a TOML date (YYYY-MM-DD), got {value!r}")
    return value


def _one_of(choices: Iterable[str]) -> Callable[[object], str]:
    allowed = tuple(choices)

    def parse(value: object) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return parse


def _ranges(value: object) -> tuple[HoursRange, ...]:
    if not isinstance(value, list):
        raise ValueError(f'expected a list such as ["09:00-20:00"], got {value!r}')
    parsed: list[HoursRange] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"expected 'HH:MM-HH:MM' strings, got {item!r}")
        parsed.append(HoursRange.parse(item))
    parsed.sort()
    for before, after in zip(parsed, parsed[1:], strict=False):
        if before.end_minute > after.start_minute:
            raise ValueError(f"ranges {before} and {after} overlap")
    return tuple(parsed)


def _zone(value: object) -> str:
    return validate_zone(_text(value))


def _country(value: object) -> str:
    return validate_country(_text(value))


# --- strict TOML tables -------------------------------------------------------------------


class _Table:
    """One TOML table being read: known keys are taken, leftovers (typos) are refused."""

    def __init__(self, raw: object, file: str, path: str) -> None:
        if not isinstance(raw, dict):
            raise ProfileError(f"{file}: {path or 'document'}: expected a table")
        self._raw: dict[str, object] = raw
        self._file = file
        self._path = path
        self._taken: set[str] = set()

    def key_names(self) -> list[str]:
        return sorted(self._raw)

    def at(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def error(self, key: str, problem: str) -> ProfileError:
        return ProfileError(f"{self._file}: {self.at(key)}: {problem}")

    def opt(self, key: str, parse: Callable[[object], T]) -> T | None:
        self._taken.add(key)
        if key not in self._raw:
            return None
        try:
            return parse(self._raw[key])
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def req(self, key: str, parse: Callable[[object], T]) -> T:
        value = self.opt(key, parse)
        if value is None:
            raise self.error(key, "missing")
        return value

    def table(self, key: str) -> _Table | None:
        self._taken.add(key)
        if key not in self._raw:
            return None
        return _Table(self._raw[key], self._file, self.at(key))

    def tables(self, key: str) -> list[_Table]:
        self._taken.add(key)
        raw = self._raw.get(key, [])
        if not isinstance(raw, list):
            raise self.error(key, "expected an array of tables ([[...]])")
        return [_Table(item, self._file, f"{self.at(key)}[{i}]") for i, item in enumerate(raw)]

    def param(self, key: str, parse: Callable[[object], T], sources: dict[str, str]) -> T | None:
        """A `key = { value = ..., source = "...", reviewed = 2026-12-02 }` parameter
        (`reviewed` optional); records its source and its review date (`_REVIEWED_KEY`)."""
        table = self.table(key)
        if table is None:
            return None
        value = table.req("value", parse)
        sources[key] = table.req("source", _text)
        _note_review(key, table, sources)
        table.done()
        return value

    def req_param(self, key: str, parse: Callable[[object], T], sources: dict[str, str]) -> T:
        value = self.param(key, parse, sources)
        if value is None:
            raise self.error(key, 'missing (write it as { value = ..., source = "..." })')
        return value

    def done(self) -> None:
        unknown = sorted(set(self._raw) - self._taken)
        if unknown:
            raise self.error(unknown[0], f"unknown key (known: {', '.join(sorted(self._taken))})")


# --- profile parsing ----------------------------------------------------------------------


_REVIEWED_KEY = "reviewed:{}"
"""`Profile.sources` key of the date a parameter or rule was last checked against its source
(`reviewed = 2026-12-02` in its table, optional), e.g. `reviewed:it-silent-lockout`."""


def _note_review(key: str, table: _Table, sources: dict[str, str]) -> None:
    reviewed = table.opt("reviewed", _date)
    if reviewed is not None:
        sources[_REVIEWED_KEY.format(key)] = reviewed.isoformat()


def _rate_rule_id(profile: str, metric: str, window: str) -> str:
    return f"{profile}-{metric}-rate-{window.replace('_', '-')}"


def _parse_calling_hours(table: _Table, advisory: bool | None) -> CallingHours:
    """Days: `monday`..`sunday`, else `monday_to_friday` (Mon-Fri), else `every_day`."""
    every_day = table.opt("every_day", _ranges)
    monday_to_friday = table.opt("monday_to_friday", _ranges)
    weekdays: list[tuple[HoursRange, ...]] = []
    for index, day in enumerate(_DAYS):
        ranges = table.opt(day, _ranges)
        if ranges is None and index < 5:
            ranges = monday_to_friday
        if ranges is None:
            ranges = every_day
        if ranges is None:
            raise table.error(day, "missing (give it, monday_to_friday or every_day)")
        weekdays.append(ranges)
    pre_holiday = table.opt("pre_holiday", _ranges)
    holiday = table.req("holiday", _ranges)
    if advisory is None:
        advisory = table.req("advisory", _bool)
    return CallingHours(tuple(weekdays), pre_holiday, holiday, advisory)


def _parse_state_hours(
    raw: bytes, file: str, profile_file: str, advisory: bool, sources: dict[str, str]
) -> dict[str, CallingHours]:
    doc = _Table(_toml(raw, file), file, "")
    doc.req("reviewed", _date)
    sources["state_hours"] = f"{file}: {doc.req('source', _text)}"
    states_table = doc.table("states")
    if states_table is None:
        raise doc.error("states", "missing")
    doc.done()
    states: dict[str, CallingHours] = {}
    for region in states_table.key_names():
        if not _REGION.match(region):
            raise states_table.error(region, "not a region code such as US-FL")
        state = states_table.table(region)
        assert state is not None
        state.req("name", _text)
        sources[f"state_hours.{region}"] = state.req("source", _text)
        states[region] = _parse_calling_hours(state, advisory)
        state.done()
    if not states:
        raise ProfileError(f"{profile_file}: state_hours_file {file} lists no states")
    return states


def _toml(raw: bytes, file: str) -> dict[str, object]:
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{file}: not valid TOML: {exc}") from None


def _parse_profile(raw: bytes, file: str, directory: Traversable) -> Profile:
    doc = _Table(_toml(raw, file), file, "")
    name = doc.req("name", _rule_id)
    if name != file.removesuffix(".toml"):
        raise doc.error("name", f"{name!r} does not match the file name")
    sources: dict[str, str] = {}
    title = doc.req("title", _text)
    reviewed = doc.req("reviewed", _date)
    home_zone = doc.req_param("home_zone", _zone, sources)
    holiday_country = doc.req_param("holiday_country", _country, sources)
    connect_limit = doc.req_param("connect_limit_seconds", _positive_seconds, sources)
    short_ring_min = doc.req_param("short_ring_min_seconds", _positive_seconds, sources)
    silent_release_max = doc.param("silent_release_max_seconds", _positive_seconds, sources)
    message_start_max = doc.param("message_start_max_seconds", _positive_seconds, sources)
    silent_wait_max = doc.param("silent_wait_max_seconds", _positive_seconds, sources)
    min_retention_days = doc.param("min_retention_days", _positive_int, sources)
    amd_ratio = doc.req_param("amd_false_positive_ratio", _ratio, sources)
    warning_fraction = doc.req_param("warning_fraction", _warning_fraction, sources)
    min_sample = doc.req_param("min_sample", _positive_int, sources)

    hours_table = doc.table("calling_hours")
    if hours_table is None:
        raise doc.error("calling_hours", "missing")
    sources["calling_hours"] = hours_table.req("source", _text)
    calling_hours = _parse_calling_hours(hours_table, None)
    hours_table.done()

    state_hours: dict[str, CallingHours] = {}
    state_file = doc.param("state_hours_file", _text, sources)
    if state_file is not None:
        if "/" in state_file or "\\" in state_file or not state_file.endswith(".toml"):
            raise doc.error(
                "state_hours_file", f"{state_file!r} is not a file name in {file}'s folder"
            )
        try:
            state_raw = directory.joinpath(state_file).read_bytes()
        except OSError:
            raise doc.error("state_hours_file", f"cannot read {state_file}") from None
        state_hours = _parse_state_hours(
            state_raw, state_file, file, calling_hours.advisory, sources
        )

    rate_rules: list[RateRule] = []
    for table in doc.tables("rate_rules"):
        metric = table.req("metric", _one_of(METRICS))
        window = table.req("window", _one_of(REGULATORY_WINDOWS))
        rule_id = table.req("id", _rule_id)
        expected = _rate_rule_id(name, metric, window)
        if rule_id != expected:
            raise table.error("id", f"{rule_id!r} should be {expected!r}")
        reference = table.req("reference", _text)
        rate_rules.append(
            RateRule(
                id=rule_id,
                metric=metric,
                window=window,
                cap=table.req("cap", _cap),
                warning_fraction=warning_fraction,
                min_sample=min_sample,
                enabled=table.req("enabled", _bool),
                reference=reference,
            )
        )
        sources[rule_id] = reference
        _note_review(rule_id, table, sources)
        table.done()

    early_warning: list[RateRule] = []
    ew_table = doc.table("early_warning")
    if ew_table is not None:
        follows = ew_table.req("follows", _rule_id)
        followed = next((rule for rule in rate_rules if rule.id == follows), None)
        if followed is None:
            raise ew_table.error("follows", f"{follows!r} is not a rate rule of this profile")
        windows = ew_table.req("windows", _early_windows)
        enabled = ew_table.req("enabled", _bool)
        sources["early_warning"] = ew_table.req("source", _text)
        ew_table.done()
        for window in windows:
            early_warning.append(
                replace(
                    followed,
                    id=_rate_rule_id(name, followed.metric, window),
                    window=window,
                    enabled=enabled,
                    reference=f"early warning, {window} rolling, on {followed.id}: "
                    f"{followed.reference}",
                )
            )

    per_call_rules: list[PerCallRule] = []
    for table in doc.tables("per_call_rules"):
        rule = PerCallRule(
            id=table.req("id", _rule_id),
            check=table.req("check", _one_of(PER_CALL_CHECKS)),
            enabled=table.req("enabled", _bool),
            advisory=table.opt("advisory", _bool) or False,
            reference=table.req("reference", _text),
        )
        if rule.check == "silent_release" and silent_release_max is None:
            raise table.error("check", "silent_release needs silent_release_max_seconds")
        if rule.check == "silent_wait" and silent_wait_max is None:
            raise table.error("check", "silent_wait needs silent_wait_max_seconds")
        per_call_rules.append(rule)
        sources[rule.id] = rule.reference
        _note_review(rule.id, table, sources)
        table.done()

    lockouts: list[LockoutRule] = []
    for table in doc.tables("lockouts"):
        lockout = LockoutRule(
            id=table.req("id", _rule_id),
            trigger=table.req("trigger", _one_of(LOCKOUT_TRIGGERS)),
            hours=table.opt("hours", _positive_int),
            calendar_days=table.opt("calendar_days", _non_negative_int),
            agent_guaranteed_exempt=table.req("agent_guaranteed_exempt", _bool),
            reference=table.req("reference", _text),
        )
        if (lockout.hours is None) == (lockout.calendar_days is None):
            raise table.error("hours", "give exactly one of hours and calendar_days")
        after_id = table.opt("after", _rule_id)
        if after_id is not None:
            after = next((rule for rule in lockouts if rule.id == after_id), None)
            if after is None:
                raise table.error("after", f"{after_id!r} is not an earlier lockout of this file")
            if after.trigger != lockout.trigger:
                raise table.error("after", f"{after_id!r} has another trigger")
            if (after.hours is None) != (lockout.hours is None) or (
                (after.hours or after.calendar_days or 0)
                >= (lockout.hours or lockout.calendar_days or 0)
            ):
                raise table.error("after", f"{after_id!r} must be shorter, in the same unit")
            lockout = replace(lockout, after=after)
        lockouts.append(lockout)
        sources[lockout.id] = lockout.reference
        _note_review(lockout.id, table, sources)
        table.done()

    frequency_caps: list[FrequencyCap] = []
    for table in doc.tables("frequency_caps"):
        cap = FrequencyCap(
            id=table.req("id", _rule_id),
            max_calls=table.req("max_calls", _positive_int),
            window_days=table.req("window_days", _positive_int),
            reference=table.req("reference", _text),
        )
        frequency_caps.append(cap)
        sources[cap.id] = cap.reference
        table.done()
    doc.done()

    ids: list[str] = [
        *(rule.id for rule in (*rate_rules, *early_warning)),
        *(rule.id for rule in per_call_rules),
        *(rule.id for rule in lockouts),
        *(rule.id for rule in frequency_caps),
    ]
    duplicates = sorted({rule_id for rule_id in ids if ids.count(rule_id) > 1})
    if duplicates:
        raise ProfileError(f"{file}: rule id {duplicates[0]!r} is used more than once")

    return Profile(
        name=name,
        title=title,
        reviewed=reviewed,
        home_zone=home_zone,
        holiday_country=holiday_country,
        connect_limit_seconds=connect_limit,
        short_ring_min_seconds=short_ring_min,
        silent_release_max_seconds=silent_release_max,
        calling_hours=calling_hours,
        state_hours=MappingProxyType(state_hours),
        rate_rules=tuple(rate_rules),
        early_warning=tuple(early_warning),
        amd_false_positive_ratio=amd_ratio,
        sources=MappingProxyType(sources),
        message_start_max_seconds=message_start_max,
        silent_wait_max_seconds=silent_wait_max,
        min_retention_days=min_retention_days,
        per_call_rules=tuple(per_call_rules),
        lockouts=tuple(lockouts),
        frequency_caps=tuple(frequency_caps),
    )


def _warning_fraction(value: object) -> Fraction:
    fraction = _fraction(value)
    if not 0 < fraction <= 1:
        raise ValueError(f"must be in (0, 1], got {fraction}")
    return fraction


def _early_windows(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a non-empty list of {', '.join(EARLY_WARNING_WINDOWS)}")
    windows = tuple(_one_of(EARLY_WARNING_WINDOWS)(item) for item in value)
    if len(set(windows)) != len(windows):
        raise ValueError("a window is listed twice")
    return windows


# --- overrides ----------------------------------------------------------------------------

_SECONDS_KEYS = (
    "connect_limit_seconds",
    "short_ring_min_seconds",
    "silent_release_max_seconds",
    "message_start_max_seconds",
    "silent_wait_max_seconds",
)
_ALL_OVERRIDE_KEYS = frozenset(
    {
        *_SECONDS_KEYS,
        "amd_false_positive_ratio",
        "min_sample",
        "warning_fraction",
        *(f"{metric}_rate_max" for metric in METRICS),
        *(f"daily_{metric}_rate_max" for metric in METRICS),
        *(f"{window}_rule_enabled" for window in REGULATORY_WINDOWS),
        "early_warning_enabled",
    }
)


def _cap_targets(profile: Profile, key: str) -> list[RateRule]:
    """The rules whose cap `key` (`<metric>_rate_max` or `daily_<metric>_rate_max`) sets."""
    daily = key.startswith("daily_")
    metric = key.removeprefix("daily_").removesuffix("_rate_max")
    return [
        rule
        for rule in (*profile.rate_rules, *profile.early_warning)
        if rule.metric == metric and (rule.window == "daily") == daily
    ]


def _enabled_targets(profile: Profile, key: str) -> list[RateRule]:
    if key == "early_warning_enabled":
        return list(profile.early_warning)
    window = key.removesuffix("_rule_enabled")
    return [rule for rule in profile.rate_rules if rule.window == window]


def _not_applicable(profile: Profile, key: str) -> str | None:
    """Why `key` does not apply to `profile`, or None when it does."""
    if key == "silent_release_max_seconds" and profile.silent_release_max_seconds is None:
        return f"profile {profile.name!r} has no silent-call release rule"
    if key == "message_start_max_seconds" and profile.message_start_max_seconds is None:
        return f"profile {profile.name!r} has no message start limit"
    if key == "silent_wait_max_seconds" and profile.silent_wait_max_seconds is None:
        return f"profile {profile.name!r} has no long-silent-wait rule"
    if key.endswith("_rate_max") and not _cap_targets(profile, key):
        return f"profile {profile.name!r} has no rule this cap applies to"
    if key.endswith("_enabled") and not _enabled_targets(profile, key):
        return f"profile {profile.name!r} has no such rule"
    if key in ("min_sample", "warning_fraction") and not profile.rate_rules:
        return f"profile {profile.name!r} has no rate rule"
    return None


def _apply_overrides(base: Profile, overrides: Mapping[str, object]) -> Profile:
    if not isinstance(overrides, Mapping):
        raise ProfileError(f"overrides must be a mapping of parameter to value, not {overrides!r}")
    errors: list[str] = []
    scalars: dict[str, Fraction] = {}
    caps: dict[str, Fraction] = {}  # rule id -> cap
    enabled: dict[str, bool] = {}  # rule id -> enabled
    min_sample: int | None = None
    warning_fraction: Fraction | None = None
    sources = dict(base.sources)

    for key in sorted(overrides, key=str):
        raw = overrides[key]
        try:
            if not isinstance(key, str) or key not in _ALL_OVERRIDE_KEYS:
                raise ValueError(
                    f"unknown parameter; accepted: {', '.join(sorted(_ALL_OVERRIDE_KEYS))}"
                )
            reason = _not_applicable(base, key)
            if reason is not None:
                raise ValueError(reason)
            replaced = base.sources.get(key, "")
            if key in _SECONDS_KEYS:
                scalars[key] = _positive_seconds(raw)
            elif key == "amd_false_positive_ratio":
                scalars[key] = _ratio(raw)
            elif key == "min_sample":
                min_sample = _positive_int(raw)
            elif key == "warning_fraction":
                warning_fraction = _warning_fraction(raw)
            elif key.endswith("_rate_max"):
                cap = _cap(raw)
                targets = _cap_targets(base, key)
                caps.update((rule.id, cap) for rule in targets)
                replaced = ", ".join(f"{rule.id} cap {rule.cap}" for rule in targets)
            else:
                flag = _bool(raw)
                targets = _enabled_targets(base, key)
                enabled.update((rule.id, flag) for rule in targets)
                replaced = ", ".join(f"{rule.id} enabled={rule.enabled}" for rule in targets)
        except ValueError as exc:
            errors.append(f"override {key!r}: {exc}")
            continue
        sources[key] = f"per-campaign override (profile file: {replaced})"
    if errors:
        raise ProfileError("; ".join(errors))

    def changed(rules: tuple[RateRule, ...]) -> tuple[RateRule, ...]:
        return tuple(
            replace(
                rule,
                cap=caps.get(rule.id, rule.cap),
                enabled=enabled.get(rule.id, rule.enabled),
                min_sample=rule.min_sample if min_sample is None else min_sample,
                warning_fraction=(
                    rule.warning_fraction if warning_fraction is None else warning_fraction
                ),
            )
            for rule in rules
        )

    return replace(
        base,
        connect_limit_seconds=scalars.get("connect_limit_seconds", base.connect_limit_seconds),
        short_ring_min_seconds=scalars.get("short_ring_min_seconds", base.short_ring_min_seconds),
        silent_release_max_seconds=scalars.get(
            "silent_release_max_seconds", base.silent_release_max_seconds
        ),
        message_start_max_seconds=scalars.get(
            "message_start_max_seconds", base.message_start_max_seconds
        ),
        silent_wait_max_seconds=scalars.get(
            "silent_wait_max_seconds", base.silent_wait_max_seconds
        ),
        amd_false_positive_ratio=scalars.get(
            "amd_false_positive_ratio", base.amd_false_positive_ratio
        ),
        rate_rules=changed(base.rate_rules),
        early_warning=changed(base.early_warning),
        sources=MappingProxyType(sources),
    )
