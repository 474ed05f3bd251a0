"""The detector's faust adapter (`Detector.handle` and its two per-callee stages) with dicts
standing in for its tables and recorders for its topics: tenancy as a key, dead letters
that leave their neighbours counted and the state untouched, replay marks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from schemas import AlertV1, StatsV1, topics
from services.common.settings import DetectorSettings
from services.detector.app import CampaignConfigs, Detector, TableState
from services.detector.core.engine import Engine
from tests.helpers import LoopTurns

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Recorder:
    """A faust topic's `send_soon`, recorded."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_soon(self, **kwargs: Any) -> None:
        self.sent.append(kwargs)

    def values(self) -> list[dict[str, Any]]:
        return [orjson.loads(m["value"]) for m in self.sent]


class FakeEvent:
    """What the adapter reads of a faust event (weak-referenceable like faust's)."""

    def __init__(
        self,
        value: bytes,
        offset: int,
        *,
        partition: int = 0,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        topic: str = topics.CDRS,
    ) -> None:
        self.value = value
        self.key = key
        self.message = SimpleNamespace(
            topic=topic, partition=partition, offset=offset, headers=headers or []
        )


def cdr(
    n: int,
    *,
    campaign: str = "campB",
    tenant: str | None = "tenant-b",
    at: datetime = T0,
    silent: bool = False,
    callee: str = "k" * 16,
) -> dict[str, Any]:
    originated = at + timedelta(seconds=n)
    record: dict[str, Any] = {
        "call_id": f"call-{n}",
        "campaign_id": campaign,
        "tenant_id": tenant,
        "originated_at": originated.isoformat(),
        "answered_at": (originated + timedelta(seconds=5)).isoformat(),
        "ended_at": (originated + timedelta(seconds=60)).isoformat(),
        "callee_key": callee,
        "callee_zones": ["Europe/Rome"],
        "accepted_at": (originated + timedelta(seconds=61)).isoformat(),
    }
    if not silent:
        record["agent_connected_at"] = (originated + timedelta(seconds=6)).isoformat()
    return record


def in_memory(tmp_path: Path, monotonic: Any = None, **settings: Any) -> Detector:
    """A detector with dicts for tables and recorders for topics. Its alert updates go out
    as the engine makes them unless a test sets `alert_update_interval_seconds`: nothing
    here commits offsets, which is what releases held updates (test_detector_pacing.py)."""
    settings.setdefault("alert_update_interval_seconds", 0)
    d = Detector(
        DetectorSettings(data_dir=tmp_path, callee_store="memory://", **settings),
        clock=lambda: T0 + timedelta(days=1),
        **({} if monotonic is None else {"monotonic": monotonic}),
    )
    d.table, d.callees = {}, {}
    d.state = TableState(d.table)
    d.engine = Engine(d.state, d.configs.config_for, lateness=timedelta(days=7), clock=d.clock)
    for name in ("stats", "alerts", "dlq", "callee_topic", "violation_topic", "traces"):
        setattr(d, name, Recorder())
    return d


@pytest.fixture
def detector(tmp_path: Path) -> Iterator[Detector]:
    yield in_memory(tmp_path)


def events(records: list[dict[str, Any] | bytes], first_offset: int = 0) -> list[FakeEvent]:
    return [
        FakeEvent(r if isinstance(r, bytes) else orjson.dumps(r), first_offset + i)
        for i, r in enumerate(records)
    ]


def attempts_by_scope(d: Detector) -> dict[tuple[str | None, str], int]:
    """Attempts per (tenant, campaign), summed over the minute buckets published last."""
    latest: dict[tuple[str | None, str, str], int] = {}
    for message in d.stats.sent:
        headers = dict(message["headers"])
        if headers[topics.HEADER_WINDOW] != b"minute":
            continue
        stats = StatsV1.model_validate_json(message["value"])
        latest[(stats.tenant_id, stats.campaign_id, stats.from_.isoformat())] = stats.attempts
    totals: dict[tuple[str | None, str], int] = {}
    for (tenant, campaign, _minute), n in latest.items():
        totals[(tenant, campaign)] = totals.get((tenant, campaign), 0) + n
    return totals


