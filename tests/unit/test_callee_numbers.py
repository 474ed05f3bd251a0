"""The callee number's cold path (services.ingest.normalize.parse_callee_number) gives
exactly what phonenumbers' public validity and zone functions give, for numbers of many
countries, types and kinds of invalidity."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers.timezone import time_zones_for_number

from services.ingest.normalize import CalleeNumber, is_iana_zone, parse_callee_number

FIXED = [
    "+393471234567",
    "+390612345678",
    "+390212345678",
    "+447700900123",
    "+442079460000",
    "+441481712345",  # Guernsey (shares +44)
    "+447624123456",  # Isle of Man mobile
    "+12125550123",
    "+13055550123",
    "+14165550123",  # Toronto (+1, CA)
    "+18765550123",  # Jamaica (+1)
    "+80012345678",  # non-geographical (001)
    "+390669812345",  # Vatican (+39, picked by its leading digits)
    "+447797123456",  # Jersey mobile (+44)
    "+77011234567",  # Kazakhstan (+7, picked by its leading digits)
    "+74951234567",  # Moscow (+7, RU)
    "+16495550123",  # Turks and Caicos (+1)
    "+262269123456",  # Mayotte (+262, shared with Réunion)
    "+33612345678",
    "+4915112345678",
    "+61412345678",
    "+79161234567",
    "+390000",
    "+1555",
    "+999123456789",
    "+44123",
]


def _generated(count: int) -> list[str]:
    rng = random.Random(7)
    prefixes = [
        "+393",
        "+3906",
        "+3906698",
        "+447",
        "+4420",
        "+441534",
        "+1212",
        "+1305",
        "+1416",
        "+1649",
        "+1876",
        "+336",
        "+49",
        "+77",
        "+7495",
        "+262",
    ]
    return [
        f"{rng.choice(prefixes)}{rng.randint(0, 10**9 - 1):09d}"[: rng.randint(9, 15)]
        for _ in range(count)
    ]


def _reference(raw: str) -> tuple[str, str | None, tuple[str, ...]] | None:
    number = phonenumbers.parse(raw, None)
    region = phonenumbers.region_code_for_number(number)
    if region is None or not phonenumbers.is_valid_number_for_region(number, region):
        return None
    zones = tuple(z for z in time_zones_for_number(number) if z != "Etc/Unknown")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), region, zones


@pytest.mark.parametrize("raw", FIXED + _generated(1500))
def test_the_cold_path_agrees_with_phonenumbers_public_functions(raw: str) -> None:
    parsed = parse_callee_number.__wrapped__(raw, None)
    try:
        expected = _reference(raw)
    except phonenumbers.NumberParseException:
        # phonenumbers cannot parse it at all: the cold path refuses it as well
        assert isinstance(parsed, str), parsed
        return
    if expected is None:
        assert isinstance(parsed, str) and "not a valid number" in parsed
        return
    assert isinstance(parsed, CalleeNumber)
    e164, region, zones = expected
    assert parsed.e164 == e164
    assert parsed.region == (region if region != "001" else None)
    assert parsed.zones == tuple(z for z in zones if is_iana_zone(z))
