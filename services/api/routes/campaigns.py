"""/v1/campaigns: list, one campaign, stats over a minute-aligned range, regulatory windows
(compliance), records rejected after acceptance, configuration (PUT).

A campaign is (tenant, campaign id): a tenant-bound token works on its tenant's campaigns
(naming another tenant with `tenant` answers 404, as for a campaign that does not exist);
a token bound to no tenant works on the default tenant's, or on the tenant its `tenant`
query parameter names, and its list sees every tenant's campaigns."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from schemas.stats_v1 import StatsV1
from services.api import campaigns, compliance, minutes
from services.api.deps import (
    Admin,
    CampaignIdPath,
    ClockDep,
    Cursor,
    DefaultTenant,
    Limit,
    OtherTenant,
    ProfilesDep,
    PublisherDep,
    QueryInstant,
    StoreDep,
    TenantQuery,
    Viewer,
    campaign_tenant,
    list_tenant,
    query_error,
)
from services.api.models import (
    Campaign,
    CampaignCompliance,
    CampaignMinutes,
    CampaignPage,
    CampaignRejections,
    CampaignUpdate,
)
from services.common.settings import ApiSettings

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])


@router.get("", response_model=CampaignPage)
async def list_campaigns(
    principal: Viewer,
    store: StoreDep,
    cursor: Cursor = None,
    limit: Limit = 100,
    tenant: TenantQuery = None,
) -> CampaignPage:
    """Campaigns seen (stats, alerts or PUT) with tenant, profile, status and live window
    figures; a token bound to no tenant sees every tenant's (or the `tenant` named)."""
    try:
        scope = list_tenant(principal, tenant)
    except OtherTenant:
        return CampaignPage(items=[], next_cursor=None)
    return await store.list_campaigns(tenant_id=scope, cursor=cursor, limit=limit)


def _tenant_of(principal: Viewer, tenant: str | None, default_tenant: str, campaign_id: str) -> str:
    try:
        return campaign_tenant(principal, tenant, default_tenant)
    except OtherTenant:
        raise campaigns.CampaignNotFound(campaign_id) from None


@router.get("/{campaign_id}", response_model=Campaign, responses={404: {"description": "Unknown"}})
async def get_campaign(
    campaign_id: CampaignIdPath,
    principal: Viewer,
    store: StoreDep,
    default_tenant: DefaultTenant,
    tenant: TenantQuery = None,
) -> Campaign:
    """The campaign as the list shows it, with `rejected_after_acceptance` (reason -> count
    of its records dead-lettered after the 202)."""
    scope = _tenant_of(principal, tenant, default_tenant, campaign_id)
    found = await store.get_campaign(campaign_id, tenant_id=scope)
    if found is None:
        raise campaigns.CampaignNotFound(campaign_id)
    return found


@router.get(
    "/{campaign_id}/rejections",
    response_model=CampaignRejections,
    responses={404: {"description": "Unknown"}},
)
async def get_rejections(
    campaign_id: CampaignIdPath,
    principal: Viewer,
    store: StoreDep,
    default_tenant: DefaultTenant,
    tenant: TenantQuery = None,
) -> CampaignRejections:
    """The campaign's records dead-lettered after acceptance (cdrwatch.cdrs.dlq.v1), per
    stage and reason: count, first and last seen (when the api read them), the first call
    ids. A campaign all of whose records were rejected is found here too."""
    scope = _tenant_of(principal, tenant, default_tenant, campaign_id)
    items = await store.list_rejections(tenant_id=scope, campaign_id=campaign_id)
    if not items and await store.get_campaign(campaign_id, tenant_id=scope) is None:
        raise campaigns.CampaignNotFound(campaign_id)
    return CampaignRejections(campaign_id=campaign_id, tenant_id=scope, items=items)


