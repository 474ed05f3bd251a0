"""The callee number's cold path (services.ingest.normalize.parse_callee_number) gives
exactly what phonenumbers' public validity and zone functions give, for numbers of many
countries, types and kinds of invalidity; its two shortcuts (services.ingest.numbering)
read and type numbers as phonenumbers' parser and type check do."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import PhoneMetadata, PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, _number_type_helper
from phonenumbers.timezone import time_zones_for_number

from services.ingest.normalize import CalleeNumber, is_iana_zone, parse_callee_number
from services.ingest.numbering import e164_number, number_kind

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


def _example_numbers() -> list[tuple[str, phonenumbers.PhoneNumber]]:
    """Every region's example number of every type, and every non-geographical code's."""
    out = []
    kinds = [value for name, value in vars(PhoneNumberType).items() if name.isupper()]
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in kinds:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                out.append((region, number))
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            out.append(("001", number))
    return out


EXAMPLES = _example_numbers()


def _e164_texts(count: int) -> list[str]:
    """`+` and digits: real calling codes followed by national prefixes, leading zeros and
    random digits of every length, and texts no calling code starts."""
    rng = random.Random(11)
    codes = sorted(COUNTRY_CODE_TO_REGION_CODE)
    texts = []
    for _ in range(count):
        head = rng.choice(["", "0", "00", "1", "8", "9"])
        tail = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 16)))
        texts.append(f"+{rng.choice(codes)}{head}{tail}")
    return texts + ["+", "+0", "+1", "+12", "+123", "+0039347", "+৩৯৩৪৭১২৩৪৫৬৭", "+39 347", "39347"]


@pytest.mark.parametrize(
    "text",
    _e164_texts(3000)
    + [phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164) for _, n in EXAMPLES],
)
def test_the_e164_reader_reads_what_phonenumbers_parse_reads(text: str) -> None:
    fast = e164_number(text)
    try:
        expected = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        assert fast is None
        return
    assert fast is None or fast == expected


def test_the_e164_reader_takes_the_texts_dialers_send() -> None:
    """None would be correct but slow: the fast path must cover the common shape."""
    texts = [
        phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164) for _, n in EXAMPLES
    ]
    read = [e164_number(text) for text in texts]
    assert sum(number is not None for number in read) == len(texts)


def _numbers_of_every_region() -> list[tuple[str, str]]:
    """(region, national significant number): the examples, and each with its last digits
    changed, shortened and lengthened (mostly numbers of another type or none)."""
    rng = random.Random(5)
    out = []
    for region, number in EXAMPLES:
        nsn = phonenumbers.national_significant_number(number)
        out.append((region, nsn))
        for _ in range(4):
            cut = rng.randint(max(len(nsn) - 4, 1), len(nsn))
            tail = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 5)))
            out.append((region, nsn[:cut] + tail))
    return out


def test_the_number_plans_give_phonenumbers_types() -> None:
    """number_kind agrees with phonenumbers' own type check for every region's examples
    and thousands of near misses."""
    checked = 0
    for region, nsn in _numbers_of_every_region():
        if region == "001":
            continue
        metadata = PhoneMetadata.metadata_for_region(region)
        assert number_kind(nsn, metadata) == _number_type_helper(nsn, metadata), (region, nsn)
        checked += 1
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        metadata = PhoneMetadata.metadata_for_nongeo_region(code)
        for _, number in EXAMPLES:
            nsn = phonenumbers.national_significant_number(number)
            assert number_kind(nsn, metadata) == _number_type_helper(nsn, metadata), (code, nsn)
            checked += 1
    assert checked > 5000
