"""CDR v1: what dialers send (`CdrV1`) and what ingest publishes (`NormalizedCdrV1`).

`CdrV1` is the dialer-facing contract of SPEC "CDR v1". `NormalizedCdrV1` is the record on
`cdrwatch.cdrs.v1`: the same call with instants in UTC, the callee number replaced by a
keyed pseudonym (`callee_key`) and the callee's country and candidate zones derived. The raw
number never leaves ingest. A breaking change is a V2 model and a new topic, never an edit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from schemas.instants import format_instant, parse_instant

# The JSON Schema states what the validator accepts: RFC 3339 text or epoch milliseconds.
_InstantInput = (
    Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    | Annotated[int, Field(ge=0, le=253402300799999)]
)
Instant = Annotated[
    datetime,
    BeforeValidator(parse_instant, json_schema_input_type=_InstantInput),
    PlainSerializer(format_instant, return_type=str, when_used="json"),
]
DialMode = Literal["predictive", "progressive", "preview", "manual", "agentless"]
AmdResult = Literal["human", "machine", "notsure", "hangup", "none"]
MessageType = Literal["comfort_noise", "info", "safe_harbor", "opt_out", "prerecorded"]
HangupSide = Literal["callee", "system", "agent"]
CliPresentation = Literal["allowed", "withheld"]

Id = Annotated[str, Field(min_length=1, max_length=200)]
OptText = Annotated[str | None, Field(default=None, max_length=500)]

# Instants that must lie in [answered_at, ended_at] and need answered_at (SPEC "Precise
# semantics", classification details).
ANSWER_RELATIVE_INSTANTS = ("greeting_ended_at", "agent_connected_at", "message_started_at")


class _CallFields(BaseModel):
    """Fields shared by the dialer record and the normalised record."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    call_id: Id
    campaign_id: Id
    tenant_id: Annotated[str | None, Field(default=None, min_length=1, max_length=200)] = None
    call_center_id: OptText = None
    dialer_id: OptText = None
    dial_mode: DialMode = "predictive"
    callee_region: Annotated[
        str | None, Field(default=None, pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")
    ] = None
    cli_number: OptText = None
    cli_presentation: CliPresentation | None = None
    originated_at: Instant
    ringing_at: Instant | None = None
    answered_at: Instant | None = None
    greeting_ended_at: Instant | None = None
    agent_connected_at: Instant | None = None
    message_started_at: Instant | None = None
    ended_at: Instant
    amd_result: AmdResult = "none"
    message_type: MessageType | None = None
    hangup_side: HangupSide | None = None
    hangup_cause: OptText = None
    sip_code: Annotated[int | None, Field(default=None, ge=100, le=699)] = None
    disposition: OptText = None
    agent_id: OptText = None
    refusal: bool | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class CdrV1(_CallFields):
    """A call detail record as a dialer sends it (SPEC "CDR v1")."""

    # Unknown fields are accepted on the wire (moved into `extra`), so the published
    # JSON Schema must not forbid them.
    model_config = ConfigDict(json_schema_extra={"additionalProperties": True})

    callee_number: Annotated[str, Field(min_length=3, max_length=40)]
    callee_country: Annotated[str | None, Field(default=None, pattern=r"^[A-Z]{2}$")] = None
    callee_tz: Annotated[str | None, Field(default=None, min_length=1, max_length=64)] = None

    @model_validator(mode="before")
    @classmethod
    def _keep_unknown_in_extra(cls, data: Any) -> Any:
        """Unknown top-level fields go to `extra` (kept, ignored by rules)."""
        if not isinstance(data, dict):
            return data
        known = cls.model_fields
        unknown = {k: v for k, v in data.items() if k not in known}
        if not unknown:
            return data
        kept = {k: v for k, v in data.items() if k in known}
        extra = dict(kept.get("extra") or {}) if isinstance(kept.get("extra"), dict) else {}
        extra.update(unknown)
        kept["extra"] = extra
        return kept


class NormalizedCdrV1(_CallFields):
    """The record on `cdrwatch.cdrs.v1`: UTC instants, pseudonymised callee, derived zones."""

    callee_key: Annotated[str, Field(min_length=8, max_length=128)]
    callee_country: Annotated[str | None, Field(default=None, pattern=r"^[A-Z]{2}$")] = None
    callee_zones: tuple[str, ...] = ()
    source: Literal["http", "kafka"] = "http"
    accepted_at: Instant


class FieldError(BaseModel):
    """One problem with one field of one record."""

    model_config = ConfigDict(frozen=True)

    field: str
    message: str


def instant_order_errors(cdr: _CallFields) -> list[FieldError]:
    """Errors for instants out of order (SPEC: originated ≤ ringing ≤ answered ≤ ended;
    greeting/agent/message need answered_at and lie in [answered_at, ended_at])."""
    errors: list[FieldError] = []
    later: list[tuple[str, datetime | None]] = [
        ("ringing_at", cdr.ringing_at),
        ("answered_at", cdr.answered_at),
        ("ended_at", cdr.ended_at),
    ]
    previous_name, previous = "originated_at", cdr.originated_at
    for name, value in later:
        if value is None:
            continue
        if value < previous:
            errors.append(FieldError(field=name, message=f"{name} before {previous_name}"))
        previous_name, previous = name, value
    for name in ANSWER_RELATIVE_INSTANTS:
        value = getattr(cdr, name)
        if value is None:
            continue
        if cdr.answered_at is None:
            errors.append(FieldError(field=name, message=f"{name} set but answered_at missing"))
        elif value < cdr.answered_at:
            errors.append(FieldError(field=name, message=f"{name} before answered_at"))
        elif value > cdr.ended_at:
            errors.append(FieldError(field=name, message=f"{name} after ended_at"))
    return errors


def pydantic_field_errors(exc: ValidationError) -> list[FieldError]:
    """Turn pydantic's errors into `FieldError`s naming the top-level field."""
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        field = ".".join(loc) if loc else "(record)"
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "missing":
            message = "field required"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        out.append(FieldError(field=field, message=message))
    return out


def parse_cdr(data: object) -> tuple[CdrV1 | None, list[FieldError]]:
    """Validate one dialer record: the model, or every error found (never both)."""
    if not isinstance(data, dict):
        return None, [FieldError(field="(record)", message="record must be a JSON object")]
    try:
        cdr = CdrV1.model_validate(data)
    except ValidationError as exc:
        return None, pydantic_field_errors(exc)
    errors = instant_order_errors(cdr)
    if errors:
        return None, errors
    return cdr, []
