"""Every message the detector sends or reads, encoded and decoded here and nowhere else.
Each has a model in `schemas/` (its JSON Schema in schemas/json); the hot-path encodings
are built by hand, without a pydantic round trip, and tests hold them to their models
(tests/unit/test_wire.py, tests/service/test_detector_state.py,
tests/service/test_detector_calls.py).

Read:
- CDRs on `cdrwatch.cdrs.v1`: a `CdrBatchV1` envelope or one `NormalizedCdrV1`
  (`cdrs_in_message`, schemas.cdr_batch_v1).
- Campaign settings on `cdrwatch.campaigns.v1`: `CampaignSettingsV1` (`read_settings`).
- Callee calls between the stages: `CalleeBatchV1` (`callee_entries`).
- Lockout violations between the stages: `LockoutViolationV1` (`read_violation`).

Sent:
- Stats (`stats_body`, StatsV1), alerts (`alert_body`, AlertV1), call traces
  (`traced_call`, `lockout_hit`, `call_batches`: CallBatchV1), callee calls
  (`callee_batches`), lockout violations (`violation_body`) and dead letters
  (`dead_letter_body`, DeadLetterV1).

Callee calls. The per-callee stage reads calls re-keyed by (tenant, pseudonymised callee).
One Kafka record per call cost a producer send, a consumer fetch and a faust agent step per
CDR (issue 7: faust's per-message machinery is the wall at 4-13k messages/s), so the main
stage sends ONE record per destination partition and batch, the envelope

    {"v": 1, "calls": [[callee key, history row], ...]}

where a history row is `lockouts.to_json`'s compact row. The partition of each call is
the one a keyed send would have chosen (murmur2 of the callee key, as aiokafka and the
Java client): the callee table is co-partitioned with this topic, so a callee's history
stays in the partition its calls arrive on, before and after this change. A record of the
earlier form (one row, keyed by the callee key) is still read, so a topic written by an
older detector drains after an upgrade.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.call_v1 import MAX_CALLS_PER_MESSAGE
from schemas.cdr_batch_v1 import cdrs_in_message
from schemas.detector_v1 import (
    CALLEE_BATCH_VERSION,
    MAX_CALLEES_PER_MESSAGE,
    CampaignSettingsV1,
    LockoutViolationV1,
)
from schemas.instants import format_instant
from schemas.stats_v1 import rate
from services.detector.core import lockouts
from services.detector.core.alerting import AlertUpdate
from services.detector.core.lockouts import CalleeCall, LockoutViolation
from services.detector.core.model import BucketCounts, CallOutcome, CallRecord

__all__ = ["cdrs_in_message"]  # read here like every other message; defined with its model

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's `Utils.murmur2`, aiokafka's `murmur2`), with the
    same result for every input (tests/unit/test_wire.py checks it against aiokafka's);
    written over 32-bit words read at once, because the callee partition is computed for
    every CDR with a callee rule and aiokafka's byte-wise loop was 5% of the main stage."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[words * 4 :]
    if tail:
        if len(tail) >= 3:
            h ^= tail[2] << 16
        if len(tail) >= 2:
            h ^= tail[1] << 8
        h = ((h ^ tail[0]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


class CalleePartitions:
    """The partition of a callee key among `count` partitions (memoised per key)."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._of: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        partition = self._of.get(key)
        if partition is None:
            if len(self._of) > 100_000:
                self._of.clear()
            partition = self._of[key] = (murmur2(key.encode()) & 0x7FFFFFFF) % self._count
        return partition


def callee_batches(
    calls: Iterable[tuple[str, CalleeCall, bool]], partition_of: CalleePartitions
) -> Iterator[tuple[int, bool, bytes]]:
    """(partition, replay mark, envelope) for (callee key, call, replayed) in order: one
    envelope per partition and replay mark, at most MAX_CALLEES_PER_MESSAGE calls each."""
    grouped: dict[tuple[int, bool], list[list[Any]]] = {}
    for key, call, replayed in calls:
        row = lockouts.to_json((call,))[0]
        grouped.setdefault((partition_of(key), replayed), []).append([key, row])
    for (partition, replayed), entries in grouped.items():
        for start in range(0, len(entries), MAX_CALLEES_PER_MESSAGE):
            chunk = entries[start : start + MAX_CALLEES_PER_MESSAGE]
            body = {"v": CALLEE_BATCH_VERSION, "calls": chunk}
            yield partition, replayed, orjson.dumps(body)


def callee_entries(key: bytes | None, value: bytes | None) -> list[tuple[str, Any]]:
    """The (callee key, history row) pairs of one record: an envelope, or one row keyed by
    its callee (the earlier form). Rows are checked by the caller (`lockouts.from_json`),
    one at a time, so one bad row is one dead letter. ValueError names what is wrong with
    the record as a whole."""
    if value is None:
        raise ValueError("the record has no value")
    raw = orjson.loads(value)
    if isinstance(raw, list):  # the earlier form: one row, keyed by the callee
        if not key:
            raise ValueError("a single callee row needs the callee key as record key")
        return [(key.decode(), raw)]
    if not isinstance(raw, dict) or raw.get("v") != CALLEE_BATCH_VERSION:
        raise ValueError(f'expected {{"v": {CALLEE_BATCH_VERSION}, "calls": [...]}} or one row')
    calls = raw.get("calls")
    if not isinstance(calls, list):
        raise ValueError('"calls" must be a list of [callee key, row]')
    entries: list[tuple[str, Any]] = []
    for index, entry in enumerate(calls):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(f"calls[{index}]: expected [callee key, row], got {entry!r:.200}")
        entries.append((entry[0], entry[1]))
    return entries


