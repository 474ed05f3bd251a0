"""`parse_cdr_instant`'s fast path for the texts `format_instant` writes gives what the
general path (regex, then `fromisoformat`, then UTC) gives, for every such text and for
near misses of it: the same instant, or both refuse it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from schemas.instants import (
    _canonical_utc,
    _cdr_instant_text,
    format_instant,
    parse_cdr_instant,
)

_general = _cdr_instant_text.__wrapped__


def _general_or_error(text: str) -> datetime | str:
    try:
        return _general(text)
    except ValueError:
        return "refused"


def _parsed_or_error(text: str) -> datetime | str:
    try:
        return parse_cdr_instant(text)
    except ValueError:
        return "refused"


def test_every_text_format_instant_writes_takes_the_fast_path_with_the_same_instant() -> None:
    rng = random.Random(3)
    start = datetime(2000, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        instant = start + timedelta(microseconds=rng.randrange(0, 300 * 365 * 86_400 * 10**6))
        if rng.random() < 0.3:
            instant = instant.replace(microsecond=0)
        text = format_instant(instant)
        fast = _canonical_utc(text)
        assert fast is not None, text
        assert fast == _general(text) == instant
        assert fast.tzinfo is UTC


@pytest.mark.parametrize("seed", range(4))
def test_near_misses_of_the_canonical_form_get_the_general_paths_answer(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "0123456789-:.TtZz+ ,/\u0663\uff10x"
    base = [format_instant(datetime(2026, 3, 29, 1, 2, 3, 456789, tzinfo=UTC))]
    base.append(format_instant(datetime(2026, 3, 29, 1, 2, 3, tzinfo=UTC)))
    for _ in range(20_000):
        chars = list(rng.choice(base))
        for _ in range(rng.randrange(1, 3)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        text = "".join(chars)
        assert _parsed_or_error(text) == _general_or_error(text), text


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-03T140005.00Z",  # fromisoformat's basic time form: the regex refuses it
        "2026-12-03T140005.0Z",
        "2026-12-03T140005.123456789Z",
        "1999-12-31T23:59:59Z",  # before 2000: refused with its own message
        "2026-02-30T00:00:00Z",
        "2026-12-03T24:00:00Z",
        "2026-12-03 14:00:05Z",
        "2026-12-03t14:00:05z",
        "2026-12-03T14:00:05.123456789Z",
    ],
)
def test_edge_texts_get_the_general_paths_answer(text: str) -> None:
    assert _parsed_or_error(text) == _general_or_error(text)
