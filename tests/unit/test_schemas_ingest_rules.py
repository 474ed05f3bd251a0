"""CDR v1 ranges (ids, instants, unknown fields, `extra`) and the phone-number rule.

Pure: `parse_cdr`, `parse_cdr_instant` and the normaliser with a fixed clock and test key.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.cdr_v1 import (
    EXTRA_MAX_BYTES,
    ID_FIELDS,
    FieldError,
    id_problem,
    nesting_exceeds,
    parse_cdr,
)
from schemas.instants import parse_cdr_instant, parse_instant
from services.ingest.normalize import Normalizer, phone_digits

KEY = b"unit-test-pseudonym-key"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def record(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "call_id": "c-1",
        "campaign_id": "camp",
        "callee_number": "+393471234567",
        "originated_at": "2026-03-02T10:15:00+01:00",
        "ended_at": "2026-03-02T10:16:00+01:00",
    }
    data.update(changes)
    return data


def errors_of(data: dict[str, Any], **kwargs: Any) -> list[FieldError]:
    cdr, errors = parse_cdr(data, **kwargs)
    assert (cdr is None) == bool(errors)
    return errors


# --- ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ID_FIELDS)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("a/b", "must not contain '/'", id="slash"),
        pytest.param("a\x00b", "printable", id="nul"),
        pytest.param("a\x1b[31mb", "printable", id="escape"),
        pytest.param("a\nb", "printable", id="newline_inside"),
        pytest.param("a\tb", "printable", id="tab_inside"),
        pytest.param("a\u200bb", "printable", id="zero_width_space"),
        pytest.param("x" * 129, "at most 128 characters", id="129_chars"),
        pytest.param("   ", "at least 1 character", id="blank"),
    ],
)
def test_bad_id_is_a_field_error_naming_the_field(name: str, value: str, message: str) -> None:
    errors = errors_of(record(**{name: value}))

    assert [e.field for e in errors] == [name]
    assert message in errors[0].message


@pytest.mark.parametrize("name", ID_FIELDS)
def test_id_of_128_printable_characters_is_accepted_after_stripping(name: str) -> None:
    value = "é-" + "x" * 126
    cdr, errors = parse_cdr(record(**{name: f"  {value}\n"}))

    assert errors == []
    assert getattr(cdr, name) == value


def test_id_problem_is_shared_for_paths() -> None:
    assert id_problem("campaign-1") is None
    assert id_problem("a/b") == "must not contain '/'"
    assert id_problem("") == "must not be empty"
    assert id_problem("x" * 129) == "must be at most 128 characters"


# --- instants -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("0001-01-01T00:30:00+01:00", "before 2000-01-01", id="overflows_low"),
        pytest.param("0001-01-01T00:00:00Z", "before 2000-01-01", id="year_one"),
        pytest.param("1999-12-31T23:59:59.999999Z", "before 2000-01-01", id="just_before"),
        pytest.param("1999-12-31T23:30:00+01:00", "before 2000-01-01", id="offset_before"),
        pytest.param("9999-12-31T23:30:00-01:00", "out of range", id="overflows_high"),
        pytest.param(1764669600, "looks like epoch seconds; send milliseconds", id="seconds"),
        pytest.param(946684800, "looks like epoch seconds", id="seconds_2000"),
        pytest.param(946684799999, "before 2000-01-01", id="ms_just_before"),
        pytest.param(0, "before 2000-01-01", id="zero"),
        pytest.param(-1, "out of range", id="negative"),
        pytest.param(10**30, "out of range", id="huge"),
        pytest.param("2026-03-02T10:15:00", "with an offset", id="no_offset"),
    ],
)
def test_instant_out_of_range_is_a_value_error(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_cdr_instant(value)

    assert message in str(caught.value)


def test_instant_bounds_are_inclusive_at_2000() -> None:
    start = datetime(2000, 1, 1, tzinfo=UTC)

    assert parse_cdr_instant("2000-01-01T00:00:00Z") == start
    assert parse_cdr_instant("2000-01-01T01:00:00+01:00") == start
    assert parse_cdr_instant("1999-12-31T23:30:00-01:00") == start + timedelta(minutes=30)
    assert parse_cdr_instant(946684800000) == start
    assert parse_cdr_instant(1764669600000) == datetime(2025, 12, 2, 10, 0, tzinfo=UTC)


def test_generic_instants_never_overflow_but_keep_their_range() -> None:
    """Alerts, stats and query parameters use `parse_instant`: no 2000 bound, no
    OverflowError."""
    assert parse_instant(0) == datetime(1970, 1, 1, tzinfo=UTC)
    for text in ("0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"):
        with pytest.raises(ValueError, match="out of range"):
            parse_instant(text)


@pytest.mark.parametrize(
    "name",
    ["originated_at", "ringing_at", "answered_at", "agent_connected_at", "ended_at"],
)
def test_every_cdr_instant_field_is_checked(name: str) -> None:
    errors = errors_of(record(**{name: "0001-01-01T00:30:00+01:00"}))

    assert any(e.field == name and "before 2000-01-01" in e.message for e in errors), errors


def test_an_overflowing_instant_is_a_field_error_not_an_exception() -> None:
    errors = errors_of(record(ended_at="9999-12-31T23:30:00-01:00"))

    assert [e.field for e in errors] == ["ended_at"]


# --- unknown fields and extra -------------------------------------------------------------


def test_unknown_fields_are_dropped_unless_allowed() -> None:
    data = record(dnis="+393471234567", lead_list="spring", extra={"batch": 4})

    dropped, _ = parse_cdr(data)
    kept, _ = parse_cdr(data, extra_fields_allowed={"lead_list"})

    assert dropped is not None and dropped.extra == {"batch": 4}
    assert kept is not None and kept.extra == {"batch": 4, "lead_list": "spring"}


def test_nesting_is_measured_without_recursion() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]

    assert nesting_exceeds(deep, 3)
    assert not nesting_exceeds({"a": {"b": [1]}}, 3)
    assert nesting_exceeds({"a": {"b": [[]]}}, 3)


def test_extra_three_levels_deep_is_accepted_four_refused() -> None:
    assert errors_of(record(extra={"a": {"b": [1, 2]}})) == []

    errors = errors_of(record(extra={"a": {"b": [[1]]}}))

    assert errors == [FieldError(field="extra", message="nested deeper than 3 levels")]


def test_a_too_deep_allowed_field_is_named() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = {"k": deep}

    errors = errors_of(record(vendor=deep), extra_fields_allowed={"vendor"})
    dropped = errors_of(record(vendor=deep))

    assert errors == [FieldError(field="vendor", message="nested deeper than 3 levels")]
    assert dropped == []


def test_extra_larger_than_4_kib_is_refused_and_other_errors_still_reported() -> None:
    errors = errors_of(record(extra={"notes": "x" * EXTRA_MAX_BYTES}, amd_result="fax"))

    assert [e.field for e in errors] == ["extra", "amd_result"]
    assert "larger than 4096 bytes" in errors[0].message


def test_long_string_fields_have_a_maximum_and_errors_do_not_echo_them() -> None:
    long = "Z" * 2_000_000
    fields = ["disposition", "hangup_cause", "cli_number", "callee_tz", "callee_number"]

    errors = errors_of(record(**dict.fromkeys(fields, long)))

    assert sorted(e.field for e in errors) == sorted(fields)
    assert all("ZZZZ" not in e.message and len(e.message) <= 200 for e in errors)


# --- phone-like values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "digits"),
    [
        ("+39 347 123 4567", "+393471234567"),
        ("0039-347-123-4567", "+393471234567"),
        ("(212) 736.5000", "2127365000"),
        ("tel:+1-212-736-5000", "+12127365000"),
        ("sip:+442079460018@10.0.0.7:5060", "+442079460018"),
        ("123456", "123456"),
        (393471234567, "393471234567"),
    ],
)
def test_phone_like_values(value: object, digits: str) -> None:
    assert phone_digits(value) == digits


@pytest.mark.parametrize(
    "value",
    ["12345", "+1234567890123456", "L-99812", "2026-03-02", "abc 3471234567", True, 42, 1.5, None],
)
def test_values_that_do_not_look_like_phone_numbers(value: object) -> None:
    assert phone_digits(value) is None


def test_phone_like_values_in_extra_become_the_callee_pseudonym() -> None:
    normalizer = Normalizer(KEY, lambda: NOW, timedelta(hours=1))
    cdr, _ = parse_cdr(
        record(
            extra={"dst": "0039 347 123 4567", "list": ["+39 347 123 4567", "L-1"], "n": 7},
            phone_number="+12127365000",
        ),
        extra_fields_allowed={"phone_number"},
    )
    assert cdr is not None

    normalised, errors = normalizer.normalize(cdr)

    assert errors == [] and normalised is not None
    callee = "pseudonym:" + hmac.new(KEY, b"+393471234567", hashlib.sha256).hexdigest()[:32]
    us = "pseudonym:" + hmac.new(KEY, b"+12127365000", hashlib.sha256).hexdigest()[:32]
    assert normalised.extra == {
        "dst": callee,
        "list": [callee, "L-1"],
        "n": 7,
        "phone_number": us,
    }
    assert f"pseudonym:{normalised.callee_key}" == callee
