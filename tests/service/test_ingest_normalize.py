"""Normalisation: E.164, callee country and zones, pseudonym, ingest-clock future check."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.cdr_v1 import CdrV1, FieldError, NormalizedCdrV1
from services.ingest.normalize import Normalizer

KEY = b"normalize-test-pseudonym-key"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def cdr(callee_number: str, **changes: Any) -> CdrV1:
    return CdrV1.model_validate(
        {
            "call_id": "c-1",
            "campaign_id": "camp",
            "callee_number": callee_number,
            "originated_at": "2026-03-02T10:15:00+01:00",
            "ended_at": "2026-03-02T10:17:00+01:00",
            **changes,
        }
    )


def normalize(
    callee_number: str, now: datetime = NOW, **changes: Any
) -> tuple[NormalizedCdrV1 | None, list[FieldError]]:
    normalizer = Normalizer(KEY, lambda: now, timedelta(hours=1))
    return normalizer.normalize(cdr(callee_number, **changes))


def key_of(e164: str) -> str:
    return hmac.new(KEY, e164.encode(), hashlib.sha256).hexdigest()[:32]


E164_CASES = [
    pytest.param("+39 347 123 4567", None, "+393471234567", "IT", id="it_mobile_e164"),
    pytest.param("0039 347 1234567", None, "+393471234567", "IT", id="it_00_prefix"),
    pytest.param("06 4567 8901", "IT", "+390645678901", "IT", id="it_national_landline"),
    pytest.param("+44 20 7946 0018", None, "+442079460018", "GB", id="gb_e164"),
    pytest.param("020 7946 0018", "GB", "+442079460018", "GB", id="gb_national"),
    pytest.param("+1 212-736-5000", None, "+12127365000", "US", id="us_e164"),
    pytest.param("(212) 736-5000", "US", "+12127365000", "US", id="us_national"),
    pytest.param("011 44 20 7946 0018", "US", "+442079460018", "GB", id="us_idd_011_to_gb"),
    pytest.param("0044 20 7946 0018", "US", "+442079460018", "GB", id="00_prefix_from_us"),
]


@pytest.mark.parametrize(("raw", "country", "e164", "derived_country"), E164_CASES)
def test_callee_number_is_normalised_to_e164_and_pseudonymised(
    raw: str, country: str | None, e164: str, derived_country: str
) -> None:
    record, errors = normalize(raw, callee_country=country)

    assert errors == []
    assert record is not None
    assert record.callee_key == key_of(e164)
    assert record.callee_country == derived_country
    dumped = record.model_dump_json()
    assert e164 not in dumped
    assert e164[1:] not in dumped


ZONE_CASES = [
    pytest.param("+12127365000", {}, ("America/New_York",), id="us_new_york_one_zone"),
    pytest.param(
        "+12082221234", {}, ("America/Boise", "America/Los_Angeles"), id="us_idaho_two_zones"
    ),
    pytest.param(
        "+12082221234", {"callee_tz": "America/Boise"}, ("America/Boise",), id="callee_tz_wins"
    ),
    pytest.param("+442079460018", {}, ("Europe/London",), id="gb_london"),
    pytest.param("+390645678901", {}, ("Europe/Rome",), id="it_rome_landline"),
    pytest.param(
        "+393471234567", {"callee_tz": "Europe/Rome"}, ("Europe/Rome",), id="it_mobile_override"
    ),
]


@pytest.mark.parametrize(("raw", "changes", "zones"), ZONE_CASES)
def test_callee_zones_are_derived_from_the_number_unless_callee_tz_is_given(
    raw: str, changes: dict[str, Any], zones: tuple[str, ...]
) -> None:
    record, errors = normalize(raw, **changes)

    assert errors == []
    assert record is not None
    assert record.callee_zones == zones


def test_italian_mobile_maps_to_the_zones_phonenumbers_gives() -> None:
    record, _ = normalize("+393471234567")

    assert record is not None
    assert "Europe/Rome" in record.callee_zones
    assert "Etc/Unknown" not in record.callee_zones


def test_non_geographic_number_has_no_country_and_no_unknown_zone() -> None:
    record, errors = normalize("+800 1234 5678")

    assert errors == []
    assert record is not None
    assert record.callee_country is None
    assert "Etc/Unknown" not in record.callee_zones


def test_dialer_country_wins_within_the_numbers_calling_code() -> None:
    record, _ = normalize("+12127365000", callee_country="CA")

    assert record is not None
    assert record.callee_country == "CA"


def test_number_wins_over_a_dialer_country_of_another_calling_code() -> None:
    record, errors = normalize("+442079460018", callee_country="IT")

    assert errors == []
    assert record is not None
    assert record.callee_country == "GB"
    assert record.callee_zones == ("Europe/London",)


ERROR_CASES = [
    pytest.param("347 123 4567", {}, "callee_number", "unless callee_country", id="national_alone"),
    pytest.param("+39 12", {}, "callee_number", "callee_number", id="too_short"),
    pytest.param("+39 0000 1", {}, "callee_number", "not a valid number", id="invalid_it"),
    pytest.param("hello", {}, "callee_number", "E.164", id="not_a_number"),
    pytest.param(
        "123 4567",
        {"callee_country": "US"},
        "callee_number",
        "callee_country US",
        id="invalid_us_national",
    ),
    pytest.param(
        "+393471234567", {"callee_tz": "Europe/Milano"}, "callee_tz", "IANA", id="unknown_zone"
    ),
    pytest.param(
        "+393471234567", {"callee_tz": "../../etc/passwd"}, "callee_tz", "IANA", id="path_as_zone"
    ),
    pytest.param(
        "+393471234567",
        {"callee_tz": "localtime"},
        "callee_tz",
        "IANA",
        id="localtime_is_not_a_zone",
    ),
    pytest.param(
        "020 7946 0018", {"callee_country": "UK"}, "callee_country", "GB", id="uk_is_not_iso"
    ),
]


@pytest.mark.parametrize(("raw", "changes", "field", "text"), ERROR_CASES)
def test_bad_number_or_zone_is_refused_naming_the_field(
    raw: str, changes: dict[str, Any], field: str, text: str
) -> None:
    record, errors = normalize(raw, **changes)

    assert record is None
    assert any(e.field == field and text in e.message for e in errors), errors


def test_future_check_is_against_the_injected_clock_with_one_hour_tolerance() -> None:
    origin = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)

    inside, errors_inside = normalize(
        "+393471234567", now=origin - timedelta(hours=1), ended_at="2026-03-02T10:15:00+01:00"
    )
    outside, errors_outside = normalize(
        "+393471234567",
        now=origin - timedelta(hours=1, microseconds=1),
        ended_at="2026-03-02T10:15:00+01:00",
    )

    assert inside is not None and errors_inside == []
    assert outside is None
    assert errors_outside == [
        FieldError(
            field="originated_at",
            message="originated_at more than 1h in the future of the ingest clock",
        ),
        FieldError(
            field="ended_at", message="ended_at more than 1h in the future of the ingest clock"
        ),
    ]


def test_every_instant_is_checked_against_the_future_tolerance() -> None:
    origin = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)

    record, errors = normalize(
        "+393471234567",
        now=origin,
        answered_at="2026-03-02T10:15:09+01:00",
        agent_connected_at="2026-03-02T12:15:10+01:00",
        ended_at="2026-03-02T12:17:00+01:00",
    )

    assert record is None
    assert [error.field for error in errors] == ["agent_connected_at", "ended_at"]


def test_record_keeps_the_call_and_stamps_acceptance() -> None:
    record, _ = normalize(
        "+393471234567",
        tenant_id="acme",
        answered_at=1772446509000,
        ended_at="2026-03-02T10:17:00.5+01:00",
        amd_result="human",
        extra={"vendor_field": 7},
    )

    assert record is not None
    assert record.accepted_at == NOW
    assert record.source == "http"
    assert record.tenant_id == "acme"
    assert record.answered_at == datetime(2026, 3, 2, 10, 15, 9, tzinfo=UTC)
    assert record.ended_at == datetime(2026, 3, 2, 9, 17, 0, 500000, tzinfo=UTC)
    assert record.amd_result == "human"
    assert record.extra == {"vendor_field": 7}
    # What goes on the topic validates as the wire model.
    assert NormalizedCdrV1.model_validate_json(record.model_dump_json()) == record


def test_pseudonym_depends_on_the_key() -> None:
    a = Normalizer(b"key-one-0123456789", lambda: NOW, timedelta(hours=1))
    b = Normalizer(b"key-two-0123456789", lambda: NOW, timedelta(hours=1))

    assert a.callee_key("+393471234567") != b.callee_key("+393471234567")
    assert a.callee_key("+393471234567") == a.callee_key("+393471234567")
