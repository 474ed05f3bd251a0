"""Outputs coalesced between commits (issue 7 item 3).

The engine says, batch by batch, which stats and alerts changed. Sent as they come, a
campaign's live windows and its current minute go out once per batch, and a firing alert
once per batch whose count moved: about one record per CDR at a few hundred CDRs a batch.
Downstream keeps only the latest of each (stats last-write-wins per campaign, window and
minute; alerts upserted by id), so the records in between carry nothing it keeps.

So the detector holds them here, the latest per key, and sends them when faust flushes its
producer before committing offsets (`DeliveryGuard.before_flush`, every
`broker_commit_interval`, 1 s, and on rebalance and stop):
- stats: once per (campaign, window) and per (campaign, minute) per commit;
- an alert that is new here or whose state or severity changed goes out at once (a new
  violation is not delayed; another window is another alert id, hence new); otherwise at
  most once per commit, with its latest count, evidence and window bounds (a rolling or
  cumulative window's bounds move every minute: that alone is an update, not a change).

Exactness across a kill -9 is the same as sending at once: a commit covers only events
whose outputs were sent before it (the flush sends what is held before it fixes what it
waits for, and the commit waits for that flush). What is held and lost with a crash was
derived from events after the committed offset; they are read again and re-publish what
they touched (services/detector/core/engine.py docstring), as when sent outputs are lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas import topics

Send = Callable[..., None]
REPLAY_HEADER = (topics.HEADER_REPLAY, b"1")


def _merge_replay(held: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A record coalesced from several carries the replay mark if any of them did."""
    if held is None or REPLAY_HEADER not in held.get("headers", ()):
        return new
    headers = list(new.get("headers") or ())
    if REPLAY_HEADER not in headers:
        headers.append(REPLAY_HEADER)
    return {**new, "headers": headers}


class OutputCoalescer:
    """The latest stats and alert records per key, held until `flush`."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, ...], tuple[Send, dict[str, Any]]] = {}
        self._alerts: dict[str, tuple[Send, dict[str, Any]]] = {}
        # What downstream last got of each alert: (state, severity).
        self._shape: dict[str, tuple[Any, ...]] = {}

    def stats(self, key: tuple[str, ...], send: Send, message: dict[str, Any]) -> None:
        held = self._stats.get(key)
        self._stats[key] = (send, _merge_replay(None if held is None else held[1], message))

    def alert(
        self, alert_id: str, shape: tuple[Any, ...], send: Send, message: dict[str, Any]
    ) -> None:
        """Send now when the alert's shape changed (or it is new here), else hold."""
        held = self._alerts.pop(alert_id, None)
        message = _merge_replay(None if held is None else held[1], message)
        if self._shape.get(alert_id) != shape:
            self._shape[alert_id] = shape
            send(**message)
            return
        self._alerts[alert_id] = (send, message)

    @property
    def held(self) -> int:
        return len(self._stats) + len(self._alerts)

    def flush(self) -> int:
        """Send everything held (stats first, then alert updates); returns how many."""
        stats, alerts = self._stats, self._alerts
        self._stats, self._alerts = {}, {}
        for send, message in (*stats.values(), *alerts.values()):
            send(**message)
        return len(stats) + len(alerts)

    def reset(self) -> None:
        """On a partition assignment: faust seeks every assigned partition back to its
        committed offset, and a commit covers only events whose outputs were flushed, so
        what is still held comes from events that will be read again; held, it could
        overwrite newer figures of another worker. What downstream got of each alert may
        have changed since (another worker): the next update of each goes out at once."""
        self._stats.clear()
        self._alerts.clear()
        self._shape.clear()
