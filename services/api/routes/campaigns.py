"""/v1/campaigns: list, stats over a minute-aligned range, regulatory windows (compliance),
configuration (PUT)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from schemas.stats_v1 import StatsV1
from services.api import campaigns, compliance
from services.api.deps import (
    Admin,
    ClockDep,
    Cursor,
    Limit,
    ProfilesDep,
    PublisherDep,
    QueryInstant,
    StoreDep,
    Viewer,
    query_error,
)
from services.api.models import Campaign, CampaignCompliance, CampaignPage, CampaignUpdate

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
CampaignIdPath = Annotated[str, Path(min_length=1, max_length=200)]


@router.get("", response_model=CampaignPage)
async def list_campaigns(
    principal: Viewer, store: StoreDep, cursor: Cursor = None, limit: Limit = 100
) -> CampaignPage:
    """Campaigns seen (stats, alerts or PUT) with profile, status and live window figures."""
    return await store.list_campaigns(tenant_id=principal.tenant_id, cursor=cursor, limit=limit)


@router.get(
    "/{campaign_id}/stats", response_model=StatsV1, responses={404: {"description": "Unknown"}}
)
async def get_stats(
    campaign_id: CampaignIdPath,
    principal: Viewer,
    store: StoreDep,
    clock: ClockDep,
    from_: Annotated[QueryInstant | None, Query(alias="from")] = None,
    to: QueryInstant | None = None,
) -> StatsV1:
    """Exact counts and rates of calls with originated_at in [from, to): RFC 3339, whole
    minutes; default the last 24 h up to the end of the current minute."""
    try:
        start, end = campaigns.stats_range(from_, to, clock())
    except campaigns.RangeError as exc:
        raise query_error(exc.field, exc.message) from None
    return await campaigns.campaign_stats(store, campaign_id, start, end, principal.tenant_id)


def _default_profile(request: Request) -> str:
    # The profile of a campaign neither configured nor reported by the detector yet.
    return str(getattr(request.app.state.settings, "default_profile", compliance.DEFAULT_PROFILE))


@router.get(
    "/{campaign_id}/compliance",
    response_model=CampaignCompliance,
    responses={404: {"description": "Unknown"}},
)
async def get_compliance(
    campaign_id: CampaignIdPath,
    principal: Viewer,
    store: StoreDep,
    default_profile: Annotated[str, Depends(_default_profile)],
    from_: Annotated[QueryInstant | None, Query(alias="from")] = None,
    to: QueryInstant | None = None,
) -> CampaignCompliance:
    """The campaign profile's regulatory windows (cumulative, calendar days, worst sliding
    24 h, 30-day periods) with numerator, denominator, value, cap, verdict and headroom.
    `from`/`to` (RFC 3339, whole minutes, both optional) keep the windows overlapping
    [from, to); the cumulative window is always returned."""
    try:
        start, end = compliance.compliance_range(from_, to)
    except campaigns.RangeError as exc:
        raise query_error(exc.field, exc.message) from None
    return await compliance.campaign_compliance(
        store,
        campaign_id,
        tenant_scope=principal.tenant_id,
        default_profile=default_profile,
        start=start,
        end=end,
    )


@router.put(
    "/{campaign_id}",
    response_model=Campaign,
    responses={
        422: {"description": "Refused profile or override"},
        503: {"description": "Broker unavailable"},
    },
)
async def put_campaign(
    campaign_id: CampaignIdPath,
    update: CampaignUpdate,
    principal: Admin,
    store: StoreDep,
    publisher: PublisherDep,
    profiles: ProfilesDep,
    clock: ClockDep,
) -> Campaign:
    """Set the campaign's profile, overrides and AMD false-positive ratio (keys left out
    keep their value); creates unknown campaigns; the detector gets it through
    cdrwatch.campaigns.v1."""
    return await campaigns.configure_campaign(
        store,
        publisher,
        profiles,
        campaign_id,
        update,
        tenant_scope=principal.tenant_id,
        now=clock(),
    )
