"""Request dependencies of the api routes (STYLE habit 5)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BeforeValidator

from schemas.instants import parse_instant
from services.api.campaigns import ProfileValidator
from services.api.clock import Clock
from services.api.publisher import CampaignPublisher
from services.api.store import AlertStore
from services.common.auth import Principal
from services.common.http_auth import require_role


def get_store(request: Request) -> AlertStore:
    store: AlertStore = request.app.state.store
    return store


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def get_publisher(request: Request) -> CampaignPublisher:
    publisher: CampaignPublisher = request.app.state.campaign_publisher
    return publisher


def get_profiles(request: Request) -> ProfileValidator:
    profiles: ProfileValidator = request.app.state.profiles
    return profiles


# Instants a query may name (CONTRACT decision 7): outside, a 422 naming the parameter,
# never a 500 from an overflow (year 1 and 9999 overflow the UTC conversion and the
# minute arithmetic) and never an instant echoed in a form RFC 3339 does not have.
EARLIEST_QUERY_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_QUERY_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)
MAX_ID_LENGTH = 128


def _query_instant(value: object) -> datetime:
    # An unencoded "+" in a query string arrives as a space: "...T10:15:00 01:00".
    if isinstance(value, str) and len(value) > 6 and value[-6] == " " and value[-3] == ":":
        value = f"{value[:-6]}+{value[-5:]}"
    try:
        instant = parse_instant(value)
    except ArithmeticError:  # OverflowError converting e.g. 0001-01-01T00:30:00+01:00 to UTC
        raise ValueError("instant out of range: before 2000-01-01 or after 9000-01-01") from None
    if instant < EARLIEST_QUERY_INSTANT:
        raise ValueError("instant before 2000-01-01T00:00:00Z")
    if instant >= LATEST_QUERY_INSTANT:
        raise ValueError("instant at or after 9000-01-01T00:00:00Z")
    return instant


def check_id(value: str) -> str:
    """An id of a path or query (CONTRACT decision 2): 1..128 characters after stripping,
    printable only, no `/`."""
    if not 1 <= len(value.strip()) <= MAX_ID_LENGTH:
        raise ValueError(f"must be 1 to {MAX_ID_LENGTH} characters")
    if not value.isprintable():
        raise ValueError("must hold printable characters only")
    if "/" in value:
        raise ValueError("must not contain `/`")
    return value


StoreDep = Annotated[AlertStore, Depends(get_store)]
ClockDep = Annotated[Clock, Depends(get_clock)]
PublisherDep = Annotated[CampaignPublisher, Depends(get_publisher)]
ProfilesDep = Annotated[ProfileValidator, Depends(get_profiles)]
Viewer = Annotated[Principal, Depends(require_role("viewer"))]
Compliance = Annotated[Principal, Depends(require_role("compliance"))]
Admin = Annotated[Principal, Depends(require_role("admin"))]
QueryInstant = Annotated[datetime, BeforeValidator(_query_instant)]
Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page.")]
Cursor = Annotated[
    str | None, Query(max_length=2000, description="`next_cursor` of the previous page.")
]
IdText = Annotated[str, AfterValidator(check_id)]
CampaignIdPath = Annotated[IdText, Path(min_length=1, max_length=MAX_ID_LENGTH)]
TenantQuery = Annotated[
    IdText | None,
    Query(
        max_length=MAX_ID_LENGTH,
        description="Tenant of the campaign; only for tokens bound to no tenant (default: "
        "the default tenant for one campaign, every tenant for a list).",
    ),
]


def _default_tenant(request: Request) -> str:
    return str(getattr(request.app.state.settings, "default_tenant", "default"))


class OtherTenant(LookupError):
    """A tenant-bound token named another tenant: answered as if nothing were there."""


def campaign_tenant(principal: Principal, tenant: str | None, default_tenant: str) -> str:
    """The tenant of a one-campaign request: a bound token's own (naming another one is
    OtherTenant, a 404); for an unbound token the `tenant` named, else the default."""
    if principal.tenant_id is not None:
        if tenant is not None and tenant != principal.tenant_id:
            raise OtherTenant(tenant)
        return principal.tenant_id
    return tenant or default_tenant


def list_tenant(principal: Principal, tenant: str | None) -> str | None:
    """The tenant filter of a list request: a bound token's own; for an unbound token the
    `tenant` named, else None (every tenant)."""
    if principal.tenant_id is not None:
        if tenant is not None and tenant != principal.tenant_id:
            raise OtherTenant(tenant)
        return principal.tenant_id
    return tenant


DefaultTenant = Annotated[str, Depends(_default_tenant)]


def query_error(field: str, message: str, value: object = None) -> RequestValidationError:
    """A 422 shaped like FastAPI's own validation errors."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", field), "msg": message, "input": value}]
    )


def header_error(field: str, message: str) -> RequestValidationError:
    """A 422 for a request header, shaped like FastAPI's own validation errors."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("header", field), "msg": message, "input": None}]
    )
