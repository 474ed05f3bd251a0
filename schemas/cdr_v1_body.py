"""A whole body of dialer records validated at once: `parse_cdrs`, `parse_cdr` of each, as
field values.

`parse_cdr` validates one record through `CdrV1`, whose ids and instants have Python
validators (about 40 µs a record here, half of ingest's time). Most records are in the
plain shape every dialer we know sends: ids of printable ASCII, instants as
`YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)` or epoch milliseconds, no `extra`. For those,
one pydantic-core pass over the body (`_BODY`, each a `_PlainCdr` or anything) checks
every field in Rust, and a short loop turns the instant texts into UTC datetimes. Any
record the plain shape does not take, or that the loop cannot finish, goes through
`parse_cdr`: it gets the same errors as before, word for word.

The contract this module keeps: for any input, `parse_cdrs([record])` is
`[parse_cdr(record)]` with the model given as its field values: a dict equal to the
model's `__dict__` (same fields in the same order, equal values, UTC instants included),
and equal errors. Field values, not models: the ingest turns them into the normalised
record's values and its JSON, and a model per record (built, then dropped) cost it about
a fifth of its time. `_PlainCdr` is `CdrV1` with two field types narrowed to shapes whose
`CdrV1` validation cannot fail and needs no Python (`schemas.plain_shape`): ids of
printable ASCII; instants as the text above with years 2001-9998, or an integer of epoch
milliseconds in CdrV1's range. Instant texts are not stripped: `CdrV1` refuses an instant
with spaces around it.

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

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter

from schemas.cdr_v1 import (
    INSTANT_FIELDS,
    CdrV1,
    FieldError,
    instant_order_errors,
    parse_cdr,
)
from schemas.instants import EARLIEST_CDR_EPOCH_MS
from schemas.plain_shape import OFFSET_ANY, YEARS_2001_9998, instant_text, plain_variant

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_MS_MAX = 253_402_300_799_999
_PlainInstant = (
    instant_text(YEARS_2001_9998, OFFSET_ANY)
    | Annotated[int, Field(strict=True, ge=EARLIEST_CDR_EPOCH_MS, le=_EPOCH_MS_MAX)]
)
_PlainCdr = plain_variant(
    CdrV1,
    name="_PlainCdr",
    instants=INSTANT_FIELDS,
    instant=_PlainInstant,
    config=ConfigDict(extra="ignore", str_strip_whitespace=True),
)
# An item the plain shape does not take.
_GENERAL: Final = object()
# Each item: its values (a new dict, every CdrV1 field in order, defaults included) when
# it has the plain shape, else _GENERAL.
_BODY: Final = TypeAdapter(
    list[
        Annotated[
            _PlainCdr | Annotated[Any, AfterValidator(lambda _: _GENERAL)],  # type: ignore[valid-type]
            Field(union_mode="left_to_right"),
        ]
    ]
)

# A `CdrV1`'s field values, as its `__dict__` holds them (a new dict the caller owns).
CdrFields = dict[str, Any]
Parsed = tuple[CdrFields | None, list[FieldError]]


def parse_cdrs(
    items: Sequence[object], *, extra_fields_allowed: Collection[str] = ()
) -> list[Parsed]:
    """`parse_cdr` of each item, in order, its model as field values (see the module
    docstring)."""
    try:
        plain = _BODY.validate_python(list(items))
    except Exception:  # an input pydantic-core cannot walk: every record the general way
        plain = [_GENERAL] * len(items)
    allowed = frozenset(extra_fields_allowed)
    fromisoformat = datetime.fromisoformat
    out: list[Parsed] = []
    for item, checked in zip(items, plain, strict=True):
        if (
            checked is _GENERAL
            or "extra" in item  # type: ignore[operator]
            or (allowed and not allowed.isdisjoint(item))  # type: ignore[arg-type]
        ):
            out.append(_general(item, allowed))
            continue
        values = checked
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
            out.append(_general(item, allowed))
            continue
        errors = instant_order_errors(values)
        out.append((None, errors) if errors else (values, []))
    return out


def _general(item: object, allowed: Collection[str]) -> Parsed:
    cdr, errors = parse_cdr(item, extra_fields_allowed=allowed)
    return (None if cdr is None else dict(cdr.__dict__)), errors
