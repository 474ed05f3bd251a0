"""/v1/alerts: list with filters and paging, one alert with its history, acknowledge."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path

from schemas.alert_v1 import AlertState, Severity
from services.api.deps import (
    Compliance,
    Cursor,
    Limit,
    QueryInstant,
    StoreDep,
    Viewer,
    token_prefix,
)
from services.api.models import AckRequest, AlertDetail, AlertPage

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])
AlertIdPath = Annotated[str, Path(min_length=1, max_length=80)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown alert"}}


@router.get("", response_model=AlertPage)
async def list_alerts(
    principal: Viewer,
    store: StoreDep,
    campaign_id: str | None = None,
    state: AlertState | None = None,
    rule: str | None = None,
    severity: Severity | None = None,
    since: QueryInstant | None = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> AlertPage:
    """Alerts newest first (opened_at, then id); `since` keeps those opened at or after it."""
    return await store.list_alerts(
        tenant_id=principal.tenant_id,
        campaign_id=campaign_id,
        state=state,
        rule=rule,
        severity=severity,
        since=since,
        cursor=cursor,
        limit=limit,
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
    by: Annotated[str, Depends(token_prefix)],
    body: AckRequest | None = None,
) -> AlertDetail:
    """Acknowledge the alert with a note; acknowledging it again changes nothing.
    `acknowledged_by` is the acknowledging token's prefix (see `cdrwatch token`)."""
    alert = await store.ack(
        alert_id, by=by, note=(body or AckRequest()).note, tenant_id=principal.tenant_id
    )
    if alert is None:
        raise HTTPException(404, detail="alert not found")
    return alert
