"""CDR batch v1: the envelope of `cdrwatch.cdrs.v1` (issue 7 item 1, "batches on the wire").

A stream processor pays per message, not per CDR (faust: ~75-250 µs a message whatever it
holds), so ingest publishes one Kafka record per (request, campaign) and the raw-topic
validator one per (fetched batch, campaign):

    {"v": 1, "cdrs": [NormalizedCdrV1, ...]}

keyed by the campaign id like a single record, the campaign's records in the order they
were accepted. A consumer reads both shapes (`cdrs_in_message`): an envelope, or one
`NormalizedCdrV1` object as published before envelopes existed and as tools may still
write. Each record of an envelope is judged alone: one that does not validate is rejected
(and dead-lettered as `cdrs[i]`) without its neighbours.

Limits: at most `MAX_CDRS_PER_MESSAGE` records per envelope, because a consumer numbers
the records of the message at `offset` as `offset * MAX_CDRS_PER_MESSAGE + index`
(`input_position`: one total order per partition over messages and the records inside
them, which the detector's watermarks and dedup need); and a publisher starts a new
envelope before `MAX_ENVELOPE_BYTES` of JSON, so an envelope fits Kafka's default 1 MiB
message with room to spare (a record is at most 512 KiB, `max_record_bytes`).

Upgrade note: the detector's watermarks hold positions. State written by a detector that
numbered records by offset alone holds smaller numbers, so the upgraded detector applies
every record after them; stop the old detector cleanly (it commits what it applied)
before starting the new one, or records it applied but had not committed count twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from schemas.cdr_v1 import INSTANT_FIELDS, NormalizedCdrV1
from schemas.plain_shape import OFFSET_Z, YEARS_2001_8999, instant_text, plain_variant

CDR_BATCH_VERSION = 1
MAX_CDRS_PER_MESSAGE = 10_000
MAX_ENVELOPE_BYTES = 900 * 1024


class CdrBatchV1(BaseModel):
    """One message of `cdrwatch.cdrs.v1`: normalised CDRs of one campaign key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1]
    cdrs: Annotated[list[NormalizedCdrV1], Field(min_length=1, max_length=MAX_CDRS_PER_MESSAGE)]


_ENVELOPE = TypeAdapter(CdrBatchV1)
_PREFIX = b'{"v":%d,"cdrs":[' % CDR_BATCH_VERSION

# A normalised record in the plain shape (schemas.plain_shape), as the ingest writes it:
# instants in UTC with `Z` (`format_instant`), years 2001-8999 (the detector refuses
# instants before 2000 and from 9000 on, so none in this shape is refused for its instants).
_PlainNormalized = plain_variant(
    NormalizedCdrV1,
    name="_PlainNormalized",
    instants=(*INSTANT_FIELDS, "accepted_at"),
    instant=instant_text(YEARS_2001_8999, OFFSET_Z),
    config=ConfigDict(extra="forbid", str_strip_whitespace=True),
)


class _PlainBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: Literal[1]
    cdrs: Annotated[
        list[_PlainNormalized],  # type: ignore[valid-type]
        Field(min_length=1, max_length=MAX_CDRS_PER_MESSAGE),
    ]


_PLAIN_ENVELOPE = TypeAdapter(_PlainBatch)


def plain_records(value: bytes | None) -> list[dict[str, Any]] | None:
    """The field values of every record of an envelope whose records all have the plain
    shape, instants still as their texts, checked in one pydantic-core pass; None for any
    other message, which `cdrs_in_message` reads. A reader that takes these values must
    come to what `cdrs_in_message` gives for the same message
    (`services.detector.wire.calls_in_message` does, tests/unit/test_wire_calls.py)."""
    if not value or not value.startswith(_PREFIX):
        return None
    try:
        batch = _PLAIN_ENVELOPE.validate_json(value)
    except ValidationError:
        return None
    records: list[dict[str, Any]] = batch.cdrs
    return records


