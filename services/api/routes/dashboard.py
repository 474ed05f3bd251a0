"""The built-in live dashboard: one static page that calls the JSON endpoints with the
token the user types in (kept in sessionStorage). The HTML itself holds no data."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)
PAGE = Path(__file__).resolve().parent.parent / "dashboard" / "index.html"


@router.get("/")
async def dashboard() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html", headers={"Cache-Control": "no-cache"})
