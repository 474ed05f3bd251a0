"""A SIGKILL of the detector simulated through its faust adapter (`Detector.handle`,
`TableState`): the table's change log is cut after any record (what reached the broker),
the outputs sent since the last commit are lost, the table is restored from the cut log
and the events are re-processed from the committed offset. What downstream ends with
(stats last-write-wins, alerts by id) and the restored state must equal a run without
the crash, wherever the kill lands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import topics
from services.common.settings import DetectorSettings
from services.detector.app import Detector, TableState
from services.detector.core.engine import Engine
from services.detector.pacing import AlertPacer
from tests.service.test_detector_adapter import FakeEvent, Recorder, cdr

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BATCH = 12


class ChangeLogTable(dict[str, Any]):
    """A dict standing in for the faust table that logs every write in order, as faust
    sends it to the table's change-log topic."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, Any]] = []

    def __setitem__(self, key: str, value: Any) -> None:
        value = orjson.loads(orjson.dumps(value))  # what the json serializer round-trips
        super().__setitem__(key, value)
        self.log.append((key, value))

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.log.append((key, None))

    @classmethod
    def restored(cls, log: list[tuple[str, Any]]) -> ChangeLogTable:
        """faust's recovery: the change log applied in order into an empty table."""
        table = cls()
        for key, value in log:
            if value is None:
                dict.pop(table, key, None)
            else:
                dict.__setitem__(table, key, value)
        table.log = list(log)
        return table


def live_records() -> list[dict[str, Any]]:
    """Three campaigns, calls in event-time order 7 s apart (a minute bucket is finished
    once the stream moves past it), a silent call in every six, one dialer retry."""
    records = [
        cdr(7 * i, campaign=f"camp-{i % 3}", silent=i % 6 == 0, callee=f"{i:016x}")
        for i in range(48)
    ]
    for r, i in zip(records, range(48), strict=True):
        r["call_id"] = f"call-{i}"
    return [*records, dict(records[4])]


class Ticks:
    """The detector's monotonic clock, moved by the test: each batch takes `per_batch`
    seconds, and faust commits offsets once a second (`broker_commit_interval`), so with
    batches under a second apart an alert updated batch after batch has updates held
    (services/detector/pacing.py) across batches until the commit."""

    def __init__(self, per_batch: float) -> None:
        self.now = 0.0
        self.per_batch = per_batch
        self.next_commit = 1.0

    def __call__(self) -> float:
        return self.now


def reset(d: Detector, table: ChangeLogTable, ticks: Ticks) -> None:
    """A fresh worker process on `table` (the restored change log): nothing held, nothing
    remembered of what was sent."""
    d.table = table
    d.state = TableState(table)
    d.engine = Engine(d.state, d.configs.config_for, lateness=timedelta(days=7), clock=d.clock)
    d.alert_pacer = AlertPacer(d._send_alert, d.settings.alert_update_interval_seconds, ticks)
    for name in ("stats", "alerts", "dlq", "callee_topic", "violation_topic", "traces"):
        setattr(d, name, Recorder())


Outputs = dict[str, list[dict[str, Any]]]


async def run(
    d: Detector, records: list[dict[str, Any]], first: int, ticks: Ticks
) -> tuple[list[int | None], list[Outputs]]:
    """Process records[first:] in batches, committing offsets once a second of `ticks` and
    after the last batch (the held alert updates released first, as the producer flush
    before a commit does: `before_commit`). Returns, per batch, the change-log length
    after it when a commit followed it (else None), and its stats and alerts (a commit's
    released alerts counted with the batch before it)."""
    ends: list[int | None] = []
    sent: list[Outputs] = []
    for start in range(first, len(records), BATCH):
        batch = [
            FakeEvent(orjson.dumps(r), start + i)
            for i, r in enumerate(records[start : start + BATCH])
        ]
        n_stats, n_alerts = len(d.stats.sent), len(d.alerts.sent)  # type: ignore[attr-defined]
        await d.handle(batch)
        ticks.now += ticks.per_batch
        if ticks.now >= ticks.next_commit or start + BATCH >= len(records):
            ticks.next_commit = ticks.now + 1.0
            ticks.now += d.alert_pacer.wait_seconds()  # what `before_commit` sleeps
            await d.before_commit()
            ends.append(len(d.table.log))  # type: ignore[attr-defined]
        else:
            ends.append(None)
        sent.append(
            {
                "stats": d.stats.sent[n_stats:],  # type: ignore[attr-defined]
                "alerts": d.alerts.sent[n_alerts:],  # type: ignore[attr-defined]
            }
        )
    return ends, sent


