"""/v1/calls: the traced calls (IT-SC-1, Garante 2014: every silent call is traced) with
their instants, outcome, rule hits and pseudonymised callee, paged like /v1/alerts.

A tenant-bound token sees its tenant's calls only; a token bound to no tenant sees every
tenant's (each call names its `tenant_id`), or those of the `tenant` it names."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from schemas.call_v1 import CallOutcomeName
from services.api.deps import (
    Cursor,
    IdText,
    Limit,
    OtherTenant,
    QueryInstant,
    StoreDep,
    TenantQuery,
    Viewer,
    list_tenant,
    query_error,
)
from services.api.models import CallPage

router = APIRouter(prefix="/v1/calls", tags=["calls"])
CampaignIdQuery = Annotated[IdText | None, Query(max_length=128)]


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