def envelopes(
    encoded: Sequence[tuple[bytes, bytes]], max_bytes: int = MAX_ENVELOPE_BYTES
) -> list[tuple[bytes, bytes]]:
    """The Kafka records of (key, record JSON) pairs: one envelope per key, keys in order
    of first appearance, each key's records in input order; a key's records take more than
    one envelope only past `MAX_CDRS_PER_MESSAGE` or `max_bytes` (a record larger than
    that alone still gets its own). The records' JSON is copied in, not decoded again."""
    by_key: dict[bytes, list[bytes]] = {}
    for key, value in encoded:
        by_key.setdefault(key, []).append(value)
    out: list[tuple[bytes, bytes]] = []
    for key, values in by_key.items():
        chunk: list[bytes] = []
        size = 0
        for value in values:
            if chunk and (len(chunk) >= MAX_CDRS_PER_MESSAGE or size + len(value) + 1 > max_bytes):
                out.append((key, _envelope(chunk)))
                chunk, size = [], 0
            chunk.append(value)
            size += len(value) + 1
        if chunk:
            out.append((key, _envelope(chunk)))
    return out


def _envelope(values: list[bytes]) -> bytes:
    return b"".join((_PREFIX, b",".join(values), b"]}"))


def input_position(offset: int, index: int) -> int:
    """The `index`-th record of the message at `offset` in one total order per partition
    (index 0 for a message holding one record)."""
    return offset * MAX_CDRS_PER_MESSAGE + index


def message_offset(position: int) -> int:
    """The Kafka offset of the message holding the record at `position`."""
    return position // MAX_CDRS_PER_MESSAGE


def count_cdrs(value: bytes | None) -> int:
    """How many CDRs one message holds, unvalidated: an envelope's `cdrs`, else 1."""
    try:
        data: Any = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return 1
    if isinstance(data, dict) and isinstance(data.get("cdrs"), list):
        return len(data["cdrs"])
    return 1


def is_envelope(data: object) -> bool:
    return isinstance(data, dict) and "cdrs" in data


class EnvelopeError(ValueError):
    """An envelope wrong as a whole (its version, its `cdrs`, its other keys)."""


Decoded = NormalizedCdrV1 | ValidationError | EnvelopeError


def cdrs_in_message(value: bytes | None) -> tuple[bool, list[Decoded]]:
    """(whether the message is an envelope, its records in order, each validated alone: the
    model, or why it is not one). A message that is not an envelope is one record,
    validated as before envelopes existed. An envelope that is wrong as a whole (version,
    `cdrs` not a list of 1 to MAX_CDRS_PER_MESSAGE, other keys) is one EnvelopeError
    naming it."""
    raw = value or b""
    if raw.startswith(_PREFIX):
        try:
            # The common case: a good envelope as `envelopes` writes it, in one call.
            return True, list(_ENVELOPE.validate_json(raw).cdrs)
        except ValidationError:
            pass
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not is_envelope(data):
        try:
            return False, [NormalizedCdrV1.model_validate_json(raw)]
        except ValidationError as exc:
            return False, [exc]
    problem = _envelope_problem(data)
    if problem is not None:
        return True, [EnvelopeError(problem)]
    out: list[Decoded] = []
    for item in data["cdrs"]:
        try:  # from its JSON, so a record is judged exactly as a single message is
            out.append(NormalizedCdrV1.model_validate_json(orjson.dumps(item)))
        except ValidationError as exc:
            out.append(exc)
    return True, out


def record_in_envelope(value: bytes | None, index: int) -> bytes | None:
    """The JSON of `cdrs[index]` of an envelope (for its dead letter), None if there is none."""
    try:
        data: Any = orjson.loads(value or b"")
        return orjson.dumps(data["cdrs"][index])
    except (orjson.JSONDecodeError, LookupError, TypeError):
        return None


def _envelope_problem(data: dict[str, Any]) -> str | None:
    if data.get("v") != CDR_BATCH_VERSION:
        return f'envelope version {data.get("v")!r:.40}: expected "v": {CDR_BATCH_VERSION}'
    extra = sorted(set(data) - {"v", "cdrs"})
    if extra:
        return f"envelope has unknown fields {extra[:5]}"
    cdrs = data["cdrs"]
    if not isinstance(cdrs, list) or not 0 < len(cdrs) <= MAX_CDRS_PER_MESSAGE:
        return f'envelope "cdrs" must be a list of 1 to {MAX_CDRS_PER_MESSAGE} records'
    return None
