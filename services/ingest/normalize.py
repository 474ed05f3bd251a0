"""Normalisation of a validated CDR into the record published on `cdrwatch.cdrs.v1`.

No I/O: the clock and the pseudonym key are injected. What it does (SPEC "Architecture",
"CDR v1"):

- callee number to E.164 with `phonenumbers`. E.164 input (`+39…`) is always accepted, so
  is the `00` international prefix (`0039…`); national forms only when `callee_country`
  says which numbering plan they belong to. A number `phonenumbers` does not hold valid
  for its country is refused on `callee_number`.
- callee country: the ISO 3166-1 alpha-2 region of the number. A dialer's
  `callee_country` wins only when it shares the number's country calling code (e.g. `CA`
  for a `+1` number, `VA` for a `+39` one): there the dialer may know better than the
  numbering plan. When it names another calling code altogether, the number (an E.164
  fact) wins: the record stays countable, and dialers commonly send one configured
  country for a whole campaign.
- callee zones: `(callee_tz,)` when given (a real IANA zone, else refused on `callee_tz`);
  otherwise the zones `phonenumbers` maps the number to, without `Etc/Unknown`; empty when
  unknown (the profile's home zone then applies downstream).
- `callee_key`: HMAC-SHA256 of the E.164 number under the pseudonym key, hex, 32 chars.
  The raw number is not in the normalised record, nor in any error message.
- every instant more than `future_tolerance` after the ingest clock is refused, each on its
  own field (the lower bound, 2000-01-01, is the schema's).
- phone numbers in `extra` (an allowed unknown field, or `extra` sent explicitly): a value
  that looks like a phone number is replaced by `pseudonym:` and its keyed pseudonym, so no
  raw number is published whatever name a dialer gives it (`dnis`, `dst`, …). "Looks like a
  phone number" (`looks_like_phone_number`): a string that, after dropping a `tel:`/`sip:`
  scheme, an `@host` part and every space, dot, dash, slash and parenthesis, is an optional
  `+` or `00` followed by 6 to 15 digits (E.164 has at most 15), an ISO date
  (`2026-03-02`) excepted; or an integer of 6 to 15 digits. The rule is deliberately
  broad: an order number of 6+ digits is pseudonymised too (send such values with a letter
  in them), and an epoch value in `extra` as well (send RFC 3339 text). Numbers embedded in
  free text are not recognised: only non-personal fields belong in the allow-list. The
  pseudonym of a number `phonenumbers` can read as E.164 is its `callee_key` (so `dnis`
  links to the callee without revealing it); otherwise the HMAC of its digits. Object keys
  are treated like values.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, Literal
from zoneinfo import available_timezones

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberFormat, PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE
from phonenumbers.timezone import (
    _country_level_time_zones_for_number,
    time_zones_for_geographical_number,
)

from schemas.cdr_v1 import INSTANT_FIELDS, CdrV1, FieldError, NormalizedCdrV1, trusted_model
from services.ingest.numbering import e164_number, number_kind

CALLEE_KEY_HEX_CHARS = 32
PSEUDONYM_PREFIX = "pseudonym:"
_PHONE_SCHEME = re.compile(r"^(?:tel|sips?):", re.IGNORECASE)
_PHONE_SEPARATORS = re.compile(r"[\s.\-/()]")
_PHONE_SHAPE = re.compile(r"^(\+|00)?(\d{6,15})$")
_PHONE_TEXT_MAX = 64  # longer strings are not phone numbers (and are not scanned)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # 2026-03-02: a date, not a number
_ALPHA2 = re.compile(r"^[A-Z]{2}$")
_UNKNOWN_ZONE = "Etc/Unknown"
# Names zoneinfo resolves that are not zones a callee can be in.
_NOT_CALLEE_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "has no valid country code",
    NumberParseException.NOT_A_NUMBER: "is not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "is too short after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "is too short",
    NumberParseException.TOO_LONG: "is too long",
}


@cache
def iana_zones() -> frozenset[str]:
    """The IANA zone names `zoneinfo` can load here (tzdata ships with the project)."""
    return frozenset(available_timezones()) - _NOT_CALLEE_ZONES


def is_iana_zone(name: str) -> bool:
    return name in iana_zones()


@dataclass(frozen=True, slots=True)
class CalleeNumber:
    """A callee number as the rules need it: E.164, region of its numbering plan, zones."""

    e164: str
    region: str | None
    calling_code_regions: frozenset[str]
    zones: tuple[str, ...]


@lru_cache(maxsize=65_536)
def parse_callee_number(raw: str, country: str | None) -> CalleeNumber | str:
    """The parsed number, or an error message (which never repeats the number).

    Cached: a campaign calls back the same numbers, and `phonenumbers` costs tens of
    microseconds a number. The cache lives only in the ingest process.
    """
    text = raw.strip()
    if not text.startswith("+") and text.startswith("00") and country is None:
        text = "+" + text[2:]
    if not text.startswith("+") and country is None:
        return "callee_number must be E.164 (+ and country code) unless callee_country is given"
    # `+` and digits, what dialers send, read without phonenumbers' general parser.
    number = e164_number(text) if country is None else None
    try:
        if number is None:
            number = phonenumbers.parse(text, country)
        if text.startswith("00") and not phonenumbers.is_valid_number(number):
            # A `00` prefix where the dialer's country uses another one (e.g. US 011).
            number = phonenumbers.parse("+" + text[2:], None)
    except NumberParseException as exc:
        return "callee_number " + _PARSE_REASONS.get(exc.error_type, "is not a phone number")
    region, kind = _region_and_kind(number)
    if kind == PhoneNumberType.UNKNOWN:
        national = country is not None and not text.startswith("+")
        where = f"callee_country {country}" if national else "its country code"
        return f"callee_number is not a valid number for {where}"
    zones = tuple(
        zone for zone in _zones_of(number, kind) if zone != _UNKNOWN_ZONE and is_iana_zone(zone)
    )
    return CalleeNumber(
        e164=phonenumbers.format_number(number, PhoneNumberFormat.E164),
        region=region if region and _ALPHA2.match(region) and region != "ZZ" else None,
        calling_code_regions=frozenset(
            phonenumbers.region_codes_for_country_code(number.country_code or 0)
        ),
        zones=zones,
    )


def _region_and_kind(number: phonenumbers.PhoneNumber) -> tuple[str | None, int]:
    """`region_code_for_number(number)` and the number's type in that region's metadata
    (UNKNOWN when it is not a valid number there), matching the number against each
    region's patterns once.

    `is_valid_number_for_region(number, region)` is exactly `kind != UNKNOWN`, and
    `time_zones_for_number` starts by computing the same type: where `region_code_for_number`
    already matched the whole number to pick the region (a calling code shared by several
    regions: +1, +39, +44, +7), that type is the kind, and where one region has the code,
    or a region is picked by its leading digits, the type is matched once here. A test
    compares this with phonenumbers' public functions over generated numbers
    (tests/unit/test_callee_numbers.py)."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(number.country_code)
    if not regions:
        return None, PhoneNumberType.UNKNOWN
    nsn = phonenumbers.national_significant_number(number)
    if len(regions) == 1:
        region = regions[0]
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(number.country_code, region)
        if metadata is None:
            return region, PhoneNumberType.UNKNOWN
        return region, number_kind(nsn, metadata)
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            if _leading_digits(metadata.leading_digits).match(nsn):
                return region, number_kind(nsn, metadata)
            continue
        kind = number_kind(nsn, metadata)
        if kind != PhoneNumberType.UNKNOWN:
            return region, kind
    return None, PhoneNumberType.UNKNOWN


