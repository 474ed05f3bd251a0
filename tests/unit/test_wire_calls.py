"""The detector's two ways of reading a CDR message come to the same calls
(`services.detector.wire.calls_in_message`): the plain shape read in one pydantic-core pass
(`plain_calls`) and the general way (`cdrs_in_message`, then `check_record` and
`to_call_record` of each model), for any message: the same calls with the same instants
and time zone objects, the same errors in the same places."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.cdr_batch_v1 import cdrs_in_message, envelopes
from services.detector import wire

TENANT = "fallback-tenant"
T0 = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)


def general(value: bytes) -> tuple[bool, list[wire.Decoded]]:
    envelope, records = cdrs_in_message(value)
    out: list[wire.Decoded] = []
    for record in records:
        if isinstance(record, Exception):
            out.append(record)
            continue
        try:
            wire.check_record(record)
            out.append((wire.to_call_record(record, TENANT), record.accepted_at))
        except Exception as exc:
            out.append(exc)
    return envelope, out


def comparable(item: wire.Decoded) -> Any:
    if isinstance(item, Exception):
        return (type(item).__name__, str(item))
    call, accepted = item
    instants = [getattr(call, f) for f in wire._INSTANT_FIELDS if f != "accepted_at"]
    zones = [type(i.tzinfo) for i in (*instants, accepted) if i is not None]
    return call, accepted, zones, [i.tzinfo is UTC for i in instants if i is not None]


def assert_same(value: bytes) -> None:
    fast_envelope, fast = wire.calls_in_message(value, TENANT)
    slow_envelope, slow = general(value)
    assert fast_envelope == slow_envelope
    assert [comparable(i) for i in fast] == [comparable(i) for i in slow]


def record(n: int = 0, **changes: Any) -> dict[str, Any]:
    """A normalised record as the ingest writes it (instants by `format_instant`)."""
    at = T0 + timedelta(seconds=n)

    def z(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    base: dict[str, Any] = {
        "call_id": f"call-{n}",
        "campaign_id": "camp-1",
        "tenant_id": "tenant-a",
        "dial_mode": "predictive",
        "originated_at": z(at),
        "ringing_at": z(at + timedelta(seconds=1)),
        "answered_at": z(at + timedelta(seconds=5)),
        "agent_connected_at": z(at + timedelta(seconds=6)),
        "ended_at": z(at + timedelta(seconds=60)),
        "amd_result": "human",
        "hangup_side": "callee",
        "callee_key": "k" * 22,
        "callee_country": "IT",
        "callee_zones": ["Europe/Rome"],
        "source": "http",
        "accepted_at": z(at + timedelta(seconds=61)),
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def envelope_of(records: list[dict[str, Any]]) -> bytes:
    encoded = [(b"k", orjson.dumps(r)) for r in records]
    (message,) = [value for _key, value in envelopes(encoded)]
    return message


def test_an_envelope_as_the_ingest_writes_it_is_read_the_plain_way() -> None:
    rng = random.Random(7)
    records = [
        record(
            i,
            tenant_id=rng.choice(["tenant-a", None]),
            callee_zones=rng.choice([[], ["Europe/Rome"], ["America/New_York", "America/Chicago"]]),
            agent_connected_at=rng.choice([_DROP, None, record(i)["agent_connected_at"]]),
            originated_at=(T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            refusal=rng.choice([None, True, False]),
        )
        for i in range(200)
    ]
    value = envelope_of(records)
    calls = wire.plain_calls(value, TENANT)
    assert calls is not None and len(calls) == 200
    assert_same(value)
    call, accepted = calls[0]  # type: ignore[misc]
    assert call.campaign_id.endswith("/camp-1") and accepted.tzinfo is UTC


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("call_id", "a/b"),
        ("call_id", " padded "),
        ("call_id", "ünïcode"),
        ("call_id", "tab\there"),
        ("call_id", ""),
        ("call_id", "x" * 129),
        ("call_id", "x" * 128),
        ("tenant_id", ""),
        ("tenant_id", "  "),
        ("campaign_id", "c\u200bd"),
        ("originated_at", "2026-03-02T09:00:00.1234567Z"),
        ("originated_at", "2026-03-02T09:00:00.1Z"),
        ("originated_at", "2026-03-02T09:00:00+01:00"),
        ("originated_at", "2026-03-02t09:00:00Z"),
        ("originated_at", "2026-03-02 09:00:00Z"),
        ("originated_at", "2026-02-30T09:00:00Z"),
        ("originated_at", "2026-03-02T24:00:00Z"),
        ("originated_at", "2026-03-02T23:59:60Z"),
        ("originated_at", "1999-12-31T23:59:59Z"),
        ("originated_at", "2000-01-01T00:00:00Z"),
        ("originated_at", "8999-12-31T23:59:59Z"),
        ("originated_at", "9000-01-01T00:00:00Z"),
        ("originated_at", 1_772_442_000_000),
        ("originated_at", " 2026-03-02T09:00:00Z"),
        ("accepted_at", "1999-01-01T00:00:00Z"),
        ("accepted_at", "9500-01-01T00:00:00Z"),
        ("accepted_at", "2026-03-02T09:00:00.000000+00:00"),
        ("callee_zones", ["Mars/Olympus_Mons"]),
        ("callee_zones", ["Europe/Rome", ""]),
        ("callee_zones", "Europe/Rome"),
        ("callee_key", "short"),
        ("dial_mode", "robotic"),
        ("sip_code", 99),
        ("sip_code", True),
        ("unknown_field", 1),
        ("extra", {"a": 1}),
        ("answered_at", None),
        ("ended_at", None),
        ("ended_at", _DROP),
        ("refusal", "yes"),
    ],
)
def test_each_edge_reads_the_same_both_ways(field: str, value: Any) -> None:
    # Alone, and between good records: a message with one record off the plain shape is
    # read the general way as a whole, its good records included.
    assert_same(envelope_of([record(0, **{field: value})]))
    assert_same(envelope_of([record(0), record(1, **{field: value}), record(2)]))


def test_messages_that_are_not_plain_envelopes() -> None:
    for value in (
        orjson.dumps(record(0)),  # one record, as before envelopes
        b'{"v":2,"cdrs":[]}',
        b'{"v":1,"cdrs":[]}',
        b'{"v":1,"cdrs":[1, 2]}',
        b'{"v":1,"cdrs":[' + orjson.dumps(record(0)) + b'],"x":1}',
        b'{"v":1,"cdrs":[' + orjson.dumps(record(0)) + b"]",
        b"",
        b"not json",
    ):
        assert_same(value)


_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["a/b", " a", "a ", "", "é", "x" * 130, "ok-1", "Europe/Rome"]),
)
_INSTANTS = st.one_of(
    st.datetimes(
        min_value=datetime(1990, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.just(UTC),
    ).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.isoformat() + "Z"
    ),
    st.datetimes(
        min_value=datetime(2001, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.timezones(),
    ).map(lambda d: d.isoformat()),
    st.integers(min_value=0, max_value=300_000_000_000_000),
    st.sampled_from(["2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T00:00Z"]),
)
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "call_id": _TEXT,
    "campaign_id": _TEXT,
    "tenant_id": st.one_of(st.none(), _TEXT),
    "originated_at": _INSTANTS,
    "ringing_at": st.one_of(st.none(), _INSTANTS),
    "answered_at": st.one_of(st.none(), _INSTANTS),
    "greeting_ended_at": st.one_of(st.none(), _INSTANTS),
    "agent_connected_at": st.one_of(st.none(), _INSTANTS),
    "message_started_at": st.one_of(st.none(), _INSTANTS),
    "ended_at": _INSTANTS,
    "accepted_at": _INSTANTS,
    "callee_zones": st.lists(
        st.sampled_from(["Europe/Rome", "America/New_York", "Nowhere/Zone", "UTC", ""]),
        max_size=3,
    ),
    "callee_region": st.sampled_from([None, "US-CA", "us-ca", "IT"]),
    "callee_country": st.sampled_from([None, "IT", "it", "ITA"]),
    "amd_result": st.sampled_from(["human", "machine", "none", "robot"]),
    "hangup_side": st.sampled_from([None, "callee", "system", "nobody"]),
    "message_type": st.sampled_from([None, "info", "opt_out", "jingle"]),
    "refusal": st.sampled_from([None, True, False, 1, "no"]),
    "dial_mode": st.sampled_from(["predictive", "manual", "agentless", "robotic"]),
}


@st.composite
def hostile_records(draw: st.DrawFn) -> dict[str, Any]:
    base = record(draw(st.integers(min_value=0, max_value=10_000)))
    changed = draw(st.lists(st.sampled_from(sorted(_FIELDS)), max_size=4, unique=True))
    for name in changed:
        base[name] = draw(_FIELDS[name])
    if draw(st.booleans()):
        base.pop(draw(st.sampled_from(sorted(base))))
    return base


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_records(), min_size=1, max_size=4))
def test_any_envelope_reads_the_same_both_ways(records: list[dict[str, Any]]) -> None:
    value = envelope_of(records)
    assert_same(value)
    for one in records:
        assert_same(envelope_of([one]))
