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
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas import NormalizedCdrV1
from schemas.call_v1 import MAX_CALLS_PER_MESSAGE
from schemas.cdr_batch_v1 import cdrs_in_message, plain_records
from schemas.cdr_v1 import INSTANT_FIELDS
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
from services.detector.core.calendar import validate_zone
from services.detector.core.lockouts import CalleeCall, LockoutViolation
from services.detector.core.model import BucketCounts, CallOutcome, CallRecord

__all__ = ["cdrs_in_message"]  # read here like every other message; defined with its model

# Instants the detector accepts (CONTRACT decision 7 checks the ingest side more tightly);
# outside, minute and day arithmetic overflows datetime (year 1 .. 9999), so such a record
# is a dead letter before it touches any state.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
_INSTANT_FIELDS = (*INSTANT_FIELDS, "accepted_at")


def scoped_key(tenant_id: str, campaign_id: str) -> str:
    """The detector's key of a campaign (CONTRACT decision 3): ids contain no `/`."""
    return f"{tenant_id}/{campaign_id}"


def split_scoped(key: str) -> tuple[str, str]:
    """(tenant_id, campaign_id) of a scoped key."""
    tenant, _, campaign = key.partition("/")
    return tenant, campaign


class UnprocessableRecord(ValueError):
    """A decoded record the detector must not apply (a dead letter, never a crash)."""


def check_record(cdr: NormalizedCdrV1) -> None:
    """Refuse what would break the engine's arithmetic or the scoped key, before any state
    is touched (so the change log of the good records is what it would be without it)."""
    for name in ("call_id", "campaign_id", "tenant_id"):
        value = getattr(cdr, name, None)
        if value is None and name == "tenant_id":
            continue
        if not isinstance(value, str) or not value.strip():
            raise UnprocessableRecord(f"{name} is missing or empty")
        if "/" in value or not value.isprintable():
            raise UnprocessableRecord(f"{name} holds `/` or a control character")
    for zone in cdr.callee_zones or ():
        try:
            validate_zone(zone)
        except ValueError as exc:
            raise UnprocessableRecord(f"callee_zones: {exc}") from None
    for name in _INSTANT_FIELDS:
        value = getattr(cdr, name, None)
        if value is None and name not in ("originated_at", "ended_at"):
            continue
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise UnprocessableRecord(f"{name} is not an aware instant")
        if not EARLIEST <= value < LATEST:
            raise UnprocessableRecord(
                f"{name} {value.isoformat()} outside [{EARLIEST.date()}, {LATEST.date()})"
            )


def to_call_record(cdr: NormalizedCdrV1, default_tenant: str = "default") -> CallRecord:
    """The one mapping from the wire model to the core's type. The core's `campaign_id` is
    the scoped key `tenant/campaign`, so every per-campaign piece of state includes the
    tenant; a record without a tenant (older messages) belongs to `default_tenant`."""
    tenant = cdr.tenant_id or default_tenant
    return CallRecord(
        call_id=cdr.call_id,
        campaign_id=sys.intern(scoped_key(tenant, cdr.campaign_id)),  # see plain_calls
        originated_at=cdr.originated_at,
        ended_at=cdr.ended_at,
        callee_key=cdr.callee_key,
        tenant_id=tenant,
        dial_mode=cdr.dial_mode,
        callee_country=cdr.callee_country,
        callee_zones=tuple(cdr.callee_zones),
        callee_region=cdr.callee_region,
        ringing_at=cdr.ringing_at,
        answered_at=cdr.answered_at,
        greeting_ended_at=cdr.greeting_ended_at,
        agent_connected_at=cdr.agent_connected_at,
        message_started_at=cdr.message_started_at,
        amd_result=cdr.amd_result,
        message_type=cdr.message_type,
        hangup_side=cdr.hangup_side,
        refusal=cdr.refusal,
    )


# -- CDRs -------------------------------------------------------------------------------

# What one record of a CDR message becomes: the call and its `accepted_at`, or why not.
Decoded = tuple[CallRecord, datetime] | Exception
_ZONES_SEEN: set[str] = set()  # zones `validate_zone` accepted (tzdata's names: bounded)