@cache
def _leading_digits(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _zones_of(number: phonenumbers.PhoneNumber, kind: int) -> tuple[str, ...]:
    """`time_zones_for_number` of a valid number whose type is `kind`."""
    if not phonenumbers.is_number_type_geographical(kind, number.country_code):
        return tuple(_country_level_time_zones_for_number(number))
    return tuple(time_zones_for_geographical_number(number))


def phone_digits(value: object) -> str | None:
    """The number (`+` and digits, or bare digits) when `value` looks like a phone number
    (see the module docstring), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        digits = str(value)
        return digits if 6 <= len(digits) <= 15 else None
    if not isinstance(value, str) or len(value) > _PHONE_TEXT_MAX:
        return None
    text = _PHONE_SCHEME.sub("", value.strip()).split("@", 1)[0]
    if _ISO_DATE.match(text):
        return None
    match = _PHONE_SHAPE.match(_PHONE_SEPARATORS.sub("", text))
    if match is None:
        return None
    prefix, digits = match.groups()
    return "+" + digits if prefix else digits


def looks_like_phone_number(value: object) -> bool:
    return phone_digits(value) is not None


def _format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}min"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class Callee:
    """What a record keeps of its callee number: the keyed pseudonym, the region of its
    numbering plan, the regions sharing its calling code, and its zones."""

    key: str
    region: str | None
    calling_code_regions: frozenset[str]
    zones: tuple[str, ...]


# Default size of a normaliser's callee cache, at about 300 bytes an entry (~30 MB full):
# the numbers a mid-size centre calls in an hour, retries and re-calls within it hit. Each
# process that normalises (ingest, the api's ingest routes) holds its own; all-new numbers
# (an import of a fresh list) gain nothing from it, only from the one-pass number check.
CALLEE_CACHE_SIZE = 100_000


class Normalizer:
    """Turns a validated `CdrV1` into a `NormalizedCdrV1`, or the errors that prevent it.

    Callee numbers go through an LRU cache of `callee_cache_size` entries, (number as sent,
    country) to its `Callee` or its error, so a number called again within the cache's
    reach costs a dictionary lookup instead of a `phonenumbers` parse, validation, zone
    lookup and HMAC (about 100 µs). Entries share their region sets and zone tuples."""

    def __init__(
        self,
        pseudonym_key: bytes,
        clock: Callable[[], datetime],
        future_tolerance: timedelta,
        *,
        callee_cache_size: int = CALLEE_CACHE_SIZE,
    ) -> None:
        if not pseudonym_key:
            raise ValueError("pseudonym key must not be empty")
        self._shared: dict[object, object] = {}
        self.callee = lru_cache(maxsize=callee_cache_size)(self._callee)
        self._keyed = hmac.new(pseudonym_key, digestmod=hashlib.sha256)
        self._clock = clock
        self._future_tolerance = future_tolerance
        self.future_errors = {
            name: FieldError(
                field=name,
                message=(
                    f"{name} more than {_format_duration(future_tolerance)} "
                    "in the future of the ingest clock"
                ),
            )
            for name in INSTANT_FIELDS
        }
        self.future_error = self.future_errors["originated_at"]

    def _callee(self, raw: str, country: str | None) -> Callee | str:
        """The callee of a number (uncached), or the error message of `parse_callee_number`."""
        parsed = parse_callee_number.__wrapped__(raw, country)
        if isinstance(parsed, str):
            return parsed
        shared = self._shared
        regions = shared.setdefault(parsed.calling_code_regions, parsed.calling_code_regions)
        zones = shared.setdefault(parsed.zones, parsed.zones)
        return Callee(
            self.callee_key(parsed.e164),
            parsed.region,
            regions,  # type: ignore[arg-type]
            zones,  # type: ignore[arg-type]
        )

    def callee_key(self, e164: str) -> str:
        """Keyed pseudonym of an E.164 number (stable for a given key)."""
        mac = self._keyed.copy()  # the key's pads hashed once (hmac.new hashes them again)
        mac.update(e164.encode())
        return mac.hexdigest()[:CALLEE_KEY_HEX_CHARS]

    def pseudonym(self, digits: str) -> str:
        """`pseudonym:` and the keyed pseudonym of a phone-like value: its `callee_key` when
        it reads as a valid E.164 number, else the HMAC of its digits."""
        parsed = parse_callee_number(digits, None) if digits.startswith("+") else None
        e164 = parsed.e164 if isinstance(parsed, CalleeNumber) else digits
        return PSEUDONYM_PREFIX + self.callee_key(e164)

    def scrub(self, value: object) -> object:
        """`value` with every phone-like string or integer in it (object keys included)
        replaced by its pseudonym. `extra` is at most a few levels deep (schema)."""
        if isinstance(value, dict):
            return {str(self.scrub(k)): self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(item) for item in value]
        digits = phone_digits(value)
        return value if digits is None else self.pseudonym(digits)

    def now(self) -> datetime:
        """The ingest clock, in UTC: a body's records are accepted at one instant."""
        return self._clock().astimezone(UTC)

    def normalize(
        self,
        cdr: CdrV1,
        *,
        source: Literal["http", "kafka"] = "http",
        tenant_id: str | None = None,
    ) -> tuple[NormalizedCdrV1 | None, list[FieldError]]:
        """The normalised record (with `tenant_id` when given, else the record's own), or
        the errors that prevent it."""
        fields, errors = self.normalize_fields(
            cdr.__dict__.copy(), source=source, tenant_id=tenant_id, now=self.now()
        )
        # Every field is valid already (the CdrV1 it comes from, values derived here):
        # construct without validating them a second time.
        return (None if fields is None else trusted_model(NormalizedCdrV1, fields)), errors

    def normalize_fields(
        self,
        fields: dict[str, Any],
        *,
        source: Literal["http", "kafka"],
        tenant_id: str | None,
        now: datetime,
    ) -> tuple[dict[str, Any] | None, list[FieldError]]:
        """`normalize` on field values: `fields`, a `CdrV1`'s (`schemas.cdr_v1_body`), made
        into the `NormalizedCdrV1`'s in its field order (the dict is taken over and
        changed), or None and the errors. `now` (UTC) is the ingest clock's reading for the
        record, its `accepted_at`."""
        errors: list[FieldError] = []
        latest = now + self._future_tolerance
        for name in INSTANT_FIELDS:
            value = fields[name]
            if value is not None and value > latest:
                errors.append(self.future_errors[name])
        number = fields.pop("callee_number")
        dialer_country = fields.pop("callee_country")
        dialer_zone = fields.pop("callee_tz")
        if dialer_country is not None and dialer_country not in phonenumbers.SUPPORTED_REGIONS:
            errors.append(
                FieldError(
                    field="callee_country",
                    message=f"callee_country {dialer_country} is not an ISO 3166-1 alpha-2 "
                    "country with a numbering plan (e.g. GB, IT, US)",
                )
            )
            return None, errors
        parsed = self.callee(number, dialer_country)
        if isinstance(parsed, str):
            errors.append(FieldError(field="callee_number", message=parsed))
        if dialer_zone is not None and not is_iana_zone(dialer_zone):
            errors.append(
                FieldError(
                    field="callee_tz",
                    message=f"callee_tz {dialer_zone!r} is not an IANA time zone "
                    "(e.g. Europe/Rome)",
                )
            )
        if errors or isinstance(parsed, str):
            return None, errors
        country = parsed.region
        if dialer_country is not None and dialer_country in parsed.calling_code_regions:
            country = dialer_country
        if tenant_id is not None:
            fields["tenant_id"] = tenant_id
        # Appended in NormalizedCdrV1's order, after the fields it shares with CdrV1.
        fields["callee_key"] = parsed.key
        fields["callee_country"] = country
        fields["callee_zones"] = (dialer_zone,) if dialer_zone is not None else parsed.zones
        fields["source"] = source
        fields["accepted_at"] = now
        if fields["extra"]:
            fields["extra"] = self.scrub(fields["extra"])
        return fields, []
