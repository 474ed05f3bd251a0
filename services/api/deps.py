"""Request dependencies of the api routes (STYLE habit 5)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator

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


def _query_instant(value: object) -> datetime:
    # An unencoded "+" in a query string arrives as a space: "...T10:15:00 01:00".
    if isinstance(value, str) and len(value) > 6 and value[-6] == " " and value[-3] == ":":
        value = f"{value[:-6]}+{value[-5:]}"
    return parse_instant(value)


StoreDep = Annotated[AlertStore, Depends(get_store)]
ClockDep = Annotated[Clock, Depends(get_clock)]
PublisherDep = Annotated[CampaignPublisher, Depends(get_publisher)]
ProfilesDep = Annotated[ProfileValidator, Depends(get_profiles)]
Viewer = Annotated[Principal, Depends(require_role("viewer"))]
Compliance = Annotated[Principal, Depends(require_role("compliance"))]
Admin = Annotated[Principal, Depends(require_role("admin"))]
QueryInstant = Annotated[datetime, BeforeValidator(_query_instant)]
Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


def token_prefix(request: Request) -> str:
    """The caller's token prefix (as api_tokens.token_prefix stores it); call after auth."""
    _, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip()[:12]


def query_error(field: str, message: str, value: object = None) -> RequestValidationError:
    """A 422 shaped like FastAPI's own validation errors."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", field), "msg": message, "input": value}]
    )
