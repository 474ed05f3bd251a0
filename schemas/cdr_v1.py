"""CDR v1: what dialers send (`CdrV1`) and what ingest publishes (`NormalizedCdrV1`).

`CdrV1` is the dialer-facing contract of SPEC "CDR v1". `NormalizedCdrV1` is the record on
`cdrwatch.cdrs.v1`: the same call with instants in UTC, the callee number replaced by a
keyed pseudonym (`callee_key`) and the callee's country and candidate zones derived. The raw
number never leaves ingest. A breaking change is a V2 model and a new topic, never an edit.

Ranges checked here, per record (each violation is a field error naming the field):

- ids (`call_id`, `campaign_id`, `tenant_id`, `call_center_id`, `dialer_id`, `agent_id`):
  1..128 characters after stripping, no `/` (the API scopes campaigns as `tenant/campaign`),
  no Unicode category C character (control, format, surrogate, private, unassigned);
- instants: RFC 3339 with an offset or epoch milliseconds, on or after 2000-01-01T00:00:00Z
  (`schemas.instants.parse_cdr_instant`; the future bound is the normaliser's);
- unknown top-level fields are dropped, unless `parse_cdr` is given their name in
  `extra_fields_allowed` (an operator's list of non-personal fields): then they go to
  `extra`, as does an explicit `extra` object. `extra` nests at most `EXTRA_MAX_DEPTH`
  levels (itself included) and encodes to at most `EXTRA_MAX_BYTES` of JSON.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from schemas.instants import (
    EARLIEST_CDR_EPOCH_MS,
    format_instant,
    parse_cdr_instant,
    parse_instant,
)

ID_MAX_CHARS = 128
ID_FIELDS = ("call_id", "campaign_id", "tenant_id", "call_center_id", "dialer_id", "agent_id")
EXTRA_MAX_DEPTH = 3
EXTRA_MAX_BYTES = 4096
# Error messages and field names never carry more than this many characters of input.
ECHO_MAX_CHARS = 80

# The JSON Schema states what the validator accepts: RFC 3339 text or epoch milliseconds.
_InstantInput = (
    Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    | Annotated[int, Field(ge=0, le=253402300799999)]
)
# Any instant on the wire (alerts and stats use it too).
Instant = Annotated[
    datetime,
    BeforeValidator(parse_instant, json_schema_input_type=_InstantInput),
    PlainSerializer(format_instant, return_type=str, when_used="json"),
]
_CdrInstantInput = (
    Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    | Annotated[int, Field(ge=EARLIEST_CDR_EPOCH_MS, le=253402300799999)]
)
# An instant of a call: on or after 2000-01-01T00:00:00Z.
CdrInstant = Annotated[
    datetime,
    BeforeValidator(parse_cdr_instant, json_schema_input_type=_CdrInstantInput),
    PlainSerializer(format_instant, return_type=str, when_used="json"),
]


def id_problem(value: str) -> str | None:
    """Why `value` is not a valid id (CONTRACT: printable, no `/`, 1..128 characters after
    stripping), or None. Shared with the API, which refuses such ids in paths."""
    value = value.strip()
    if not value:
        return "must not be empty"
    if len(value) > ID_MAX_CHARS:
        return f"must be at most {ID_MAX_CHARS} characters"
    if "/" in value:
        return "must not contain '/'"
    # str.isprintable() is False for every category C character (and a few separators):
    # when it holds, the per-character scan (15 % of a record's validation) is not needed.
    if not value.isprintable() and any(unicodedata.category(char)[0] == "C" for char in value):
        return "must contain only printable characters (no control character)"
    return None


def _check_id(value: str, info: ValidationInfo) -> str:
    problem = id_problem(value)
    if problem is not None:
        raise ValueError(f"{info.field_name} {problem}")
    return value


Id = Annotated[
    str,
    Field(
        min_length=1,
        max_length=ID_MAX_CHARS,
        description="1..128 printable characters, no '/'",
    ),
    AfterValidator(_check_id),
]
DialMode = Literal["predictive", "progressive", "preview", "manual", "agentless"]
AmdResult = Literal["human", "machine", "notsure", "hangup", "none"]
MessageType = Literal["comfort_noise", "info", "safe_harbor", "opt_out", "prerecorded"]
HangupSide = Literal["callee", "system", "agent"]
CliPresentation = Literal["allowed", "withheld"]

OptText = Annotated[str | None, Field(default=None, max_length=500)]

# Every instant of a call, in the order of the record's fields.
INSTANT_FIELDS = (
    "originated_at",
    "ringing_at",
    "answered_at",
    "greeting_ended_at",
    "agent_connected_at",
    "message_started_at",
    "ended_at",
)
# Instants that must lie in [answered_at, ended_at] and need answered_at (SPEC "Precise
# semantics", classification details).
ANSWER_RELATIVE_INSTANTS = ("greeting_ended_at", "agent_connected_at", "message_started_at")
# After originated_at, the instants that must not come before the previous one given.
_ORDERED_INSTANTS = ("ringing_at", "answered_at", "ended_at")


class _CallFields(BaseModel):
    """Fields shared by the dialer record and the normalised record."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    call_id: Id
    campaign_id: Id
    tenant_id: Id | None = None
    call_center_id: Id | None = None
    dialer_id: Id | None = None
    dial_mode: DialMode = "predictive"
    callee_region: Annotated[
        str | None, Field(default=None, pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")
    ] = None
    cli_number: OptText = None
    cli_presentation: CliPresentation | None = None
    originated_at: CdrInstant
    ringing_at: CdrInstant | None = None
    answered_at: CdrInstant | None = None
    greeting_ended_at: CdrInstant | None = None
    agent_connected_at: CdrInstant | None = None
    message_started_at: CdrInstant | None = None
    ended_at: CdrInstant
    amd_result: AmdResult = "none"
    message_type: MessageType | None = None
    hangup_side: HangupSide | None = None
    hangup_cause: OptText = None
    sip_code: Annotated[int | None, Field(default=None, ge=100, le=699)] = None
    disposition: OptText = None
    agent_id: Id | None = None
    refusal: bool | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class CdrV1(_CallFields):
    """A call detail record as a dialer sends it (SPEC "CDR v1")."""

    # Unknown fields are accepted on the wire (dropped, or kept in `extra` when allowed), so
    # the published JSON Schema must not forbid them.
    model_config = ConfigDict(json_schema_extra={"additionalProperties": True})

    callee_number: Annotated[str, Field(min_length=3, max_length=40)]
    callee_country: Annotated[str | None, Field(default=None, pattern=r"^[A-Z]{2}$")] = None
    callee_tz: Annotated[str | None, Field(default=None, min_length=1, max_length=64)] = None

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown(cls, data: Any) -> Any:
        """Unknown top-level fields are dropped: they may hold personal data (a dialer's
        `dnis`). `parse_cdr` moves the allowed ones into `extra` before this runs."""
        if not isinstance(data, dict):
            return data
        known = cls.__pydantic_fields__
        if all(name in known for name in data):
            return data
        return {name: value for name, value in data.items() if name in known}


class NormalizedCdrV1(_CallFields):
    """The record on `cdrwatch.cdrs.v1`: UTC instants, pseudonymised callee, derived zones."""

    callee_key: Annotated[str, Field(min_length=8, max_length=128)]
    callee_country: Annotated[str | None, Field(default=None, pattern=r"^[A-Z]{2}$")] = None
    callee_zones: tuple[str, ...] = ()
    source: Literal["http", "kafka"] = "http"
    accepted_at: Instant


_Model = TypeVar("_Model", bound=BaseModel)


@cache
def _field_names(cls: type[BaseModel]) -> tuple[str, ...]:
    return tuple(cls.__pydantic_fields__)


def trusted_model(cls: type[_Model], values: dict[str, Any]) -> _Model:
    """`cls.model_construct(**values)` for values already valid that name every field of
    `cls`, in its order: `values` becomes the instance's `__dict__` as model_construct would
    make it, without its per-field alias and default look-ups (a sixth of its cost, which
    the ingest pays once a record). Other values go through model_construct; a test
    compares both."""
    if tuple(values) != _field_names(cls):
        return cls.model_construct(**values)
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", values)
    object.__setattr__(model, "__pydantic_fields_set__", set(values))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


class FieldError(BaseModel):
    """One problem with one field of one record."""

    model_config = ConfigDict(frozen=True)

    field: str
    message: str


def instant_order_errors(values: Mapping[str, Any]) -> list[FieldError]:
    """Errors for instants out of order (SPEC: originated ≤ ringing ≤ answered ≤ ended;
    greeting/agent/message need answered_at and lie in [answered_at, ended_at]), from a
    record's field values (a model's `__dict__`, or the same values in a dict)."""
    errors: list[FieldError] = []
    previous_name, previous = "originated_at", values["originated_at"]
    for name in _ORDERED_INSTANTS:
        value = values[name]
        if value is None:
            continue
        if value < previous:
            errors.append(FieldError(field=name, message=f"{name} before {previous_name}"))
        previous_name, previous = name, value
    answered, ended = values["answered_at"], values["ended_at"]
    for name in ANSWER_RELATIVE_INSTANTS:
        value = values[name]
        if value is None:
            continue
        if answered is None:
            errors.append(FieldError(field=name, message=f"{name} set but answered_at missing"))
        elif value < answered:
            errors.append(FieldError(field=name, message=f"{name} before answered_at"))
        elif value > ended:
            errors.append(FieldError(field=name, message=f"{name} after ended_at"))
    return errors


def excerpt(text: str, limit: int = ECHO_MAX_CHARS) -> str:
    """At most `limit` characters of `text` (an ellipsis marks a cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pydantic_field_errors(exc: ValidationError) -> list[FieldError]:
    """Turn pydantic's errors into `FieldError`s naming the top-level field."""
    out: list[FieldError] = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = [str(p) for p in err.get("loc", ())]
        field = ".".join(loc) if loc else "(record)"
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "missing":
            message = "field required"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        out.append(FieldError(field=excerpt(field), message=excerpt(message, 200)))
    return out


def nesting_exceeds(value: object, max_depth: int) -> bool:
    """True when `value` nests objects/arrays deeper than `max_depth` (a container counts
    as one level). Iterative, and stops at the first level too deep: a record nesting
    thousands of levels costs no more than one nesting `max_depth + 1`."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Collection[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _gather_extra(
    data: dict[str, Any], allowed: Collection[str]
) -> tuple[dict[str, Any], list[FieldError]]:
    """The record with its allowed unknown fields moved into `extra` and the other unknown
    fields dropped, and the errors of `extra` (depth, size, encoding)."""
    known = CdrV1.__pydantic_fields__
    if known.keys() >= data.keys():  # the usual record: nothing unknown to sort out
        record, kept = dict(data), {}
    else:
        record = {name: value for name, value in data.items() if name in known}
        kept = {n: value for n, value in data.items() if n not in known and n in allowed}
    explicit = record.get("extra")
    if not kept and not isinstance(explicit, dict):
        return record, []
    extra = dict(explicit) if isinstance(explicit, dict) else {}
    extra.update(kept)
    errors: list[FieldError] = []
    for name, value in extra.items():
        if nesting_exceeds(value, EXTRA_MAX_DEPTH - 1):
            field = excerpt(name) if name in kept else "extra"
            errors.append(
                FieldError(field=field, message=f"nested deeper than {EXTRA_MAX_DEPTH} levels")
            )
    if not errors:
        try:
            size = len(orjson.dumps(extra))
        except (TypeError, orjson.JSONEncodeError):
            errors.append(FieldError(field="extra", message="extra cannot be encoded as JSON"))
        else:
            if size > EXTRA_MAX_BYTES:
                errors.append(
                    FieldError(
                        field="extra",
                        message=f"extra larger than {EXTRA_MAX_BYTES} bytes as JSON",
                    )
                )
    # A refused `extra` is not handed to the model: the other fields are still checked.
    record["extra"] = {} if errors else extra
    return record, errors


def parse_cdr(
    data: object, *, extra_fields_allowed: Collection[str] = ()
) -> tuple[CdrV1 | None, list[FieldError]]:
    """Validate one dialer record: the model, or every error found (never both).

    Unknown top-level fields are dropped unless named in `extra_fields_allowed`, which
    keeps them in `extra` (pseudonymised there by the normaliser when they look like phone
    numbers)."""
    if not isinstance(data, dict):
        return None, [FieldError(field="(record)", message="record must be a JSON object")]
    record, extra_errors = _gather_extra(data, extra_fields_allowed)
    try:
        cdr = CdrV1.model_validate(record)
    except ValidationError as exc:
        return None, extra_errors + pydantic_field_errors(exc)
    if extra_errors:
        return None, extra_errors
    errors = instant_order_errors(cdr.__dict__)
    if errors:
        return None, errors
    return cdr, []
