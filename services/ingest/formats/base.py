"""What every dialer-format mapper shares: outcomes, the mapping file, instants and numbers.

A mapper turns a PBX's own records into CDR v1 dicts (the shape `POST /v1/cdrs` takes), one
`Outcome` per call: `Mapped` (a CDR v1 dict), `Skipped` (not a callee call: an internal leg,
an extension; counted, not an error) or `Rejected` (the record cannot be mapped; the reason
is named and the line given). Validation of the mapped dict (ranges, order of instants,
numbers) is the ingest's, once, for every path.

Which column or channel variable carries the campaign, the callee, the dial mode, the AMD
result, the agent-bridge time, and which zone the PBX writes its zone-less local timestamps
in, is data: a strict TOML mapping file per source (`Mapping`; unknown keys refused). Each
format ships a default in `mappings/<format>.toml`; docs/integrations/<format>.md says why.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.cdr_v1 import AmdResult, DialMode

MAPPINGS_DIR = Path(__file__).resolve().parent / "mappings"

SkipReason = Literal["internal_leg", "internal_extension"]
Outcome_ = Literal["no_answer", "drop", "machine", "human"]


@dataclass(frozen=True, slots=True)
class Mapped:
    """A call mapped to a CDR v1 dict; `line` is the first source line of the call and
    `offset` that line's byte offset (a checkpoint never passes an unsent call)."""

    record: dict[str, Any]
    line: int = 1
    offset: int = 0
    rows: int = 1