def published(sent: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Downstream's view: stats last-write-wins per (campaign, window, minute for minute
    stats), alerts upserted by id."""
    stats: dict[tuple[str, str, str], Any] = {}
    for m in sent["stats"]:
        body = orjson.loads(m["value"])
        window = dict(m["headers"])[topics.HEADER_WINDOW].decode()
        start = body["from"] if window == "minute" else ""
        stats[(body["campaign_id"], window, start)] = body
    alerts = {}
    for m in sent["alerts"]:
        body = orjson.loads(m["value"])
        alerts[body["id"]] = (
            body["severity"],
            body["state"],
            body["numerator"],
            body["denominator"],
        )
    return {"stats": stats, "alerts": alerts}


def concat(batches: list[Outputs]) -> Outputs:
    return {
        "stats": [m for b in batches for m in b["stats"]],
        "alerts": [m for b in batches for m in b["alerts"]],
    }


def detector(tmp_path: Path, alert_interval: float) -> Detector:
    settings = DetectorSettings(
        data_dir=tmp_path,
        callee_store="memory://",
        alert_update_interval_seconds=alert_interval,
    )
    return Detector(settings, clock=lambda: T0 + timedelta(days=1))


@pytest.mark.parametrize(
    ("alert_interval", "per_batch"),
    [(0.0, 1.0), (1.0, 0.25)],
    ids=["every alert update sent, a commit after each batch", "alert updates paced"],
)
async def test_a_kill_after_any_change_log_record_loses_and_double_counts_nothing(
    tmp_path: Path, alert_interval: float, per_batch: float
) -> None:
    records = live_records()
    d = detector(tmp_path, alert_interval)
    ticks = Ticks(per_batch)
    reset(d, ChangeLogTable(), ticks)
    batch_ends, reference_sent = await run(d, records, 0, ticks)
    reference_log = list(d.table.log)  # type: ignore[attr-defined]
    reference_state = dict(d.table)
    expected = published(concat(reference_sent))
    assert expected["alerts"], "the traffic should raise alerts"
    unpaced = detector(tmp_path / "unpaced", 0.0)
    unpaced_ticks = Ticks(per_batch)
    reset(unpaced, ChangeLogTable(), unpaced_ticks)
    _, unpaced_sent = await run(unpaced, records, 0, unpaced_ticks)
    assert expected == published(concat(unpaced_sent)), "pacing loses no final figure"
    if alert_interval:
        paced, every = len(concat(reference_sent)["alerts"]), len(concat(unpaced_sent)["alerts"])
        assert paced < every, "some updates were held and replaced by newer ones"

    for cut in range(len(reference_log) + 1):
        # faust commits on an interval, after a flush that (with DeliveryGuard) delivered
        # every earlier record: the last commit whose batches were fully logged may be the
        # last one done.
        committed = max(
            (i + 1 for i, end in enumerate(batch_ends) if end is not None and end <= cut),
            default=0,
        )
        for resume in sorted({0, committed}):
            ticks = Ticks(per_batch)
            reset(d, ChangeLogTable.restored(reference_log[:cut]), ticks)
            _, resumed_sent = await run(d, records, resume * BATCH, ticks)
            # Outputs of committed batches were delivered; every later one is lost.
            got = published(concat(reference_sent[:resume] + resumed_sent))
            where = f"kill after change-log record {cut}, resumed at batch {resume}"
            assert dict(d.table) == reference_state, where
            assert got == expected, where
