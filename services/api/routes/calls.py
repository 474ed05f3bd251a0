"""/v1/calls: the traced calls (IT-SC-1, Garante 2014: every silent call is traced) with
their instants, outcome, rule hits and pseudonymised callee, paged like /v1/alerts.

A tenant-bound token sees its tenant's calls only; a token bound to no tenant sees every
tenant's (each call names its `tenant_id`), or those of the `tenant` it names."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from schemas.call_v1 import CallOutcomeName
from services.api import call_detail, compliance
from services.api.deps import (
    Cursor,
    DefaultTenant,
    IdText,
    Limit,
    OtherTenant,
    QueryInstant,
    StoreDep,
    TenantQuery,
    Viewer,
    campaign_tenant,
    list_tenant,
    query_error,
)
from services.api.models import CallPage

router = APIRouter(prefix="/v1/calls", tags=["calls"])
CampaignIdQuery = Annotated[IdText | None, Query(max_length=128)]
CallIdPath = Annotated[IdText, Path(min_length=1, max_length=128)]
_NOT_FOUND = "no traced call with this id in the campaign"


@router.get("", response_model=CallPage)
async def list_calls(
    principal: Viewer,
    store: StoreDep,
    campaign_id: CampaignIdQuery = None,
    outcome: CallOutcomeName | None = None,
    from_: Annotated[QueryInstant | None, Query(alias="from")] = None,
    to: QueryInstant | None = None,
    cursor: Cursor = None,
    limit: Limit = 100,
    tenant: TenantQuery = None,
) -> CallPage:
    """Calls that were silent, abandoned or broke a per-call rule (hours, late release,
    long silent wait, lockout, ...), newest first, with originated_at in [from, to) (RFC
    3339 within [2000-01-01, 9000-01-01), `from` before `to`, else 422). `outcome` is one
    of the core's outcomes; `rule_hits` lists the per-call rules the call broke; the
    callee is its keyed pseudonym (`callee_key`), never the number."""
    if from_ is not None and to is not None and from_ >= to:
        raise query_error("from", "`from` must be before `to`", from_.isoformat())
    try:
        scope = list_tenant(principal, tenant)
    except OtherTenant:
        return CallPage(items=[], next_cursor=None)
    return await store.list_calls(
        tenant_id=scope,
        campaign_id=campaign_id,
        outcome=outcome,
        start=from_,
        end=to,
        cursor=cursor,
        limit=limit,
    )


def _default_profile(request: Request) -> str:
    return str(getattr(request.app.state.settings, "default_profile", compliance.DEFAULT_PROFILE))


@router.get(
    "/{call_id}",
    response_model=call_detail.CallDetail,
    responses={404: {"description": "No traced call with this id in the tenant's campaign"}},
)
async def get_call(
    call_id: CallIdPath,
    campaign_id: Annotated[IdText, Query(max_length=128, description="The call's campaign")],
    principal: Viewer,
    store: StoreDep,
    default_tenant: DefaultTenant,
    default_profile: Annotated[str, Depends(_default_profile)],
    tenant: TenantQuery = None,
) -> call_detail.CallDetail:
    """One traced call (call ids are unique per tenant and campaign, so `campaign_id` is
    required): its instants, outcome, dial mode, pseudonymised callee, the per-call rules
    it broke with their references, and the regulatory windows of the campaign's rate
    rules it counted for (numerator and denominator, or denominator only). Calls that
    were neither silent, abandoned nor broke a per-call rule are not kept: 404."""
    try:
        scope = campaign_tenant(principal, tenant, default_tenant)
    except OtherTenant:
        raise HTTPException(404, detail=_NOT_FOUND) from None
    try:
        return await call_detail.call_detail(
            store,
            call_id,
            tenant_id=scope,
            campaign_id=campaign_id,
            default_profile=default_profile,
        )
    except call_detail.CallNotFound:
        raise HTTPException(404, detail=_NOT_FOUND) from None
