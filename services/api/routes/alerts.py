"""/v1/alerts: list with filters and paging, one alert with its history, acknowledge.

A tenant-bound token sees its tenant's alerts only; a token bound to no tenant sees every
tenant's (each alert names its `tenant_id`), or those of the `tenant` it names."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse

from schemas.alert_v1 import AlertState, Severity
from services.api.deps import (
    Compliance,
    Cursor,
    IdText,
    Limit,
    OtherTenant,
    QueryInstant,
    StoreDep,
    TenantQuery,
    Viewer,
    header_error,
    list_tenant,
)
from services.api.models import AckRequest, AlertDetail, AlertPage, NoteRequest
from services.api.sse import StreamTiming, alert_stream
from services.common.http_security import bearer_token

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])
AlertIdPath = Annotated[IdText, Path(min_length=1, max_length=80)]
CampaignIdQuery = Annotated[IdText | None, Query(max_length=128)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown alert"}}


@router.get("", response_model=AlertPage)
async def list_alerts(
    principal: Viewer,
    store: StoreDep,
    campaign_id: CampaignIdQuery = None,
    state: AlertState | None = None,
    rule: str | None = None,
    severity: Severity | None = None,
    since: QueryInstant | None = None,
    cursor: Cursor = None,
    limit: Limit = 100,
    tenant: TenantQuery = None,
) -> AlertPage:
    """Alerts newest first (opened_at, then id); `since` (RFC 3339, within [2000-01-01,
    9000-01-01), else 422) keeps those opened at or after it."""
    try:
        scope = list_tenant(principal, tenant)
    except OtherTenant:
        return AlertPage(items=[], next_cursor=None)
    return await store.list_alerts(
        tenant_id=scope,
        campaign_id=campaign_id,
        state=state,
        rule=rule,
        severity=severity,
        since=since,
        cursor=cursor,
        limit=limit,
    )


_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "`event: alert` (`id: <seq>`, data: the alert as `GET /v1/alerts/{id}` "
        "returns it without `history`, plus `seq` and `change`), `event: stats` (data: "
        "`GET /v1/campaigns` as a page of up to 1000), comment lines as heartbeats.",
    },
    404: {"description": "A tenant-bound token named another tenant"},
}


@router.get("/stream", response_class=StreamingResponse, responses=_STREAM_RESPONSES)
async def stream_alerts(
    request: Request,
    principal: Viewer,
    store: StoreDep,
    tenant: TenantQuery = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=20,
            description="The `id` of the last event received: every alert change after it "
            "is sent first (a browser's EventSource sends it when it reconnects).",
        ),
    ] = None,
) -> StreamingResponse:
    """Server-sent events: every change of an alert the token sees, as it is stored, and
    the campaign list every ~2 s. Authenticated like every route (`Authorization: Bearer`,
    checked before anything is streamed); the dashboard reads it with fetch(), which can
    send that header (see README, "Live alerts")."""
    try:
        scope = list_tenant(principal, tenant)
    except OtherTenant:
        raise HTTPException(404, detail="no such tenant") from None
    position: int | None = None
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            raise header_error("Last-Event-ID", "must be the id (a whole number) of an event")
        position = int(last_event_id.strip())
    token = bearer_token(request.scope["headers"]) or ""
    tokens = request.app.state.tokens
    settings = request.app.state.settings

    async def still_authorised() -> bool:
        current = await tokens.verify(token)
        return current is not None and current.can("viewer") and current == principal

    events = alert_stream(
        store,
        tenant_id=scope,
        last_event_id=position,
        timing=StreamTiming(
            heartbeat_seconds=settings.sse_heartbeat_seconds,
            stats_seconds=settings.sse_stats_seconds,
            poll_seconds=settings.sse_poll_seconds,
        ),
        still_authorised=still_authorised,
    )
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/{alert_id}", response_model=AlertDetail, responses=_NOT_FOUND)
async def get_alert(alert_id: AlertIdPath, principal: Viewer, store: StoreDep) -> AlertDetail:
    """The alert with its acknowledgement note and its history of transitions."""
    alert = await store.get_alert(alert_id, tenant_id=principal.tenant_id)
    if alert is None:
        raise HTTPException(404, detail="alert not found")
    return alert


@router.post("/{alert_id}/ack", response_model=AlertDetail, responses=_NOT_FOUND)
async def ack_alert(
    alert_id: AlertIdPath,
    principal: Compliance,
    store: StoreDep,
    body: AckRequest | None = None,
) -> AlertDetail:
    """Acknowledge the alert, optionally with a note. `acknowledged_by` is the token's
    name (`cdrwatch token create --name`; its prefix for a token without a name).
    Acknowledging it again keeps the first ack; a note given then is added as a note."""
    alert = await store.ack(
        alert_id,
        by=principal.author,
        note=(body or AckRequest()).note,
        tenant_id=principal.tenant_id,
    )
    if alert is None:
        raise HTTPException(404, detail="alert not found")
    return alert


@router.post("/{alert_id}/notes", response_model=AlertDetail, responses=_NOT_FOUND)
async def add_note(
    alert_id: AlertIdPath, principal: Compliance, store: StoreDep, body: NoteRequest
) -> AlertDetail:
    """Add a note to the alert (acknowledged or not); it is kept with its author (the
    token's name) and time in `notes` and `history`."""
    alert = await store.add_note(
        alert_id, by=principal.author, note=body.note, tenant_id=principal.tenant_id
    )
    if alert is None:
        raise HTTPException(404, detail="alert not found")
    return alert
