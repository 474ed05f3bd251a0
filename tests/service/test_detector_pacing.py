"""Alert updates paced in the detector (services/detector/pacing.py) through its adapter:
a firing alert's new figures are held within the interval and leave through the flush that
faust awaits before it commits offsets (`DeliveryGuard.before_flush` ->
`Detector.before_commit`), so no commit passes them; the api's last word on each alert is
the unpaced one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from services.detector.app import Detector
from tests.service.test_detector_adapter import FakeEvent, cdr, envelope, in_memory


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def last_word(d: Detector) -> dict[str, tuple[Any, ...]]:
    return {
        v["id"]: (v["state"], v["severity"], v["numerator"], v["denominator"])
        for v in d.alerts.values()  # type: ignore[attr-defined]
    }


def batches() -> list[list[FakeEvent]]:
    """One campaign, a silent call in every three: its day alert fires in the first batch
    and its figures move in each of the next four."""
    records = [cdr(i, silent=i % 3 == 0) for i in range(150)]
    return [[FakeEvent(envelope(records[i : i + 30]), i // 30)] for i in range(0, 150, 30)]


def guarded_flush(d: Detector) -> Any:
    """faust's producer with the detector's delivery guard, as `_GuardedApp` builds it;
    nothing is in its own buffer, so its flush is what the guard adds."""

    async def flush() -> None:
        return None

    producer = SimpleNamespace(buffer=SimpleNamespace(put=None), flush=flush)
    return d.app.delivery_guard.install(producer)


async def test_held_figures_leave_before_the_commit_and_the_last_word_is_unpaced(
    tmp_path: Path,
) -> None:
    every = in_memory(tmp_path / "every")
    for batch in batches():
        await every.handle(batch)

    ticks = Ticks()
    d = in_memory(tmp_path / "paced", ticks, alert_update_interval_seconds=1.0)
    producer = guarded_flush(d)
    for batch in batches():
        await d.handle(batch)
        ticks.now += 0.1
    assert d.alert_pacer.held, "figures within the second are held"
    sent_before_commit = len(d.alerts.sent)  # type: ignore[attr-defined]
    assert last_word(d) != last_word(every)

    ticks.now = 1.5  # the last update sent is a second old: the commit does not wait
    await producer.flush()
    assert not d.alert_pacer.held
    assert last_word(d) == last_word(every)
    assert sent_before_commit < len(every.alerts.sent)  # type: ignore[attr-defined]
    value = d.registry.get_sample_value
    assert value("cdrwatch_detector_alert_updates_total") == len(d.alerts.sent)  # type: ignore[attr-defined]
    assert value("cdrwatch_detector_alert_updates_coalesced_total") >= 1


async def test_a_commit_waits_until_held_figures_are_a_second_old(tmp_path: Path) -> None:
    """The rate holds at the commit too: figures held 0.7 s after their alert's last update
    leave about 0.3 s later, and the commit (the flush) returns only after they left."""
    d = in_memory(tmp_path, alert_update_interval_seconds=1.0)  # the real monotonic clock
    producer = guarded_flush(d)
    first, second = batches()[:2]
    opened = time.monotonic()  # before the alert's first update is sent
    await d.handle(first)
    await d.handle(second)
    assert d.alert_pacer.held
    n = len(d.alerts.sent)  # type: ignore[attr-defined]
    await asyncio.sleep(max(0.0, 0.7 - (time.monotonic() - opened)))
    await producer.flush()
    assert time.monotonic() - opened >= 1.0
    assert len(d.alerts.sent) > n and not d.alert_pacer.held  # type: ignore[attr-defined]


async def test_every_commit_forgets_the_alerts_sent_over_a_second_ago(tmp_path: Path) -> None:
    """What the pacer remembers of sent alerts is pruned at each commit even when nothing
    is held: a worker whose alerts are never updated within a second would otherwise keep
    every alert id it ever sent."""
    ticks = Ticks()
    d = in_memory(tmp_path, ticks, alert_update_interval_seconds=1.0)
    producer = guarded_flush(d)
    await d.handle(batches()[0])
    ticks.now = 2.0
    await producer.flush()  # sends what the batch held
    assert d.alerts.sent and not d.alert_pacer.held  # type: ignore[attr-defined]
    assert d.alert_pacer._sent
    ticks.now = 4.0
    await producer.flush()  # nothing held
    assert not d.alert_pacer._sent
