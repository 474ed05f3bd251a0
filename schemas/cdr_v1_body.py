"""A whole body of dialer records validated at once: `parse_cdrs`, `parse_cdr` of each.

`parse_cdr` validates one record through `CdrV1`, whose ids and instants have Python
validators (about 40 µs a record here, half of ingest's time). Most records are in the
plain shape every dialer we know sends: ids of printable ASCII, instants as
`YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)` or epoch milliseconds, no `extra`. For those,
one pydantic-core pass over the body (`_BODY`, a list of `_PlainCdr` or anything) checks
every field in Rust, and a short loop turns the instant texts into UTC datetimes. Any
record the plain shape does not take, or that the loop cannot finish, goes through
`parse_cdr`: it gets the same errors as before, word for word.

The contract this module keeps: for any input, `parse_cdrs([record])` is
`[parse_cdr(record)]` (equal models with equal field values, UTC instants included, and
equal errors). `_PlainCdr` is `CdrV1` with two field types narrowed to shapes whose
`CdrV1` validation cannot fail and needs no Python:

- ids: 1..128 printable ASCII characters, no `/`, no space at either end (what
  `id_problem` accepts, restricted to ASCII);
- instants: the text above with years 2001-9998, hours 00-23, minutes and seconds 00-59
  (the shape `schemas.instants._fast_instant` reads with `datetime.fromisoformat`), or an
  integer of epoch milliseconds in CdrV1's range. Instant texts are not stripped: `CdrV1`
  refuses an instant with spaces around it.

Every other field keeps `CdrV1`'s own type and constraints, so pydantic-core judges it
the same way in both. A record with `extra`, or with an unknown field the operator keeps
in `extra`, takes the general path (its `extra` needs the depth and size checks there).
tests/unit/test_cdr_body.py compares both paths over the fuzzing strategies of
tests/cdr_strategies.py.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, create_model
from pydantic.fields import FieldInfo

from schemas.cdr_v1 import (
    ID_FIELDS,
    ID_MAX_CHARS,
    INSTANT_FIELDS,
    CdrV1,
    FieldError,
    instant_order_errors,
    parse_cdr,
    trusted_model,
)
from schemas.instants import EARLIEST_CDR_EPOCH_MS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_MS_MAX = 253_402_300_799_999
# [0-9], never \d: the Rust regex engine's \d is any Unicode digit.
_YEAR = r"(?:200[1-9]|20[1-9][0-9]|2[1-9][0-9]{2}|[3-8][0-9]{3}|9[0-8][0-9]{2})"
_PLAIN_TEXT = (
    rf"^{_YEAR}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
_PlainInstant = (
    Annotated[str, StringConstraints(strict=True, strip_whitespace=False, pattern=_PLAIN_TEXT)]
    | Annotated[int, Field(strict=True, ge=EARLIEST_CDR_EPOCH_MS, le=_EPOCH_MS_MAX)]
)
# Printable ASCII but "/", and no space at either end (str_strip_whitespace ran first).
_PlainId = Annotated[
    str, Field(pattern=rf"^[!-.0-~](?:[ -.0-~]{{0,{ID_MAX_CHARS - 2}}}[!-.0-~])?$")
]


def _plain_field(name: str, info: FieldInfo) -> tuple[Any, FieldInfo]:
    """The field `name` of `CdrV1` as `_PlainCdr` has it."""
    if name in ID_FIELDS:
        narrowed: Any = _PlainId
    elif name in INSTANT_FIELDS:
        narrowed = _PlainInstant
    else:
        return info.annotation, info
    if info.is_required():
        return narrowed, Field()
    return narrowed | None, Field(default=info.default)


_PlainCdr = create_model(  # type: ignore[call-overload]
    "_PlainCdr",
    __config__=ConfigDict(extra="ignore", frozen=False, str_strip_whitespace=True),
    **{name: _plain_field(name, info) for name, info in CdrV1.model_fields.items()},
)
# Each item: a `_PlainCdr` when it has the plain shape, else the item itself.
_BODY: Final = TypeAdapter(
    list[Annotated[_PlainCdr | Any, Field(union_mode="left_to_right")]]  # type: ignore[valid-type]
)

Parsed = tuple[CdrV1 | None, list[FieldError]]


def parse_cdrs(
    items: Sequence[object], *, extra_fields_allowed: Collection[str] = ()
) -> list[Parsed]:
    """`parse_cdr` of each item, in order (see the module docstring)."""
    try:
        plain = _BODY.validate_python(list(items))
    except Exception:  # an input pydantic-core cannot walk: every record the general way
        plain = list(items)
    allowed = frozenset(extra_fields_allowed)
    fromisoformat = datetime.fromisoformat
    out: list[Parsed] = []
    for item, checked in zip(items, plain, strict=True):
        if (
            type(checked) is not _PlainCdr
            or "extra" in item  # type: ignore[operator]
            or (allowed and not allowed.isdisjoint(item))  # type: ignore[arg-type]
        ):
            out.append(parse_cdr(item, extra_fields_allowed=allowed))
            continue
        values = checked.__dict__
        try:
            for name in INSTANT_FIELDS:
                value = values[name]
                if value is None:
                    continue
                if type(value) is int:
                    values[name] = _EPOCH + timedelta(milliseconds=value)
                    continue
                moment = fromisoformat(value)
                values[name] = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
        except ValueError:  # a date the calendar lacks (02-30): the general path says so
            out.append(parse_cdr(item, extra_fields_allowed=allowed))
            continue
        cdr = trusted_model(CdrV1, values)
        errors = instant_order_errors(cdr)
        out.append((None, errors) if errors else (cdr, []))
    return out