async def test_the_same_campaign_id_in_two_tenants_is_two_campaigns(detector: Detector) -> None:
    # Tenant A's records naming B's campaign id neither move B's figures nor share its
    # dedup: the same call id in both tenants counts once in each.
    b = [cdr(i, tenant="tenant-b", silent=i % 2 == 0) for i in range(16)]
    a = [cdr(i, tenant="tenant-a") for i in range(50)]
    await detector.handle(events(b))
    await detector.handle(events(a, first_offset=16))
    assert attempts_by_scope(detector) == {("tenant-b", "campB"): 16, ("tenant-a", "campB"): 50}
    alerts = [AlertV1.model_validate(v) for v in detector.alerts.values()]
    assert alerts and {a.tenant_id for a in alerts} == {"tenant-b"}
    assert all(a.campaign_id == "campB" for a in alerts)
    assert all(m["key"] == b"tenant-b/campB" for m in detector.alerts.sent)
    # No record may name a campaign without its tenant: every state key is scoped.
    campaign_keys = {k for k in detector.table if k.startswith("c\x1f")}
    assert campaign_keys == {"c\x1ftenant-b/campB", "c\x1ftenant-a/campB"}


async def test_a_record_without_tenant_belongs_to_the_default_tenant(detector: Detector) -> None:
    await detector.handle(events([cdr(1, tenant=None), cdr(2, tenant="default")]))
    # call-1 and call-2 are two calls of one campaign default/campB
    assert attempts_by_scope(detector) == {("default", "campB"): 2}


async def test_alert_ids_differ_between_tenants_for_the_same_campaign_id(
    detector: Detector,
) -> None:
    for offset, tenant in ((0, "t1"), (40, "t2")):
        batch = [cdr(i, tenant=tenant, silent=True) for i in range(40)]
        await detector.handle(events(batch, first_offset=offset))
    by_tenant: dict[str, set[tuple[str, str]]] = {}
    for v in detector.alerts.values():
        by_tenant.setdefault(v["tenant_id"], set()).add((v["rule"], v["id"]))
    rules = {rule for rule, _ in by_tenant["t1"]}
    assert rules == {rule for rule, _ in by_tenant["t2"]}
    assert not {i for _, i in by_tenant["t1"]} & {i for _, i in by_tenant["t2"]}


async def test_campaign_settings_apply_to_their_tenants_campaign_only(detector: Detector) -> None:
    detector.configs.apply(
        orjson.dumps({"campaign_id": "campB", "tenant_id": "tenant-a", "profile": "uk"})
    )
    await detector.handle(events([cdr(1, tenant="tenant-a"), cdr(2, tenant="tenant-b")]))
    profiles = {
        dict(m["headers"])[topics.HEADER_TENANT]: dict(m["headers"])[topics.HEADER_PROFILE]
        for m in detector.stats.sent
    }
    assert profiles == {b"tenant-a": b"uk", b"tenant-b": b"it"}


