"""Parsing of the instants CDR v1 accepts: RFC 3339 with an offset, or integer epoch ms.

A timestamp without an offset is refused: a dialer's local wall clock cannot be placed
on the timeline without guessing, and a guess would move calls across calling-hour
boundaries. Everything is converted to UTC here, once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# RFC 3339 date-time: date "T" (or space, as RFC 3339 section 5.6 allows) time, optional
# fraction, then "Z" or a numeric offset. The offset is mandatory.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_EPOCH_MS_MIN = 0
_EPOCH_MS_MAX = 253402300799999  # 9999-12-31T23:59:59.999Z


def parse_instant(value: object) -> datetime:
    """Return an aware UTC datetime for an RFC 3339 string or integer epoch milliseconds.

    Raises ValueError with a message fit for an API error (the field name is added by the
    caller). Booleans and floats are refused: a float epoch is ambiguous (s or ms?).
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp has no UTC offset")
        return value.astimezone(UTC)
    if isinstance(value, bool):
        raise ValueError("timestamp must be an RFC 3339 string with offset or epoch milliseconds")
    if isinstance(value, int):
        if not _EPOCH_MS_MIN <= value <= _EPOCH_MS_MAX:
            raise ValueError("epoch milliseconds out of range")
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    if isinstance(value, str):
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
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError as exc:
            raise ValueError(f"invalid timestamp: {exc}") from None
        return parsed.astimezone(UTC)
    raise ValueError("timestamp must be an RFC 3339 string with offset or epoch milliseconds")


def format_instant(value: datetime) -> str:
    """RFC 3339 in UTC with a trailing Z and microseconds only when present."""
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
