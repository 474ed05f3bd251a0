"""`GET /v1/alerts/stream`: alert changes and campaign figures as server-sent events.

The feed is the `alert_history` table (seq autoincrement, one row per change of an
alert): each row with seq > the client's position is one `event: alert` with `id: <seq>`
and as data the alert as it is now (as `GET /v1/alerts/{id}` returns it, without
`history`), plus `seq` and the `change` the row recorded. A client that reconnects with
`Last-Event-ID: <seq>` gets every change after it, nothing twice; without one, the stream
starts at the newest row (fetch the current alerts with `GET /v1/alerts` once the stream
is open). Every `stats_seconds` an `event: stats` (no id) carries the campaign list as
`GET /v1/campaigns?limit=1000` returns it; every `heartbeat_seconds` of silence a comment
line keeps proxies from closing the connection.

The table is polled (`poll_seconds`), not notified in process: with several api
processes sharing one database, a change stored by another process's consumer reaches
this stream too. The token is checked again before each `stats` event, so a revoked
token's stream ends within the token cache's lifetime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson

from services.api.store import AlertStore

CHANGES_PER_QUERY = 500
CAMPAIGNS_PER_STATS_EVENT = 1000
RECONNECT_MILLISECONDS = 3000


@dataclass(frozen=True, slots=True)
class StreamTiming:
    heartbeat_seconds: float = 15.0
    stats_seconds: float = 2.0
    poll_seconds: float = 0.5


def sse_event(data: object, *, event: str, event_id: int | None = None) -> bytes:
    """One event in the text/event-stream format; `data` is encoded as one line of JSON."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def sse_comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


async def alert_stream(
    store: AlertStore,
    *,
    tenant_id: str | None,
    last_event_id: int | None,
    timing: StreamTiming,
    still_authorised: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """The stream's bytes for a caller who sees `tenant_id`'s alerts and campaigns (None:
    every tenant's). Ends when `still_authorised` says no; runs until cancelled else."""
    position = await store.latest_alert_seq() if last_event_id is None else last_event_id
    # The first bytes come once the position is fixed: a client may then read the current
    # alerts (GET /v1/alerts) knowing that every later change reaches it here.
    yield f"retry: {RECONNECT_MILLISECONDS}\n".encode() + sse_comment("cdrwatch alert stream")
    next_stats = 0.0
    last_sent = time.monotonic()
    while True:
        changes = await store.alert_changes(
            after=position, tenant_id=tenant_id, limit=CHANGES_PER_QUERY
        )
        for change in changes:
            position = change.seq
            yield sse_event(change.event_data(), event="alert", event_id=change.seq)
        if changes:
            last_sent = time.monotonic()
        if len(changes) == CHANGES_PER_QUERY:
            continue  # more waiting: send them before anything else
        now = time.monotonic()
        if now >= next_stats:
            if not await still_authorised():
                return
            page = await store.list_campaigns(tenant_id=tenant_id, limit=CAMPAIGNS_PER_STATS_EVENT)
            yield sse_event(page.model_dump(mode="json"), event="stats")
            next_stats = now + timing.stats_seconds
            last_sent = now
        elif now - last_sent >= timing.heartbeat_seconds:
            yield sse_comment("heartbeat")
            last_sent = now
        await asyncio.sleep(timing.poll_seconds)
