"""/docs served from this origin: Swagger UI's files from the `fastapi-offline` package
(no CDN, no third-party script), started by a static init script (no inline script, so the
guard's Content-Security-Policy holds). ReDoc and the OAuth2 redirect page are not served:
the API takes bearer tokens only."""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

SWAGGER_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
OWN_ASSETS = Path(__file__).resolve().parent / "static"
DOCS_STATIC = "/static/docs"


class RevalidatedStaticFiles(StaticFiles):
    """Static files that browsers may keep but must revalidate (ETag) before reuse."""

    async def get_response(self, path: str, scope: Scope):  # type: ignore[no-untyped-def]
        response = await super().get_response(path, scope)
        response.headers.setdefault("cache-control", "no-cache")
        return response


def docs_page(title: str, openapi_url: str) -> str:
    title, openapi_url = escape(title), escape(openapi_url)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API documentation</title>
<link rel="icon" type="image/png" href="{DOCS_STATIC}/swagger/favicon.png">
<link rel="stylesheet" href="{DOCS_STATIC}/swagger/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_STATIC}/swagger/swagger-ui-bundle.js"></script>
<script src="{DOCS_STATIC}/swagger-init.js" data-openapi-url="{openapi_url}"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """Serve /docs for `app` (built with docs_url=None and redoc_url=None)."""
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(
        f"{DOCS_STATIC}/swagger",
        RevalidatedStaticFiles(directory=SWAGGER_ASSETS),
        name="swagger-ui",
    )
    app.mount(DOCS_STATIC, RevalidatedStaticFiles(directory=OWN_ASSETS), name="docs-static")
    page = docs_page(app.title, openapi_url)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)
