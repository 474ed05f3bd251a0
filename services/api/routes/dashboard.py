"""The built-in live dashboard: one static page that calls the JSON endpoints with the
token the user types in (kept in sessionStorage). The HTML itself holds no data; its script
and styles are files under /static/dashboard (the CSP allows no inline script or style)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse

from services.common.http_docs import RevalidatedStaticFiles

router = APIRouter(include_in_schema=False)
ASSETS = Path(__file__).resolve().parent.parent / "dashboard"
PAGE = ASSETS / "index.html"


@router.get("/")
async def dashboard() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html", headers={"Cache-Control": "no-cache"})


def mount_static(app: FastAPI) -> None:
    app.mount("/static/dashboard", RevalidatedStaticFiles(directory=ASSETS), name="dashboard")