# -- campaign settings -------------------------------------------------------------------


def read_settings(value: bytes) -> CampaignSettingsV1:
    """A campaign's settings record. pydantic's ValidationError (a ValueError) names the
    field that is wrong."""
    return CampaignSettingsV1.model_validate_json(value)


# -- lockout violations ------------------------------------------------------------------


def violation_body(violation: LockoutViolation) -> bytes:
    """LockoutViolationV1 JSON (the campaign id scoped: `tenant/campaign`)."""
    return orjson.dumps(
        {
            "rule_id": violation.rule_id,
            "call_id": violation.call_id,
            "campaign_id": violation.campaign_id,
            "originated_at": format_instant(violation.originated_at),
            "trigger_call_id": violation.trigger_call_id,
        }
    )


def read_violation(value: bytes | None) -> LockoutViolation:
    """A lockout violation as the per-callee stage sent it. ValueError (pydantic's
    ValidationError) names what is wrong."""
    if value is None:
        raise ValueError("the record has no value")
    raw = LockoutViolationV1.model_validate_json(value)
    return LockoutViolation(
        rule_id=raw.rule_id,
        call_id=raw.call_id,
        campaign_id=raw.campaign_id,
        originated_at=raw.originated_at.astimezone(UTC),
        trigger_call_id=raw.trigger_call_id,
    )


# -- stats and alerts ---------------------------------------------------------------------


def stats_body(
    campaign_id: str,
    start: datetime,
    end: datetime,
    counts: BucketCounts,
    *,
    tenant_id: str | None = None,
) -> bytes:
    """StatsV1 JSON (hot path: one per touched bucket and window per batch)."""
    c = counts
    return orjson.dumps(
        {
            "campaign_id": campaign_id,
            "tenant_id": tenant_id,
            "from": format_instant(start),
            "to": format_instant(end),
            **c.as_dict(),
            "silent_rate": rate(c.silent, c.answered_by_person),
            "abandoned_rate": rate(c.abandoned, c.answered_by_person),
            "out_of_hours_rate": rate(c.out_of_hours, c.attempts),
        }
    )


def alert_body(update: AlertUpdate, *, campaign_id: str, tenant_id: str | None) -> bytes:
    """AlertV1 JSON of the core's alert update, with its campaign id split into tenant and
    campaign."""
    return orjson.dumps(
        {**update, "campaign_id": campaign_id, "tenant_id": tenant_id}, option=orjson.OPT_UTC_Z
    )


# -- call traces --------------------------------------------------------------------------


def _instant(value: datetime | None) -> str | None:
    return None if value is None else format_instant(value)


def traced_call(call: CallRecord, outcome: CallOutcome) -> dict[str, Any]:
    """A CallV1 body of a call the main stage classified."""
    return {
        "call_id": call.call_id,
        "originated_at": format_instant(call.originated_at),
        "answered_at": _instant(call.answered_at),
        "agent_connected_at": _instant(call.agent_connected_at),
        "ended_at": format_instant(call.ended_at),
        "outcome": outcome.name,
        "dial_mode": call.dial_mode,
        "callee_key": call.callee_key or None,
        "rule_hits": list(outcome.violations),
    }


def lockout_hit(violation: LockoutViolation) -> dict[str, Any]:
    """A CallV1 body of a lockout or frequency-cap hit: only what the lockout stage knows."""
    return {
        "call_id": violation.call_id,
        "originated_at": format_instant(violation.originated_at),
        "rule_hits": [violation.rule_id],
    }


def call_batches(
    traced: Iterable[tuple[str, str, dict[str, Any]]],
) -> Iterator[tuple[str, str, bytes]]:
    """(tenant, campaign, CallBatchV1 JSON) for `traced` (tenant, campaign, CallV1 body),
    one message per campaign and at most MAX_CALLS_PER_MESSAGE calls each."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for tenant, campaign, body in traced:
        grouped.setdefault((tenant, campaign), []).append(body)
    for (tenant, campaign), calls in grouped.items():
        for start in range(0, len(calls), MAX_CALLS_PER_MESSAGE):
            chunk = calls[start : start + MAX_CALLS_PER_MESSAGE]
            body = {"campaign_id": campaign, "tenant_id": tenant, "calls": chunk}
            yield tenant, campaign, orjson.dumps(body)


# -- dead letters -------------------------------------------------------------------------


def dead_letter_body(
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    detail: str,
    stage: str,
) -> bytes:
    """DeadLetterV1 JSON of a record the detector cannot apply: the record's JSON, or its
    text when it is not JSON."""
    return orjson.dumps(
        {
            "reason": reason,
            "stage": stage,
            "detail": detail,
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "record": _json_or_text(value),
        }
    )


def too_late_record(call: CallRecord, *, campaign_id: str, tenant_id: str | None) -> bytes:
    """The record of a call dead-lettered as too late: which call it was."""
    return orjson.dumps(
        {"call_id": call.call_id, "campaign_id": campaign_id, "tenant_id": tenant_id}
    )


def callee_call_record(key: str, row: Any) -> bytes:
    """The record of one callee call dead-lettered out of its envelope."""
    return orjson.dumps({"callee_key": key, "row": row})


def _json_or_text(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode("utf-8", errors="replace")
