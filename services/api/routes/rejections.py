"""/v1/rejections/unattributed: records dead-lettered after acceptance whose campaign could
not be read (an unreadable record that still named its tenant). Those of a campaign are
under /v1/campaigns/{id}/rejections.

A tenant-bound token sees its tenant's; a token bound to no tenant sees every tenant's, or
those of the `tenant` it names."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import OtherTenant, StoreDep, TenantQuery, Viewer, list_tenant
from services.api.models import TenantRejection, UnattributedRejections

router = APIRouter(prefix="/v1/rejections", tags=["campaigns"])


@router.get("/unattributed", response_model=UnattributedRejections)
async def list_unattributed(
    principal: Viewer, store: StoreDep, tenant: TenantQuery = None
) -> UnattributedRejections:
    """Per tenant, stage and reason: count, first and last seen, the first call ids."""
    try:
        scope = list_tenant(principal, tenant)
    except OtherTenant:
        return UnattributedRejections(items=[])
    rows = await store.unattributed_rejections(tenant_id=scope)
    return UnattributedRejections(
        items=[TenantRejection(tenant_id=tenant_id, **row.model_dump()) for tenant_id, row in rows]
    )