@pytest.mark.parametrize(
    "bad",
    [
        # overflows the minute/day arithmetic of core/windows.py
        orjson.dumps(cdr(99, at=datetime(1, 1, 1, tzinfo=UTC))),
        orjson.dumps(
            {**cdr(99), "originated_at": "9999-12-31T23:30:00Z", "ended_at": "9999-12-31T23:31Z"}
        ),
        # overflows on the UTC conversion itself while decoding
        orjson.dumps({**cdr(99), "originated_at": "0001-01-01T00:30:00+01:00"}),
        orjson.dumps(cdr(99, campaign="a/b")),
        # an unknown zone would raise in the classification, inside the engine's batch
        orjson.dumps({**cdr(99), "callee_zones": ["Nowhere/Zone"]}),
        b"not json",
    ],
)
async def test_a_bad_record_is_a_dead_letter_and_its_neighbours_count_as_without_it(
    tmp_path: Path, bad: bytes
) -> None:
    good = [cdr(i, silent=i % 3 == 0) for i in range(50)]
    tables = []
    for with_bad in (True, False):
        d = in_memory(tmp_path / str(with_bad))
        batch = events([*good[:20], bad, *good[20:]])
        if not with_bad:
            del batch[20]  # the same good records at the same offsets, without the bad one
        await d.handle(batch)
        assert attempts_by_scope(d) == {("tenant-b", "campB"): 50}
        if with_bad:
            (dead,) = d.dlq.values()
            assert dead["stage"] == "cdr"
            assert dead["reason"] in {"unreadable", "unprocessable"}
            assert dead["source"] == {"topic": topics.CDRS, "partition": 0, "offset": 20}
            rejected = d.registry.get_sample_value(
                "cdrwatch_cdrs_rejected_total", {"reason": dead["reason"]}
            )
            assert rejected == 1
        else:
            assert d.dlq.sent == []
        tables.append(d.table)
    # The change log (the table's writes) is the one the good records alone produce.
    assert tables[0] == tables[1]


async def test_replayed_input_marks_what_is_derived_from_it(detector: Detector) -> None:
    replayed = events([cdr(i, tenant="r", silent=True) for i in range(40)])
    for e in replayed:
        e.message.headers = [(topics.HEADER_REPLAY, b"1")]
    fresh = events([cdr(i, tenant="f", silent=True) for i in range(40)], first_offset=40)
    await detector.handle([*replayed, *fresh])
    for recorder in (detector.stats, detector.alerts):
        marks = {
            (orjson.loads(m["value"])["tenant_id"], (topics.HEADER_REPLAY, b"1") in m["headers"])
            for m in recorder.sent
        }
        assert marks == {("r", True), ("f", False)}


async def test_callee_and_lockout_stages_dead_letter_a_bad_record_and_go_on(
    detector: Detector,
) -> None:
    detector.configs.apply(
        orjson.dumps({"campaign_id": "campB", "tenant_id": "t", "profile": "uk"})
    )
    # UK: 72 h lockout after an abandoned call; two calls to one callee, 1 h apart.
    first = cdr(0, tenant="t", silent=True, callee="c" * 16)
    await detector.handle(events([first, cdr(3600, tenant="t", callee="c" * 16)]))
    calls = detector.callee_topic.sent
    # one envelope for the two calls (one callee, hence one partition)
    assert len(calls) == 1 and len(orjson.loads(calls[0]["value"])["calls"]) == 2
    # a record of the earlier form (one row keyed by its callee) that is malformed
    bad_call = FakeEvent(b"[1, 2]", 0, key=b"t\x1f" + b"c" * 16, topic="callee-calls")
    callee_events = [
        FakeEvent(m["value"], i + 1, key=m["key"], topic="callee-calls")
        for i, m in enumerate(calls)
    ]
    for event in (bad_call, *callee_events):
        detector.handle_callee_call(event)
    violations = detector.violation_topic.sent
    assert violations and all(m["key"] == b"campB" for m in violations)
    bad_violation = FakeEvent(
        orjson.dumps({**orjson.loads(violations[0]["value"]), "originated_at": "0001-01-01T00:00"}),
        0,
        topic="lockout-violations",
    )
    good = [
        FakeEvent(m["value"], i + 1, topic="lockout-violations") for i, m in enumerate(violations)
    ]
    detector.alerts.sent.clear()
    detector.handle_lockout_violations([bad_violation, *good])
    stages = [(d["stage"], d["source"]["offset"]) for d in detector.dlq.values()]
    assert stages == [("callee", 0), ("lockouts", 0)]
    lockout_alerts = [v for v in detector.alerts.values() if v["numerator"] >= 1]
    assert lockout_alerts and {(v["tenant_id"], v["campaign_id"]) for v in lockout_alerts} == {
        ("t", "campB")
    }


