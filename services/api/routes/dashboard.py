"""The built-in live dashboard: one static page that calls the JSON endpoints with the
token the user types in (kept in sessionStorage). The HTML itself holds no data; its script
and styles are files under /static/dashboard (the CSP allows no inline script or style)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from pydantic import BaseModel

from services.api.deps import Viewer
from services.common.auth import Role
from services.common.http_docs import RevalidatedStaticFiles

router = APIRouter(include_in_schema=False)
ASSETS = Path(__file__).resolve().parent.parent / "dashboard"
PAGE = ASSETS / "index.html"


@router.get("/")
async def dashboard() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html", headers={"Cache-Control": "no-cache"})


class Me(BaseModel):
    role: Role
    tenant_id: str | None


@router.get("/v1/me", response_model=Me, include_in_schema=True, tags=["auth"])
async def me(principal: Viewer) -> Me:
    """The calling token's role and tenant (the dashboard shows the ack button to
    compliance and admin tokens only; the ack route checks the role itself)."""
    return Me(role=principal.role, tenant_id=principal.tenant_id)


def mount_static(app: FastAPI) -> None:
    app.mount("/static/dashboard", RevalidatedStaticFiles(directory=ASSETS), name="dashboard")
