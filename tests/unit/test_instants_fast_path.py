"""`parse_cdr_instant`'s fast path (`_fast_instant`: the common RFC 3339 shape parsed
without the regex) gives what the general path (regex, `fromisoformat`, the 2000 bound,
UTC) gives, for texts in that shape and for near misses of them: the same instant, or
both refuse it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.instants import (
    EARLIEST_CDR_INSTANT,
    _cdr_instant_text,
    _fast_instant,
    _parse_text,
    _utc,
    format_instant,
    parse_cdr_instant,
)


def _general(text: str) -> datetime:
    """The general path alone (what `_cdr_instant_text` did before the fast path)."""
    parsed = _parse_text(text)
    if parsed < EARLIEST_CDR_INSTANT:
        raise ValueError("timestamp before 2000-01-01T00:00:00Z")
    return _utc(parsed)


def _outcome(parse: object, text: str) -> datetime | str:
    try:
        return parse(text)  # type: ignore[operator, no-any-return]
    except ValueError:
        return "refused"


def _dialer_text(rng: random.Random) -> str:
    """An instant as dialers write it: any offset, 0 to 9 fraction digits, `Z` or not."""
    instant = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(
        microseconds=rng.randrange(0, 60 * 365 * 86_400 * 10**6)
    )
    offset = timedelta(minutes=rng.randrange(-14 * 60, 14 * 60 + 1, 15))
    local = instant.astimezone(timezone(offset))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    digits = rng.choice((0, 0, 1, 3, 6, 6, 7, 9))
    if digits:
        text += "." + f"{local.microsecond:06d}{rng.randrange(1000):03d}"[:digits]
    if offset == timedelta(0) and rng.random() < 0.5:
        return text + "Z"
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def test_every_text_format_instant_writes_takes_the_fast_path_with_the_same_instant() -> None:
    rng = random.Random(3)
    start = datetime(2001, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        instant = start + timedelta(microseconds=rng.randrange(0, 300 * 365 * 86_400 * 10**6))
        if rng.random() < 0.3:
            instant = instant.replace(microsecond=0)
        text = format_instant(instant)
        fast = _fast_instant(text)
        assert fast is not None, text
        assert fast == _general(text) == instant == parse_cdr_instant(text)
        assert fast.tzinfo is UTC


def test_dialer_texts_get_the_general_paths_instant() -> None:
    rng = random.Random(5)
    for _ in range(20_000):
        text = _dialer_text(rng)
        assert _outcome(parse_cdr_instant, text) == _outcome(_general, text), text
        assert _outcome(_cdr_instant_text, text) == _outcome(_general, text), text


@pytest.mark.parametrize("seed", range(4))
def test_near_misses_get_the_general_paths_answer(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "0123456789-:.TtZz+ ,/\u0663\uff10x"
    bases = [
        format_instant(datetime(2026, 3, 29, 1, 2, 3, 456789, tzinfo=UTC)),
        format_instant(datetime(2026, 3, 29, 1, 2, 3, tzinfo=UTC)),
        "2026-03-29T03:02:03.456+02:00",
        "2026-03-29T03:02:03-05:30",
    ]
    for _ in range(20_000):
        chars = list(rng.choice(bases))
        for _ in range(rng.randrange(1, 3)):
            at = rng.randrange(len(chars))
            if rng.random() < 0.2:
                del chars[at]
            else:
                chars[at] = rng.choice(alphabet)
        text = "".join(chars)
        assert _outcome(parse_cdr_instant, text) == _outcome(_general, text), text
        assert _outcome(_cdr_instant_text, text) == _outcome(_general, text), text


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-03T140005.00Z",  # fromisoformat's basic time form: the regex refuses it
        "2026-12-03T140005.0Z",
        "2026-12-03T140005.123456789Z",
        "2026-12-03T14:00:05+01:00:30",  # an offset with seconds
        "2026-12-03T14:00:05+0100",
        "1999-12-31T23:59:59Z",  # before 2000: refused with its own message
        "2000-01-01T00:30:00+01:00",
        "2000-01-01T00:30:00-01:00",
        "9999-12-31T23:30:00-01:00",  # past year 9999 in UTC
        "2026-02-30T00:00:00Z",
        "2026-12-03T24:00:00Z",
        "2026-12-03 14:00:05Z",
        "2026-12-03t14:00:05z",
        "2026-12-03T14:00:05.123456789+01:00",
        "2026-12-03T14:00:05.+01:00",
    ],
)
def test_edge_texts_get_the_general_paths_answer(text: str) -> None:
    assert _outcome(parse_cdr_instant, text) == _outcome(_general, text)
    assert _outcome(_cdr_instant_text, text) == _outcome(_general, text)
