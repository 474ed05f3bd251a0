"""/v1/reports/compliance: the audit pack of a tenant's campaigns over a period, as JSON,
CSV or PDF (services.api.reports, services.api.report_render). Role compliance (SPEC
"Auth": compliance is viewer plus ack and reports); the campaigns are the token's
tenant's (a token bound to no tenant: the `tenant` named, else the default tenant's)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from services.api import compliance, report_render, reports
from services.api.campaigns import CampaignNotFound, RangeError
from services.api.deps import (
    ClockDep,
    Compliance,
    DefaultTenant,
    IdText,
    OtherTenant,
    QueryInstant,
    StoreDep,
    TenantQuery,
    campaign_tenant,
    query_error,
)

router = APIRouter(prefix="/v1/reports", tags=["reports"])
ReportFormat = Literal["json", "csv", "pdf"]
_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report: JSON (the schema below), CSV (one flat table, UTF-8 with "
        "BOM) or PDF",
        "content": {
            report_render.CSV_MEDIA_TYPE: {"schema": {"type": "string"}},
            report_render.PDF_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    404: {"description": "Unknown campaign (or another tenant's)"},
}


def _from_accept(accept: str) -> ReportFormat:
    """The format an Accept header asks for (no q-values weighed: the first listed of
    text/csv and application/pdf wins), else json."""
    for media in accept.lower().split(","):
        kind = media.split(";")[0].strip()
        if kind == report_render.CSV_MEDIA_TYPE.split(";")[0]:
            return "csv"
        if kind == report_render.PDF_MEDIA_TYPE:
            return "pdf"
    return "json"


def _default_profile(request: Request) -> str:
    return str(getattr(request.app.state.settings, "default_profile", compliance.DEFAULT_PROFILE))


@router.get("/compliance", response_model=reports.ComplianceReport, responses=_CONTENT)
async def get_compliance_report(
    request: Request,
    principal: Compliance,
    store: StoreDep,
    clock: ClockDep,
    default_tenant: DefaultTenant,
    default_profile: Annotated[str, Depends(_default_profile)],
    from_: Annotated[
        QueryInstant, Query(alias="from", description="Start (RFC 3339, whole minute)")
    ],
    to: Annotated[QueryInstant, Query(description="End, excluded (RFC 3339, whole minute)")],
    campaign_id: Annotated[
        list[IdText] | None,
        Query(description="Campaigns (repeat the parameter); default every campaign of the tenant"),
    ] = None,
    format: Annotated[  # noqa: A002
        ReportFormat | None,
        Query(
            description="json, csv or pdf; default from Accept (text/csv, application/pdf), "
            "else json"
        ),
    ] = None,
    tenant: TenantQuery = None,
) -> Any:
    """Per campaign: the calendar days of the profile's zone (attempts, answered, answered
    by a person, silent, abandoned, out of hours, rates, and each rate rule's cap, verdict
    and headroom over the day), the regulatory windows of the compliance view (IT
    cumulative, UK calendar days and worst 24 h, US 30-day periods), the alerts whose
    window overlaps [from, to) with acknowledgement, note and history, the traced calls
    (time, outcome, rules, pseudonymised callee), and the profile's version and rule
    sources. `from`/`to` are whole minutes, `from` before `to` (else 422)."""
    try:
        scope = campaign_tenant(principal, tenant, default_tenant)
    except OtherTenant:
        raise CampaignNotFound(tenant or "") from None
    try:
        start, end = compliance.compliance_range(from_, to)
    except RangeError as exc:
        raise query_error(exc.field, exc.message) from None
    assert start is not None and end is not None
    report = await reports.compliance_report(
        store,
        tenant_id=scope,
        campaign_ids=campaign_id or [],
        start=start,
        end=end,
        now=clock(),
        default_profile=default_profile,
    )
    chosen = format or _from_accept(request.headers.get("accept", ""))
    if chosen == "json":
        return report
    stem = f"cdrwatch-compliance-{start:%Y%m%d}-{end:%Y%m%d}"
    if chosen == "csv":
        body = report_render.render_csv(report)
        media, name = report_render.CSV_MEDIA_TYPE, f"{stem}.csv"
    else:
        # reportlab is CPU-bound: keep the event loop serving meanwhile.
        body = await asyncio.to_thread(report_render.render_pdf, report)
        media, name = report_render.PDF_MEDIA_TYPE, f"{stem}.pdf"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
