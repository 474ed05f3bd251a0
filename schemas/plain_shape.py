"""The "plain shape" of a call record: a model's fields with ids and instants narrowed to
shapes pydantic-core checks in Rust, for the fast paths that validate many records at once
(`schemas.cdr_v1_body` for dialer bodies, `schemas.cdr_batch_v1.plain_records` for the
detector's envelopes).

A fast path validates with `plain_variant(model, ...)` and takes a record only if it has
the plain shape; any other record goes the general way, through `model` and its Python
validators. The variant is a TypedDict, not a model: pydantic-core checks it the same way
and hands back a dict of every field in the model's order, defaults included (what a
model's `__dict__` holds), for less than building a model instance costs (2.9 -> 2.0 us
a dialer record here).

For the fast path to change nothing, each narrowed type accepts only values the general
validator accepts with the same result:

- ids (`PlainId`): 1..128 printable ASCII characters, no `/`, no space at either end
  after the model's whitespace stripping (what `schemas.cdr_v1.id_problem` accepts,
  restricted to ASCII);
- instants: texts `YYYY-MM-DDTHH:MM:SS[.ffffff]` and an offset, with hours 00-23, minutes
  and seconds 00-59, in the years a caller gives (`instant_text`), never stripped: the
  shape `schemas.instants._fast_instant` reads with `datetime.fromisoformat`. A date the
  calendar lacks (02-30) passes the pattern; the caller's `fromisoformat` raises for it
  and the record then goes the general way.

Every other field keeps the model's own type and constraints.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any, Required

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# pydantic needs typing_extensions' TypedDict before Python 3.12.
from typing_extensions import TypedDict

from schemas.cdr_v1 import ID_FIELDS, ID_MAX_CHARS

# [0-9], never \d: the Rust regex engine's \d is any Unicode digit.
YEARS_2001_9998 = r"(?:200[1-9]|20[1-9][0-9]|2[1-9][0-9]{2}|[3-8][0-9]{3}|9[0-8][0-9]{2})"
YEARS_2001_8999 = r"(?:200[1-9]|20[1-9][0-9]|2[1-9][0-9]{2}|[3-8][0-9]{3})"
OFFSET_Z = r"Z"
OFFSET_ANY = r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"

# Printable ASCII but "/", and no space at either end (str_strip_whitespace ran first).
PlainId = Annotated[str, Field(pattern=rf"^[!-.0-~](?:[ -.0-~]{{0,{ID_MAX_CHARS - 2}}}[!-.0-~])?$")]


def instant_text(years: str, offset: str) -> Any:
    """A strict text of the shape above (never stripped)."""
    pattern = (
        rf"^{years}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
        rf"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{{1,6}})?{offset}$"
    )
    return Annotated[str, StringConstraints(strict=True, strip_whitespace=False, pattern=pattern)]


def plain_variant(
    model: type[BaseModel],
    *,
    name: str,
    instants: Collection[str],
    instant: Any,
    config: ConfigDict,
) -> Any:
    """`model` with its ids as `PlainId` and the fields named in `instants` as `instant`
    (each optional where `model`'s is, with its default), as a TypedDict under `config`."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        if field_name in ID_FIELDS:
            narrowed: Any = PlainId
        elif field_name in instants:
            narrowed = instant
        else:
            narrowed = (
                Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            )
        if info.is_required():
            fields[field_name] = Required[narrowed]
            continue
        if field_name in ID_FIELDS or field_name in instants:
            narrowed = narrowed | None
        default = (
            Field(default_factory=info.default_factory)
            if info.default_factory is not None
            else Field(default=info.default)
        )
        fields[field_name] = Annotated[narrowed, default]
    shape: Any = TypedDict(name, fields, total=False)  # type: ignore[misc]
    shape.__pydantic_config__ = config  # type: ignore[attr-defined]
    return shape
