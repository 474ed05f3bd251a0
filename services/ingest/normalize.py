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
- `originated_at` more than `future_tolerance` after the ingest clock is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Literal
from zoneinfo import available_timezones

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat
from phonenumbers.timezone import time_zones_for_number

from schemas.cdr_v1 import CdrV1, FieldError, NormalizedCdrV1

CALLEE_KEY_HEX_CHARS = 32
_ALPHA2 = re.compile(r"^[A-Z]{2}$")
_UNKNOWN_ZONE = "Etc/Unknown"
_DIALER_ONLY_FIELDS = ("callee_number", "callee_country", "callee_tz")
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
    try:
        number = phonenumbers.parse(text, country)
        if text.startswith("00") and not phonenumbers.is_valid_number(number):
            # A `00` prefix where the dialer's country uses another one (e.g. US 011).
            number = phonenumbers.parse("+" + text[2:], None)
    except NumberParseException as exc:
        return "callee_number " + _PARSE_REASONS.get(exc.error_type, "is not a phone number")
    region = phonenumbers.region_code_for_number(number)
    if region is None or not phonenumbers.is_valid_number_for_region(number, region):
        national = country is not None and not text.startswith("+")
        where = f"callee_country {country}" if national else "its country code"
        return f"callee_number is not a valid number for {where}"
    zones = tuple(
        zone
        for zone in time_zones_for_number(number)
        if zone != _UNKNOWN_ZONE and is_iana_zone(zone)
    )
    return CalleeNumber(
        e164=phonenumbers.format_number(number, PhoneNumberFormat.E164),
        region=region if region and _ALPHA2.match(region) and region != "ZZ" else None,
        calling_code_regions=frozenset(
            phonenumbers.region_codes_for_country_code(number.country_code or 0)
        ),
        zones=zones,
    )


def _format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}min"
    return f"{seconds}s"


class Normalizer:
    """Turns a validated `CdrV1` into a `NormalizedCdrV1`, or the errors that prevent it."""

    def __init__(
        self,
        pseudonym_key: bytes,
        clock: Callable[[], datetime],
        future_tolerance: timedelta,
    ) -> None:
        if not pseudonym_key:
            raise ValueError("pseudonym key must not be empty")
        self._key = pseudonym_key
        self._clock = clock
        self._future_tolerance = future_tolerance
        self.future_error = FieldError(
            field="originated_at",
            message=(
                f"originated_at more than {_format_duration(future_tolerance)} "
                "in the future of the ingest clock"
            ),
        )

    def callee_key(self, e164: str) -> str:
        """Keyed pseudonym of an E.164 number (stable for a given key)."""
        digest = hmac.new(self._key, e164.encode(), hashlib.sha256).hexdigest()
        return digest[:CALLEE_KEY_HEX_CHARS]

    def normalize(
        self, cdr: CdrV1, *, source: Literal["http", "kafka"] = "http"
    ) -> tuple[NormalizedCdrV1 | None, list[FieldError]]:
        errors: list[FieldError] = []
        now = self._clock().astimezone(UTC)
        if cdr.originated_at > now + self._future_tolerance:
            errors.append(self.future_error)
        if (
            cdr.callee_country is not None
            and cdr.callee_country not in phonenumbers.SUPPORTED_REGIONS
        ):
            errors.append(
                FieldError(
                    field="callee_country",
                    message=f"callee_country {cdr.callee_country} is not an ISO 3166-1 alpha-2 "
                    "country with a numbering plan (e.g. GB, IT, US)",
                )
            )
            return None, errors
        parsed = parse_callee_number(cdr.callee_number, cdr.callee_country)
        if isinstance(parsed, str):
            errors.append(FieldError(field="callee_number", message=parsed))
        if cdr.callee_tz is not None and not is_iana_zone(cdr.callee_tz):
            errors.append(
                FieldError(
                    field="callee_tz",
                    message=f"callee_tz {cdr.callee_tz!r} is not an IANA time zone "
                    "(e.g. Europe/Rome)",
                )
            )
        if errors or isinstance(parsed, str):
            return None, errors
        country = parsed.region
        if cdr.callee_country is not None and cdr.callee_country in parsed.calling_code_regions:
            country = cdr.callee_country
        zones = (cdr.callee_tz,) if cdr.callee_tz is not None else parsed.zones
        fields = dict(cdr)
        for name in _DIALER_ONLY_FIELDS:
            del fields[name]
        fields.update(
            callee_key=self.callee_key(parsed.e164),
            callee_country=country,
            callee_zones=zones,
            source=source,
            accepted_at=now,
        )
        record = NormalizedCdrV1.model_validate(fields)
        return record, []
