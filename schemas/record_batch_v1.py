"""Record batch v1: the envelope of the detector's outputs on `cdrwatch.stats.v1` and
`cdrwatch.alerts.v1` (issue 7 items 1 and 3: batches on the wire, output coalesced).

The detector published one Kafka record per minute bucket, live window and alert update:
about 0.1 records per CDR at 50 campaigns, each a producer send and, for the api, a
consumer step. It now publishes, per processed batch, one record per destination partition
(and per replay mark) holding the records it would have sent there, in order:

    {"v": 1, "records": [{"headers": {"cdrwatch-window": "minute", ...}, "value": {...}}]}

`value` is the record's JSON value (a `StatsV1` or an `AlertV1` object) and `headers` its
Kafka headers as text (`cdrwatch-window`, `cdrwatch-tenant`, `cdrwatch-profile`,
`cdrwatch-replay`, schemas.topics). The partition is the one the record's key (the
tenant-scoped campaign id) would have chosen, so a campaign's figures stay in one partition
in the order they were produced: a reader that folds them last-write-wins, as the api does,
ends with the same figures. A reader takes both shapes (`records_in`): an envelope, or one
plain record as an older detector wrote it.

An envelope is closed before `MAX_ENVELOPE_BYTES` of JSON, so it fits Kafka's default
1 MiB message. Upgrade note: an api older than this cannot read envelopes (it skips them
as records without a window header); upgrade the api with or before the detector.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

RECORD_BATCH_VERSION = 1
MAX_ENVELOPE_BYTES = 512 * 1024
_PREFIX = b'{"v":%d,"records":[' % RECORD_BATCH_VERSION

Headers = Sequence[tuple[str, bytes]]


class BatchedRecord(BaseModel):
    """One record inside an envelope: its headers (text) and its JSON value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    headers: dict[str, str] = Field(default_factory=dict)
    value: Any


class RecordBatchV1(BaseModel):
    """One message of `cdrwatch.stats.v1` or `cdrwatch.alerts.v1` from the detector."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1]
    records: Annotated[list[BatchedRecord], Field(min_length=1)]


def is_envelope(value: bytes | None) -> bool:
    return value is not None and value.startswith(_PREFIX)


def envelopes(
    records: Iterable[tuple[bytes, Headers]], max_bytes: int = MAX_ENVELOPE_BYTES
) -> Iterator[bytes]:
    """Envelopes of (JSON value, headers) records, in order; the values are embedded as
    they are (already JSON), a new envelope starts before `max_bytes`."""
    parts: list[bytes] = []
    size = len(_PREFIX) + 2
    for value, headers in records:
        text = {name: raw.decode("utf-8", errors="replace") for name, raw in headers}
        part = b'{"headers":' + orjson.dumps(text) + b',"value":' + value + b"}"
        if parts and size + len(part) + 1 > max_bytes:
            yield _PREFIX + b",".join(parts) + b"]}"
            parts, size = [], len(_PREFIX) + 2
        parts.append(part)
        size += len(part) + 1
    if parts:
        yield _PREFIX + b",".join(parts) + b"]}"


def records_in(value: bytes, headers: Headers = ()) -> list[tuple[Any, list[tuple[str, bytes]]]]:
    """The (decoded JSON value, headers) of every record a message carries: each record
    of an envelope with its own headers, or the message itself. ValueError (a
    ValidationError or a JSON error) when an envelope is malformed: the envelope is
    unreadable as a whole."""
    if not is_envelope(value):
        return [(orjson.loads(value), list(headers))]
    batch = RecordBatchV1.model_validate_json(value)
    return [
        (record.value, [(name, text.encode()) for name, text in record.headers.items()])
        for record in batch.records
    ]