async def test_the_replay_mark_travels_through_the_callee_and_lockout_stages(
    detector: Detector,
) -> None:
    detector.configs.apply(
        orjson.dumps({"campaign_id": "campB", "tenant_id": "t", "profile": "uk"})
    )
    batch = events(
        [cdr(0, tenant="t", silent=True, callee="c" * 16), cdr(3600, tenant="t", callee="c" * 16)]
    )
    for e in batch:
        e.message.headers = [(topics.HEADER_REPLAY, b"1")]
    await detector.handle(batch)
    mark = (topics.HEADER_REPLAY, b"1")
    calls = detector.callee_topic.sent
    assert calls and all(mark in m["headers"] for m in calls)
    for i, m in enumerate(calls):
        detector.handle_callee_call(
            FakeEvent(m["value"], i, key=m["key"], headers=m["headers"], topic="callee-calls")
        )
    violations = detector.violation_topic.sent
    assert violations and all(mark in m["headers"] for m in violations)
    detector.alerts.sent.clear()
    detector.handle_lockout_violations(
        [
            FakeEvent(m["value"], i, headers=m["headers"], topic="lockout-violations")
            for i, m in enumerate(violations)
        ]
    )
    assert detector.alerts.sent and all(mark in m["headers"] for m in detector.alerts.sent)


async def test_a_restarted_worker_waits_for_the_settings_of_campaigns_it_already_knows(
    detector: Detector,
) -> None:
    """A worker restarted after a kill knows its campaigns from the restored table but has
    not read their settings yet: its first batch waits for them instead of judging the
    campaign by the default profile (the chaos lane saw `it` alerts on a `us` campaign)."""
    setting = {"campaign_id": "campB", "tenant_id": "tenant-a", "profile": "us"}
    detector.configs.apply(orjson.dumps(setting))
    await detector.handle(events([cdr(1, tenant="tenant-a")]))
    restarted = CampaignConfigs(detector.settings)  # the new process: nothing read yet
    detector.configs = restarted
    detector.engine = Engine(
        detector.state, restarted.config_for, lateness=timedelta(days=7), clock=detector.clock
    )
    restarted.expect_start()
    handling = asyncio.ensure_future(detector.handle(events([cdr(2, tenant="tenant-a")], 1)))
    await asyncio.sleep(0.3)
    assert not handling.done(), "the batch was counted before the settings were read"
    restarted.apply(orjson.dumps(setting))
    restarted._started.set()  # what start() does once it read the topic
    await asyncio.wait_for(handling, 5)
    profiles = {dict(m["headers"])[topics.HEADER_PROFILE] for m in detector.stats.sent}
    assert profiles == {b"us"}


def test_a_partition_skipping_ahead_at_the_engine_is_logged_as_an_error(
    detector: Detector, caplog: pytest.LogCaptureFixture
) -> None:
    """`_note_order`: the diagnosis behind ContiguousReads (a re-read going back is fine)."""
    batch = [FakeEvent(b"{}", offset) for offset in (5, 6, 3, 4, 5, 6, 7, 12)]
    batch.append(FakeEvent(b"{}", 40, partition=1))
    with caplog.at_level(logging.ERROR, logger="services.detector.app"):
        detector._note_order(batch)

    assert [r.getMessage() for r in caplog.records] == [
        "applied_out_of_order partition=0 missing=8..11"
    ]


