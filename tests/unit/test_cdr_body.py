"""`parse_cdrs` (a body validated at once, schemas/cdr_v1_body.py) gives for every record
exactly what `parse_cdr` gives: the same model with the same values (UTC instants, the
same tzinfo object) or the same errors, word for word, for hostile records (the fuzzing
strategies), plain ones and the edges of the plain shape."""

from __future__ import annotations

import os
from datetime import UTC
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import cdr_v1_body
from schemas.cdr_v1 import INSTANT_FIELDS, CdrV1, FieldError, parse_cdr
from schemas.cdr_v1_body import parse_cdrs
from tests.cdr_strategies import answered_call, fuzzed_record

EXAMPLES = int(os.environ.get("CDRWATCH_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALLOWED = ("dnis", "k", "campaign_note")
ASCII_IDS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=130)
# Texts at the edges of the plain instant shape (and just outside it).
EDGE_INSTANTS = st.sampled_from(
    [
        "2026-03-02T10:15:00Z",
        "2026-03-02T10:15:00.123456Z",
        "2026-03-02T10:15:00.1234567Z",
        "2026-03-02T10:15:00+01:00",
        "2026-03-02T10:15:00-23:59",
        "2026-03-02T10:15:00+24:00",
        "2026-03-02T10:15:00+0100",
        "2026-03-02 10:15:00Z",
        "2026-03-02t10:15:00z",
        " 2026-03-02T10:15:00Z",
        "2026-03-02T10:15:00Z ",
        "2026-03-02T10:15:00Z\n",
        "2026-02-30T10:15:00Z",
        "2026-02-29T10:15:00Z",
        "2028-02-29T10:15:00Z",
        "2026-03-02T24:00:00Z",
        "2026-03-02T10:15:60Z",
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:30:00+01:00",
        "2001-01-01T00:30:00+01:00",
        "9998-12-31T23:59:59-23:59",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:30:00-01:00",
        "9998-12-31T23:30:00-01:00",
        "0001-01-01T00:30:00+01:00",
        "2026-03-02T10:15:00",
        "2026-03-02T10:15Z",
        "٢٠٢٦-03-02T10:15:00Z",
        "2026-03-02T10:15:00.Z",
    ]
)
EDGE_EPOCH_VALUES = [
    946_684_800_000,
    946_684_799_999,
    253_402_300_799_999,
    253_402_300_800_000,
    1_772_446_500,
    1_772_446_500_000.0,
    True,
    "1772446500000",
]
EDGE_EPOCHS = st.sampled_from(EDGE_EPOCH_VALUES)
EDGE_IDS = [
    "a",
    " a ",
    "a b",
    "a\x1c",
    "\x1ca",
    "ä",
    " ",
    "",
    "a/b",
    "x" * 128,
    "x" * 129,
    "\u3000a",
    7,
]
EDGE_EXTRAS: list[dict[str, Any]] = [
    {"extra": {}},
    {"extra": {"dnis": "+390612345678"}},
    {"extra": {"k": [[[[1]]]]}},
    {"extra": "text"},
    {"dnis": "+390612345678"},
    {"campaign_note": "x" * 5000},
    {"unknown": {"deep": [1]}},
]


_PLAIN = {
    "call_id": "c-1",
    "campaign_id": "camp",
    "callee_number": "+393471234567",
    "originated_at": "2026-03-02T10:15:00.115+01:00",
    "answered_at": 1_772_442_905_000,
    "ended_at": "2026-03-02T09:16:00Z",
}


def _same(record: Any, extra_fields_allowed: tuple[str, ...] = ()) -> None:
    expected = parse_cdr(record, extra_fields_allowed=extra_fields_allowed)
    [got] = parse_cdrs([record], extra_fields_allowed=extra_fields_allowed)
    _assert_same(got, expected)


def _assert_same(
    got: tuple[dict[str, Any] | None, list[FieldError]],
    expected: tuple[CdrV1 | None, list[FieldError]],
) -> None:
    assert got[1] == expected[1]
    if expected[0] is None:
        assert got[0] is None
        return
    assert got[0] is not None
    assert got[0] == expected[0].__dict__
    assert list(got[0]) == list(expected[0].__dict__)
    for name in INSTANT_FIELDS:
        value = got[0][name]
        assert value is None or value.tzinfo is UTC


@st.composite
def plain_call(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed call with ASCII ids, with some fields moved to the plain shape's edges."""
    record = draw(answered_call())
    record["call_id"] = draw(ASCII_IDS)
    record["campaign_id"] = draw(
        st.sampled_from(["c1", "c 2", " c3 ", "c/4", "x" * 128, "x" * 129])
    )
    for name in draw(st.sets(st.sampled_from(INSTANT_FIELDS), max_size=3)):
        record[name] = draw(st.one_of(EDGE_INSTANTS, EDGE_EPOCHS, st.booleans(), st.floats()))
    for name in draw(st.sets(st.sampled_from(["tenant_id", "dialer_id", "agent_id"]), max_size=2)):
        record[name] = draw(st.one_of(ASCII_IDS, st.sampled_from(["a\x1c", "\x1ca", "ä", " "])))
    if draw(st.booleans()):
        record["cli_number"] = draw(st.sampled_from([" +39 06 ", "+390612345678", "", "x" * 501]))
    return record


def _edges() -> list[tuple[str, Any]]:
    """(field, value): each edge of the plain shape in a field it applies to."""
    edges: list[tuple[str, Any]] = []
    for name in ("originated_at", "answered_at", "ended_at"):
        edges += [(name, value) for value in [*EDGE_INSTANTS.elements, *EDGE_EPOCH_VALUES]]  # type: ignore[attr-defined]
    for name in ("call_id", "campaign_id", "tenant_id", "agent_id"):
        edges += [(name, value) for value in EDGE_IDS]
    edges += [("cli_number", value) for value in [" +39 06 ", "", "x" * 500, "x" * 501, 5]]
    edges += [("callee_number", value) for value in [" +393471234567 ", "+39", 393471234567]]
    edges += [("sip_code", value) for value in [487, 487.0, "487", 99, True]]
    edges += [("refusal", value) for value in [True, "true", 1, 2, None]]
    edges += [("dial_mode", value) for value in ["preview", " preview", "PREVIEW"]]
    return edges


@pytest.mark.parametrize(("name", "value"), _edges())
def test_each_edge_of_the_plain_shape_gets_what_parse_cdr_gives(name: str, value: Any) -> None:
    record = {**_PLAIN, name: value}
    _same(record)
    _same(record, ALLOWED)


@pytest.mark.parametrize("fields", EDGE_EXTRAS)
def test_extra_and_kept_unknown_fields_get_what_parse_cdr_gives(fields: dict[str, Any]) -> None:
    _same({**_PLAIN, **fields})
    _same({**_PLAIN, **fields}, ALLOWED)


@FUZZ
@given(fuzzed_record())
def test_a_hostile_record_gets_what_parse_cdr_gives(record: dict[str, Any]) -> None:
    _same(record)
    _same(record, ALLOWED)


@FUZZ
@given(plain_call())
def test_a_plain_record_gets_what_parse_cdr_gives(record: dict[str, Any]) -> None:
    _same(record)
    _same(record, ALLOWED)


@FUZZ
@given(st.lists(st.one_of(plain_call(), fuzzed_record(), st.integers(), st.none()), max_size=8))
def test_a_body_gets_for_each_record_what_parse_cdr_gives(items: list[Any]) -> None:
    got = parse_cdrs(items)
    assert len(got) == len(items)
    for item, result in zip(items, got, strict=True):
        _assert_same(result, parse_cdr(item))


def test_the_plain_shape_takes_the_records_dialers_send() -> None:
    """Taking none would be correct and slow: the common records must not need the general
    path (it would be called, and it is not)."""
    record = {**_PLAIN, "dnis": "+390612345678"}
    calls = []
    real = cdr_v1_body.parse_cdr

    def spy(item: object, **kwargs: Any) -> Any:
        calls.append(item)
        return real(item, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cdr_v1_body, "parse_cdr", spy)
        [(cdr, errors)] = parse_cdrs([record])
        assert calls == []
        parse_cdrs([record], extra_fields_allowed=("dnis",))  # kept in extra: general path
        assert calls == [record]
    expected = parse_cdr(record)[0]
    assert errors == [] and expected is not None and cdr == expected.__dict__


def test_a_body_the_validator_cannot_walk_is_parsed_record_by_record() -> None:
    class Refusing:
        def validate_python(self, items: object) -> object:
            raise RecursionError("maximum recursion depth exceeded")

    items = [{"call_id": "x"}, 5, {**_PLAIN}]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cdr_v1_body, "_BODY", Refusing())
        got = parse_cdrs(items)
    for result, item in zip(got, items, strict=True):
        _assert_same(result, parse_cdr(item))
    assert got[2][0] is not None
