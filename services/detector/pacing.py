"""Alert updates paced: a transition goes out at once, new figures at most once a second.

The engine publishes an alert whenever anything it shows changes: its state, severity or
window, and also its figures (numerator, denominator, window end, evidence). A firing
alert of a busy campaign changes figures with almost every batch, so over a week of
traffic the alert updates grew from 36k to 103k a quarter of a 1,000,000-CDR run (bench
README, tenth pass) while the transitions stayed few; every one of them is encoded here,
sent, and upserted by the api. Issue 7: an alert is published when its state, severity or
window changes, and otherwise at most once per alert per second with its latest figures.

`AlertPacer.offer` sends an update at once when it is a transition for that alert (its
first update in this process, or another state, severity or window start than the last
one sent) or when the last one sent is `interval` seconds old; otherwise it holds it,
replacing any update held before for the same alert (the newest figures win: each update
carries the alert's whole state, so the api loses nothing by missing the ones between).

Exactness across a crash (engine docstring: outputs are re-published from the stored
state when their events are read again) needs one thing of the holding: a held update
must leave before the offsets of the batch that made it are committed, else a kill -9
after the commit keeps the api on older figures for good. The detector therefore releases
the held updates before every commit (`Detector.before_commit`, run by the producer flush
faust awaits before committing): it waits until each is `interval` old, sends them, and
only then lets the commit go on. faust commits every second (`broker_commit_interval`),
so figures reach the api about once a second per alert, and an update is never older than
about two seconds when it leaves.

Time here is the wall clock of this process (monotonic), never event time: this paces
messages, it decides nothing about compliance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from services.detector.core.alerting import AlertUpdate


class _Sent(NamedTuple):
    transition: tuple[str, str, object]  # state, severity, window start
    at: float


class AlertPacer:
    """Holds alert updates that only bring new figures until their alert's last update is
    `interval` seconds old. `send(update, replay)` publishes one; `interval` 0 sends every
    update as it comes (nothing held)."""

    def __init__(
        self,
        send: Callable[[AlertUpdate, bool], None],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        coalesced: Callable[[], None] = lambda: None,
    ) -> None:
        self._send = send
        self.interval = interval
        self._clock = clock
        self._coalesced = coalesced  # called for each held update a newer one replaced
        self._sent: dict[str, _Sent] = {}  # alerts sent within the last interval
        self._held: dict[str, tuple[AlertUpdate, bool]] = {}

    @property
    def held(self) -> int:
        return len(self._held)

    def offer(self, update: AlertUpdate, replay: bool) -> None:
        """Send `update` now if it is a transition or its alert's last update is old
        enough; else hold it until `release`."""
        if self.interval <= 0:
            self._send(update, replay)
            return
        aid = update["id"]
        transition = (update["state"], update["severity"], update["window"]["start"])
        now = self._clock()
        last = self._sent.get(aid)
        if last is None or last.transition != transition or now - last.at >= self.interval:
            if self._held.pop(aid, None) is not None:
                self._coalesced()  # this update carries the held one's figures and more
            self._send(update, replay)
            self._sent[aid] = _Sent(transition, now)
            return
        if aid in self._held:
            self._coalesced()
        self._held[aid] = (update, replay)

    def held_ids(self) -> list[str]:
        """The alerts with an update held now."""
        return list(self._held)

    def wait_seconds(self) -> float:
        """Seconds until every update held now may be sent (0 when none is held)."""
        if not self._held:
            return 0.0
        last_due = max(self._sent[aid].at for aid in self._held) + self.interval
        return max(0.0, last_due - self._clock())

    def release(self, ids: Iterable[str]) -> int:
        """Send the updates still held of alerts `ids`, due or not (the caller waited
        `wait_seconds`: an offset commit must not pass them), and forget the alerts sent
        longer ago than the interval (a later update of theirs goes out at once anyway):
        called before every commit, held updates or not, so what the pacer remembers is
        the alerts of the last second. Returns how many were sent."""
        now = self._clock()
        released = 0
        for aid in ids:
            held = self._held.pop(aid, None)
            if held is None:
                continue  # a transition took its place, or an earlier release sent it
            self._send(*held)
            self._sent[aid] = self._sent[aid]._replace(at=now)
            released += 1
        horizon = now - self.interval
        self._sent = {
            aid: sent for aid, sent in self._sent.items() if sent.at > horizon or aid in self._held
        }
        return released

    def release_all(self) -> int:
        """Send every held update now (a clean stop)."""
        released = len(self._held)
        for update, replay in self._held.values():
            self._send(update, replay)
        self._held.clear()
        self._sent.clear()
        return released
