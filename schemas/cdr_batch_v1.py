"""CDR batch v1: the envelope of `cdrwatch.cdrs.v1` (SPEC "Architecture"; issue 7 item 1).

Ingest publishes one Kafka record per (request, campaign), and the raw-topic validator one
per (fetched batch, campaign): a `CdrBatchV1` holding that campaign's normalised CDRs in
the order they were accepted, keyed by `campaign_id` like a single record. The cost of a
stream processor is per message, not per CDR, so a batch of 1,000 CDRs costs it about what
one CDR did.

Consumers accept both shapes (`cdrs_in_message`): a message is either an envelope (a JSON
object with `cdrs`) or one `NormalizedCdrV1` object, as published before envelopes existed
and as tests and tools still write. A record of an envelope is judged alone: one that
does not validate is rejected without its neighbours.

Limits: at most `MAX_CDRS_PER_MESSAGE` records per envelope (a consumer numbers the
records of a message `offset * MAX_CDRS_PER_MESSAGE + index`, see `input_position`), and
a publisher starts a new envelope before `MAX_ENVELOPE_BYTES` of JSON, so that every
envelope fits the default Kafka message size (1 MiB) with room to spare.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.cdr_v1 import Id, NormalizedCdrV1

MAX_CDRS_PER_MESSAGE = 10_000
MAX_ENVELOPE_BYTES = 900 * 1024


class CdrBatchV1(BaseModel):
    """One message of `cdrwatch.cdrs.v1`: normalised CDRs of one campaign (any tenant)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    campaign_id: Id
    cdrs: Annotated[list[NormalizedCdrV1], Field(min_length=1, max_length=MAX_CDRS_PER_MESSAGE)]

    @model_validator(mode="after")
    def _one_campaign(self) -> CdrBatchV1:
        for cdr in self.cdrs:
            if cdr.campaign_id != self.campaign_id:
                raise ValueError("every record of a batch belongs to the batch's campaign_id")
        return self


def encode_batch(campaign_id: str, values: list[bytes]) -> bytes:
    """The JSON of a `CdrBatchV1` from its records' JSON (each as `encode_record` writes
    it), without decoding them again."""
    return b"".join(
        (b'{"campaign_id":', orjson.dumps(campaign_id), b',"cdrs":[', b",".join(values), b"]}")
    )


def split_batches(
    campaign_id: str, values: list[bytes], max_bytes: int = MAX_ENVELOPE_BYTES
) -> list[bytes]:
    """`values` (records of one campaign, JSON) as few envelopes as the limits allow, in
    order: at most MAX_CDRS_PER_MESSAGE records and about `max_bytes` each (a record
    larger than that alone still gets its own envelope)."""
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for value in values:
        if chunk and (len(chunk) >= MAX_CDRS_PER_MESSAGE or size + len(value) + 1 > max_bytes):
            out.append(encode_batch(campaign_id, chunk))
            chunk, size = [], 0
        chunk.append(value)
        size += len(value) + 1
    if chunk:
        out.append(encode_batch(campaign_id, chunk))
    return out


def input_position(offset: int, index: int) -> int:
    """A total order over the records of a partition: the `index`-th record of the message
    at `offset` (0 for a message holding one record)."""
    return offset * MAX_CDRS_PER_MESSAGE + index


def message_offset(position: int) -> int:
    """The Kafka offset of the message holding the record at `position`."""
    return position // MAX_CDRS_PER_MESSAGE


def count_cdrs(value: bytes) -> int:
    """How many CDRs a message of `cdrwatch.cdrs.v1` holds (unvalidated: an envelope's
    `cdrs`, else 1)."""
    try:
        data: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return 1
    if isinstance(data, dict) and isinstance(data.get("cdrs"), list):
        return len(data["cdrs"])
    return 1


def cdrs_in_message(value: bytes | None) -> list[NormalizedCdrV1 | ValidationError]:
    """The records of one message of `cdrwatch.cdrs.v1`, each validated alone: the model,
    or the ValidationError of a record that is not one. A message that is not an envelope
    is one record (validated as before envelopes existed); an envelope with more than
    MAX_CDRS_PER_MESSAGE records, or whose `campaign_id` a record contradicts, is one
    error."""
    try:
        data: Any = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        data = None
    if not (isinstance(data, dict) and "cdrs" in data):
        try:
            return [NormalizedCdrV1.model_validate_json(value or b"")]
        except ValidationError as exc:
            return [exc]
    cdrs = data["cdrs"]
    try:
        # The whole envelope in one call (the common case: every record is good).
        return list(CdrBatchV1.model_validate(data).cdrs)
    except ValidationError as exc:
        if not isinstance(cdrs, list) or not 0 < len(cdrs) <= MAX_CDRS_PER_MESSAGE:
            return [exc]
        whole = exc
    out: list[NormalizedCdrV1 | ValidationError] = []
    for item in cdrs:
        try:
            cdr = NormalizedCdrV1.model_validate(item)
        except ValidationError as exc:
            out.append(exc)
            continue
        if cdr.campaign_id != data.get("campaign_id"):
            out.append(whole)
            continue
        out.append(cdr)
    return out