@dataclass(frozen=True, slots=True)
class Skipped:
    """Not a call to a callee (an internal leg or an extension): counted, not an error."""

    reason: SkipReason
    line: int = 1
    offset: int = 0
    call_id: str | None = None
    rows: int = 1


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that cannot be mapped: `reason` is a short closed name, `message` says why."""

    reason: str
    message: str
    line: int = 1
    offset: int = 0
    call_id: str | None = None
    rows: int = 1


Outcome = Mapped | Skipped | Rejected


class MappingError(ValueError):
    """A mapping file that is not valid (unknown key, bad zone, ...); the message says which."""


class Mapping(BaseModel):
    """Where a source keeps what CDR v1 needs. Lists of names are tried in order; the first
    non-empty value wins. Unknown keys are refused (a typo must not silently map nothing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str
    # Zone of timestamps written without an offset (Asterisk/FreeSWITCH local time).
    timezone: str | None = None
    # Numbering plan of national-format callee numbers (ISO 3166-1 alpha-2).
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    # CSV layouts: the column names when the file has no header row.
    columns: list[str] | None = None
    header: bool = False
    call_id: list[str] = Field(default_factory=list)
    call_id_prefix: str = ""
    # Columns that, with the call id, tell calls apart when rows are joined (Asterisk CDR).
    group_by: list[str] = Field(default_factory=list)
    campaign: list[str] = Field(default_factory=list)
    campaign_default: str | None = None
    tenant: list[str] = Field(default_factory=list)
    callee: list[str] = Field(default_factory=list)
    callee_strip_prefixes: list[str] = Field(default_factory=list)
    # A callee with fewer digits (or with letters) is an extension: skipped, not an error.
    callee_min_digits: int = Field(default=7, ge=1, le=15)
    callee_country: list[str] = Field(default_factory=list)
    cli: list[str] = Field(default_factory=list)
    dial_mode: list[str] = Field(default_factory=list)
    dial_mode_default: DialMode = "predictive"
    dial_mode_values: dict[str, DialMode] = Field(default_factory=dict)
    amd: list[str] = Field(default_factory=list)
    amd_values: dict[str, AmdResult] = Field(default_factory=dict)
    agent_connected: list[str] = Field(default_factory=list)
    ringing: list[str] = Field(default_factory=list)
    message_started: list[str] = Field(default_factory=list)
    hangup_cause: list[str] = Field(default_factory=list)
    disposition: list[str] = Field(default_factory=list)
    # Unit of numeric epoch fields of this source.
    epoch_unit: Literal["s", "ms", "us"] = "s"
    skip_internal_legs: bool = True
    # VICIdial: final status -> outcome.
    status_outcomes: dict[str, Outcome_] = Field(default_factory=dict)
    # Asterisk CEL: "dial" (a phone or agent dials out: the callee is the second channel) or
    # "originate" (the dialer originates to the callee first: the first channel is the callee).
    cel_mode: Literal["dial", "originate"] = "dial"
    # Rows of one call (Asterisk CDR, CEL) are joined while they are at most this many rows
    # apart; a call is complete when no row of it came for this many rows (or at the end).
    group_window_rows: int = Field(default=2000, ge=1, le=1_000_000)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("amd_values", "dial_mode_values", "status_outcomes")
    @classmethod
    def _upper_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {key.strip().upper(): item for key, item in value.items()}

    def zone(self) -> ZoneInfo | None:
        return _zone(self.timezone) if self.timezone else None


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def load_mapping(
    format_name: str, path: Path | None = None, overrides: dict[str, Any] | None = None
) -> Mapping:
    """The shipped mapping of `format_name`, with the keys of the TOML file at `path` (and
    then `overrides`) replacing its own. Raises MappingError naming the bad key."""
    default = MAPPINGS_DIR / f"{format_name.replace('-', '_')}.toml"
    if not default.exists():
        raise MappingError(f"unknown format {format_name!r}")
    data = _read_toml(default)
    if path is not None:
        data.update(_read_toml(path))
    if overrides:
        data.update(overrides)
    if data.get("format", format_name) != format_name:
        raise MappingError(f"mapping is for format {data['format']!r}, not {format_name!r}")
    data["format"] = format_name
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise MappingError(f"invalid mapping for {format_name}: {problems}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"{path}: {exc}") from None


# --- values -------------------------------------------------------------------------------


def first(source: dict[str, Any], names: list[str]) -> str | None:
    """The first non-empty value (stripped text) among `names` in `source`."""
    for name in names:
        value = source.get(name)
        if value is None:
            continue
        text = str(value).strip()
        if text:
            return text
    return None


class BadValue(ValueError):
    """A value of the source that cannot be read; the message names the field."""

    reason = "bad_timestamp"


class NoZone(BadValue):
    """A zone-less local timestamp and a mapping without `timezone`: never guessed."""

    reason = "no_timezone"


def local_instant(text: str, zone: ZoneInfo | None, field_name: str) -> datetime:
    """A PBX timestamp (`2024-01-27 15:07:24`, optional fraction and offset such as `-04`)
    as an aware datetime. Zone-less text is read in the mapping's zone; in a repeated hour
    (DST fall-back) the first occurrence is taken (fold=0), in a skipped hour the offset
    before the change (zoneinfo's reading)."""
    if len(text) < 16 or text[4] != "-" or text[10] not in " T":
        raise BadValue(f"{field_name}: not a timestamp ({text[:40]!r})")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadValue(f"{field_name}: not a timestamp ({text[:40]!r})") from None
    if value.tzinfo is None:
        if zone is None:
            raise NoZone(
                f"{field_name}: timestamp has no offset and the mapping names no timezone "
                "(set `timezone` to the PBX's zone)"
            )
        value = value.replace(tzinfo=zone)
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT_DIVISOR = {"s": 1, "ms": 1_000, "us": 1_000_000}


def epoch_instant(text: str, unit: str, field_name: str) -> datetime | None:
    """An epoch number in its declared unit as a UTC datetime; 0 means "never" (None)."""
    try:
        number = int(text)
    except ValueError:
        raise BadValue(f"{field_name}: not an epoch number ({text[:40]!r})") from None
    if number == 0:
        return None
    divisor = _UNIT_DIVISOR[unit]
    try:
        return _EPOCH + timedelta(microseconds=number * (1_000_000 // divisor))
    except OverflowError:
        raise BadValue(f"{field_name}: epoch {unit} out of range") from None


def rfc3339(value: datetime) -> str:
    return value.isoformat()


# --- callee numbers -------------------------------------------------------------------------

_NOT_DIGITS = re.compile(r"\D")
_LETTERS = re.compile(r"[A-Za-z]")


def callee_number(raw: str, mapping: Mapping) -> tuple[str | None, SkipReason | None]:
    """The callee number in E.164 where it can be told, else its digits (national form, read
    by ingest in the mapping's country); or why it is no callee (an extension, a name).

    `+34…` stays; `0034…` and `00034…` become `+34…`; bare digits are the mapping
    country's national form when valid there, else E.164 without the `+` when valid so
    (`34688886392`), else passed on as they are."""
    text = raw.strip()
    if text.startswith(("sip:", "sips:", "tel:")):
        text = text.split(":", 1)[1]
    text = text.split("@", 1)[0]
    for prefix in mapping.callee_strip_prefixes:
        if prefix and text.startswith(prefix):
            text = text[len(prefix) :]
            break
    if _LETTERS.search(text):
        return None, "internal_extension"
    plus = text.startswith("+")
    digits = _NOT_DIGITS.sub("", text)
    if len(digits) < mapping.callee_min_digits:
        return None, "internal_extension"
    if plus:
        return "+" + digits, None
    if digits.startswith("00"):
        return "+" + digits[2:].lstrip("0"), None
    return _bare_digits(digits, mapping.country), None


@lru_cache(maxsize=65_536)
def _bare_digits(digits: str, country: str | None) -> str:
    if country is not None:
        try:
            number = phonenumbers.parse(digits, country)
        except phonenumbers.NumberParseException:
            number = None
        if number is not None and phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return digits
    if phonenumbers.is_valid_number(number):
        return "+" + digits
    return digits


@dataclass
class CallFields:
    """What a mapper found for one call, before it becomes a CDR v1 dict."""

    call_id: str
    originated_at: datetime
    ended_at: datetime
    callee_raw: str | None
    source: dict[str, Any] = field(default_factory=dict)
    answered_at: datetime | None = None
    ringing_at: datetime | None = None
    agent_connected_at: datetime | None = None
    message_started_at: datetime | None = None
    amd_result: AmdResult | None = None
    hangup_cause: str | None = None
    disposition: str | None = None
    sip_code: int | None = None
    cli: str | None = None


def build_record(fields: CallFields, mapping: Mapping) -> dict[str, Any] | SkipReason | str:
    """The CDR v1 dict of a call; a SkipReason when it is no callee call; else a message
    (str starting with "reject:") when a required value is missing."""
    src = fields.source
    if fields.callee_raw is None:
        return "internal_extension"
    number, skip = callee_number(fields.callee_raw, mapping)
    if skip is not None or number is None:
        return skip or "internal_extension"
    campaign = first(src, mapping.campaign) or mapping.campaign_default
    if not campaign:
        return (
            "reject:no campaign: none of "
            + ", ".join(mapping.campaign or ["(none)"])
            + (" is set and the mapping has no campaign_default")
        )
    record: dict[str, Any] = {
        "call_id": mapping.call_id_prefix + fields.call_id,
        "campaign_id": campaign,
        "callee_number": number,
        "originated_at": rfc3339(fields.originated_at),
        "ended_at": rfc3339(fields.ended_at),
    }
    country = first(src, mapping.callee_country) or mapping.country
    if country and not number.startswith("+"):
        record["callee_country"] = country
    tenant = first(src, mapping.tenant)
    if tenant:
        record["tenant_id"] = tenant
    mode = first(src, mapping.dial_mode)
    dial_mode = mapping.dial_mode_values.get(mode.upper(), None) if mode else None
    if dial_mode is None and mode and mode.lower() in _DIAL_MODES:
        dial_mode = mode.lower()  # type: ignore[assignment]
    record["dial_mode"] = dial_mode or mapping.dial_mode_default
    amd = fields.amd_result
    if amd is None:
        raw_amd = first(src, mapping.amd)
        if raw_amd:
            amd = mapping.amd_values.get(raw_amd.upper())
    if amd is not None:
        record["amd_result"] = amd
    for name, value in (
        ("ringing_at", fields.ringing_at),
        ("answered_at", fields.answered_at),
        ("agent_connected_at", fields.agent_connected_at),
        ("message_started_at", fields.message_started_at),
    ):
        if value is not None:
            record[name] = rfc3339(value)
    cause = fields.hangup_cause or first(src, mapping.hangup_cause)
    if cause:
        record["hangup_cause"] = cause[:500]
    disposition = fields.disposition or first(src, mapping.disposition)
    if disposition:
        record["disposition"] = disposition[:500]
    if fields.sip_code is not None and 100 <= fields.sip_code <= 699:
        record["sip_code"] = fields.sip_code
    cli = fields.cli or first(src, mapping.cli)
    if cli:
        record["cli_number"] = cli[:500]
    return record


_DIAL_MODES = frozenset({"predictive", "progressive", "preview", "manual", "agentless"})


def clamp_to_answer(
    agent: datetime | None, answered: datetime | None, ended: datetime
) -> datetime | None:
    """An agent-bridge instant read from the PBX, kept inside [answered, ended]: a bridge
    stamped before the answer (the same event seen by two clocks) is the answer itself; a
    bridge without an answer is dropped (nobody answered, nobody was bridged)."""
    if agent is None or answered is None:
        return None
    if agent < answered:
        return answered
    if agent > ended:
        return ended
    return agent


def outcome_of(
    fields: CallFields, mapping: Mapping, *, line: int, offset: int, rows: int = 1
) -> Outcome:
    built = build_record(fields, mapping)
    if isinstance(built, dict):
        return Mapped(built, line=line, offset=offset, rows=rows)
    if built.startswith("reject:"):
        return Rejected(
            "no_campaign", built.removeprefix("reject:"), line, offset, fields.call_id, rows
        )
    return Skipped(built, line, offset, fields.call_id, rows)  # type: ignore[arg-type]
