"""/v1/webhooks (admin): register, list, read and delete a tenant's webhooks and read
every delivery with its tries. How deliveries are signed, retried and dead-lettered:
services/api/webhooks.py and the README section "Webhooks".

A tenant-bound token manages its tenant's webhooks only (another's answers 404, or 403 on
create); a token bound to no tenant manages all, and may register one for every tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response

from services.api.campaigns import TenantForbidden
from services.api.deps import Admin, Cursor, Limit, OtherTenant, TenantQuery, list_tenant
from services.api.webhooks import (
    DeliveryPage,
    DeliveryState,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookStore,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
WebhookIdPath = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_]+$")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown webhook"}}


def _store(request: Request) -> WebhookStore:
    store: WebhookStore = request.app.state.webhooks
    return store


@router.post("", status_code=201, response_model=WebhookCreated)
async def create_webhook(request: Request, principal: Admin, body: WebhookCreate) -> WebhookCreated:
    """Register a webhook; it receives the alert changes recorded from now on. The answer
    holds the signing secret (given, or generated when left out): it is never shown
    again."""
    tenant = body.tenant_id
    if principal.tenant_id is not None:
        if tenant is not None and tenant != principal.tenant_id:
            raise TenantForbidden("a tenant-bound token registers webhooks for its tenant only")
        tenant = principal.tenant_id
    return await _store(request).create(body, tenant)


@router.get("", response_model=WebhookPage)
async def list_webhooks(
    request: Request, principal: Admin, tenant: TenantQuery = None
) -> WebhookPage:
    """The webhooks (never their secrets), oldest first."""
    try:
        scope = list_tenant(principal, tenant)
    except OtherTenant:
        return WebhookPage(items=[], next_cursor=None)
    return await _store(request).list_webhooks(scope)


@router.get("/{webhook_id}", response_model=Webhook, responses=_NOT_FOUND)
async def get_webhook(request: Request, webhook_id: WebhookIdPath, principal: Admin) -> Webhook:
    """One webhook with its delivery counts by state."""
    webhook = await _store(request).get(webhook_id, principal.tenant_id)
    if webhook is None:
        raise HTTPException(404, detail="webhook not found")
    return webhook


@router.delete("/{webhook_id}", status_code=204, responses=_NOT_FOUND)
async def delete_webhook(request: Request, webhook_id: WebhookIdPath, principal: Admin) -> Response:
    """Delete the webhook, its deliveries and their tries; nothing more is sent to it."""
    if not await _store(request).delete(webhook_id, principal.tenant_id):
        raise HTTPException(404, detail="webhook not found")
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage, responses=_NOT_FOUND)
async def list_deliveries(
    request: Request,
    webhook_id: WebhookIdPath,
    principal: Admin,
    state: DeliveryState | None = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> DeliveryPage:
    """Deliveries newest first, each with the body sent and every try (time, HTTP status
    or error, duration); `state` keeps `pending`, `delivered` or `dead` ones."""
    page = await _store(request).deliveries(
        webhook_id, principal.tenant_id, state=state, cursor=cursor, limit=limit
    )
    if page is None:
        raise HTTPException(404, detail="webhook not found")
    return page
