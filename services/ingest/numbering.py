"""The cold path of a callee number in E.164, without phonenumbers' general machinery.

A number the normaliser has not seen cost about 60 µs here, most of it in two places:
`phonenumbers.parse`, which is built for any text a person may type (letters, spaces,
extensions, RFC 3966, national forms) and normalises it character by character; and the
type check, which compiles (from `re`'s cache) and matches up to eleven patterns per
region on every call. Dialers send `+` and digits. For that text:

- `e164_number` reads it as `phonenumbers.parse(text, None)` would: the country calling
  code by its first 1-3 digits, the national prefix stripped under the same length rule,
  the leading zeros kept the same way (it calls phonenumbers' own helpers for those two
  steps). Any other text, or a number it would refuse, returns None, and the caller uses
  `phonenumbers.parse` for it, errors included.
- `number_kind` gives the type of a national number in a region's metadata, as
  `_number_type_helper` does, from `NumberPlan`s built once per region from phonenumbers'
  metadata: the same descriptions in the same order, each with its possible lengths and
  its pattern compiled once.

tests/unit/test_callee_numbers.py holds both to phonenumbers (the parse of generated
texts; the type of every region's example numbers and of generated ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType
from phonenumbers.phonenumberutil import (
    _MAX_LENGTH_FOR_NSN,
    _MIN_LENGTH_FOR_NSN,
    COUNTRY_CODE_TO_REGION_CODE,
    ValidationResult,
    _maybe_strip_national_prefix_carrier_code,
    _set_italian_leading_zeros_for_phone_number,
    _test_number_length,
)

# The description attributes of PhoneMetadata checked before fixed line and mobile, in
# phonenumbers' order: the first that matches is the number's type.
_SPECIAL_TYPES = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)
# Length results under which parse keeps the national prefix (the number is too short
# without it).
_KEEP_PREFIX = frozenset(
    {
        ValidationResult.TOO_SHORT,
        ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
        ValidationResult.INVALID_LENGTH,
    }
)


@dataclass(frozen=True, slots=True)
class _Desc:
    """A number description: the lengths it allows (empty: any) and its whole pattern."""

    lengths: frozenset[int]
    pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, desc: object) -> _Desc | None:
        if desc is None:
            return None
        text = getattr(desc, "national_number_pattern", None)
        lengths = frozenset(getattr(desc, "possible_length", None) or ())
        return cls(lengths, re.compile(text) if text else None)

    def matches(self, nsn: str) -> bool:
        if self.lengths and len(nsn) not in self.lengths:
            return False
        return self.pattern is not None and self.pattern.fullmatch(nsn) is not None


@dataclass(frozen=True, slots=True)
class NumberPlan:
    """What the type check needs of one region's metadata, compiled once."""

    general: _Desc | None
    special: tuple[tuple[_Desc, int], ...]
    fixed_line: _Desc | None
    mobile: _Desc | None
    same_mobile_and_fixed_line: bool

    def kind(self, nsn: str) -> int:
        """The PhoneNumberType of `nsn` (national significant number) in this region."""
        if self.general is None or not self.general.matches(nsn):
            return PhoneNumberType.UNKNOWN
        for desc, kind in self.special:
            if desc.matches(nsn):
                return kind
        mobile = self.mobile is not None and self.mobile.matches(nsn)
        if self.fixed_line is not None and self.fixed_line.matches(nsn):
            if self.same_mobile_and_fixed_line or mobile:
                return PhoneNumberType.FIXED_LINE_OR_MOBILE
            return PhoneNumberType.FIXED_LINE
        if not self.same_mobile_and_fixed_line and mobile:
            return PhoneNumberType.MOBILE
        return PhoneNumberType.UNKNOWN


# Region id ("IT", or "001" for the non-geographical codes) and calling code to its plan.
_PLANS: dict[tuple[str, int | None], NumberPlan] = {}


def _plan_of(metadata: PhoneMetadata) -> NumberPlan:
    special = tuple(
        (desc, int(kind))
        for name, kind in _SPECIAL_TYPES
        if (desc := _Desc.of(getattr(metadata, name))) is not None
    )
    return NumberPlan(
        general=_Desc.of(metadata.general_desc),
        special=special,
        fixed_line=_Desc.of(metadata.fixed_line),
        mobile=_Desc.of(metadata.mobile),
        same_mobile_and_fixed_line=bool(metadata.same_mobile_and_fixed_line_pattern),
    )


def number_kind(nsn: str, metadata: PhoneMetadata) -> int:
    """`_number_type_helper(nsn, metadata)`, from the region's compiled plan."""
    key = (metadata.id, metadata.country_code)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _plan_of(metadata)
    return plan.kind(nsn)


def e164_number(text: str) -> phonenumbers.PhoneNumber | None:
    """`phonenumbers.parse(text, None)` for `+` and ASCII digits, or None when `text` has
    another shape or phonenumbers would refuse it (the caller then asks phonenumbers)."""
    digits = text[1:]
    if text[:1] != "+" or not digits.isascii() or not digits.isdigit():
        return None
    if len(digits) <= _MIN_LENGTH_FOR_NSN or digits[0] == "0":
        return None
    for size in (1, 2, 3):
        country_code = int(digits[:size])
        if country_code in COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            break
    else:
        return None
    if len(national) < _MIN_LENGTH_FOR_NSN:
        return None
    region = COUNTRY_CODE_TO_REGION_CODE[country_code][0]
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is not None:
        _carrier, stripped, _done = _maybe_strip_national_prefix_carrier_code(national, metadata)
        if _test_number_length(stripped, metadata) not in _KEEP_PREFIX:
            national = stripped
    if not _MIN_LENGTH_FOR_NSN <= len(national) <= _MAX_LENGTH_FOR_NSN:
        return None
    number = phonenumbers.PhoneNumber(country_code=country_code)
    _set_italian_leading_zeros_for_phone_number(national, number)
    number.national_number = int(national)
    return number
