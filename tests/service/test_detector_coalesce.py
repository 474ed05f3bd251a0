"""Outputs coalesced between commits (services/detector/coalesce.py): downstream ends with
exactly what it got when every batch's outputs went out at once, from far fewer records;
an alert still goes out at once at each change of state, severity or window; a flush
sends what is held before the commit's wait is fixed."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from schemas import topics
from services.common.settings import DetectorSettings
from services.detector.app import DeliveryGuard, Detector, TableState
from services.detector.coalesce import OutputCoalescer
from services.detector.core.engine import Engine
from tests.service.test_detector_adapter import T0, Recorder, cdr, events
from tests.service.test_detector_crash import published
from tests.service.test_detector_delivery import SlowChannel, producer_of, record, started_buffer


def fresh(tmp_path: Path) -> Detector:
    d = Detector(
        DetectorSettings(data_dir=tmp_path, callee_store="memory://"),
        clock=lambda: T0 + timedelta(days=1),
    )
    d.configs._started.set()  # its service started on an empty topic (no 30 s wait)
    d.table = {}
    d.callees = {}
    d.state = TableState(d.table)
    d.engine = Engine(d.state, d.configs.config_for, lateness=timedelta(days=7), clock=d.clock)
    for name in ("stats", "alerts", "dlq", "callee_topic", "violation_topic", "traces"):
        setattr(d, name, Recorder())
    return d


def traffic(campaigns: int, per_campaign: int) -> list[dict[str, Any]]:
    """Calls 3 s apart per campaign, interleaved, one in four silent (the `it` cap is 3 %:
    cumulative alerts open and then only their counts move)."""
    records = []
    for i in range(per_campaign):
        for c in range(campaigns):
            r = cdr(3 * i, campaign=f"camp-{c}", tenant="t", silent=i % 4 == 0)
            r["call_id"] = f"call-{c}-{i}"
            records.append(r)
    return records


def sent(d: Detector) -> dict[str, list[dict[str, Any]]]:
    return {"stats": d.stats.sent, "alerts": d.alerts.sent}  # type: ignore[attr-defined]


async def test_one_commit_over_many_batches_sends_each_stats_key_once_and_the_same_figures(
    tmp_path: Path,
) -> None:
    records = traffic(campaigns=5, per_campaign=120)  # 600 calls over 6 minutes
    batches = [records[i : i + 20] for i in range(0, len(records), 20)]

    every = fresh(tmp_path / "every")
    for n, batch in enumerate(batches):
        await every.handle(events(batch, first_offset=20 * n))
        every.flush_outputs()  # a commit after every batch: as before coalescing
    once = fresh(tmp_path / "once")
    for n, batch in enumerate(batches):
        await once.handle(events(batch, first_offset=20 * n))
    at_once = once.alerts.values()  # type: ignore[attr-defined]
    once.flush_outputs()  # one commit after all of them
    at_commit = once.alerts.values()[len(at_once) :]  # type: ignore[attr-defined]

    assert published(sent(once)) == published(sent(every))
    keys = {
        (
            m["key"],
            dict(m["headers"])[topics.HEADER_WINDOW],
            orjson.loads(m["value"])["from"]
            if dict(m["headers"])[topics.HEADER_WINDOW] == b"minute"
            else "",
        )
        for m in once.stats.sent  # type: ignore[attr-defined]
    }
    assert len(once.stats.sent) == len(keys)  # type: ignore[attr-defined]
    # 5 campaigns x (6 minutes + cumulative, 15m, 1h, 24h windows) for 600 calls.
    assert len(keys) == 5 * (6 + 4)
    # Before the commit an alert went out only when it was new or its state or severity
    # changed; at the commit each at most once more, with its latest figures.
    shapes: dict[str, tuple[str, str]] = {}
    for alert in at_once:
        shape = (alert["state"], alert["severity"])
        assert shapes.get(alert["id"]) != shape
        shapes[alert["id"]] = shape
    assert len(at_commit) == len({a["id"] for a in at_commit})
    assert len(at_once) + len(at_commit) < len(every.alerts.sent) / 4  # type: ignore[attr-defined]


async def test_an_alert_goes_out_at_once_when_it_opens_and_its_count_once_per_commit(
    tmp_path: Path,
) -> None:
    d = fresh(tmp_path)
    records = traffic(campaigns=1, per_campaign=240)
    opened_in_batch = None
    for n in range(0, len(records), 10):
        await d.handle(events(records[n : n + 10], first_offset=n))
        if opened_in_batch is None and d.alerts.sent:  # type: ignore[attr-defined]
            opened_in_batch = n
            first = d.alerts.values()  # type: ignore[attr-defined]
    assert opened_in_batch is not None, "the silent calls should open an alert"
    assert {a["state"] for a in first} == {"firing"}
    ids = {a["id"] for a in first}
    before = len(d.alerts.sent)  # type: ignore[attr-defined]
    d.flush_outputs()
    latest = {a["id"]: a for a in d.alerts.values()}  # type: ignore[attr-defined]
    # The count updates since the opening went out once each, with the final figures.
    flushed = d.alerts.values()[before:]  # type: ignore[attr-defined]
    assert len({a["id"] for a in flushed}) == len(flushed)
    for aid in ids:
        assert latest[aid]["denominator"] > first[0]["denominator"]
    assert d.flush_outputs() == 0


def test_a_changed_shape_is_sent_at_once_and_replaces_the_held_update() -> None:
    coalescer = OutputCoalescer()
    out = Recorder()
    firing = ("firing", "warning")
    coalescer.alert("a", firing, out.send_soon, {"value": b"1"})
    coalescer.alert("a", firing, out.send_soon, {"value": b"2"})
    coalescer.alert("a", firing, out.send_soon, {"value": b"3", "headers": []})
    assert [m["value"] for m in out.sent] == [b"1"]
    coalescer.alert("a", ("firing", "violation"), out.send_soon, {"value": b"4"})
    coalescer.alert("a", ("resolved", "violation"), out.send_soon, {"value": b"5"})
    assert [m["value"] for m in out.sent] == [b"1", b"4", b"5"]
    assert coalescer.flush() == 0


def test_a_coalesced_record_keeps_the_replay_mark_of_any_it_stands_for() -> None:
    coalescer = OutputCoalescer()
    out = Recorder()
    replay = [(topics.HEADER_REPLAY, b"1")]
    coalescer.stats(("c", "1h", ""), out.send_soon, {"value": b"1", "headers": replay})
    coalescer.stats(("c", "1h", ""), out.send_soon, {"value": b"2", "headers": []})
    coalescer.stats(("c", "15m", ""), out.send_soon, {"value": b"3", "headers": []})
    assert coalescer.flush() == 2
    assert out.sent == [
        {"value": b"2", "headers": replay},
        {"value": b"3", "headers": []},
    ]


async def test_the_flush_before_a_commit_sends_what_is_held_and_waits_for_it() -> None:
    channel = SlowChannel(delay_s=0.05)
    buffer = await started_buffer()
    guard = DeliveryGuard()
    producer = guard.install(producer_of(buffer))
    held = [record(channel, n) for n in range(3)]
    guard.before_flush.append(lambda: [producer.buffer.put(f) for f in held] and None)
    try:
        await producer.flush()
        assert all(f.done() for f in held)
        assert channel.delivered == [0, 1, 2]
    finally:
        await asyncio.gather(*held, return_exceptions=True)
        await buffer.stop()
