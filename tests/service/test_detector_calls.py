"""The detector traces the calls that matter on cdrwatch.calls.v1 (IT-SC-1, Garante 2014:
every silent call is traced): silent, abandoned or rule-breaking calls from the main stage
with their times, outcome and per-call rule hits; lockout hits from the lockout stage;
replay marks; traces sent again after a restart. Dicts stand in for the tables and
recorders for the topics, as in test_detector_adapter.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import topics
from schemas.call_v1 import CallBatchV1
from services.common.settings import DetectorSettings
from services.detector.app import Detector, TableState
from services.detector.core.engine import Engine
from tests.service.test_detector_adapter import T0, FakeEvent, Recorder, cdr, events

SECOND = timedelta(seconds=1)
TOPICS = ("stats", "alerts", "dlq", "callee_topic", "violation_topic", "traces")


@pytest.fixture
def detector(tmp_path: Path) -> Iterator[Detector]:
    settings = DetectorSettings(data_dir=tmp_path, callee_store="memory://")
    d = Detector(settings, clock=lambda: T0 + timedelta(days=30))
    d.table, d.callees = {}, {}
    d.state = TableState(d.table)
    d.engine = Engine(d.state, d.configs.config_for, lateness=timedelta(days=7), clock=d.clock)
    for name in TOPICS:
        setattr(d, name, Recorder())
    yield d


def traced(d: Detector) -> dict[str, dict[str, Any]]:
    """Every traced call by call id, each message validated as CallBatchV1 and keyed by
    its campaign; rule hits of repeated traces of a call are merged like the api does."""
    found: dict[str, dict[str, Any]] = {}
    for message in d.traces.sent:
        batch = CallBatchV1.model_validate_json(message["value"])
        assert message["key"] == batch.campaign_id.encode()
        for call in batch.calls:
            body = call.model_dump(mode="json")
            held = found.setdefault(call.call_id, {**body, "tenant": batch.tenant_id})
            held["rule_hits"] = sorted(set(held["rule_hits"]) | set(body["rule_hits"]))
            for name, value in body.items():
                if held.get(name) is None:
                    held[name] = value
    return found


def with_agent_after(n: int, seconds: float, **kwargs: Any) -> dict[str, Any]:
    record = cdr(n, **kwargs)
    answered = T0 + n * SECOND + 5 * SECOND
    record["agent_connected_at"] = (answered + seconds * SECOND).isoformat()
    return record


async def test_silent_abandoned_and_rule_breaking_calls_are_traced_others_not(
    detector: Detector,
) -> None:
    batch = [
        cdr(0, tenant="t", silent=True),  # silent, released 55 s after answer
        with_agent_after(1, 2.5, tenant="t"),  # abandoned, not a long wait
        with_agent_after(2, 3.5, tenant="t"),  # abandoned and a long silent wait
        with_agent_after(3, 1, tenant="t"),  # answered in time: not traced
        cdr(4, tenant="t"),  # answered in time: not traced
    ]
    await detector.handle(events(batch))
    calls = traced(detector)
    assert set(calls) == {"call-0", "call-1", "call-2"}
    assert calls["call-0"] == {
        "tenant": "t",
        "call_id": "call-0",
        "originated_at": "2026-03-02T09:00:00Z",
        "answered_at": "2026-03-02T09:00:05Z",
        "agent_connected_at": None,
        "ended_at": "2026-03-02T09:01:00Z",
        "outcome": "silent",
        "dial_mode": "predictive",
        "callee_key": "k" * 16,
        "rule_hits": ["it-silent-release"],
    }
    assert (calls["call-1"]["outcome"], calls["call-1"]["rule_hits"]) == ("abandoned", [])
    assert (calls["call-2"]["outcome"], calls["call-2"]["rule_hits"]) == (
        "abandoned",
        ["it-long-silent-wait"],
    )
    assert calls["call-2"]["agent_connected_at"] == "2026-03-02T09:00:10.500000Z"


async def test_lockout_hits_are_traced_by_the_lockout_stage(detector: Detector) -> None:
    """IT-SC-5: a silent call, a re-call a day later (locked out) and a predictive call a
    week later (no operator guaranteed): each re-call is traced with its lockout rule."""
    callee = "c" * 16
    day = 86400
    records = [
        cdr(0, tenant="t", silent=True, callee=callee),
        cdr(day, tenant="t", callee=callee),
        cdr(7 * day, tenant="t", callee=callee),
    ]
    for i, record in enumerate(records):  # one batch each: the campaign moves on in time
        await detector.handle(events([record], first_offset=i))
    for i, m in enumerate(detector.callee_topic.sent):
        detector.handle_callee_call(FakeEvent(m["value"], i, key=m["key"], topic="callee-calls"))
    violations = detector.violation_topic.sent
    assert len(violations) == 2
    detector.handle_lockout_violations(
        [FakeEvent(m["value"], i, topic="lockout-violations") for i, m in enumerate(violations)]
    )
    calls = traced(detector)
    assert calls[f"call-{day}"]["rule_hits"] == ["it-silent-lockout"]
    assert calls[f"call-{7 * day}"]["rule_hits"] == ["it-silent-next-call"]
    # The lockout stage knows the call's instant, not its times or outcome: the api keeps
    # what the main stage sent, if anything (these two answered calls it did not trace).
    assert calls[f"call-{day}"]["originated_at"] == "2026-03-03T09:00:00Z"
    assert calls[f"call-{day}"]["outcome"] is None
    assert calls["call-0"]["outcome"] == "silent"


async def test_traces_carry_the_replay_mark_of_their_campaign(detector: Detector) -> None:
    replayed = events([cdr(i, tenant="r", silent=True) for i in range(3)])
    for e in replayed:
        e.message.headers = [(topics.HEADER_REPLAY, b"1")]
    fresh = events([cdr(i, tenant="f", silent=True) for i in range(3)], first_offset=3)
    await detector.handle([*replayed, *fresh])
    marks = {
        (orjson.loads(m["value"])["tenant_id"], (topics.HEADER_REPLAY, b"1") in m["headers"])
        for m in detector.traces.sent
    }
    assert marks == {("r", True), ("f", False)}


async def test_a_batch_seen_again_after_a_restart_traces_its_calls_again(
    detector: Detector,
) -> None:
    """At least once: the traces of a batch whose state was stored may have been lost with
    the crash; the api merges the repeat into the same rows."""
    batch = [cdr(i, tenant="t", silent=i % 2 == 0) for i in range(6)]
    await detector.handle(events(batch))
    first = [m["value"] for m in detector.traces.sent]
    detector.traces.sent.clear()
    detector.engine.reset_caches()
    await detector.handle(events(batch))
    assert [m["value"] for m in detector.traces.sent] == first
    assert set(traced(detector)) == {"call-0", "call-2", "call-4"}


async def test_a_large_batch_is_split_into_messages_of_at_most_500_calls(
    detector: Detector,
) -> None:
    await detector.handle(events([cdr(i, tenant="t", silent=True) for i in range(1200)]))
    sizes = [len(orjson.loads(m["value"])["calls"]) for m in detector.traces.sent]
    assert sizes == [500, 500, 200]
    assert len(traced(detector)) == 1200
