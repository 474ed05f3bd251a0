"""Parsing of the instants CDR v1 accepts: RFC 3339 with an offset, or integer epoch ms.

A timestamp without an offset is refused: a dialer's local wall clock cannot be placed
on the timeline without guessing, and a guess would move calls across calling-hour
boundaries. Everything is converted to UTC here, once.

CDR instants (`parse_cdr_instant`) must also lie on or after 2000-01-01T00:00:00Z: nothing
earlier is a real call, and an earlier integer is almost always epoch seconds sent where
milliseconds are expected, which is refused with a message that says so instead of being
read as a 1970 instant. The upper bound (the ingest clock plus the future tolerance) needs
a clock and is checked by the normaliser. Text whose conversion to UTC leaves the range of
`datetime` (`0001-01-01T00:30:00+01:00`) is a ValueError like any other bad timestamp,
never an OverflowError.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

# RFC 3339 date-time: date "T" (or space, as RFC 3339 section 5.6 allows) time, optional
# fraction, then "Z" or a numeric offset. The offset is mandatory.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_EPOCH_MS_MIN = 0
_EPOCH_MS_MAX = 253402300799999  # 9999-12-31T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST_CDR_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)
EARLIEST_CDR_EPOCH_MS = 946_684_800_000  # EARLIEST_CDR_INSTANT in epoch milliseconds
# An integer in [2000-01-01, 2100-01-01) read as epoch seconds: a dialer sending seconds.
_EPOCH_SECONDS_PLAUSIBLE = range(946_684_800, 4_102_444_800)


def parse_instant(value: object) -> datetime:
    """Return an aware UTC datetime for an RFC 3339 string or integer epoch milliseconds.

    Raises ValueError with a message fit for an API error (the field name is added by the
    caller). Booleans and floats are refused: a float epoch is ambiguous (s or ms?).
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp has no UTC offset")
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError(
                "timestamp out of range: its UTC instant is before year 1 or after year 9999"
            ) from None
    if isinstance(value, bool):
        raise ValueError("timestamp must be an RFC 3339 string with offset or epoch milliseconds")
    if isinstance(value, int):
        if not _EPOCH_MS_MIN <= value <= _EPOCH_MS_MAX:
            raise ValueError("epoch milliseconds out of range")
        return _EPOCH + timedelta(milliseconds=value)
    if isinstance(value, str):
        return _utc(_parse_text(value))
    raise ValueError("timestamp must be an RFC 3339 string with offset or epoch milliseconds")


def _utc(parsed: datetime) -> datetime:
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "timestamp out of range: its UTC instant is before year 1 or after year 9999"
        ) from None


def parse_cdr_instant(value: object) -> datetime:
    """`parse_instant`, refusing instants before 2000-01-01T00:00:00Z.

    An integer that is before 2000 as milliseconds but a plausible instant as epoch seconds
    gets its own message, so that a dialer sending seconds learns why.
    """
    if isinstance(value, str):
        # The texts `format_instant` writes (every normalised CDR the detector reads) carry
        # microseconds, so they rarely repeat: parsed at once, not looked up in the cache.
        if value[-1:] == "Z" and len(value) in (20, 27):
            parsed = _fast_instant(value)
            if parsed is not None:
                return parsed
        return _cdr_instant_text(value)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value < EARLIEST_CDR_EPOCH_MS
        and value in _EPOCH_SECONDS_PLAUSIBLE
    ):
        raise ValueError(
            "epoch value before 2000-01-01 as milliseconds; it looks like epoch seconds; "
            "send milliseconds"
        )
    parsed = parse_instant(value)
    if parsed < EARLIEST_CDR_INSTANT:
        raise ValueError("timestamp before 2000-01-01T00:00:00Z")
    return parsed


def _fast_instant(value: str) -> datetime | None:
    """The UTC instant of a text in the common RFC 3339 shape, `YYYY-MM-DDTHH:MM:SS`, an
    optional fraction of 1 to 6 digits, then `Z` or `±HH:MM`, in years 2001-9998; None for
    any other text, which the general path (`_parse_text`) judges. The same result as
    the general path without its regex: with the separators and the fraction checked
    here, `fromisoformat` accepts such an ASCII text only when the regex does, and in
    those years the 2000 bound and the UTC conversion cannot fail
    (tests/unit/test_instants_fast_path.py compares the two paths)."""
    length = len(value)
    if (
        length < 20
        or value[10] != "T"
        or value[4] != "-"
        or value[7] != "-"
        or value[13] != ":"
        or value[16] != ":"
        or not value.isascii()
    ):
        return None
    if value[-1] == "Z":
        end = length - 1
    elif length >= 25 and value[-3] == ":" and value[-6] in "+-":
        end = length - 6
    else:
        return None
    if end != 19 and (value[19] != "." or not 21 <= end <= 26 or not value[20:end].isdigit()):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if not 2000 < parsed.year < 9999:
        return None
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


@lru_cache(maxsize=8192)
def _cdr_instant_text(value: str) -> datetime:
    """`parse_cdr_instant` of a text, parsed once. Cached: a dialer's records share their
    seconds (a burst's calls start, are answered and end in the same seconds), and a
    datetime is immutable. Errors are raised again each time, not cached."""
    fast = _fast_instant(value)
    if fast is not None:
        return fast
    parsed = _parse_text(value)
    if parsed < EARLIEST_CDR_INSTANT:
        # Compared before the UTC conversion, which overflows for 0001-01-01T00:30:00+01:00.
        raise ValueError("timestamp before 2000-01-01T00:00:00Z")
    return _utc(parsed)


def _parse_text(value: str) -> datetime:
    """An aware datetime in the offset the text gives (not converted: that may overflow)."""
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError(
            "timestamp must be RFC 3339 with an offset (e.g. 2026-03-02T10:15:00+01:00)"
        )
    text = value
    fraction = match.group(1)
    if fraction and len(fraction) > 7:
        # datetime keeps microseconds; nanosecond digits are truncated, not rounded,
        # so an instant never moves forward across a boundary.
        text = text.replace(fraction, fraction[:7], 1)
    try:
        return datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as exc:
        raise ValueError(f"invalid timestamp: {exc}") from None


def format_instant(value: datetime) -> str:
    """RFC 3339 in UTC with a trailing Z and microseconds only when present."""
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