async def test_the_callee_stage_reads_envelopes_and_single_rows_alike(
    detector: Detector,
) -> None:
    """Calls travel to the per-callee stage in one envelope per destination partition; a
    bad call in an envelope is one dead letter and its neighbours count; a record of the
    earlier form (one row keyed by the callee) counts as the same call in an envelope."""
    detector.configs.apply(
        orjson.dumps({"campaign_id": "campB", "tenant_id": "t", "profile": "uk"})
    )
    # UK: 72 h lockout after an abandoned (here silent) call; 20 callees called twice
    batch = [cdr(i, tenant="t", silent=True, callee=f"{i:016x}") for i in range(20)]
    batch += [cdr(3600 + i, tenant="t", callee=f"{i:016x}") for i in range(20)]
    await detector.handle(events(batch))
    sent = detector.callee_topic.sent
    assert len(sent) <= detector.settings.kafka_partitions
    entries = [e for m in sent for e in orjson.loads(m["value"])["calls"]]
    assert len(entries) == 40
    partitions = {m["partition"] for m in sent}
    assert len(partitions) > 1, "20 callees spread over the partitions"
    for m in sent:  # each call goes where a keyed send of its callee key would go
        for key, _row in orjson.loads(m["value"])["calls"]:
            assert detector._callee_partition(key) == m["partition"]

    # one envelope with a bad call in the middle; the second half as single rows
    first_half = [e for e in entries if e[1][0] in {f"call-{i}" for i in range(20)}]
    second_half = [e for e in entries if e not in first_half]
    envelope = {"v": 1, "calls": [*first_half[:10], ["t\x1fzz", [1, 2]], *first_half[10:]]}
    records = [FakeEvent(orjson.dumps(envelope), 0, topic="callee-calls")]
    records += [
        FakeEvent(orjson.dumps(row), 1 + i, key=key.encode(), topic="callee-calls")
        for i, (key, row) in enumerate(second_half)
    ]
    detector.handle_callee_calls(records)
    (dead,) = detector.dlq.values()
    assert (dead["stage"], dead["source"]["offset"]) == ("callee", 0)
    assert dead["detail"].startswith("calls[10]:") and dead["record"]["row"] == [1, 2]
    hit = {orjson.loads(m["value"])["call_id"] for m in detector.violation_topic.sent}
    assert hit == {f"call-{3600 + i}" for i in range(20)}
    assert all(len(detector.callees[f"t\x1f{i:016x}"]) == 2 for i in range(20))
    # what CdrwatchCalleeStageStalled compares: calls forwarded and calls applied
    value = detector.registry.get_sample_value
    assert value("cdrwatch_detector_callee_calls_forwarded_total") == 40
    assert value("cdrwatch_detector_callee_calls_total") == 40


def envelope(records: list[Any]) -> bytes:
    return orjson.dumps({"v": 1, "cdrs": records})