@router.get(
    "/{campaign_id}/stats", response_model=StatsV1, responses={404: {"description": "Unknown"}}
)
async def get_stats(
    campaign_id: CampaignIdPath,
    principal: Viewer,
    store: StoreDep,
    clock: ClockDep,
    default_tenant: DefaultTenant,
    from_: Annotated[QueryInstant | None, Query(alias="from")] = None,
    to: QueryInstant | None = None,
    tenant: TenantQuery = None,
) -> StatsV1:
    """Exact counts and rates of calls with originated_at in [from, to): RFC 3339, whole
    minutes, within [2000-01-01, 9000-01-01) (else 422); default the last 24 h up to the
    end of the current minute."""
    scope = _tenant_of(principal, tenant, default_tenant, campaign_id)
    try:
        start, end = campaigns.stats_range(from_, to, clock())
    except campaigns.RangeError as exc:
        raise query_error(exc.field, exc.message) from None
    return await campaigns.campaign_stats(store, campaign_id, start, end, scope)


def _default_profile(request: Request) -> str:
    # The profile of a campaign neither configured nor reported by the detector yet.
    settings: ApiSettings = request.app.state.settings
    return settings.default_profile


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
    default_tenant: DefaultTenant,
    from_: Annotated[QueryInstant | None, Query(alias="from")] = None,
    to: QueryInstant | None = None,
    tenant: TenantQuery = None,
) -> CampaignCompliance:
    """The campaign profile's regulatory windows (cumulative, calendar days, worst sliding
    24 h, 30-day periods) with numerator, denominator, value, cap, verdict and headroom.
    `from`/`to` (RFC 3339, whole minutes, both optional) keep the windows overlapping
    [from, to); the cumulative window is always returned."""
    scope = _tenant_of(principal, tenant, default_tenant, campaign_id)
    try:
        start, end = compliance.compliance_range(from_, to)
    except campaigns.RangeError as exc:
        raise query_error(exc.field, exc.message) from None
    return await compliance.campaign_compliance(
        store,
        campaign_id,
        tenant_id=scope,
        default_profile=default_profile,
        start=start,
        end=end,
    )


@router.get(
    "/{campaign_id}/minutes",
    response_model=CampaignMinutes,
    response_model_by_alias=True,
    responses={404: {"description": "Unknown"}},
)
async def get_minutes(
    campaign_id: CampaignIdPath,
    principal: Viewer,
    store: StoreDep,
    clock: ClockDep,
    default_profile: Annotated[str, Depends(_default_profile)],
    default_tenant: DefaultTenant,
    from_: Annotated[QueryInstant | None, Query(alias="from")] = None,
    to: QueryInstant | None = None,
    tenant: TenantQuery = None,
) -> CampaignMinutes:
    """The campaign's minute buckets of [from, to) as columns (RFC 3339, whole minutes, at
    most 7 days; default the last 3 h up to the end of the current minute), with the
    profile's early-warning rate over its trailing window at each minute and its cap: what
    the dashboard charts."""
    scope = _tenant_of(principal, tenant, default_tenant, campaign_id)
    try:
        start, end = minutes.minutes_range(from_, to, clock())
    except campaigns.RangeError as exc:
        raise query_error(exc.field, exc.message) from None
    return await minutes.campaign_minutes(
        store,
        campaign_id,
        tenant_id=scope,
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
    default_tenant: DefaultTenant,
    tenant: TenantQuery = None,
) -> Campaign:
    """Set the campaign's profile, overrides and AMD false-positive ratio (keys left out
    keep their value); creates unknown campaigns; the detector gets it through
    cdrwatch.campaigns.v1. The campaign is the token's tenant's; a token bound to no tenant
    writes the `tenant` named (query, or `tenant_id` in the body), else the default
    tenant's."""
    return await campaigns.configure_campaign(
        store,
        publisher,
        profiles,
        campaign_id,
        update,
        tenant_scope=principal.tenant_id,
        tenant=tenant,
        default_tenant=default_tenant,
        now=clock(),
    )
