"""The detector's alert pacing (services/detector/pacing.py): a transition goes out at
once, new figures at most once per alert and interval, the newest held figures win, and
everything held leaves when released."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.detector.core.alerting import AlertUpdate
from services.detector.pacing import AlertPacer

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LATER = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)


def update(
    numerator: int,
    *,
    aid: str = "a1",
    state: str = "firing",
    severity: str = "violation",
    start: datetime = T0,
) -> AlertUpdate:
    return AlertUpdate(
        id=aid,
        rule="it-silent-day",
        profile="it",
        campaign_id="t/c",
        severity=severity,  # type: ignore[typeddict-item]
        state=state,  # type: ignore[typeddict-item]
        value=numerator / 100,
        threshold=0.03,
        numerator=numerator,
        denominator=100,
        window={"start": start, "end": LATER},
        opened_at=T0,
        resolved_at=None,
        evidence={"call_ids": []},
        reference="",
    )


class Harness:
    def __init__(self, interval: float = 1.0) -> None:
        self.now = 0.0
        self.sent: list[tuple[str, Any, bool]] = []
        self.coalesced = 0

        def send(u: AlertUpdate, replay: bool) -> None:
            self.sent.append((u["id"], u["numerator"], replay))

        def coalesce() -> None:
            self.coalesced += 1

        self.pacer = AlertPacer(send, interval, lambda: self.now, coalesce)


def test_the_first_update_of_an_alert_goes_out_at_once() -> None:
    h = Harness()
    h.pacer.offer(update(4), replay=False)
    assert h.sent == [("a1", 4, False)]
    assert h.pacer.held == 0


def test_new_figures_within_the_interval_are_held_and_the_newest_wins() -> None:
    h = Harness()
    h.pacer.offer(update(4), replay=False)
    h.now = 0.3
    h.pacer.offer(update(5), replay=False)
    h.now = 0.6
    h.pacer.offer(update(6), replay=True)
    assert h.sent == [("a1", 4, False)]
    assert h.pacer.held == 1 and h.coalesced == 1
    assert h.pacer.held_ids() == ["a1"]
    assert h.pacer.wait_seconds() == pytest.approx(0.4)
    h.now = 1.0
    assert h.pacer.wait_seconds() == 0.0
    assert h.pacer.release(["a1", "a2"]) == 1
    assert h.sent == [("a1", 4, False), ("a1", 6, True)]
    h.now = 1.5
    h.pacer.offer(update(7), replay=False)
    assert h.sent[-1] == ("a1", 6, True), "a second from the release, not from the first"


def test_figures_a_second_after_the_last_update_go_out_at_once() -> None:
    h = Harness()
    h.pacer.offer(update(4), replay=False)
    h.now = 1.0
    h.pacer.offer(update(5), replay=False)
    assert [n for _a, n, _r in h.sent] == [4, 5]


@pytest.mark.parametrize(
    "change",
    [
        {"state": "resolved"},
        {"severity": "warning"},
        {"start": datetime(2026, 3, 2, 8, 0, tzinfo=UTC)},  # a re-anchored period
    ],
    ids=["state", "severity", "window start"],
)
def test_a_transition_goes_out_at_once_and_takes_the_place_of_held_figures(
    change: dict[str, Any],
) -> None:
    h = Harness()
    h.pacer.offer(update(4), replay=False)
    h.now = 0.2
    h.pacer.offer(update(5), replay=False)
    h.now = 0.4
    h.pacer.offer(update(6, **change), replay=False)
    assert [n for _a, n, _r in h.sent] == [4, 6]
    assert h.pacer.held == 0 and h.coalesced == 1
    assert h.pacer.release(["a1"]) == 0, "the held figures were replaced, not sent later"


def test_a_release_sends_only_what_it_names_due_or_not() -> None:
    """The commit releases what was held when it began (its batches may be covered), even
    if the clock says it is early; what was held after waits for the next commit."""
    h = Harness()
    h.pacer.offer(update(4, aid="a1"), replay=False)
    h.pacer.offer(update(1, aid="a2"), replay=False)
    h.now = 0.2
    h.pacer.offer(update(5, aid="a1"), replay=False)
    covered = h.pacer.held_ids()
    h.now = 0.4
    h.pacer.offer(update(2, aid="a2"), replay=False)
    assert h.pacer.release(covered) == 1
    assert h.sent[-1] == ("a1", 5, False)
    assert h.pacer.held_ids() == ["a2"]


def test_alerts_are_paced_each_on_its_own() -> None:
    h = Harness()
    h.pacer.offer(update(4, aid="a1"), replay=False)
    h.pacer.offer(update(1, aid="a2"), replay=False)
    h.now = 0.5
    h.pacer.offer(update(5, aid="a1"), replay=False)
    h.pacer.offer(update(2, aid="a2"), replay=False)
    assert h.pacer.held == 2
    assert h.pacer.release_all() == 2
    assert h.sent[2:] == [("a1", 5, False), ("a2", 2, False)]
    h.pacer.offer(update(6, aid="a1"), replay=False)
    assert h.sent[-1] == ("a1", 6, False), "after release_all nothing is remembered"


def test_an_interval_of_zero_sends_every_update() -> None:
    h = Harness(interval=0)
    for n in range(5):
        h.pacer.offer(update(n), replay=False)
    assert [n for _a, n, _r in h.sent] == [0, 1, 2, 3, 4]
    assert h.pacer.held == 0


def test_alerts_sent_longer_ago_than_the_interval_are_forgotten_at_a_release() -> None:
    """What the pacer remembers stays the alerts of the last second, not every alert ever
    sent (a long-running worker sees millions)."""
    h = Harness()
    for i in range(1000):
        h.pacer.offer(update(1, aid=f"a{i}"), replay=False)
    h.now = 0.5
    h.pacer.offer(update(2, aid="a0"), replay=False)
    h.now = 2.0
    h.pacer.release(h.pacer.held_ids())
    assert len(h.pacer._sent) == 1  # a0, released at 2.0
    h.now = 3.0
    h.pacer.release([])
    assert not h.pacer._sent