async def test_envelopes_count_as_their_records_one_message_each(tmp_path: Path) -> None:
    # The same 120 calls of two tenants as 120 single messages, and as 3 envelopes: the same
    # figures, the same alerts (ids and states).
    records = [cdr(i, tenant=f"t{i % 2}", silent=i % 4 == 0) for i in range(120)]
    outcomes = []
    for as_envelopes in (False, True):
        d = in_memory(tmp_path / str(as_envelopes))
        if as_envelopes:
            batch = [FakeEvent(envelope(records[i : i + 40]), i // 40) for i in (0, 40, 80)]
        else:
            batch = events(records)
        await d.handle(batch)
        # Updates per batch differ (an open episode's figures are sent once per batch);
        # each alert's last word does not.
        alerts = {
            v["id"]: (v["state"], v["numerator"], v["denominator"]) for v in d.alerts.values()
        }
        outcomes.append((attempts_by_scope(d), alerts, d.dlq.sent))
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][0] == {("t0", "campB"): 60, ("t1", "campB"): 60}
    assert outcomes[1][1]


async def test_a_batch_is_counted_in_chunks_with_the_event_loop_served_between(
    tmp_path: Path,
) -> None:
    """`batch_cdrs_max` splits a batch for the engine and the per-callee stage: the event
    loop runs between two chunks (the consumer's heartbeats), and the figures, the alerts,
    the dedup entries and the callee histories are those of the batch counted at once."""
    profile = {"campaign_id": "campB", "tenant_id": "t0", "profile": "uk"}
    records = [
        cdr(i, tenant=f"t{i % 2}", silent=i % 4 == 0, callee=f"{i % 25:016x}") for i in range(120)
    ]
    batch = [FakeEvent(envelope(records[i : i + 10]), i // 10) for i in range(0, 120, 10)]
    results = []
    for chunk in (1_000_000, 25):
        d = in_memory(tmp_path / str(chunk), batch_cdrs_max=chunk)
        d.configs.apply(orjson.dumps(profile))
        turns = await LoopTurns().start()
        await d.handle(batch)
        during_cdrs = turns.count
        calls = [
            FakeEvent(m["value"], i, partition=m["partition"], topic="callee-calls")
            for i, m in enumerate(d.callee_topic.sent)
        ]
        turns.count = 0
        await d.handle_callee_batch(calls)
        during_callees = turns.count
        turns.stop()
        alerts = {
            v["id"]: (v["state"], v["numerator"], v["denominator"]) for v in d.alerts.values()
        }
        counted = {k: v for k, v in d.table.items() if not k.startswith("S\x1f")}
        seen = {
            r["call_id"]: d.state.get_seen(f"{r['tenant_id']}\x1f{r['call_id']}") for r in records
        }
        violations = sorted(orjson.loads(m["value"])["call_id"] for m in d.violation_topic.sent)
        results.append((attempts_by_scope(d), alerts, counted, seen, dict(d.callees), violations))
        if chunk == 25:
            assert during_cdrs >= 120 // 30, "the loop ran between the CDR chunks"
            assert during_callees >= 1, "and between the callee chunks"
    assert results[0] == results[1]
    assert results[0][0] == {("t0", "campB"): 60, ("t1", "campB"): 60}
    assert results[0][1] and results[0][5], "alerts and lockout violations to compare"
    assert all(results[0][3].values()), "every call has its dedup entry"


@pytest.mark.parametrize(
    "bad",
    [
        cdr(99, at=datetime(1, 1, 1, tzinfo=UTC)),
        {**cdr(99), "callee_zones": ["Nowhere/Zone"]},
        {**cdr(99), "originated_at": "yesterday"},
        "not a record",
    ],
)
async def test_a_bad_record_in_an_envelope_is_its_own_dead_letter(
    detector: Detector, bad: Any
) -> None:
    good = [cdr(i, silent=i % 3 == 0) for i in range(50)]
    await detector.handle([FakeEvent(envelope([*good[:20], bad, *good[20:]]), 7)])
    assert attempts_by_scope(detector) == {("tenant-b", "campB"): 50}
    (dead,) = detector.dlq.values()
    assert dead["stage"] == "cdr"
    assert dead["source"] == {"topic": topics.CDRS, "partition": 0, "offset": 7}
    assert dead["detail"].startswith("cdrs[20]: ")
    assert dead["record"] == orjson.loads(orjson.dumps(bad))


@pytest.mark.parametrize(
    "value",
    [
        orjson.dumps({"v": 2, "cdrs": [cdr(1)]}),
        orjson.dumps({"v": 1, "cdrs": []}),
        orjson.dumps({"v": 1, "cdrs": {"0": cdr(1)}}),
        orjson.dumps({"v": 1, "cdrs": [cdr(1)], "extra": True}),
    ],
)
async def test_an_envelope_wrong_as_a_whole_is_one_dead_letter(
    detector: Detector, value: bytes
) -> None:
    await detector.handle([FakeEvent(value, 3), *events([cdr(2)], first_offset=4)])
    assert attempts_by_scope(detector) == {("tenant-b", "campB"): 1}
    (dead,) = detector.dlq.values()
    assert dead["reason"] == "unprocessable"
    assert "envelope" in dead["detail"] and not dead["detail"].startswith("cdrs[")
    assert dead["source"]["offset"] == 3


async def test_the_workers_consumer_fetches_wait_the_setting_not_fausts_1500_ms(
    tmp_path: Path,
) -> None:
    """faust builds its aiokafka consumer with a hard-coded 1,500 ms fetch wait, which the
    embedded broker holds in full however soon records arrive; the worker's consumer takes
    `kafka_fetch_max_wait_ms` instead (aiokafka hands it to its fetcher at start)."""
    settings = DetectorSettings(
        data_dir=tmp_path, callee_store="memory://", kafka_fetch_max_wait_ms=37
    )
    detector = Detector(settings)
    consumer = detector.app.consumer._thread._create_worker_consumer(detector.app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 37
    finally:
        await consumer.stop()