def calls_in_message(value: bytes | None, default_tenant: str) -> tuple[bool, list[Decoded]]:
    """(whether the message is an envelope, what each of its records becomes, in order):
    `cdrs_in_message`, then `check_record` and `to_call_record` of each model.

    An envelope whose records all have the plain shape, as the ingest writes them, is read
    by `plain_calls`, which comes to the same calls without building the models (their
    Python validators, the model and the call record were about 30 % of the CDR stage's
    process: py-spy, a `--split` run of bench/detector_throughput.py);
    tests/unit/test_wire_calls.py holds the two ways to the same result."""
    calls = plain_calls(value, default_tenant)
    if calls is not None:
        return True, calls
    envelope, records = cdrs_in_message(value)
    return envelope, [_checked_call(record, default_tenant) for record in records]


def _checked_call(record: NormalizedCdrV1 | Exception, default_tenant: str) -> Decoded:
    if isinstance(record, Exception):
        return record
    try:
        check_record(record)
        return to_call_record(record, default_tenant), record.accepted_at
    except Exception as exc:  # the record's dead letter says why
        return exc


def plain_calls(value: bytes | None, default_tenant: str) -> list[Decoded] | None:
    """The calls of an envelope of plain records (`schemas.cdr_batch_v1.plain_records`);
    None when it is not one, or when a record would not pass `check_record` (its only
    check left for a plain record is the zones) or has a date the calendar lacks: the
    general way then says why, record by record."""
    records = plain_records(value)
    if records is None:
        return None
    instant = datetime.fromisoformat
    calls: list[Decoded] = []
    try:
        for r in records:
            zones = r["callee_zones"]
            for zone in zones:
                if zone not in _ZONES_SEEN:
                    validate_zone(zone)
                    _ZONES_SEEN.add(zone)
            tenant = r["tenant_id"] or default_tenant
            ringing, answered = r["ringing_at"], r["answered_at"]
            greeting, agent = r["greeting_ended_at"], r["agent_connected_at"]
            message = r["message_started_at"]
            call = CallRecord(
                call_id=r["call_id"],
                # One string object per campaign, not per call: the seen-entries keep it
                # for the dedup retention (8 days), ~75 B a call (2,000 campaigns, 7 days).
                campaign_id=sys.intern(f"{tenant}/{r['campaign_id']}"),
                originated_at=instant(r["originated_at"]),
                ended_at=instant(r["ended_at"]),
                callee_key=r["callee_key"],
                tenant_id=tenant,
                dial_mode=r["dial_mode"],
                callee_country=r["callee_country"],
                callee_zones=zones,
                callee_region=r["callee_region"],
                ringing_at=None if ringing is None else instant(ringing),
                answered_at=None if answered is None else instant(answered),
                greeting_ended_at=None if greeting is None else instant(greeting),
                agent_connected_at=None if agent is None else instant(agent),
                message_started_at=None if message is None else instant(message),
                amd_result=r["amd_result"],
                message_type=r["message_type"],
                hangup_side=r["hangup_side"],
                refusal=r["refusal"],
            )
            calls.append((call, instant(r["accepted_at"])))
    except ValueError:
        return None
    return calls


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
    """StatsV1 JSON (hot path: about four per CDR at 2,000 campaigns, a minute bucket and
    the touched windows of its campaign each batch). orjson writes the instants itself
    (`OPT_UTC_Z`), the bytes `format_instant` wrote for an instant in UTC (microseconds
    only when present, a trailing Z); an instant in another zone is converted first, as
    `format_instant` does. py-spy had `stats_body` with its two `format_instant` calls at
    15 % of the CDR stage (bench/README.md, eleventh pass); timeit 17.8 -> 3.1 us a body."""
    if start.tzinfo is not UTC:
        start = start.astimezone(UTC)
    if end.tzinfo is not UTC:
        end = end.astimezone(UTC)
    # The counts by position, named as `BucketCounts` names them (tests/unit/test_wire.py
    # compares with `as_dict`): building that dict and unpacking it cost half the body.
    attempts, answered, by_person, amd_machine, silent, abandoned, out_of_hours, short = counts
    return orjson.dumps(
        {
            "campaign_id": campaign_id,
            "tenant_id": tenant_id,
            "from": start,
            "to": end,
            "attempts": attempts,
            "answered": answered,
            "answered_by_person": by_person,
            "amd_machine": amd_machine,
            "silent": silent,
            "abandoned": abandoned,
            "out_of_hours": out_of_hours,
            "short_ring": short,
            "silent_rate": rate(silent, by_person),
            "abandoned_rate": rate(abandoned, by_person),
            "out_of_hours_rate": rate(out_of_hours, attempts),
        },
        option=orjson.OPT_UTC_Z,
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
